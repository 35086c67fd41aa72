/* GGUF v2/v3 reader: maps a model file and checks every byte of its header before the engine trusts it. */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"

/*
 * Values are read with memcpy and used as host integers, and the mapped
 * arrays are handed out as-is, so only little-endian hosts are supported.
 */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files in place and needs a little-endian host"
#endif

/*
 * Smallest encodings, used to bound the counts in the header before any
 * array is sized by them: a kv is a non-empty key (u64 length + 1 byte), a
 * u32 type and at least a one-byte value; a tensor info is a non-empty name,
 * u32 n_dims, at least one u64 dimension, u32 type and u64 offset.
 */
#define KV_MIN_BYTES	(8 + 1 + 4 + 1)
#define TI_MIN_BYTES	(8 + 1 + 4 + 8 + 4 + 8)

/* Room for a quoted name in a 256-byte message with other fields beside it. */
#define SHOW_MAX	64

struct cur {
	const uint8_t *base;
	size_t size;
	size_t pos;
	ms_err *err;
};

static size_t left(const struct cur *c)
{
	return c->size - c->pos;
}

/*
 * Copies a file-supplied name for a message, with bytes outside printable
 * ASCII replaced, so that a hostile key cannot put newlines or terminal
 * escapes into the daemon's log. Long names are cut and marked with "...".
 */
static const char *show(const void *p, uint64_t n, char out[SHOW_MAX + 4])
{
	const unsigned char *s = p;
	size_t m = n > SHOW_MAX ? SHOW_MAX : (size_t)n;
	size_t i;

	for (i = 0; i < m; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
	if (n > SHOW_MAX) {
		memcpy(out + m, "...", 3);
		m += 3;
	}
	out[m] = '\0';
	return out;
}

static const char *vtype_name(uint32_t type)
{
	static const char *const names[] = {
		"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
		"string", "array", "u64", "i64", "f64",
	};

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
}

size_t ms_gguf_vtype_size(uint32_t type)
{
	switch (type) {
	case GGUF_U8: case GGUF_I8: case GGUF_BOOL:
		return 1;
	case GGUF_U16: case GGUF_I16:
		return 2;
	case GGUF_U32: case GGUF_I32: case GGUF_F32:
		return 4;
	case GGUF_U64: case GGUF_I64: case GGUF_F64:
		return 8;
	default:
		return 0;
	}
}

static int need(struct cur *c, size_t n, const char *what)
{
	if (n <= left(c))
		return 0;
	return ms_errf(c->err, -EBADMSG,
		       "gguf: file cut short reading %s at byte %zu: need %zu bytes, %zu left",
		       what, c->pos, n, left(c));
}

static int rd_u32(struct cur *c, const char *what, uint32_t *v)
{
	int r = need(c, 4, what);

	if (r)
		return r;
	memcpy(v, c->base + c->pos, 4);
	c->pos += 4;
	return 0;
}

static int rd_u64(struct cur *c, const char *what, uint64_t *v)
{
	int r = need(c, 8, what);

	if (r)
		return r;
	memcpy(v, c->base + c->pos, 8);
	c->pos += 8;
	return 0;
}

/* A u64 length and that many bytes, the length checked against the file first. */
static int rd_str(struct cur *c, const char *what, struct gguf_str *s)
{
	uint64_t n;
	int r = rd_u64(c, what, &n);

	if (r)
		return r;
	if (n > left(c))
		return ms_errf(c->err, -EBADMSG,
			       "gguf: %s at byte %zu: length %" PRIu64 " exceeds the %zu bytes left in the file",
			       what, c->pos - 8, n, left(c));
	s->p = (const char *)c->base + c->pos;
	s->n = n;
	c->pos += (size_t)n;
	return 0;
}

/* Sign- or zero-extends a fixed-size scalar into the value union. */
static int decode_scalar(struct cur *c, uint32_t type, struct gguf_value *val, const char *key)
{
	size_t n = ms_gguf_vtype_size(type);
	uint64_t raw = 0;
	float f32;
	int r;

	if (!n)
		return ms_errf(c->err, -EBADMSG, "gguf: key '%s': unknown value type %" PRIu32,
			       key, type);
	if ((r = need(c, n, "a value")))
		return r;
	/* On a little-endian host the n file bytes are the low bytes of raw. */
	memcpy(&raw, c->base + c->pos, n);
	/* Anything but 0/1 means the writer and reader disagree on the layout. */
	if (type == GGUF_BOOL && raw > 1)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: key '%s': bool value %" PRIu64 " is neither 0 nor 1",
			       key, raw);
	switch (type) {
	case GGUF_BOOL:
	case GGUF_U8:
	case GGUF_U16:
	case GGUF_U32:
	case GGUF_U64:
		val->v.u = raw;
		break;
	case GGUF_I8:
		val->v.i = (int8_t)(uint8_t)raw;
		break;
	case GGUF_I16:
		val->v.i = (int16_t)(uint16_t)raw;
		break;
	case GGUF_I32:
		val->v.i = (int32_t)(uint32_t)raw;
		break;
	case GGUF_I64:
		val->v.i = (int64_t)raw;
		break;
	case GGUF_F32:
		memcpy(&f32, &raw, 4);
		val->v.f = (double)f32;
		break;
	case GGUF_F64:
		memcpy(&val->v.f, &raw, 8);
		break;
	}
	c->pos += n;
	return 0;
}

