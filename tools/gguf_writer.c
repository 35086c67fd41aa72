/* Streaming GGUF v3 writer for the tools: metadata in memory, tensor data streamed to a file descriptor. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_writer.h"
#include "quant.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_writer copies host-order values into the file: little-endian hosts only"
#endif

/*
 * Output goes through one buffer of this size: big enough that a 14 GB model
 * costs a few thousand write(2) calls, small enough not to matter next to
 * the caller's own row buffers. Pieces at least this large bypass it.
 */
#define OUT_BUF_SIZE (8u << 20)

struct buf {
	uint8_t *p;
	size_t n, cap;
};

struct wtensor {
	char name[GGUF_MAX_NAME + 1];
	uint64_t nbytes;
};

struct gguf_writer {
	uint32_t alignment;
	bool failed;
	bool begun;
	char errmsg[256];

	struct buf kv;          /* encoded key/value pairs, in order */
	uint64_t n_kv;
	char **keys;            /* copies, for the duplicate check */
	size_t keys_cap;

	struct buf info;        /* encoded tensor infos, in order */
	struct wtensor *tensors;
	uint64_t n_tensors;
	size_t tensors_cap;
	uint64_t data_size;     /* data section so far, each tensor padded */

	/* streaming state */
	int fd;
	uint8_t *out;
	size_t out_n;
	uint64_t cur;           /* tensor being written */
	uint64_t cur_done;      /* its bytes written so far */
};

__attribute__((format(printf, 3, 4)))
static int fail(struct gguf_writer *w, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->errmsg, sizeof(w->errmsg), fmt, ap);
	va_end(ap);
	w->failed = true;
	return code;
}

static int buf_reserve(struct buf *b, size_t more)
{
	size_t cap;
	uint8_t *p;

	if (more <= b->cap - b->n)
		return 0;
	if (more > SIZE_MAX / 2 - b->n)
		return -ENOMEM;
	cap = b->cap ? b->cap : 4096;
	while (cap - b->n < more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Callers reserve first, so these cannot fail. */
static void put(struct buf *b, const void *p, size_t n)
{
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put_u32(struct buf *b, uint32_t v)
{
	put(b, &v, sizeof(v));
}

static void put_u64(struct buf *b, uint64_t v)
{
	put(b, &v, sizeof(v));
}

static void put_str(struct buf *b, const void *s, size_t n)
{
	put_u64(b, n);
	put(b, s, n);
}

static uint64_t align_up(uint64_t x, uint32_t a)
{
	return (x + a - 1) & ~(uint64_t)(a - 1);
}

static int check_open(struct gguf_writer *w)
{
	if (w->failed)
		return -EINVAL;
	if (w->begun)
		return fail(w, -EINVAL, "metadata and tensors must be added before gguf_writer_begin");
	return 0;
}

/*
 * Starts a key/value pair: checks the key, reserves room for the key plus
 * value_bytes, and writes the key and the type. The caller puts the value.
 */
static int kv_start(struct gguf_writer *w, const char *key, size_t key_len,
		    uint32_t type, size_t value_bytes)
{
	char *copy;
	int rc = check_open(w);

	if (rc)
		return rc;
	if (key_len == 0 || key_len > 65535)
		return fail(w, -EINVAL, "metadata key length %zu is not in 1..65535", key_len);
	if (memchr(key, '\0', key_len))
		return fail(w, -EINVAL, "metadata key contains a NUL byte");
	for (uint64_t i = 0; i < w->n_kv; i++)
		if (strlen(w->keys[i]) == key_len && !memcmp(w->keys[i], key, key_len))
			return fail(w, -EEXIST, "duplicate metadata key %.*s", (int)key_len, key);
	if (w->n_kv == w->keys_cap) {
		size_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
		char **k = realloc(w->keys, cap * sizeof(*k));

		if (!k)
			return fail(w, -ENOMEM, "out of memory for metadata keys");
		w->keys = k;
		w->keys_cap = cap;
	}
	copy = strndup(key, key_len);
	if (!copy)
		return fail(w, -ENOMEM, "out of memory for metadata keys");
	if (value_bytes > SIZE_MAX - key_len - 12 ||
	    buf_reserve(&w->kv, 12 + key_len + value_bytes)) {
		free(copy);
		return fail(w, -ENOMEM, "out of memory for metadata (%zu bytes)", value_bytes);
	}
	w->keys[w->n_kv++] = copy;
	put_str(&w->kv, key, key_len);
	put_u32(&w->kv, type);
	return 0;
}

static int add_scalar(struct gguf_writer *w, const char *key, uint32_t type, const void *v)
{
	size_t sz = ms_gguf_vtype_size(type);
	int rc = kv_start(w, key, strlen(key), type, sz);

	if (rc)
		return rc;
	put(&w->kv, v, sz);
	return 0;
}

int gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v)
{
	return add_scalar(w, key, GGUF_U8, &v);
}

int gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v)
{
	return add_scalar(w, key, GGUF_I8, &v);
}

int gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v)
{
	return add_scalar(w, key, GGUF_U16, &v);
}

int gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v)
{
	return add_scalar(w, key, GGUF_I16, &v);
}

int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
	return add_scalar(w, key, GGUF_U32, &v);
}

int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v)
{
	return add_scalar(w, key, GGUF_I32, &v);
}

int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
	return add_scalar(w, key, GGUF_U64, &v);
}

int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v)
{
	return add_scalar(w, key, GGUF_I64, &v);
}

int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v)
{
	return add_scalar(w, key, GGUF_F32, &v);
}

int gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v)
{
	return add_scalar(w, key, GGUF_F64, &v);
}

int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v)
{
	uint8_t b = v;

	return add_scalar(w, key, GGUF_BOOL, &b);
}

int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, size_t n)
{
	int rc = kv_start(w, key, strlen(key), GGUF_STRING, 8 + n);

	if (rc)
		return rc;
	put_str(&w->kv, s, n);
	return 0;
}

int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s)
{
	return gguf_writer_add_strn(w, key, s, strlen(s));
}

/* Array header plus `bytes` of already-little-endian element data. */
static int add_arr_raw(struct gguf_writer *w, const char *key, size_t key_len,
		       uint32_t elem_type, const void *elems, uint64_t n, size_t bytes)
{
	int rc;

	if (bytes > SIZE_MAX - 12)
		return fail(w, -EOVERFLOW, "array %.*s is too large", (int)key_len, key);
	rc = kv_start(w, key, key_len, GGUF_ARRAY, 12 + bytes);
	if (rc)
		return rc;
	put_u32(&w->kv, elem_type);
	put_u64(&w->kv, n);
	if (bytes)
		put(&w->kv, elems, bytes);
	return 0;
}

static int fixed_arr_bytes(struct gguf_writer *w, const char *key, size_t key_len,
			   uint32_t elem_type, uint64_t n, size_t *bytes)
{
	size_t sz = ms_gguf_vtype_size(elem_type);

	if (!sz)
		return fail(w, -EINVAL, "array %.*s: element type %u is not a fixed-size type",
			    (int)key_len, key, elem_type);
	if (n > SIZE_MAX / sz)
		return fail(w, -EOVERFLOW, "array %.*s: %llu elements is too many",
			    (int)key_len, key, (unsigned long long)n);
	*bytes = (size_t)n * sz;
	return 0;
}

int gguf_writer_add_arr(struct gguf_writer *w, const char *key, uint32_t elem_type,
			const void *elems, uint64_t n)
{
	size_t bytes;
	int rc = check_open(w);

	if (rc)
		return rc;
	rc = fixed_arr_bytes(w, key, strlen(key), elem_type, n, &bytes);
	if (rc)
		return rc;
	return add_arr_raw(w, key, strlen(key), elem_type, elems, n, bytes);
}

