/* Unit tests for the GGUF reader: one hand-built file per corruption class, the real test files, truncation at every length. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "tap.h"

/* ---- a tiny GGUF writer with no validation, so that it can lie ---------- */

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->n + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (!b->p) {
			diag("out of memory");
			exit(99);
		}
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, d, n);
	b->n += n;
}

static void put_u8(struct buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(struct buf *b, float v) { put(b, &v, 4); }
static void put_f64(struct buf *b, double v) { put(b, &v, 8); }

static void put_str(struct buf *b, const char *s)
{
	put_u64(b, strlen(s));
	put(b, s, strlen(s));
}

static void zeros(struct buf *b, size_t n)
{
	while (n--)
		put_u8(b, 0);
}

static void pad_to(struct buf *b, size_t align)
{
	zeros(b, (align - b->n % align) % align);
}

static void hdr(struct buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	put_u32(b, GGUF_MAGIC);
	put_u32(b, version);
	put_u64(b, n_tensors);
	put_u64(b, n_kv);
}

static void key(struct buf *b, const char *k, uint32_t type)
{
	put_str(b, k);
	put_u32(b, type);
}

static void kv_u32(struct buf *b, const char *k, uint32_t v)
{
	key(b, k, GGUF_U32);
	put_u32(b, v);
}

static void kv_str(struct buf *b, const char *k, const char *v)
{
	key(b, k, GGUF_STRING);
	put_str(b, v);
}

static void tinfo(struct buf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
		  uint32_t type, uint64_t offset)
{
	uint32_t d;

	put_str(b, name);
	put_u32(b, n_dims);
	for (d = 0; d < n_dims && d < 8; d++)
		put_u64(b, ne[d]);
	put_u32(b, type);
	put_u64(b, offset);
}

/* One kv, one tensor with the given fields, then data_bytes of data after the 32-byte pad. */
static void one_tensor(struct buf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
		       uint32_t type, uint64_t offset, size_t data_bytes)
{
	hdr(b, 3, 1, 1);
	kv_str(b, "general.architecture", "llama");
	tinfo(b, name, n_dims, ne, type, offset);
	pad_to(b, 32);
	zeros(b, data_bytes);
}

/*
 * The happy-path file: every value type, arrays of three kinds, an F32 and
 * a Q8_0 tensor, and data padded to align (no general.alignment if 0). The
 * last tensor ends exactly at the end of the file, so that every shorter
 * prefix of it is invalid.
 */
#define GOOD_Q8_OFF 64
static size_t build_good(struct buf *b, uint32_t version, uint32_t align)
{
	uint32_t a = align ? align : GGUF_DEFAULT_ALIGN;
	size_t data_off, i;

	hdr(b, version, 2, align ? 13 : 12);
	kv_str(b, "general.architecture", "llama");
	if (align)
		kv_u32(b, "general.alignment", align);
	kv_u32(b, "llama.block_count", 5);
	key(b, "test.u8", GGUF_U8);
	put_u8(b, 200);
	key(b, "test.i32neg", GGUF_I32);
	put_u32(b, (uint32_t)-7);
	key(b, "test.u64big", GGUF_U64);
	put_u64(b, 1ull << 40);
	key(b, "test.i64", GGUF_I64);
	put_u64(b, 123);
	key(b, "test.f32", GGUF_F32);
	put_f32(b, 1.5f);
	key(b, "test.f64", GGUF_F64);
	put_f64(b, 0.25);
	key(b, "test.bool", GGUF_BOOL);
	put_u8(b, 1);
	key(b, "test.strs", GGUF_ARRAY);
	put_u32(b, GGUF_STRING);
	put_u64(b, 3);
	put_str(b, "a");
	put_str(b, "bc");
	put_str(b, "");
	key(b, "test.f32s", GGUF_ARRAY);
	put_u32(b, GGUF_F32);
	put_u64(b, 3);
	put_f32(b, 1.0f);
	put_f32(b, 2.0f);
	put_f32(b, 3.0f);
	key(b, "test.i32s", GGUF_ARRAY);
	put_u32(b, GGUF_I32);
	put_u64(b, 2);
	put_u32(b, (uint32_t)-1);
	put_u32(b, 5);

	tinfo(b, "tok", 2, (const uint64_t[]){ 4, 2 }, GGML_TYPE_F32, 0);
	tinfo(b, "q8", 1, (const uint64_t[]){ 64 }, GGML_TYPE_Q8_0, GOOD_Q8_OFF);
	pad_to(b, a);
	data_off = b->n;
	for (i = 0; i < 8; i++)
		put_f32(b, (float)i);
	zeros(b, GOOD_Q8_OFF - 32);
	for (i = 0; i < 68; i++)
		put_u8(b, (uint8_t)i);
	return data_off;
}

static void reset(struct buf *b)
{
	b->n = 0;
}

/* ---- expectations --------------------------------------------------------- */

static struct gguf sentinel_obj;
#define SENTINEL (&sentinel_obj)

/*
 * Parses an exactly-sized heap copy, so that ASan flags any read past the
 * end, and checks a clean rejection: the code, a reason with the telltale
 * word, and *out untouched.
 */
static void expect_fail(struct buf *b, int code, const char *word, const char *what)
{
	uint8_t *copy = malloc(b->n ? b->n : 1);
	struct gguf *g = SENTINEL;
	ms_err err = { 0 };
	int r;

	if (b->n)
		memcpy(copy, b->p, b->n);
	r = ms_gguf_open_mem(copy, b->n, &g, &err);
	ok(r == code && err.code == r && g == SENTINEL && err.msg[0] && strcasestr(err.msg, word),
	   "%s: %d \"%s\"", what, r, err.msg);
	if (g != SENTINEL)
		ms_gguf_close(g);
	free(copy);
	reset(b);
}

/* Same for a case that must parse, returning the result (caller closes). */
static struct gguf *expect_ok(struct buf *b, const char *what)
{
	struct gguf *g = NULL;
	ms_err err = { 0 };
	int r = ms_gguf_open_mem(b->p, b->n, &g, &err);

	ok(r == 0 && g, "%s parses (%d \"%s\")", what, r, err.msg);
	return r ? NULL : g;
}

static const char *tmp_dir(void)
{
	const char *d = getenv("TEST_TMPDIR");

	if (!d)
		d = getenv("TMPDIR");
	return d ? d : "/tmp";
}

/* Writes b to a fresh temporary file; returns its path in path[]. */
static int write_tmp(const struct buf *b, char *path, size_t len)
{
	int fd;

	snprintf(path, len, "%s/test_gguf.XXXXXX", tmp_dir());
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	if (b->n && write(fd, b->p, b->n) != (ssize_t)b->n) {
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

/* ---- happy path ------------------------------------------------------------- */

static void check_good(const struct gguf *g, size_t data_off, uint32_t align, uint64_t n_kv,
		       const char *what)
{
	const struct gguf_tensor *t;
	struct gguf_str s;
	struct gguf_arr a;
	const uint8_t *cur;
	uint32_t u;
	float f;
	bool bl;
	ms_err err = { 0 };
	int r;

	ok(g->alignment == align, "%s: alignment %u", what, g->alignment);
	ok(g->n_kv == n_kv && g->n_tensors == 2,
	   "%s: %" PRIu64 " kvs, %" PRIu64 " tensors", what, g->n_kv, g->n_tensors);
	ok(g->data_offset == data_off && g->data_offset % align == 0,
	   "%s: data section at %" PRIu64 " (expected %zu), aligned", what, g->data_offset, data_off);

	ok(ms_gguf_get_str(g, "general.architecture", &s, &err) == 0 && s.n == 5 &&
	   !memcmp(s.p, "llama", 5), "%s: get_str", what);
	ok(ms_gguf_get_u32(g, "llama.block_count", &u, &err) == 0 && u == 5, "%s: get_u32 u32", what);
	ok(ms_gguf_get_u32(g, "test.u8", &u, &err) == 0 && u == 200, "%s: get_u32 from u8", what);
	ok(ms_gguf_get_u32(g, "test.i64", &u, &err) == 0 && u == 123, "%s: get_u32 from i64", what);
	u = 77;
	r = ms_gguf_get_u32(g, "test.i32neg", &u, &err);
	ok(r == -EINVAL && strstr(err.msg, "negative") && u == 77, "%s: get_u32 of -7: %s", what, err.msg);
	r = ms_gguf_get_u32(g, "test.u64big", &u, &err);
	ok(r == -EINVAL && strstr(err.msg, "32 bits") && u == 77, "%s: get_u32 of 2^40: %s", what, err.msg);
	r = ms_gguf_get_u32(g, "general.architecture", &u, &err);
	ok(r == -EINVAL && strstr(err.msg, "string"), "%s: get_u32 of a string: %s", what, err.msg);
	r = ms_gguf_get_u32(g, "no.such.key", &u, &err);
	ok(r == -ENOENT && strstr(err.msg, "no.such.key"), "%s: get_u32 absent: %s", what, err.msg);
	ok(ms_gguf_get_f32(g, "test.f32", &f, &err) == 0 && f == 1.5f, "%s: get_f32 f32", what);
	ok(ms_gguf_get_f32(g, "test.f64", &f, &err) == 0 && f == 0.25f, "%s: get_f32 from f64", what);
	ok(ms_gguf_get_f32(g, "llama.block_count", &f, &err) == -EINVAL, "%s: get_f32 of a u32: %s", what, err.msg);
	ok(ms_gguf_get_bool(g, "test.bool", &bl, &err) == 0 && bl, "%s: get_bool", what);
	ok(ms_gguf_get_bool(g, "test.i64", &bl, &err) == -EINVAL, "%s: get_bool of an i64: %s", what, err.msg);
	ok(ms_gguf_get_str(g, "test.bool", &s, &err) == -EINVAL, "%s: get_str of a bool: %s", what, err.msg);

	r = ms_gguf_get_arr(g, "test.strs", GGUF_STRING, &a, &err);
	ok(r == 0 && a.type == GGUF_STRING && a.n == 3, "%s: string array", what);
	if (!r) {
		struct gguf_str e0, e1, e2;

		cur = a.data;
		e0 = ms_gguf_arr_str(&cur);
		e1 = ms_gguf_arr_str(&cur);
		e2 = ms_gguf_arr_str(&cur);
		ok(e0.n == 1 && e0.p[0] == 'a' && e1.n == 2 && !memcmp(e1.p, "bc", 2) && e2.n == 0,
		   "%s: string array elements", what);
	} else {
		skip("%s: no string array", what);
	}
	r = ms_gguf_get_arr(g, "test.f32s", GGUF_F32, &a, &err);
	ok(r == 0 && a.n == 3 && ms_gguf_arr_f32(&a, 0) == 1.0f && ms_gguf_arr_f32(&a, 2) == 3.0f,
	   "%s: f32 array", what);
	r = ms_gguf_get_arr(g, "test.i32s", GGUF_I32, &a, &err);
	ok(r == 0 && a.n == 2 && ms_gguf_arr_i32(&a, 0) == -1 && ms_gguf_arr_i32(&a, 1) == 5,
	   "%s: i32 array", what);
	r = ms_gguf_get_arr(g, "test.f32s", GGUF_I32, &a, &err);
	ok(r == -EINVAL && strstr(err.msg, "f32"), "%s: array of the wrong element type: %s", what, err.msg);
	r = ms_gguf_get_arr(g, "test.f32", GGUF_F32, &a, &err);
	ok(r == -EINVAL, "%s: get_arr of a scalar: %s", what, err.msg);

	t = ms_gguf_find_tensor(g, "tok");
	ok(t && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 2 && t->ne[2] == 1 && t->ne[3] == 1 &&
	   t->type == GGML_TYPE_F32 && t->nbytes == 32 && t->offset == 0,
	   "%s: tensor 'tok' shape, type, size", what);
	if (t) {
		float v[8];

		memcpy(v, t->data, sizeof(v));
		ok(t->data == g->base + g->data_offset && v[0] == 0.0f && v[7] == 7.0f,
		   "%s: tensor 'tok' data", what);
	} else {
		skip("%s: no tensor 'tok'", what);
	}
	t = ms_gguf_find_tensor(g, "q8");
	ok(t && t->n_dims == 1 && t->ne[0] == 64 && t->ne[1] == 1 && t->type == GGML_TYPE_Q8_0 &&
	   t->nbytes == 68 && t->data == g->base + g->data_offset + GOOD_Q8_OFF &&
	   ((const uint8_t *)t->data)[67] == 67,
	   "%s: tensor 'q8' shape, size, data", what);
	ok(!ms_gguf_find_tensor(g, "q") && !ms_gguf_find_tensor(g, "q8x") && !ms_gguf_find_kv(g, "test"),
	   "%s: lookups of absent names", what);
}

static void test_good(void)
{
	struct buf b = { 0 };
	struct gguf *g;
	char path[4096];
	ms_err err = { 0 };
	size_t off;
	int r;

	off = build_good(&b, 3, 0);
	g = expect_ok(&b, "good file, default alignment");
	if (g) {
		ok(!g->mapped && g->version == 3, "good file: not mapped, version 3");
		check_good(g, off, GGUF_DEFAULT_ALIGN, 12, "good file, default alignment");
	}
	ms_gguf_close(g);

	/* 64 pads the data section differently from 32 for this header */
	reset(&b);
	off = build_good(&b, 3, 64);
	g = expect_ok(&b, "good file, alignment 64");
	if (g)
		check_good(g, off, 64, 13, "good file, alignment 64");
	ms_gguf_close(g);

	reset(&b);
	off = build_good(&b, 2, 0);
	g = expect_ok(&b, "version 2 file");
	ok(g && g->version == 2, "version 2 is reported");
	ms_gguf_close(g);

	/* the same through ms_gguf_open: mmap, descriptor closed */
	reset(&b);
	off = build_good(&b, 3, 64);
	if (write_tmp(&b, path, sizeof(path)) == 0) {
		g = NULL;
		r = ms_gguf_open(path, &g, &err);
		ok(r == 0 && g && g->mapped, "ms_gguf_open of the good file (%d \"%s\")", r, err.msg);
		if (g)
			check_good(g, off, 64, 13, "ms_gguf_open");
		ms_gguf_close(g);
		unlink(path);
	} else {
		skip("cannot write a temporary file in %s", tmp_dir());
	}
	free(b.p);
}

/* ---- reliability.md section A ----------------------------------------------- */

static void test_header(void)
{
	struct buf b = { 0 };
	struct gguf *g;
	char path[4096];
	ms_err err = { 0 };
	int r;

	/* A1: magic, version, empty, cut short */
	put_u32(&b, 0x46554746); put_u32(&b, 3); put_u64(&b, 0); put_u64(&b, 0);
	expect_fail(&b, -EBADMSG, "magic", "A1 bad magic");
	hdr(&b, 1, 0, 0);
	expect_fail(&b, -EBADMSG, "obsolete", "A1 version 1");
	hdr(&b, 4, 0, 0);
	expect_fail(&b, -EBADMSG, "unsupported", "A1 version 4");
	hdr(&b, 0x03000000, 0, 0);
	expect_fail(&b, -EBADMSG, "big-endian", "A1 big-endian version 3");
	expect_fail(&b, -EBADMSG, "empty", "A1 empty buffer");
	hdr(&b, 3, 0, 0);
	b.n = 10;
	expect_fail(&b, -EBADMSG, "short", "A1 header cut short");
	put(&b, "GG", 2);
	expect_fail(&b, -EBADMSG, "short", "A1 two-byte file");

	reset(&b);
	if (write_tmp(&b, path, sizeof(path)) == 0) {
		g = SENTINEL;
		r = ms_gguf_open(path, &g, &err);
		ok(r == -EBADMSG && g == SENTINEL && strstr(err.msg, "empty"),
		   "A1 empty file via ms_gguf_open: %d \"%s\"", r, err.msg);
		unlink(path);
	} else {
		skip("cannot write a temporary file in %s", tmp_dir());
	}

	g = SENTINEL;
	r = ms_gguf_open("/nonexistent/dir/model.gguf", &g, &err);
	ok(r == -ENOENT && g == SENTINEL && strstr(err.msg, "/nonexistent/dir/model.gguf"),
	   "nonexistent path: %d \"%s\"", r, err.msg);
	r = ms_gguf_open(tmp_dir(), &g, &err);
	ok(r == -EISDIR && g == SENTINEL, "directory: %d \"%s\"", r, err.msg);
	r = ms_gguf_open("/dev/null", &g, &err);
	ok(r < 0 && g == SENTINEL && err.msg[0], "/dev/null: %d \"%s\"", r, err.msg);

	/* a version 3 header with nothing after it is a valid empty file */
	hdr(&b, 3, 0, 0);
	g = expect_ok(&b, "bare header");
	ok(g && g->n_kv == 0 && g->n_tensors == 0 && g->alignment == GGUF_DEFAULT_ALIGN,
	   "bare header: no kvs, no tensors, default alignment");
	ms_gguf_close(g);
	free(b.p);
}

/* A1: every prefix of a valid file fails cleanly, none reads past its end. */
static void test_truncation(void)
{
	struct buf b = { 0 };
	size_t len, bad = 0, bad_len = 0;
	char path[4096];
	ms_err err = { 0 };

	build_good(&b, 3, 64);
	for (len = 0; len < b.n; len++) {
		uint8_t *copy = malloc(len ? len : 1);
		struct gguf *g = SENTINEL;
		int r;

		memcpy(copy, b.p, len);
		err.msg[0] = '\0';
		r = ms_gguf_open_mem(copy, len, &g, &err);
		if (r != -EBADMSG || g != SENTINEL || !err.msg[0]) {
			if (!bad++)
				bad_len = len;
			if (g != SENTINEL)
				ms_gguf_close(g);
		}
		free(copy);
	}
	ok(bad == 0, "A1 every one of %zu prefixes rejected (%zu accepted, first at %zu)",
	   b.n, bad, bad_len);

	/* a truncated download, seen through ms_gguf_open */
	b.n -= 10;
	if (write_tmp(&b, path, sizeof(path)) == 0) {
		struct gguf *g = SENTINEL;
		int r = ms_gguf_open(path, &g, &err);

		ok(r == -EBADMSG && g == SENTINEL && strstr(err.msg, "'q8'") &&
		   strstr(err.msg, "10 bytes short") && strstr(err.msg, "truncated"),
		   "A10 truncated file via ms_gguf_open: \"%s\"", err.msg);
		unlink(path);
	} else {
		skip("cannot write a temporary file in %s", tmp_dir());
	}
	free(b.p);
}

static void test_counts(void)
{
	struct buf b = { 0 };

	/* A2 */
	hdr(&b, 3, UINT64_MAX, 0);
	expect_fail(&b, -EBADMSG, "tensor_count", "A2 tensor_count 2^64-1");
	hdr(&b, 3, 0, UINT64_MAX);
	expect_fail(&b, -EBADMSG, "kv_count", "A2 kv_count 2^64-1");
	hdr(&b, 3, 0, 3);
	kv_str(&b, "general.name", "a name long enough that three kvs would fit the bound");
	kv_str(&b, "general.url", "https://example.invalid/another/long/enough/value");
	expect_fail(&b, -EBADMSG, "short", "A2 kv_count 3 with 2 kvs present");
	hdr(&b, 3, 0, 5);
	zeros(&b, 4 * (8 + 1 + 4 + 1));
	expect_fail(&b, -EBADMSG, "kv_count", "A2 kv_count one more than the bytes can hold");
	hdr(&b, 3, 2, 0);
	tinfo(&b, "t", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0);
	expect_fail(&b, -EBADMSG, "tensor_count", "A2 tensor_count 2 with one tensor info");
	hdr(&b, 3, 1, 2);
	zeros(&b, 2 * 14 + 32);
	expect_fail(&b, -EBADMSG, "both", "A2 kv_count and tensor_count fit alone but not together");

	/* A3 */
	hdr(&b, 3, 0, 1);
	put_u64(&b, UINT64_MAX);
	zeros(&b, 16);
	expect_fail(&b, -EBADMSG, "length", "A3 key length 2^64-1");
	hdr(&b, 3, 0, 1);
	put_u64(&b, 100);
	put(&b, "general.name", 12);
	put_u32(&b, GGUF_U8);
	put_u8(&b, 0);
	expect_fail(&b, -EBADMSG, "length", "A3 key length larger than the bytes left");
	hdr(&b, 3, 0, 1);
	put_u64(&b, 0);
	put_u32(&b, GGUF_U32);
	put_u32(&b, 1);
	expect_fail(&b, -EBADMSG, "empty key", "A3 empty key");
	hdr(&b, 3, 0, 1);
	key(&b, "general.name", GGUF_STRING);
	put_u64(&b, 100);
	put(&b, "llama", 5);
	expect_fail(&b, -EBADMSG, "length", "A3 string value length larger than the bytes left");
	hdr(&b, 3, 0, 1);
	key(&b, "general.name", GGUF_STRING);
	put_u64(&b, UINT64_MAX);
	put(&b, "llama", 5);
	expect_fail(&b, -EBADMSG, "length", "A3 string value length 2^64-1");

	/* A4 */
	hdr(&b, 3, 0, 1);
	key(&b, "arr", GGUF_ARRAY);
	put_u32(&b, GGUF_U32);
	put_u64(&b, 1ull << 63);
	zeros(&b, 16);
	expect_fail(&b, -EBADMSG, "count", "A4 array count 2^63");
	hdr(&b, 3, 0, 1);
	key(&b, "arr", GGUF_ARRAY);
	put_u32(&b, GGUF_U64);
	put_u64(&b, 1ull << 61);	/* x 8 wraps to 0 in 64 bits */
	zeros(&b, 16);
	expect_fail(&b, -EBADMSG, "count", "A4 array count 2^61 of u64 (product wraps)");
	hdr(&b, 3, 0, 1);
	key(&b, "arr", GGUF_ARRAY);
	put_u32(&b, GGUF_U32);
	put_u64(&b, 100);
	zeros(&b, 4 * 99);
	expect_fail(&b, -EBADMSG, "count", "A4 array count x element size larger than the bytes left");
	hdr(&b, 3, 0, 1);
	key(&b, "arr", GGUF_ARRAY);
	put_u32(&b, GGUF_STRING);
	put_u64(&b, UINT64_MAX);
	zeros(&b, 16);
	expect_fail(&b, -EBADMSG, "count", "A4 string array count 2^64-1");
	hdr(&b, 3, 0, 1);
	key(&b, "tokenizer.ggml.tokens", GGUF_ARRAY);
	put_u32(&b, GGUF_STRING);
	put_u64(&b, 3);
	put_str(&b, "a");
	put_u64(&b, 1000);	/* the lying element */
	put(&b, "bc", 2);
	put_str(&b, "d");
	expect_fail(&b, -EBADMSG, "element 1", "A4 string array with one lying length");
	hdr(&b, 3, 0, 1);
	key(&b, "tokenizer.ggml.tokens", GGUF_ARRAY);
	put_u32(&b, GGUF_STRING);
	put_u64(&b, 3);
	put_str(&b, "abcdefgh");
	put_str(&b, "b");
	expect_fail(&b, -EBADMSG, "short", "A4 string array with an element missing");
	free(b.p);
}

static void test_types_and_dups(void)
{
	struct buf b = { 0 };
	struct gguf *g;

	/* A5 */
	hdr(&b, 3, 0, 1);
	key(&b, "x", 13);
	put_u64(&b, 0);
	expect_fail(&b, -EBADMSG, "unknown value type", "A5 unknown value type 13");
	hdr(&b, 3, 0, 1);
	key(&b, "x", 0xFFFFFFFF);
	put_u64(&b, 0);
	expect_fail(&b, -EBADMSG, "unknown value type", "A5 unknown value type 0xFFFFFFFF");
	hdr(&b, 3, 0, 1);
	key(&b, "x", GGUF_ARRAY);
	put_u32(&b, 13);
	put_u64(&b, 1);
	put_u64(&b, 0);
	expect_fail(&b, -EBADMSG, "unknown array element type", "A5 unknown array element type");
	hdr(&b, 3, 0, 1);
	key(&b, "x", GGUF_ARRAY);
	put_u32(&b, GGUF_ARRAY);
	put_u64(&b, 1);
	put_u32(&b, GGUF_U8);
	put_u64(&b, 1);
	put_u8(&b, 0);
	expect_fail(&b, -EBADMSG, "nested", "A5 nested array");
	hdr(&b, 3, 0, 1);
	key(&b, "x", GGUF_BOOL);
	put_u8(&b, 2);
	expect_fail(&b, -EBADMSG, "bool", "A5 bool value 2");
	hdr(&b, 3, 0, 3);
	kv_u32(&b, "llama.block_count", 5);
	kv_str(&b, "general.name", "x");
	kv_u32(&b, "llama.block_count", 6);
	expect_fail(&b, -EBADMSG, "duplicate key 'llama.block_count'", "A5 duplicate key");
	hdr(&b, 3, 0, 2);
	kv_u32(&b, "llama.block_count", 5);
	kv_u32(&b, "llama.block_coun", 6);
	g = expect_ok(&b, "A5 keys that share a prefix");
	ms_gguf_close(g);
	reset(&b);
	hdr(&b, 3, 2, 0);
	tinfo(&b, "w", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0);
	tinfo(&b, "w", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 128);
	pad_to(&b, 32);
	zeros(&b, 256);
	expect_fail(&b, -EBADMSG, "duplicate tensor name 'w'", "A5 duplicate tensor name");

	/* A6 */
	hdr(&b, 3, 0, 1);
	kv_u32(&b, "general.alignment", 0);
	expect_fail(&b, -EBADMSG, "power of two", "A6 alignment 0");
	hdr(&b, 3, 0, 1);
	kv_u32(&b, "general.alignment", 3);
	expect_fail(&b, -EBADMSG, "power of two", "A6 alignment 3");
	hdr(&b, 3, 0, 1);
	kv_u32(&b, "general.alignment", 1u << 31);
	expect_fail(&b, -EBADMSG, "maximum", "A6 alignment 2^31");
	hdr(&b, 3, 0, 1);
	kv_str(&b, "general.alignment", "32");
	expect_fail(&b, -EBADMSG, "u32", "A6 alignment stored as a string");
	hdr(&b, 3, 0, 1);
	key(&b, "general.alignment", GGUF_U64);
	put_u64(&b, 32);
	expect_fail(&b, -EBADMSG, "u32", "A6 alignment stored as u64");
	hdr(&b, 3, 0, 1);
	kv_u32(&b, "general.alignment", GGUF_MAX_ALIGN);
	g = expect_ok(&b, "A6 alignment GGUF_MAX_ALIGN");
	ok(g && g->alignment == GGUF_MAX_ALIGN, "A6 alignment GGUF_MAX_ALIGN is kept");
	ms_gguf_close(g);
	free(b.p);
}

static void test_tensors(void)
{
	static const char n64[] = "0123456789012345678901234567890123456789012345678901234567890123";
	static const char n65[] = "01234567890123456789012345678901234567890123456789012345678901234";
	struct buf b = { 0 };
	const uint64_t big = 1ull << 32;
	struct gguf *g;

	/* A7 */
	one_tensor(&b, n65, 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "name of 65 bytes", "A7 tensor name of 65 bytes");
	one_tensor(&b, n64, 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0, 128);
	g = expect_ok(&b, "A7 tensor name of 64 bytes");
	ok(g && ms_gguf_find_tensor(g, n64), "A7 64-byte name is found");
	ms_gguf_close(g);
	reset(&b);
	one_tensor(&b, "", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "empty name", "A7 empty tensor name");
	hdr(&b, 3, 1, 0);
	put_u64(&b, 3);
	put(&b, "a\0b", 3);
	put_u32(&b, 1);
	put_u64(&b, 32);
	put_u32(&b, GGML_TYPE_F32);
	put_u64(&b, 0);
	pad_to(&b, 32);
	zeros(&b, 128);
	expect_fail(&b, -EBADMSG, "NUL", "A7 tensor name with a NUL byte");
	one_tensor(&b, "blk.0.attn_q.weight", 1, (const uint64_t[]){ 32 }, 99, 0, 128);
	expect_fail(&b, -EBADMSG, "unknown ggml type 99", "A7 unknown tensor type 99");
	one_tensor(&b, "blk.0.attn_q.weight", 1, (const uint64_t[]){ 32 }, 4, 0, 128);
	expect_fail(&b, -EBADMSG, "'blk.0.attn_q.weight': unknown ggml type 4", "A7 unknown tensor type 4 (a removed ggml type)");

	/* A8 */
	one_tensor(&b, "t", 0, NULL, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "n_dims 0", "A8 n_dims 0");
	one_tensor(&b, "t", 5, (const uint64_t[]){ 32, 1, 1, 1, 1 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "n_dims 5", "A8 n_dims 5");
	one_tensor(&b, "t", 0xFFFFFFFF, (const uint64_t[]){ 32, 1, 1, 1, 1, 1, 1, 1 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "n_dims 4294967295", "A8 n_dims 0xFFFFFFFF");
	one_tensor(&b, "t", 2, (const uint64_t[]){ 32, 0 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "dimension 1 is 0", "A8 dimension 0");
	one_tensor(&b, "t", 2, (const uint64_t[]){ 32, 1ull << 63 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "dimension 1 is 9223372036854775808", "A8 dimension 2^63 (negative as int64)");
	one_tensor(&b, "t", 1, (const uint64_t[]){ UINT64_MAX }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "dimension 0", "A8 dimension 2^64-1");
	one_tensor(&b, "t", 4, (const uint64_t[]){ 32, 1, 1, 1 }, GGML_TYPE_F32, 0, 128);
	g = expect_ok(&b, "A8 four dimensions");
	ok(g && g->tensors[0].n_dims == 4 && g->tensors[0].nbytes == 128, "A8 four dimensions read");
	ms_gguf_close(g);
	reset(&b);

	/* A9 */
	one_tensor(&b, "t", 3, (const uint64_t[]){ big, big, big }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "overflow", "A9 element count 2^32 x 2^32 x 2^32");
	one_tensor(&b, "t", 2, (const uint64_t[]){ 1ull << 62, 2 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "overflow", "A9 element count 2^63 (beyond int64)");
	one_tensor(&b, "t", 1, (const uint64_t[]){ 1ull << 62 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "overflow", "A9 row byte size 2^62 x 4");
	one_tensor(&b, "t", 2, (const uint64_t[]){ 1ull << 31, 1ull << 31 }, GGML_TYPE_F32, 0, 128);
	expect_fail(&b, -EBADMSG, "overflow", "A9 byte size 2^33 x 2^31 rows");
	one_tensor(&b, "t", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, UINT64_MAX - 31, 128);
	expect_fail(&b, -EBADMSG, "overflow", "A9 data offset + tensor offset wraps");
	one_tensor(&b, "t", 1, (const uint64_t[]){ 33 }, GGML_TYPE_Q8_0, 0, 128);
	expect_fail(&b, -EBADMSG, "multiple of the Q8_0 block size 32", "A11 ne[0] 33 for Q8_0");
	one_tensor(&b, "t", 2, (const uint64_t[]){ 128, 2 }, GGML_TYPE_Q4_K, 0, 512);
	expect_fail(&b, -EBADMSG, "block size 256", "A11 ne[0] 128 for Q4_K");

	/* A10 */
	one_tensor(&b, "t", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 1u << 20, 128);
	expect_fail(&b, -EBADMSG, "beyond", "A10 tensor offset beyond the file");
	one_tensor(&b, "t", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 4, 132);
	expect_fail(&b, -EBADMSG, "offset 4 is not a multiple of the alignment 32", "A10 misaligned offset");
	one_tensor(&b, "t", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0, 100);
	expect_fail(&b, -EBADMSG, "28 bytes short", "A10 data section shorter than the tensor");
	hdr(&b, 3, 3, 0);
	tinfo(&b, "a", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 256);
	tinfo(&b, "b", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0);
	tinfo(&b, "c", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 96);
	pad_to(&b, 32);
	zeros(&b, 384);
	expect_fail(&b, -EBADMSG, "'b' (offset 0) and 'c' (offset 96) overlap", "A10 overlapping tensors");
	hdr(&b, 3, 2, 0);
	tinfo(&b, "a", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0);
	tinfo(&b, "b", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0);
	pad_to(&b, 32);
	zeros(&b, 128);
	expect_fail(&b, -EBADMSG, "overlap", "A10 two tensors at the same offset");
	hdr(&b, 3, 2, 0);
	tinfo(&b, "a", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 128);
	tinfo(&b, "b", 1, (const uint64_t[]){ 32 }, GGML_TYPE_F32, 0);
	pad_to(&b, 32);
	zeros(&b, 256);
	g = expect_ok(&b, "A10 adjacent tensors in reverse order");
	ms_gguf_close(g);
	reset(&b);
	/* tensor data must start at the padded end of the infos, not at the infos' end */
	hdr(&b, 3, 1, 0);
	tinfo(&b, "t", 1, (const uint64_t[]){ 8 }, GGML_TYPE_F32, 0);
	zeros(&b, 32);
	expect_fail(&b, -EBADMSG, "short", "A10 data not padded to the alignment");
	free(b.p);
}

/* Deterministic byte flips over the good file: any outcome but a crash or a silent half-result. */
static void test_mutations(void)
{
	struct buf b = { 0 };
	uint64_t x = 0x9E3779B97F4A7C15ull;
	unsigned i, rejected = 0, accepted = 0, bad = 0;

	build_good(&b, 3, 64);
	for (i = 0; i < 20000; i++) {
		uint8_t *copy = malloc(b.n);
		struct gguf *g = SENTINEL;
		ms_err err = { 0 };
		unsigned k, flips;
		int r;

		memcpy(copy, b.p, b.n);
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		flips = 1 + (unsigned)(x % 4);
		for (k = 0; k < flips; k++) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			/* most of the interesting bytes are in the header */
			copy[(x >> 8) % (b.n - 100)] = (uint8_t)(x >> 40);
		}
		r = ms_gguf_open_mem(copy, b.n, &g, &err);
		if (r == 0) {
			accepted++;
			ms_gguf_close(g);
		} else if (r == -EBADMSG && g == SENTINEL && err.msg[0]) {
			rejected++;
		} else {
			bad++;
		}
		free(copy);
	}
	ok(bad == 0, "20000 mutated files: %u rejected, %u accepted, %u bad", rejected, accepted, bad);
	free(b.p);
}

/* ---- the real files in tests/data ------------------------------------------ */

/* Prefixes of a real file up to its data section (all of it for a vocab-only file) must fail. */
static void truncate_real(const struct gguf *g, const char *what, size_t stride)
{
	size_t end = (size_t)g->data_offset - g->alignment, len, bad = 0;

	for (len = 0; len <= end; len += (len + 64 > end ? 1 : stride)) {
		struct gguf *h = SENTINEL;
		ms_err err = { 0 };
		uint8_t *copy = malloc(len ? len : 1);

		memcpy(copy, g->base, len);
		if (ms_gguf_open_mem(copy, len, &h, &err) != -EBADMSG || h != SENTINEL || !err.msg[0])
			bad++;
		if (h != SENTINEL)
			ms_gguf_close(h);
		free(copy);
	}
	ok(bad == 0, "%s: prefixes up to the end of the infos rejected (%zu accepted)", what, bad);
}

static void test_real_files(void)
{
	char path[4096];
	struct gguf *g = NULL;
	const struct gguf_tensor *t;
	struct gguf_str s;
	struct gguf_arr a;
	ms_err err = { 0 };
	uint32_t u;
	float f;
	int r;

	snprintf(path, sizeof(path), "%s/stories260K.gguf", test_data_dir());
	r = ms_gguf_open(path, &g, &err);
	ok(r == 0 && g, "stories260K.gguf opens (%d \"%s\")", r, err.msg);
	if (g) {
		ok(g->version == 3 && g->mapped && g->alignment == 32, "stories260K: v3, mapped, alignment 32");
		ok(ms_gguf_get_str(g, "general.architecture", &s, &err) == 0 && s.n == 5 &&
		   !memcmp(s.p, "llama", 5), "stories260K: architecture llama");
		ok(ms_gguf_get_u32(g, "llama.block_count", &u, &err) == 0 && u == 5, "stories260K: 5 layers");
		ok(ms_gguf_get_u32(g, "llama.embedding_length", &u, &err) == 0 && u == 64, "stories260K: dim 64");
		ok(ms_gguf_get_u32(g, "llama.attention.head_count_kv", &u, &err) == 0 && u == 4,
		   "stories260K: 4 kv heads");
		f = -1.0f;
		r = ms_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f, &err);
		ok(r == 0 && f > 0.0f && f < 1e-3f, "stories260K: rms epsilon %g", (double)f);
		ok(ms_gguf_find_kv(g, "tokenizer.ggml.padding_token_id") &&
		   ms_gguf_find_kv(g, "tokenizer.ggml.padding_token_id")->val.type == GGUF_U32 &&
		   ms_gguf_get_u32(g, "tokenizer.ggml.padding_token_id", &u, &err) == 0 && u == UINT32_MAX,
		   "stories260K: padding_token_id is the u32 4294967295");
		r = ms_gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &a, &err);
		ok(r == 0 && a.n == 512, "stories260K: 512 tokens");
		t = ms_gguf_find_tensor(g, "token_embd.weight");
		ok(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512 && t->type == GGML_TYPE_F32 &&
		   t->nbytes == 64 * 512 * 4 && (const uint8_t *)t->data >= g->base + g->data_offset,
		   "stories260K: token_embd.weight is F32 {64, 512}");
		ok(ms_gguf_find_tensor(g, "blk.4.ffn_down.weight") && !ms_gguf_find_tensor(g, "blk.5.ffn_down.weight"),
		   "stories260K: blk.4 is the last layer");
		truncate_real(g, "stories260K", 1);
		ms_gguf_close(g);
	}

	g = NULL;
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf", test_data_dir());
	r = ms_gguf_open(path, &g, &err);
	ok(r == 0 && g, "ggml-vocab-llama-spm.gguf opens (%d \"%s\")", r, err.msg);
	if (g) {
		ok(g->n_tensors == 0, "vocab file: no tensors");
		r = ms_gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &a, &err);
		ok(r == 0 && a.n == 32000, "vocab file: 32000 tokens");
		if (r == 0) {
			const uint8_t *cur = a.data;
			uint64_t i, inside = 0;

			for (i = 0; i < a.n; i++) {
				s = ms_gguf_arr_str(&cur);
				inside += (const uint8_t *)s.p + s.n <= g->base + g->size;
			}
			ok(inside == a.n, "vocab file: every token inside the mapping");
			cur = a.data;
			ms_gguf_arr_str(&cur);
			s = ms_gguf_arr_str(&cur);
			ok(s.n == 3 && !memcmp(s.p, "<s>", 3), "vocab file: token 1 is <s>");
		}
		r = ms_gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_F32, &a, &err);
		ok(r == 0 && a.n == 32000, "vocab file: 32000 f32 scores");
		truncate_real(g, "vocab file", 997);
		ms_gguf_close(g);
	}
}

int main(void)
{
	test_good();
	test_header();
	test_truncation();
	test_counts();
	test_types_and_dups();
	test_tensors();
	test_mutations();
	test_real_files();
	return done_testing();
}