static int rd_array(struct cur *c, struct gguf_arr *a, const char *key)
{
	uint32_t et;
	uint64_t n, i;
	size_t esz;
	int r;

	if ((r = rd_u32(c, "an array element type", &et)) ||
	    (r = rd_u64(c, "an array count", &n)))
		return r;
	if (et == GGUF_ARRAY)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: key '%s': nested array (element type array) is not supported", key);
	esz = ms_gguf_vtype_size(et);
	if (et == GGUF_STRING)
		esz = 8;	/* the smallest string: its length prefix */
	else if (!esz)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: key '%s': unknown array element type %" PRIu32, key, et);
	/* Dividing instead of multiplying keeps a count of 2^63 from wrapping. */
	if (n > left(c) / esz)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: key '%s': array count %" PRIu64 " of %s (%zu bytes each at least) exceeds the %zu bytes left",
			       key, n, vtype_name(et), esz, left(c));
	a->type = et;
	a->n = n;
	a->data = c->base + c->pos;
	if (et != GGUF_STRING) {
		c->pos += (size_t)n * esz;
		return 0;
	}
	/* Walked once here so that ms_gguf_arr_str never needs a bound. */
	for (i = 0; i < n; i++) {
		uint64_t len;

		if ((r = rd_u64(c, "a string array element length", &len)))
			return r;
		if (len > left(c))
			return ms_errf(c->err, -EBADMSG,
				       "gguf: key '%s': array element %" PRIu64 ": string length %" PRIu64 " exceeds the %zu bytes left",
				       key, i, len, left(c));
		c->pos += (size_t)len;
	}
	return 0;
}

static int rd_kv(struct cur *c, uint64_t idx, struct gguf_kv *kv)
{
	char kb[SHOW_MAX + 4];
	uint32_t type;
	int r;

	if ((r = rd_str(c, "a key", &kv->key)))
		return r;
	if (!kv->key.n)
		return ms_errf(c->err, -EBADMSG, "gguf: kv %" PRIu64 " at byte %zu: empty key",
			       idx, c->pos - 8);
	show(kv->key.p, kv->key.n, kb);
	if ((r = rd_u32(c, "a value type", &type)))
		return r;
	kv->val.type = type;
	switch (type) {
	case GGUF_STRING:
		return rd_str(c, "a string value", &kv->val.v.s);
	case GGUF_ARRAY:
		return rd_array(c, &kv->val.v.a, kb);
	default:
		return decode_scalar(c, type, &kv->val, kb);
	}
}

static int cmp_kv(const void *a, const void *b)
{
	const struct gguf_kv *x = *(const struct gguf_kv *const *)a;
	const struct gguf_kv *y = *(const struct gguf_kv *const *)b;
	size_t n = x->key.n < y->key.n ? (size_t)x->key.n : (size_t)y->key.n;
	int d = memcmp(x->key.p, y->key.p, n);

	if (d)
		return d;
	return (x->key.n > y->key.n) - (x->key.n < y->key.n);
}

static int cmp_tensor(const void *a, const void *b)
{
	const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a;
	const struct gguf_tensor *y = *(const struct gguf_tensor *const *)b;

	return strcmp(x->name, y->name);
}