int gguf_writer_add_str_arr(struct gguf_writer *w, const char *key,
			    const char *const *strs, uint64_t n)
{
	size_t bytes = 0;
	int rc = check_open(w);

	if (rc)
		return rc;
	for (uint64_t i = 0; i < n; i++) {
		size_t len = strlen(strs[i]);

		if (len > SIZE_MAX - 8 - bytes)
			return fail(w, -EOVERFLOW, "array %s is too large", key);
		bytes += 8 + len;
	}
	rc = kv_start(w, key, strlen(key), GGUF_ARRAY, 12 + bytes);
	if (rc)
		return rc;
	put_u32(&w->kv, GGUF_STRING);
	put_u64(&w->kv, n);
	for (uint64_t i = 0; i < n; i++)
		put_str(&w->kv, strs[i], strlen(strs[i]));
	return 0;
}

int gguf_writer_add_value(struct gguf_writer *w, const char *key, size_t key_len,
			  const struct gguf_value *v)
{
	const struct gguf_arr *a = &v->v.a;
	int rc = check_open(w);
	union {
		uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;
		int8_t i8; int16_t i16; int32_t i32; int64_t i64;
		float f32; double f64;
	} s;

	if (rc)
		return rc;
	switch (v->type) {
	case GGUF_U8:   s.u8 = (uint8_t)v->v.u;   break;
	case GGUF_BOOL: s.u8 = v->v.u != 0;       break;
	case GGUF_I8:   s.i8 = (int8_t)v->v.i;    break;
	case GGUF_U16:  s.u16 = (uint16_t)v->v.u; break;
	case GGUF_I16:  s.i16 = (int16_t)v->v.i;  break;
	case GGUF_U32:  s.u32 = (uint32_t)v->v.u; break;
	case GGUF_I32:  s.i32 = (int32_t)v->v.i;  break;
	case GGUF_U64:  s.u64 = v->v.u;           break;
	case GGUF_I64:  s.i64 = v->v.i;           break;
	/* the reader widened an F32 to double exactly, so this is the same float */
	case GGUF_F32:  s.f32 = (float)v->v.f;    break;
	case GGUF_F64:  s.f64 = v->v.f;           break;
	case GGUF_STRING:
		if (v->v.s.n > SIZE_MAX - 8)
			return fail(w, -EOVERFLOW, "string %.*s is too large", (int)key_len, key);
		rc = kv_start(w, key, key_len, GGUF_STRING, 8 + (size_t)v->v.s.n);
		if (rc)
			return rc;
		put_str(&w->kv, v->v.s.p, (size_t)v->v.s.n);
		return 0;
	case GGUF_ARRAY:
		if (a->type == GGUF_STRING) {
			/* elements are u64 length + bytes, already in file order */
			const uint8_t *cur = a->data;
			size_t bytes;

			for (uint64_t i = 0; i < a->n; i++)
				ms_gguf_arr_str(&cur);
			bytes = (size_t)(cur - a->data);
			return add_arr_raw(w, key, key_len, GGUF_STRING, a->data, a->n, bytes);
		} else {
			size_t bytes;

			rc = fixed_arr_bytes(w, key, key_len, a->type, a->n, &bytes);
			if (rc)
				return rc;
			return add_arr_raw(w, key, key_len, a->type, a->data, a->n, bytes);
		}
	default:
		return fail(w, -EINVAL, "value of %.*s has unknown type %u",
			    (int)key_len, key, v->type);
	}
	rc = kv_start(w, key, key_len, v->type, ms_gguf_vtype_size(v->type));
	if (rc)
		return rc;
	put(&w->kv, &s, ms_gguf_vtype_size(v->type));
	return 0;
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t n_dims,
			   const uint64_t *ne, uint32_t type)
{
	const struct ggml_type_info *ti = ms_ggml_type_get(type);
	size_t name_len = strlen(name);
	uint64_t nbytes, rows = 1, end = 0;
	struct wtensor *t;
	int rc = check_open(w);

	if (rc)
		return rc;
	if (name_len == 0 || name_len > GGUF_MAX_NAME)
		return fail(w, -EINVAL, "tensor name \"%s\" is not 1..%d bytes", name, GGUF_MAX_NAME);
	if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
		return fail(w, -EINVAL, "tensor %s: %u dimensions (1..%d allowed)",
			    name, n_dims, GGUF_MAX_DIMS);
	if (!ti)
		return fail(w, -EINVAL, "tensor %s: unknown ggml type %u", name, type);
	for (uint64_t i = 0; i < w->n_tensors; i++)
		if (!strcmp(w->tensors[i].name, name))
			return fail(w, -EEXIST, "duplicate tensor name %s", name);
	for (uint32_t i = 0; i < n_dims; i++)
		if (ne[i] == 0 || ne[i] > INT64_MAX)
			return fail(w, -EINVAL, "tensor %s: dimension %u is %llu", name, i,
				    (unsigned long long)ne[i]);
	rc = ms_ggml_row_bytes(type, ne[0], &nbytes);
	if (rc == -EINVAL)
		return fail(w, rc, "tensor %s: ne[0] = %llu is not a multiple of the %s block size %u",
			    name, (unsigned long long)ne[0], ti->name, ti->blck);
	for (uint32_t i = 1; i < n_dims && !rc; i++) {
		if (rows > UINT64_MAX / ne[i])
			rc = -EOVERFLOW;
		else
			rows *= ne[i];
	}
	if (!rc && nbytes > UINT64_MAX / rows)
		rc = -EOVERFLOW;
	if (!rc) {
		nbytes *= rows;
		end = w->data_size + nbytes;
		if (end < nbytes || align_up(end, w->alignment) < end)
			rc = -EOVERFLOW;
	}
	if (rc)
		return fail(w, rc, "tensor %s: byte size overflows 64 bits", name);

	if (w->n_tensors == w->tensors_cap) {
		size_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;

		t = realloc(w->tensors, cap * sizeof(*t));
		if (!t)
			return fail(w, -ENOMEM, "out of memory for tensor infos");
		w->tensors = t;
		w->tensors_cap = cap;
	}
	if (buf_reserve(&w->info, 8 + name_len + 4 + 8 * n_dims + 4 + 8))
		return fail(w, -ENOMEM, "out of memory for tensor infos");
	put_str(&w->info, name, name_len);
	put_u32(&w->info, n_dims);
	for (uint32_t i = 0; i < n_dims; i++)
		put_u64(&w->info, ne[i]);
	put_u32(&w->info, type);
	put_u64(&w->info, w->data_size);

	t = &w->tensors[w->n_tensors++];
	memcpy(t->name, name, name_len + 1);
	t->nbytes = nbytes;
	w->data_size = align_up(end, w->alignment);
	return 0;
}