/*
 * Sorting a copy makes the duplicate check O(n log n): a quadratic scan
 * over a file crafted with millions of tiny kvs would stall start-up.
 */
static int check_dup_keys(struct gguf *g, ms_err *err)
{
	const struct gguf_kv **v;
	char kb[SHOW_MAX + 4];
	uint64_t i;
	int r = 0;

	if (g->n_kv < 2)
		return 0;
	v = malloc((size_t)g->n_kv * sizeof(*v));
	if (!v)
		return ms_errf(err, -ENOMEM, "gguf: out of memory checking %" PRIu64 " keys",
			       g->n_kv);
	for (i = 0; i < g->n_kv; i++)
		v[i] = &g->kv[i];
	qsort(v, (size_t)g->n_kv, sizeof(*v), cmp_kv);
	for (i = 1; i < g->n_kv; i++)
		if (!cmp_kv(&v[i - 1], &v[i])) {
			r = ms_errf(err, -EBADMSG, "gguf: duplicate key '%s'",
				    show(v[i]->key.p, v[i]->key.n, kb));
			break;
		}
	free(v);
	return r;
}

static int check_dup_names(struct gguf *g, ms_err *err)
{
	const struct gguf_tensor **v;
	uint64_t i;
	int r = 0;

	if (g->n_tensors < 2)
		return 0;
	v = malloc((size_t)g->n_tensors * sizeof(*v));
	if (!v)
		return ms_errf(err, -ENOMEM, "gguf: out of memory checking %" PRIu64 " tensor names",
			       g->n_tensors);
	for (i = 0; i < g->n_tensors; i++)
		v[i] = &g->tensors[i];
	qsort(v, (size_t)g->n_tensors, sizeof(*v), cmp_tensor);
	for (i = 1; i < g->n_tensors; i++)
		if (!strcmp(v[i - 1]->name, v[i]->name)) {
			r = ms_errf(err, -EBADMSG, "gguf: duplicate tensor name '%s'", v[i]->name);
			break;
		}
	free(v);
	return r;
}

static int read_alignment(struct gguf *g, ms_err *err)
{
	const struct gguf_kv *kv = ms_gguf_find_kv(g, "general.alignment");
	uint64_t a;

	g->alignment = GGUF_DEFAULT_ALIGN;
	if (!kv)
		return 0;
	if (kv->val.type != GGUF_U32)
		return ms_errf(err, -EBADMSG,
			       "gguf: general.alignment is stored as %s, the format requires u32",
			       vtype_name(kv->val.type));
	a = kv->val.v.u;
	if (!a || (a & (a - 1)))
		return ms_errf(err, -EBADMSG,
			       "gguf: general.alignment %" PRIu64 " is not a power of two", a);
	if (a > GGUF_MAX_ALIGN)
		return ms_errf(err, -EBADMSG,
			       "gguf: general.alignment %" PRIu64 " exceeds the maximum %u",
			       a, GGUF_MAX_ALIGN);
	g->alignment = (uint32_t)a;
	return 0;
}

/* Reads one tensor info and derives its byte size; bounds come later, once the data section is known. */
static int rd_tensor(struct cur *c, uint64_t idx, uint32_t align, struct gguf_tensor *t)
{
	const struct ggml_type_info *ti;
	struct gguf_str name;
	uint64_t nel, rows, row_bytes;
	char nb[SHOW_MAX + 4];
	uint32_t d;
	int r;

	if ((r = rd_str(c, "a tensor name", &name)))
		return r;
	if (!name.n)
		return ms_errf(c->err, -EBADMSG, "gguf: tensor %" PRIu64 ": empty name", idx);
	if (name.n > GGUF_MAX_NAME)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor %" PRIu64 " '%s': name of %" PRIu64 " bytes exceeds the limit of %d",
			       idx, show(name.p, name.n, nb), name.n, GGUF_MAX_NAME);
	/* An embedded NUL would make two distinct names compare equal as C strings. */
	if (memchr(name.p, '\0', (size_t)name.n))
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor %" PRIu64 " '%s': name contains a NUL byte",
			       idx, show(name.p, name.n, nb));
	memcpy(t->name, name.p, (size_t)name.n);
	t->name[name.n] = '\0';
	show(t->name, name.n, nb);

	if ((r = rd_u32(c, "a tensor n_dims", &t->n_dims)))
		return r;
	if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor '%s': n_dims %" PRIu32 " is not in 1..%d",
			       nb, t->n_dims, GGUF_MAX_DIMS);
	nel = 1;
	for (d = 0; d < GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d >= t->n_dims)
			continue;
		if ((r = rd_u64(c, "a tensor dimension", &t->ne[d])))
			return r;
		/* ggml keeps dimensions in int64_t: above INT64_MAX they go negative. */
		if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
			return ms_errf(c->err, -EBADMSG,
				       "gguf: tensor '%s': dimension %" PRIu32 " is %" PRIu64 ", not in 1..INT64_MAX",
				       nb, d, t->ne[d]);
		if (__builtin_mul_overflow(nel, t->ne[d], &nel) || nel > INT64_MAX)
			return ms_errf(c->err, -EBADMSG,
				       "gguf: tensor '%s': element count overflows at dimension %" PRIu32 " (%" PRIu64 ")",
				       nb, d, t->ne[d]);
	}

	if ((r = rd_u32(c, "a tensor type", &t->type)))
		return r;
	ti = ms_ggml_type_get(t->type);
	if (!ti)
		return ms_errf(c->err, -EBADMSG, "gguf: tensor '%s': unknown ggml type %" PRIu32,
			       nb, t->type);
	if (t->ne[0] % ti->blck)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor '%s': ne[0] = %" PRIu64 " is not a multiple of the %s block size %" PRIu32,
			       nb, t->ne[0], ti->name, ti->blck);
	if (ms_ggml_row_bytes(t->type, t->ne[0], &row_bytes))
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor '%s': byte size of a row of %" PRIu64 " %s elements overflows 64 bits",
			       nb, t->ne[0], ti->name);
	rows = nel / t->ne[0];
	if (__builtin_mul_overflow(row_bytes, rows, &t->nbytes))
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor '%s': byte size %" PRIu64 " x %" PRIu64 " rows overflows 64 bits",
			       nb, row_bytes, rows);

	if ((r = rd_u64(c, "a tensor offset", &t->offset)))
		return r;
	if (t->offset % align)
		return ms_errf(c->err, -EBADMSG,
			       "gguf: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
			       nb, t->offset, align);
	return 0;
}

struct span {
	uint64_t start, end;
	const struct gguf_tensor *t;
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	return (x->start > y->start) - (x->start < y->start);
}

/* Every tensor inside the file and none overlapping: caught here instead of as SIGBUS or garbage later. */
static int place_tensors(struct gguf *g, ms_err *err)
{
	uint64_t i, data_size;
	struct span *s;
	int r = 0;

	data_size = g->data_offset <= g->size ? g->size - g->data_offset : 0;
	for (i = 0; i < g->n_tensors; i++) {
		struct gguf_tensor *t = &g->tensors[i];
		uint64_t start, end;

		if (__builtin_add_overflow(g->data_offset, t->offset, &start) ||
		    __builtin_add_overflow(start, t->nbytes, &end))
			return ms_errf(err, -EBADMSG,
				       "gguf: tensor '%s': offset %" PRIu64 " + %" PRIu64 " bytes overflows 64 bits",
				       t->name, t->offset, t->nbytes);
		if (start >= g->size)
			return ms_errf(err, -EBADMSG,
				       "gguf: tensor '%s': offset %" PRIu64 " lies beyond the end of the file (data section holds %" PRIu64 " bytes; truncated download?)",
				       t->name, t->offset, data_size);
		if (end > g->size)
			return ms_errf(err, -EBADMSG,
				       "gguf: tensor '%s': needs %" PRIu64 " bytes at offset %" PRIu64 " but the file ends %" PRIu64 " bytes short (truncated download?)",
				       t->name, t->nbytes, t->offset, end - g->size);
		t->data = g->base + start;
	}
	if (g->n_tensors < 2)
		return 0;

	s = malloc((size_t)g->n_tensors * sizeof(*s));
	if (!s)
		return ms_errf(err, -ENOMEM, "gguf: out of memory checking %" PRIu64 " tensors for overlap",
			       g->n_tensors);
	for (i = 0; i < g->n_tensors; i++) {
		s[i].start = g->tensors[i].offset;
		s[i].end = g->tensors[i].offset + g->tensors[i].nbytes;
		s[i].t = &g->tensors[i];
	}
	qsort(s, (size_t)g->n_tensors, sizeof(*s), cmp_span);
	for (i = 1; i < g->n_tensors; i++)
		if (s[i].start < s[i - 1].end) {
			r = ms_errf(err, -EBADMSG,
				    "gguf: tensors '%s' (offset %" PRIu64 ") and '%s' (offset %" PRIu64 ") overlap",
				    s[i - 1].t->name, s[i - 1].start, s[i].t->name, s[i].start);
			break;
		}
	free(s);
	return r;
}