uint64_t gguf_writer_tensor_bytes(const struct gguf_writer *w, uint64_t index)
{
	return index < w->n_tensors ? w->tensors[index].nbytes : 0;
}

static uint64_t header_size(const struct gguf_writer *w)
{
	return align_up(4 + 4 + 8 + 8 + w->kv.n + w->info.n, w->alignment);
}

uint64_t gguf_writer_file_size(const struct gguf_writer *w)
{
	return header_size(w) + w->data_size;
}

struct gguf_writer *gguf_writer_new(uint32_t alignment)
{
	struct gguf_writer *w;

	if (alignment == 0)
		alignment = GGUF_DEFAULT_ALIGN;
	if (alignment > GGUF_MAX_ALIGN || (alignment & (alignment - 1)))
		return NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->alignment = alignment;
	w->fd = -1;
	/* readers assume 32 unless told, so any other value must be stored */
	if (alignment != GGUF_DEFAULT_ALIGN &&
	    gguf_writer_add_u32(w, "general.alignment", alignment)) {
		gguf_writer_free(w);
		return NULL;
	}
	return w;
}

void gguf_writer_free(struct gguf_writer *w)
{
	if (!w)
		return;
	for (uint64_t i = 0; i < w->n_kv; i++)
		free(w->keys[i]);
	free(w->keys);
	free(w->kv.p);
	free(w->info.p);
	free(w->tensors);
	free(w->out);
	free(w);
}