static int parse(struct gguf *g, ms_err *err)
{
	struct cur c = { .base = g->base, .size = g->size, .pos = 0, .err = err };
	uint32_t magic;
	uint64_t i, kv_bytes, pad;
	int r;

	if (!g->size)
		return ms_errf(err, -EBADMSG, "gguf: empty file");
	if ((r = rd_u32(&c, "the header magic", &magic)))
		return r;
	if (magic != GGUF_MAGIC)
		return ms_errf(err, -EBADMSG,
			       "gguf: bad magic 0x%08" PRIx32 " (expected 0x%08x, \"GGUF\"): not a GGUF file",
			       magic, GGUF_MAGIC);
	if ((r = rd_u32(&c, "the header version", &g->version)))
		return r;
	if (g->version == 1)
		return ms_errf(err, -EBADMSG,
			       "gguf: version 1 is obsolete; convert the model again with a current llama.cpp");
	if (g->version != 2 && g->version != 3) {
		if (__builtin_bswap32(g->version) == 2 || __builtin_bswap32(g->version) == 3)
			return ms_errf(err, -EBADMSG,
				       "gguf: version %" PRIu32 " looks like a big-endian file, which is unsupported",
				       g->version);
		return ms_errf(err, -EBADMSG,
			       "gguf: version %" PRIu32 " is unsupported (this reader knows 2 and 3)",
			       g->version);
	}
	if ((r = rd_u64(&c, "the header tensor_count", &g->n_tensors)) ||
	    (r = rd_u64(&c, "the header kv_count", &g->n_kv)))
		return r;

	/* Both arrays below are sized by these counts, so the file must be able to hold them. */
	if (g->n_kv > left(&c) / KV_MIN_BYTES)
		return ms_errf(err, -EBADMSG,
			       "gguf: kv_count %" PRIu64 " cannot fit in the %zu bytes left (at most %zu kvs)",
			       g->n_kv, left(&c), left(&c) / KV_MIN_BYTES);
	if (g->n_tensors > left(&c) / TI_MIN_BYTES)
		return ms_errf(err, -EBADMSG,
			       "gguf: tensor_count %" PRIu64 " cannot fit in the %zu bytes left (at most %zu tensor infos)",
			       g->n_tensors, left(&c), left(&c) / TI_MIN_BYTES);
	kv_bytes = g->n_kv * KV_MIN_BYTES;
	if (g->n_tensors > (left(&c) - kv_bytes) / TI_MIN_BYTES)
		return ms_errf(err, -EBADMSG,
			       "gguf: tensor_count %" PRIu64 " and kv_count %" PRIu64 " cannot both fit in the %zu bytes left",
			       g->n_tensors, g->n_kv, left(&c));

	if (g->n_kv) {
		g->kv = calloc((size_t)g->n_kv, sizeof(*g->kv));
		if (!g->kv)
			return ms_errf(err, -ENOMEM, "gguf: out of memory for %" PRIu64 " kvs", g->n_kv);
	}
	for (i = 0; i < g->n_kv; i++)
		if ((r = rd_kv(&c, i, &g->kv[i])))
			return r;
	if ((r = check_dup_keys(g, err)) || (r = read_alignment(g, err)))
		return r;

	if (g->n_tensors) {
		g->tensors = calloc((size_t)g->n_tensors, sizeof(*g->tensors));
		if (!g->tensors)
			return ms_errf(err, -ENOMEM, "gguf: out of memory for %" PRIu64 " tensor infos",
				       g->n_tensors);
	}
	for (i = 0; i < g->n_tensors; i++)
		if ((r = rd_tensor(&c, i, g->alignment, &g->tensors[i])))
			return r;
	if ((r = check_dup_names(g, err)))
		return r;

	/*
	 * A vocab-only file may end right after its kvs without the padding;
	 * data_offset may then exceed size, which is harmless with no tensors.
	 */
	pad = (g->alignment - c.pos % g->alignment) % g->alignment;
	if (__builtin_add_overflow((uint64_t)c.pos, pad, &g->data_offset))
		return ms_errf(err, -EBADMSG, "gguf: data section offset overflows");
	return place_tensors(g, err);
}

static int open_common(const void *buf, size_t size, bool mapped, struct gguf **out, ms_err *err)
{
	struct gguf *g;
	int r;

	g = calloc(1, sizeof(*g));
	if (!g)
		return ms_errf(err, -ENOMEM, "gguf: out of memory");
	g->base = buf;
	g->size = size;
	r = parse(g, err);
	if (r) {
		/* g->mapped is still false: the mapping stays with the caller on failure. */
		ms_gguf_close(g);
		return r;
	}
	g->mapped = mapped;
	*out = g;
	return 0;
}

int ms_gguf_open_mem(const void *buf, size_t size, struct gguf **out, ms_err *err)
{
	if (!buf && size)
		return ms_errf(err, -EINVAL, "gguf: NULL buffer of %zu bytes", size);
	return open_common(buf, size, false, out, err);
}

int ms_gguf_open(const char *path, struct gguf **out, ms_err *err)
{
	struct stat st;
	char eb[128];
	void *p;
	int fd, r, e;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		return ms_errf(err, -e, "gguf: cannot open '%s': %s", path,
			       strerror_r(e, eb, sizeof(eb)));
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		return ms_errf(err, -e, "gguf: cannot stat '%s': %s", path,
			       strerror_r(e, eb, sizeof(eb)));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return ms_errf(err, -EISDIR, "gguf: '%s' is a directory", path);
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return ms_errf(err, -EINVAL, "gguf: '%s' is not a regular file", path);
	}
	if (st.st_size == 0) {
		close(fd);
		return ms_errf(err, -EBADMSG, "gguf: '%s' is an empty file", path);
	}
#if SIZE_MAX < UINT64_MAX
	if ((uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return ms_errf(err, -EFBIG, "gguf: '%s' (%jd bytes) does not fit in the address space",
			       path, (intmax_t)st.st_size);
	}
#endif
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	e = errno;
	/* The mapping keeps the file alive; the descriptor is no longer needed. */
	close(fd);
	if (p == MAP_FAILED)
		return ms_errf(err, -e, "gguf: cannot map '%s' (%jd bytes): %s", path,
			       (intmax_t)st.st_size, strerror_r(e, eb, sizeof(eb)));
	r = open_common(p, (size_t)st.st_size, true, out, err);
	if (r)
		munmap(p, (size_t)st.st_size);
	return r;
}

void ms_gguf_close(struct gguf *g)
{
	if (!g)
		return;
	if (g->mapped)
		munmap((void *)g->base, g->size);
	free(g->kv);
	free(g->tensors);
	free(g);
}

const struct gguf_kv *ms_gguf_find_kv(const struct gguf *g, const char *key)
{
	size_t n = strlen(key);
	uint64_t i;

	for (i = 0; i < g->n_kv; i++)
		if (g->kv[i].key.n == n && !memcmp(g->kv[i].key.p, key, n))
			return &g->kv[i];
	return NULL;
}

const struct gguf_tensor *ms_gguf_find_tensor(const struct gguf *g, const char *name)
{
	uint64_t i;

	for (i = 0; i < g->n_tensors; i++)
		if (!strcmp(g->tensors[i].name, name))
			return &g->tensors[i];
	return NULL;
}

static const struct gguf_kv *find_or_err(const struct gguf *g, const char *key, ms_err *err)
{
	const struct gguf_kv *kv = ms_gguf_find_kv(g, key);

	if (!kv)
		ms_errf(err, -ENOENT, "gguf: key '%s' not found", key);
	return kv;
}

static bool is_unsigned(uint32_t t)
{
	return t == GGUF_U8 || t == GGUF_U16 || t == GGUF_U32 || t == GGUF_U64;
}

static bool is_signed(uint32_t t)
{
	return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64;
}