const char *gguf_writer_errmsg(const struct gguf_writer *w)
{
	return w->errmsg;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static int write_all(struct gguf_writer *w, const void *p, size_t n)
{
	const uint8_t *c = p;

	while (n) {
		/* Linux moves at most ~2 GiB per call; ask for no more than that */
		ssize_t r = write(w->fd, c, n < (1u << 30) ? n : (1u << 30));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return fail(w, -errno, "write: %s", strerror(errno));
		}
		if (r == 0)
			return fail(w, -EIO, "write returned 0");
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static int flush(struct gguf_writer *w)
{
	int rc = write_all(w, w->out, w->out_n);

	w->out_n = 0;
	return rc;
}

static int out(struct gguf_writer *w, const void *p, size_t n)
{
	int rc;

	if (n <= OUT_BUF_SIZE - w->out_n) {
		memcpy(w->out + w->out_n, p, n);
		w->out_n += n;
		return 0;
	}
	rc = flush(w);
	if (rc)
		return rc;
	if (n >= OUT_BUF_SIZE)
		return write_all(w, p, n);
	memcpy(w->out, p, n);
	w->out_n = n;
	return 0;
}

static int out_zeros(struct gguf_writer *w, uint64_t n)
{
	static const uint8_t zeros[256];
	int rc = 0;

	while (n && !rc) {
		size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);

		rc = out(w, zeros, k);
		n -= k;
	}
	return rc;
}

int gguf_writer_begin(struct gguf_writer *w, int fd)
{
	uint8_t hdr[24];
	uint32_t magic = GGUF_MAGIC, version = 3;
	uint64_t pos;
	int rc = check_open(w);

	if (rc)
		return rc;
	w->out = malloc(OUT_BUF_SIZE);
	if (!w->out)
		return fail(w, -ENOMEM, "out of memory for the output buffer");
	w->begun = true;
	w->fd = fd;
	memcpy(hdr, &magic, 4);
	memcpy(hdr + 4, &version, 4);
	memcpy(hdr + 8, &w->n_tensors, 8);
	memcpy(hdr + 16, &w->n_kv, 8);
	pos = sizeof(hdr) + w->kv.n + w->info.n;
	if ((rc = out(w, hdr, sizeof(hdr))) ||
	    (rc = out(w, w->kv.p, w->kv.n)) ||
	    (rc = out(w, w->info.p, w->info.n)) ||
	    (rc = out_zeros(w, header_size(w) - pos)))
		return rc;
	w->cur = 0;
	w->cur_done = 0;
	return 0;
}

int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n)
{
	const uint8_t *p = data;
	int rc;

	if (w->failed)
		return -EINVAL;
	if (!w->begun)
		return fail(w, -EINVAL, "tensor data written before gguf_writer_begin");
	while (n) {
		const struct wtensor *t;
		uint64_t left;
		size_t k;

		if (w->cur >= w->n_tensors)
			return fail(w, -EINVAL, "more tensor data than the tensors declared");
		t = &w->tensors[w->cur];
		left = t->nbytes - w->cur_done;
		k = n < left ? n : (size_t)left;
		rc = out(w, p, k);
		if (rc)
			return rc;
		p += k;
		n -= k;
		w->cur_done += k;
		if (w->cur_done == t->nbytes) {
			rc = out_zeros(w, align_up(t->nbytes, w->alignment) - t->nbytes);
			if (rc)
				return rc;
			w->cur++;
			w->cur_done = 0;
		}
	}
	return 0;
}

int gguf_writer_end(struct gguf_writer *w)
{
	if (w->failed)
		return -EINVAL;
	if (!w->begun)
		return fail(w, -EINVAL, "gguf_writer_end before gguf_writer_begin");
	if (w->cur < w->n_tensors)
		return fail(w, -EINVAL, "tensor %s is missing %llu bytes of data",
			    w->tensors[w->cur].name,
			    (unsigned long long)(w->tensors[w->cur].nbytes - w->cur_done));
	return flush(w);
}