int ms_gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out, ms_err *err)
{
	const struct gguf_kv *kv = find_or_err(g, key, err);
	uint64_t v;

	if (!kv)
		return -ENOENT;
	if (is_signed(kv->val.type)) {
		if (kv->val.v.i < 0)
			return ms_errf(err, -EINVAL, "gguf: key '%s': value %" PRId64 " is negative",
				       key, kv->val.v.i);
		v = (uint64_t)kv->val.v.i;
	} else if (is_unsigned(kv->val.type)) {
		v = kv->val.v.u;
	} else {
		return ms_errf(err, -EINVAL, "gguf: key '%s' is a %s, expected an integer",
			       key, vtype_name(kv->val.type));
	}
	if (v > UINT32_MAX)
		return ms_errf(err, -EINVAL, "gguf: key '%s': value %" PRIu64 " does not fit in 32 bits",
			       key, v);
	*out = (uint32_t)v;
	return 0;
}

int ms_gguf_get_f32(const struct gguf *g, const char *key, float *out, ms_err *err)
{
	const struct gguf_kv *kv = find_or_err(g, key, err);
	double f;

	if (!kv)
		return -ENOENT;
	if (kv->val.type != GGUF_F32 && kv->val.type != GGUF_F64)
		return ms_errf(err, -EINVAL, "gguf: key '%s' is a %s, expected f32",
			       key, vtype_name(kv->val.type));
	f = kv->val.v.f;
	/* A finite f64 beyond float range would silently become infinity. */
	if (isfinite(f) && (f > (double)FLT_MAX || f < -(double)FLT_MAX))
		return ms_errf(err, -EINVAL, "gguf: key '%s': value %g does not fit in f32", key, f);
	*out = (float)f;
	return 0;
}

int ms_gguf_get_bool(const struct gguf *g, const char *key, bool *out, ms_err *err)
{
	const struct gguf_kv *kv = find_or_err(g, key, err);
	uint32_t t;

	if (!kv)
		return -ENOENT;
	t = kv->val.type;
	if (t == GGUF_BOOL) {
		*out = kv->val.v.u != 0;
		return 0;
	}
	/* Some writers store flags as a byte; accept 0/1 only. */
	if (t == GGUF_U8 && kv->val.v.u <= 1) {
		*out = kv->val.v.u != 0;
		return 0;
	}
	if (t == GGUF_I8 && (kv->val.v.i == 0 || kv->val.v.i == 1)) {
		*out = kv->val.v.i != 0;
		return 0;
	}
	return ms_errf(err, -EINVAL, "gguf: key '%s' is a %s, expected bool", key, vtype_name(t));
}

int ms_gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out, ms_err *err)
{
	const struct gguf_kv *kv = find_or_err(g, key, err);

	if (!kv)
		return -ENOENT;
	if (kv->val.type != GGUF_STRING)
		return ms_errf(err, -EINVAL, "gguf: key '%s' is a %s, expected string",
			       key, vtype_name(kv->val.type));
	*out = kv->val.v.s;
	return 0;
}

int ms_gguf_get_arr(const struct gguf *g, const char *key, uint32_t elem_type,
		 struct gguf_arr *out, ms_err *err)
{
	const struct gguf_kv *kv = find_or_err(g, key, err);

	if (!kv)
		return -ENOENT;
	if (kv->val.type != GGUF_ARRAY)
		return ms_errf(err, -EINVAL, "gguf: key '%s' is a %s, expected an array of %s",
			       key, vtype_name(kv->val.type), vtype_name(elem_type));
	if (kv->val.v.a.type != elem_type)
		return ms_errf(err, -EINVAL, "gguf: key '%s' is an array of %s, expected %s",
			       key, vtype_name(kv->val.v.a.type), vtype_name(elem_type));
	*out = kv->val.v.a;
	return 0;
}

struct gguf_str ms_gguf_arr_str(const uint8_t **cursor)
{
	struct gguf_str s;

	memcpy(&s.n, *cursor, 8);
	s.p = (const char *)*cursor + 8;
	*cursor += 8 + s.n;
	return s;
}

float ms_gguf_arr_f32(const struct gguf_arr *a, uint64_t i)
{
	float f;

	memcpy(&f, a->data + i * 4, 4);
	return f;
}

int32_t ms_gguf_arr_i32(const struct gguf_arr *a, uint64_t i)
{
	int32_t v;

	memcpy(&v, a->data + i * 4, 4);
	return v;
}
