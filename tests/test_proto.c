/* Unit tests for the wire protocol library: the bounded msgpack scanner, request parsing, typed params and packers (UTF-8: test_utf8). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "proto.h"
#include "tap.h"

/* the fuzz target's oracle, reused for its regression inputs */
#include "fuzz_proto.c"

#define MiB (1024 * 1024)

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		diag("out of memory");
		exit(99);
	}
	return p;
}

/* ---- deterministic PRNG (xorshift64*) ------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* ---- a packer writing into a fresh sbuffer ------------------------------------- */

struct pk {
	msgpack_sbuffer sb;
	msgpack_packer p;
};

static void pk_init(struct pk *k)
{
	msgpack_sbuffer_init(&k->sb);
	msgpack_packer_init(&k->p, &k->sb, msgpack_sbuffer_write);
}

static void pk_free(struct pk *k)
{
	msgpack_sbuffer_destroy(&k->sb);
}

static const uint8_t *pk_data(const struct pk *k)
{
	return (const uint8_t *)k->sb.data;
}

/*
 * A tiny text notation packed with msgpack-c, so that test messages read
 * like what they are:
 *   123 -5 1.5 1.5f(float32) nan inf -inf nil true false
 *   "str" with \xHH escapes, b"bin", [a, b], {k: v}, e7"data" (ext type 7)
 */
struct tx {
	const char *p;
	bool bad;
};

static void tx_ws(struct tx *t)
{
	while (*t->p == ' ' || *t->p == ',' || *t->p == ':')
		t->p++;
}

static size_t tx_quoted(struct tx *t, char *out, size_t cap)
{
	size_t n = 0;

	if (*t->p != '"') {
		t->bad = true;
		return 0;
	}
	t->p++;
	while (*t->p && *t->p != '"') {
		char c = *t->p++;

		if (c == '\\' && *t->p == 'x') {
			c = (char)strtoul((char[3]){ t->p[1], t->p[2], 0 }, NULL, 16);
			t->p += 3;
		} else if (c == '\\') {
			c = *t->p++;
		}
		if (n < cap)
			out[n++] = c;
	}
	if (*t->p != '"')
		t->bad = true;
	else
		t->p++;
	return n;
}

static void tx_value(struct tx *t, msgpack_packer *p);

static void tx_container(struct tx *t, msgpack_packer *p, char close, bool map)
{
	struct pk inner;
	uint32_t n = 0;

	/* elements first into a side buffer: the header needs the count */
	pk_init(&inner);
	t->p++;
	tx_ws(t);
	while (*t->p && *t->p != close && !t->bad) {
		tx_value(t, &inner.p);
		tx_ws(t);
		n++;
	}
	if (*t->p != close || (map && n % 2))
		t->bad = true;
	else
		t->p++;
	if (map)
		msgpack_pack_map(p, n / 2);
	else
		msgpack_pack_array(p, n);
	msgpack_sbuffer_write(p->data, inner.sb.data, inner.sb.size);
	pk_free(&inner);
}

static void tx_value(struct tx *t, msgpack_packer *p)
{
	char buf[4096];
	size_t n;
	char *end;

	tx_ws(t);
	if (*t->p == '[') {
		tx_container(t, p, ']', false);
	} else if (*t->p == '{') {
		tx_container(t, p, '}', true);
	} else if (*t->p == '"') {
		n = tx_quoted(t, buf, sizeof(buf));
		proto_pack_str(p, buf, n);
	} else if (*t->p == 'b' && t->p[1] == '"') {
		t->p++;
		n = tx_quoted(t, buf, sizeof(buf));
		msgpack_pack_bin_with_body(p, buf, n);
	} else if (*t->p == 'e' && t->p[1] >= '0' && t->p[1] <= '9') {
		int8_t type = (int8_t)strtol(t->p + 1, &end, 10);

		t->p = end;
		n = tx_quoted(t, buf, sizeof(buf));
		msgpack_pack_ext_with_body(p, buf, n, type);
	} else if (!strncmp(t->p, "nil", 3)) {
		msgpack_pack_nil(p);
		t->p += 3;
	} else if (!strncmp(t->p, "true", 4)) {
		msgpack_pack_true(p);
		t->p += 4;
	} else if (!strncmp(t->p, "false", 5)) {
		msgpack_pack_false(p);
		t->p += 5;
	} else if (!strncmp(t->p, "nan", 3)) {
		msgpack_pack_double(p, (double)NAN);
		t->p += 3;
	} else if (!strncmp(t->p, "inf", 3)) {
		msgpack_pack_double(p, (double)INFINITY);
		t->p += 3;
	} else if (!strncmp(t->p, "-inf", 4)) {
		msgpack_pack_double(p, -(double)INFINITY);
		t->p += 4;
	} else {
		size_t span = strspn(t->p, "-0123456789");
		char c = t->p[span];

		if (!span) {
			t->bad = true;
		} else if (c == '.' || c == 'e') {
			double d = strtod(t->p, &end);

			if (*end == 'f') {
				msgpack_pack_float(p, (float)d);
				end++;
			} else {
				msgpack_pack_double(p, d);
			}
			t->p = end;
		} else if (*t->p == '-') {
			msgpack_pack_int64(p, strtoll(t->p, &end, 10));
			t->p = end;
		} else {
			msgpack_pack_uint64(p, strtoull(t->p, &end, 10));
			t->p = end;
		}
	}
}

/* Packs one value written in the notation above; aborts the test on a typo. */
static void tx_pack(struct pk *k, const char *text)
{
	struct tx t = { .p = text };

	pk_init(k);
	tx_value(&t, &k->p);
	tx_ws(&t);
	if (t.bad || *t.p) {
		diag("bad test notation at '%s' in %s", t.p, text);
		exit(99);
	}
}

/* ---- scanning helpers ----------------------------------------------------------- */

static ssize_t scan_whole(const uint8_t *b, size_t n, size_t max_bytes, unsigned max_depth)
{
	struct mf_scanner s;

	mf_init(&s, max_bytes, max_depth);
	return mf_scan(&s, b, n);
}

/* Feeds growing prefixes step bytes at a time; the first non-zero result, or 0. */
static ssize_t scan_trickle(const uint8_t *b, size_t n, size_t max_bytes, unsigned max_depth,
			    size_t step)
{
	struct mf_scanner s;
	size_t len = 0;
	ssize_t r;

	mf_init(&s, max_bytes, max_depth);
	do {
		len = len + step > n ? n : len + step;
		r = mf_scan(&s, b, len);
		if (r)
			return r;
	} while (len < n);
	return 0;
}

/* Feeds prefixes of random sizes. */
static ssize_t scan_random_chunks(const uint8_t *b, size_t n, size_t max_bytes, unsigned max_depth)
{
	struct mf_scanner s;
	size_t len = 0;
	ssize_t r;

	mf_init(&s, max_bytes, max_depth);
	do {
		len += 1 + rnd_below(rnd_below(2) ? 4 : 64);
		if (len > n)
			len = n;
		r = mf_scan(&s, b, len);
		if (r)
			return r;
	} while (len < n);
	return 0;
}

/* msgpack-c unpacks exactly n bytes into one object. */
static bool unpacks_exactly(const uint8_t *b, size_t n)
{
	msgpack_unpacked up;
	size_t off = 0;
	msgpack_unpack_return r;

	msgpack_unpacked_init(&up);
	r = msgpack_unpack_next(&up, (const char *)b, n, &off);
	msgpack_unpacked_destroy(&up);
	return r == MSGPACK_UNPACK_SUCCESS && off == n;
}

/*
 * Every complete message: whole buffer, trailing garbage, byte-by-byte and
 * random chunks all give its exact length; every strict prefix gives 0
 * (checked for all prefixes when small); msgpack-c agrees.
 */
static bool scan_agrees(const uint8_t *b, size_t n, const char *what)
{
	uint8_t *tail = xmalloc(n + 3);
	bool good = true;
	ssize_t r;

	memcpy(tail, b, n);
	memcpy(tail + n, "\xc1\xdd\xff", 3);
	r = scan_whole(b, n, 16 * MiB, 16);
	if (r != (ssize_t)n) {
		diag("%s: whole scan %zd, expected %zu", what, r, n);
		good = false;
	}
	r = scan_whole(tail, n + 3, 16 * MiB, 16);
	if (r != (ssize_t)n) {
		diag("%s: scan with trailing bytes %zd, expected %zu", what, r, n);
		good = false;
	}
	r = scan_trickle(b, n, 16 * MiB, 16, 1);
	if (r != (ssize_t)n) {
		diag("%s: trickled scan %zd, expected %zu", what, r, n);
		good = false;
	}
	r = scan_random_chunks(tail, n + 3, 16 * MiB, 16);
	if (r != (ssize_t)n) {
		diag("%s: chunked scan %zd, expected %zu", what, r, n);
		good = false;
	}
	if (n <= 4096) {
		for (size_t i = 0; i < n; i++) {
			r = scan_whole(b, i, 16 * MiB, 16);
			if (r) {
				diag("%s: prefix of %zu bytes scans as %zd", what, i, r);
				good = false;
				break;
			}
		}
	}
	if (!unpacks_exactly(b, n)) {
		diag("%s: msgpack-c does not unpack the scanned length", what);
		good = false;
	}
	free(tail);
	return good;
}

/* ---- scanner: every msgpack format --------------------------------------------- */

enum kind { K_UINT, K_INT, K_FLOAT, K_DOUBLE, K_STR, K_BIN, K_EXT, K_ARRAY, K_MAP, K_NIL, K_TRUE, K_FALSE };

struct fmt_case {
	const char *name;
	uint8_t first;     /* expected type byte: proves the format is covered */
	enum kind kind;
	uint64_t u;        /* value, or length / count */
	int64_t i;
};

static const struct fmt_case fmt_cases[] = {
	{ "positive fixint", 0x05, K_UINT, 5, 0 },
	{ "positive fixint 127", 0x7f, K_UINT, 127, 0 },
	{ "fixmap", 0x82, K_MAP, 2, 0 },
	{ "fixmap empty", 0x80, K_MAP, 0, 0 },
	{ "fixarray", 0x93, K_ARRAY, 3, 0 },
	{ "fixarray empty", 0x90, K_ARRAY, 0, 0 },
	{ "fixarray 15", 0x9f, K_ARRAY, 15, 0 },
	{ "fixstr", 0xa5, K_STR, 5, 0 },
	{ "fixstr empty", 0xa0, K_STR, 0, 0 },
	{ "fixstr 31", 0xbf, K_STR, 31, 0 },
	{ "nil", 0xc0, K_NIL, 0, 0 },
	{ "false", 0xc2, K_FALSE, 0, 0 },
	{ "true", 0xc3, K_TRUE, 0, 0 },
	{ "bin8", 0xc4, K_BIN, 200, 0 },
	{ "bin8 empty", 0xc4, K_BIN, 0, 0 },
	{ "bin16", 0xc5, K_BIN, 3000, 0 },
	{ "bin32", 0xc6, K_BIN, 70000, 0 },
	{ "ext8", 0xc7, K_EXT, 3, 0 },
	{ "ext8 empty", 0xc7, K_EXT, 0, 0 },
	{ "ext16", 0xc8, K_EXT, 300, 0 },
	{ "ext32", 0xc9, K_EXT, 70000, 0 },
	{ "float32", 0xca, K_FLOAT, 0, 0 },
	{ "float64", 0xcb, K_DOUBLE, 0, 0 },
	{ "uint8", 0xcc, K_UINT, 200, 0 },
	{ "uint16", 0xcd, K_UINT, 60000, 0 },
	{ "uint32", 0xce, K_UINT, 70000, 0 },
	{ "uint64", 0xcf, K_UINT, 5000000000ULL, 0 },
	{ "uint64 max", 0xcf, K_UINT, UINT64_MAX, 0 },
	{ "int8", 0xd0, K_INT, 0, -33 },
	{ "int16", 0xd1, K_INT, 0, -200 },
	{ "int32", 0xd2, K_INT, 0, -40000 },
	{ "int64", 0xd3, K_INT, 0, -5000000000LL },
	{ "int64 min", 0xd3, K_INT, 0, INT64_MIN },
	{ "fixext1", 0xd4, K_EXT, 1, 0 },
	{ "fixext2", 0xd5, K_EXT, 2, 0 },
	{ "fixext4", 0xd6, K_EXT, 4, 0 },
	{ "fixext8", 0xd7, K_EXT, 8, 0 },
	{ "fixext16", 0xd8, K_EXT, 16, 0 },
	{ "str8", 0xd9, K_STR, 100, 0 },
	{ "str16", 0xda, K_STR, 1000, 0 },
	{ "str32", 0xdb, K_STR, 70000, 0 },
	{ "array16", 0xdc, K_ARRAY, 16, 0 },
	{ "array32", 0xdd, K_ARRAY, 70000, 0 },
	{ "map16", 0xde, K_MAP, 16, 0 },
	{ "map32", 0xdf, K_MAP, 70000, 0 },
	{ "negative fixint", 0xff, K_INT, 0, -1 },
	{ "negative fixint -32", 0xe0, K_INT, 0, -32 },
};

static void pack_case(msgpack_packer *p, const struct fmt_case *c)
{
	static char data[70000];
	uint64_t j;

	memset(data, 'x', sizeof(data));
	switch (c->kind) {
	case K_UINT: msgpack_pack_uint64(p, c->u); break;
	case K_INT: msgpack_pack_int64(p, c->i); break;
	case K_FLOAT: msgpack_pack_float(p, 1.5f); break;
	case K_DOUBLE: msgpack_pack_double(p, 0.1); break;
	case K_STR: msgpack_pack_str_with_body(p, data, c->u); break;
	case K_BIN: msgpack_pack_bin_with_body(p, data, c->u); break;
	case K_EXT: msgpack_pack_ext_with_body(p, data, c->u, 5); break;
	case K_NIL: msgpack_pack_nil(p); break;
	case K_TRUE: msgpack_pack_true(p); break;
	case K_FALSE: msgpack_pack_false(p); break;
	case K_ARRAY:
		msgpack_pack_array(p, c->u);
		for (j = 0; j < c->u; j++)
			msgpack_pack_uint64(p, j);
		break;
	case K_MAP:
		msgpack_pack_map(p, c->u);
		for (j = 0; j < c->u; j++) {
			msgpack_pack_uint64(p, j);
			msgpack_pack_str_with_body(p, "v", 1);
		}
		break;
	}
}

static void test_formats(void)
{
	bool seen[256] = { false };
	unsigned missing = 0;

	for (size_t i = 0; i < sizeof(fmt_cases) / sizeof(fmt_cases[0]); i++) {
		const struct fmt_case *c = &fmt_cases[i];
		struct pk k;

		pk_init(&k);
		pack_case(&k.p, c);
		if (!ok(k.sb.size > 0 && pk_data(&k)[0] == c->first, "%s packs with type byte 0x%02x",
			c->name, c->first))
			diag("got 0x%02x", k.sb.size ? pk_data(&k)[0] : 0);
		ok(scan_agrees(pk_data(&k), k.sb.size, c->name), "%s: scanned length is %zu", c->name,
		   k.sb.size);
		seen[pk_data(&k)[0] >= 0xe0 ? 0xe0 : pk_data(&k)[0]] = true;
		pk_free(&k);
	}
	/* every non-fix type byte from 0xc0 to 0xdf except 0xc1 is covered above */
	for (unsigned b = 0xc0; b <= 0xdf; b++)
		if (b != 0xc1 && !seen[b]) {
			diag("type byte 0x%02x not covered", b);
			missing++;
		}
	ok(!missing, "every type byte 0xc0..0xdf except 0xc1 is exercised");
}

/* Encodings msgpack-c's packer never emits (non-minimal) still scan. */
static void test_raw_encodings(void)
{
	static const struct {
		const char *name;
		const char *b;
		size_t n;
	} raw[] = {
		{ "int8 holding a positive value", "\xd0\x05", 2 },
		{ "uint64 holding 1", "\xcf\0\0\0\0\0\0\0\x01", 9 },
		{ "str8 of 1 byte", "\xd9\x01" "a", 3 },
		{ "str16 of 0 bytes", "\xda\0\0", 3 },
		{ "str32 of 2 bytes", "\xdb\0\0\0\x02" "ab", 7 },
		{ "bin32 of 1 byte", "\xc6\0\0\0\x01" "z", 6 },
		{ "ext32 of 1 byte", "\xc9\0\0\0\x01\x07" "z", 7 },
		{ "ext16 of 0 bytes", "\xc8\0\0\x07", 4 },
		{ "array16 of 1", "\xdc\0\x01\x01", 4 },
		{ "array32 of 0", "\xdd\0\0\0\0", 5 },
		{ "map16 of 1", "\xde\0\x01\x01\x02", 5 },
		{ "map32 of 0", "\xdf\0\0\0\0", 5 },
		{ "float32", "\xca\x3f\xc0\0\0", 5 },
		{ "nested empty containers", "\x92\x90\x80", 3 },
		{ "map with array key", "\x81\x91\x01\x91\x02", 5 },
	};

	for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++)
		ok(scan_agrees((const uint8_t *)raw[i].b, raw[i].n, raw[i].name), "raw %s: %zu bytes",
		   raw[i].name, raw[i].n);
}

static void test_nested(void)
{
	static const char *const texts[] = {
		"[0, 1, \"tokenize\", [{\"text\": \"Hi\"}]]",
		"[[[], {}], {\"a\": [1, [2, [3, {\"b\": nil}]]]}, \"z\"]",
		"{\"k\": {\"k\": {\"k\": {\"k\": [1.5, -2, b\"bin\", e3\"ext\"]}}}}",
		"[{}, {}, {}, [[[[]]]], 1, 2, 3]",
		"{[1, 2]: {3: 4}, nil: true}",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct pk k;

		tx_pack(&k, texts[i]);
		ok(scan_agrees(pk_data(&k), k.sb.size, texts[i]), "nested: %s", texts[i]);
		pk_free(&k);
	}
}

/* ---- scanner: random messages ------------------------------------------------------ */

static void rand_obj(msgpack_packer *p, unsigned depth, unsigned max_depth)
{
	static const char data[] = "0123456789abcdefghijklmnopqrstuvwxyz\xe2\x82\xac";
	unsigned pick = (unsigned)rnd_below(depth < max_depth ? 16 : 12);
	size_t n;
	char big[600];

	switch (pick) {
	case 0: msgpack_pack_uint64(p, rnd() >> rnd_below(64)); break;
	case 1: msgpack_pack_int64(p, -(int64_t)(rnd() >> (1 + rnd_below(63)))); break;
	case 2: msgpack_pack_float(p, (float)rnd_below(1000) / 7.0f); break;
	case 3: msgpack_pack_double(p, (double)rnd_below(100000) / 3.0); break;
	case 4: msgpack_pack_nil(p); break;
	case 5: rnd_below(2) ? msgpack_pack_true(p) : msgpack_pack_false(p); break;
	case 6:
	case 7:
		n = rnd_below(4) ? rnd_below(sizeof(data)) : rnd_below(sizeof(big));
		memset(big, 'q', sizeof(big));
		msgpack_pack_str_with_body(p, n < sizeof(data) ? data : big, n);
		break;
	case 8:
		n = rnd_below(4) ? rnd_below(40) : rnd_below(sizeof(big));
		memset(big, 0xc1, sizeof(big));	/* payload bytes that would be bad as headers */
		msgpack_pack_bin_with_body(p, big, n);
		break;
	case 9:
		/* fixext sizes and others */
		n = rnd_below(2) ? (size_t)1 << rnd_below(5) : rnd_below(300);
		memset(big, 0xdd, sizeof(big));
		msgpack_pack_ext_with_body(p, big, n, (int8_t)rnd_below(128));
		break;
	case 10: msgpack_pack_int64(p, (int64_t)rnd_below(200) - 100); break;
	case 11: msgpack_pack_uint64(p, rnd_below(70000)); break;
	case 12:
	case 13:
		n = rnd_below(4) ? rnd_below(6) : rnd_below(40);
		msgpack_pack_array(p, (uint32_t)n);
		while (n--)
			rand_obj(p, depth + 1, max_depth);
		break;
	default:
		n = rnd_below(4) ? rnd_below(5) : rnd_below(20);
		msgpack_pack_map(p, (uint32_t)n);
		while (n--) {
			rand_obj(p, depth + 1, max_depth);
			rand_obj(p, depth + 1, max_depth);
		}
		break;
	}
}

static void test_random(void)
{
	unsigned bad = 0, total = 0;
	struct pk stream;
	size_t at, count = 0;

	pk_init(&stream);
	for (unsigned i = 0; i < 600; i++) {
		struct pk k;
		char what[64];

		pk_init(&k);
		rand_obj(&k.p, 0, 1 + (unsigned)rnd_below(8));
		snprintf(what, sizeof(what), "random message %u", i);
		if (k.sb.size < 200000 && !scan_agrees(pk_data(&k), k.sb.size, what))
			bad++;
		total++;
		msgpack_sbuffer_write(&stream, k.sb.data, k.sb.size);
		pk_free(&k);
	}
	ok(!bad, "%u random messages: whole, trailing bytes, trickled, chunked and msgpack-c agree (%u bad)",
	   total, bad);

	/* back to back in one stream, consumed one at a time as the daemon does */
	{
		struct mf_scanner s;
		const uint8_t *b = pk_data(&stream);
		size_t len = 0;
		ssize_t r;
		bool good = true;

		mf_init(&s, 16 * MiB, 16);
		at = 0;
		while (at < stream.sb.size && good) {
			len += 1 + rnd_below(100);
			if (at + len > stream.sb.size)
				len = stream.sb.size - at;
			while ((r = mf_scan(&s, b + at, len)) > 0) {
				if (!unpacks_exactly(b + at, (size_t)r)) {
					good = false;
					break;
				}
				at += (size_t)r;
				len -= (size_t)r;
				count++;
				mf_reset(&s);
			}
			if (r < 0) {
				diag("stream scan failed at %zu: %zd", at, r);
				good = false;
			}
		}
		ok(good && count == total && at == stream.sb.size,
		   "a stream of %u messages arriving in random chunks splits into %zu", total, count);
	}
	pk_free(&stream);
}

/* Byte-by-byte trickling costs O(total): no rescanning from the start. */
static void test_trickle_linear(void)
{
	const size_t n_el = 300000;
	struct pk k;
	struct mf_scanner s;
	struct timespec t0, t1;
	ssize_t r = 0;
	size_t len, big = 4 * MiB;
	double secs;
	char *blob;
	bool off_moves = true;

	pk_init(&k);
	msgpack_pack_array(&k.p, (uint32_t)n_el);
	for (size_t i = 0; i < n_el; i++)
		msgpack_pack_uint64(&k.p, i & 0x7f);
	mf_init(&s, 16 * MiB, 16);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (len = 1; len <= k.sb.size; len++) {
		r = mf_scan(&s, pk_data(&k), len);
		if (r)
			break;
		/* all whole items so far are behind off */
		if (len >= 5 && s.off != len)	/* after the array32 header */
			off_moves = false;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	ok(r == (ssize_t)k.sb.size, "array of %zu fixints trickled byte by byte: %zd", n_el, r);
	ok(off_moves, "scanner offset advances past every whole element");
	ok(secs < 5.0, "trickling %zu bytes took %.3f s (linear)", k.sb.size, secs);
	pk_free(&k);

	/* one 4 MiB string trickled: each call is O(1), the header re-read */
	blob = xmalloc(big);
	memset(blob, 'a', big);
	pk_init(&k);
	msgpack_pack_str_with_body(&k.p, blob, big);
	mf_init(&s, 16 * MiB, 16);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (len = 1; len <= k.sb.size; len++) {
		r = mf_scan(&s, pk_data(&k), len);
		if (r)
			break;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	ok(r == (ssize_t)k.sb.size && s.off == k.sb.size, "4 MiB str trickled byte by byte: %zd", r);
	ok(secs < 5.0, "trickling the 4 MiB str took %.3f s", secs);
	pk_free(&k);
	free(blob);
}

/* ---- scanner: split headers and limits (reliability.md C.25-27) ------------------------ */

static void test_split_headers(void)
{
	static const struct {
		const char *name;
		const char *b;
		size_t n;
	} cases[] = {
		{ "str32", "\xdb\0\0\0\x05hello", 10 },
		{ "bin16", "\xc5\0\x03xyz", 6 },
		{ "ext32", "\xc9\0\0\0\x02\x09zz", 8 },
		{ "uint64", "\xcf\x01\x02\x03\x04\x05\x06\x07\x08", 9 },
		{ "float64", "\xcb\x3f\xf0\0\0\0\0\0\0", 9 },
		{ "array32 of 2 int64", "\xdd\0\0\0\x02\xd3\0\0\0\0\0\0\0\x01\xd3\0\0\0\0\0\0\0\x02", 23 },
		{ "map16 in array16", "\xdc\0\x01\xde\0\x01\xa1k\xcd\x01\x02", 11 },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const uint8_t *b = (const uint8_t *)cases[c].b;
		struct mf_scanner s;
		bool good = true;
		ssize_t r = 0;

		/* every way of splitting the bytes in two calls */
		for (size_t cut = 0; cut < cases[c].n; cut++) {
			mf_init(&s, 1 * MiB, 16);
			if (mf_scan(&s, b, cut) != 0)
				good = false;
			r = mf_scan(&s, b, cases[c].n);
			if (r != (ssize_t)cases[c].n)
				good = false;
		}
		ok(good, "%s: split anywhere in two calls scans as %zu", cases[c].name, cases[c].n);
	}

	/* a split header leaves off at its start, so it is re-read */
	{
		struct mf_scanner s;
		const uint8_t *b = (const uint8_t *)"\x92\xdb\0\0\0\x03" "abc\x01";

		mf_init(&s, 1 * MiB, 16);
		ok(mf_scan(&s, b, 3) == 0 && s.off == 1, "header split after 2 of 5 bytes: off stays at 1");
		ok(mf_scan(&s, b, 7) == 0 && s.off == 1, "payload partly there: off stays at the header");
		ok(mf_scan(&s, b, 9) == 0 && s.off == 9, "payload complete: off moves past it");
		ok(mf_scan(&s, b, 10) == 10, "last element completes the array");
		ok(mf_scan(&s, b, 10) == 10, "scanning a complete message again returns its length");
		mf_reset(&s);
		ok(s.off == 0 && s.depth == 0 && mf_scan(&s, b + 9, 1) == 1, "after reset the next message scans");
	}
}

static void test_limits(void)
{
	static const uint8_t arr32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t map32[] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t str32[] = { 0xdb, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t bin32[] = { 0xc6, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t ext32[] = { 0xc9, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t str32_4g[] = { 0xdb, 0xff, 0xff, 0xff, 0xff };
	uint8_t buf[64];
	ssize_t r;

	/* C.25: 5-byte headers declaring 2^32-1 elements or 4 GiB */
	ok(scan_whole(arr32, 5, 1 * MiB, 16) == -EMSGSIZE, "array32 of 2^32-1 elements: -EMSGSIZE from 5 bytes");
	ok(scan_whole(map32, 5, 1 * MiB, 16) == -EMSGSIZE, "map32 of 2^32-1 entries: -EMSGSIZE from 5 bytes");
	ok(scan_whole(str32, 5, 1 * MiB, 16) == -EMSGSIZE, "str32 of 4 GiB: -EMSGSIZE from 5 bytes");
	ok(scan_whole(bin32, 5, 1 * MiB, 16) == -EMSGSIZE, "bin32 of 4 GiB: -EMSGSIZE from 5 bytes");
	ok(scan_whole(ext32, 5, 1 * MiB, 16) == -EMSGSIZE, "ext32 of 4 GiB: -EMSGSIZE before its type byte");
	ok(scan_whole(str32_4g, 5, SIZE_MAX, 16) == 0, "the same str32 with no size cap just needs more bytes");
	ok(scan_whole(arr32, 4, 1 * MiB, 16) == 0, "array32 header of 4 bytes: needs more");
	ok(scan_trickle(arr32, 5, 1 * MiB, 16, 1) == -EMSGSIZE, "array32 trickled: -EMSGSIZE at byte 5");
	ok(scan_whole((const uint8_t *)"\x91\x91\xdd\xff\xff\xff\xff", 7, 1 * MiB, 16) == -EMSGSIZE,
	   "nested array32 of 2^32-1: -EMSGSIZE");
	ok(scan_whole((const uint8_t *)"\xdc\x01\x00", 3, 100, 16) == -EMSGSIZE,
	   "array16 of 256 elements with max_bytes 100: -EMSGSIZE");
	ok(scan_whole((const uint8_t *)"\xdc\x01\x00", 3, 1000, 16) == 0,
	   "array16 of 256 elements with max_bytes 1000: needs more");
	ok(scan_whole((const uint8_t *)"\xde\x00\x80", 3, 258, 16) == -EMSGSIZE,
	   "map16 of 128 entries counts 256 objects: -EMSGSIZE with max_bytes 258");
	ok(scan_whole((const uint8_t *)"\xde\x00\x80", 3, 259, 16) == 0,
	   "map16 of 128 entries fits max_bytes 259");
	/* siblings still expected need a byte each */
	ok(scan_whole((const uint8_t *)"\x93\xa7", 2, 10, 16) == -EMSGSIZE,
	   "[str7, x, y] cannot fit 10 bytes: -EMSGSIZE at the str header");
	ok(scan_whole((const uint8_t *)"\x93\xa6", 2, 10, 16) == 0, "[str6, x, y] can fit 10 bytes");
	ok(scan_whole((const uint8_t *)"\x93\xa6" "abcdef\x01\x02", 10, 10, 16) == 10,
	   "... and does, exactly");
	ok(scan_whole((const uint8_t *)"\x92\x92\x01\x01\xcf", 5, 12, 16) == -EMSGSIZE,
	   "uint64 header that cannot fit: -EMSGSIZE from its type byte");

	/* exactly max_bytes is fine, one more is not */
	for (size_t max = 1; max <= 40; max++) {
		bool good = true;

		/* str: header 1 or 2 bytes */
		size_t hdr = max - 1 < 32 ? 1 : 2;

		if (max >= hdr) {
			struct pk k;
			char s[64];

			memset(s, 's', sizeof(s));
			pk_init(&k);
			msgpack_pack_str_with_body(&k.p, s, max - hdr);
			if (k.sb.size == max) {
				good &= scan_whole(pk_data(&k), k.sb.size, max, 16) == (ssize_t)max;
				good &= scan_whole(pk_data(&k), k.sb.size, max - 1, 16) == -EMSGSIZE;
				good &= scan_trickle(pk_data(&k), k.sb.size, max, 16, 1) == (ssize_t)max;
				good &= scan_trickle(pk_data(&k), k.sb.size, max - 1, 16, 1) == -EMSGSIZE;
			}
			pk_free(&k);
		}
		/* array of fixints */
		if (max >= 1 && max - 1 <= 15) {
			memset(buf, 1, sizeof(buf));
			buf[0] = (uint8_t)(0x90 | (max - 1));
			good &= scan_whole(buf, max, max, 16) == (ssize_t)max;
			good &= scan_whole(buf, max, max - 1, 16) == -EMSGSIZE;
			good &= scan_trickle(buf, max, max - 1, 16, 1) == -EMSGSIZE;
		}
		if (!ok(good, "a message of exactly max_bytes=%zu scans, max_bytes=%zu rejects it", max, max - 1))
			break;
	}
	/* an incomplete message already at max_bytes */
	{
		struct mf_scanner s;

		mf_init(&s, 4, 16);
		r = mf_scan(&s, (const uint8_t *)"\x95\x01\x01\x01", 4);
		ok(r == -EMSGSIZE, "5-element array with max_bytes 4: -EMSGSIZE (%zd)", r);
	}

	/* C.26: nesting */
	memset(buf, 0x91, sizeof(buf));
	for (unsigned d = 1; d <= 33; d++) {
		buf[d - 1] = 0x90;	/* d arrays, innermost empty */
		r = scan_whole(buf, d, 1 * MiB, 16);
		if (d <= 16 && !ok(r == (ssize_t)d, "%u nested arrays with max_depth 16: length %u", d, d))
			break;
		if (d == 17)
			ok(r == -ELOOP, "17 nested arrays with max_depth 16: -ELOOP (%zd)", r);
		buf[d - 1] = 0x91;
	}
	ok(scan_whole(buf, 17, 1 * MiB, 16) == -ELOOP, "17 open arrays, nothing more arrived: -ELOOP");
	ok(scan_whole(buf, 16, 1 * MiB, 16) == 0, "16 open arrays: needs more");
	memset(buf, 0, sizeof(buf));
	for (unsigned d = 0; d < 17; d++) {
		buf[2 * d] = 0x81;	/* {0: {0: ... }} */
		buf[2 * d + 1] = 0x00;
	}
	buf[34] = 0x01;
	ok(scan_whole(buf, 35, 1 * MiB, 16) == -ELOOP, "17 nested maps with max_depth 16: -ELOOP");
	ok(scan_whole(buf + 2, 33, 1 * MiB, 16) == 33, "16 nested maps with max_depth 16: ok");
	ok(scan_whole((const uint8_t *)"\x01", 1, 1 * MiB, 0) == 1, "max_depth 0: a scalar is fine");
	ok(scan_whole((const uint8_t *)"\x90", 1, 1 * MiB, 0) == -ELOOP, "max_depth 0: an empty array is not");
	ok(scan_whole((const uint8_t *)"\x93\x90\x91\x01\x80", 5, 1 * MiB, 2) == 5,
	   "siblings do not add depth: [[], [1], {}] with max_depth 2");
	ok(scan_whole((const uint8_t *)"\x92\x90\x91\x90", 4, 1 * MiB, 2) == -ELOOP,
	   "[[], [[]]] is 3 deep: -ELOOP with max_depth 2");
	memset(buf, 0x91, sizeof(buf));
	buf[32] = 0x90;
	ok(scan_whole(buf, 33, 1 * MiB, 64) == -ELOOP, "33 nested arrays: -ELOOP even with max_depth 64 (clamped)");
	buf[31] = 0x90;
	ok(scan_whole(buf, 32, 1 * MiB, 64) == 32 && unpacks_exactly(buf, 32),
	   "32 nested arrays with max_depth 64: scans and msgpack-c unpacks");
	buf[31] = 0x91;
	{
		msgpack_unpacked up;
		size_t off = 0;

		msgpack_unpacked_init(&up);
		ok(msgpack_unpack_next(&up, (const char *)buf, 33, &off) < 0,
		   "msgpack-c itself fails at 33 nested arrays (the clamp matches the library)");
		msgpack_unpacked_destroy(&up);
	}

	/* C.27: the reserved byte */
	ok(scan_whole((const uint8_t *)"\xc1", 1, 1 * MiB, 16) == -EBADMSG, "0xc1: -EBADMSG");
	ok(scan_whole((const uint8_t *)"\x93\x01\x02\xc1", 4, 1 * MiB, 16) == -EBADMSG, "0xc1 inside an array: -EBADMSG");
	ok(scan_whole((const uint8_t *)"\x81\xc1", 2, 1 * MiB, 16) == -EBADMSG, "0xc1 as a map key: -EBADMSG");
	ok(scan_trickle((const uint8_t *)"\x92\xa1x\xc1", 4, 1 * MiB, 16, 1) == -EBADMSG,
	   "0xc1 trickled: -EBADMSG");
	ok(scan_whole((const uint8_t *)"\xa1\xc1", 2, 1 * MiB, 16) == 2, "0xc1 inside a str payload is data");
	ok(scan_whole((const uint8_t *)"\x01\xc1", 2, 1 * MiB, 16) == 1, "0xc1 after the message is not scanned");
	ok(scan_whole((const uint8_t *)"", 0, 1 * MiB, 16) == 0, "no bytes: needs more");
}

/* ---- proto_parse ------------------------------------------------------------------------ */

struct parsed {
	struct pk k;
	msgpack_unpacked up;
	struct proto_msg m;
	enum proto_err e;
	char why[256];
};

static void parse_text(struct parsed *p, const char *text)
{
	size_t off = 0;

	tx_pack(&p->k, text);
	msgpack_unpacked_init(&p->up);
	if (msgpack_unpack_next(&p->up, p->k.sb.data, p->k.sb.size, &off) != MSGPACK_UNPACK_SUCCESS) {
		diag("cannot unpack %s", text);
		exit(99);
	}
	p->e = proto_parse(&p->up.data, &p->m, p->why, sizeof(p->why));
}

static void parsed_free(struct parsed *p)
{
	msgpack_unpacked_destroy(&p->up);
	pk_free(&p->k);
}

static void test_parse_valid(void)
{
	struct parsed p;
	const msgpack_object *map;

	parse_text(&p, "[0, 1, \"tokenize\", [{\"text\": \"Hi\"}]]");
	ok(p.e == PE_OK && p.m.type == MSG_REQUEST && p.m.has_msgid && p.m.msgid == 1,
	   "request parses: type 0, msgid 1");
	ok(proto_method_is(&p.m, "tokenize") && !proto_method_is(&p.m, "tokenizer") &&
	   !proto_method_is(&p.m, "tokeniz"), "method is tokenize");
	map = proto_params(&p.m);
	ok(map && map->type == MSGPACK_OBJECT_MAP && proto_find(map, "text"), "params map with text");
	parsed_free(&p);

	parse_text(&p, "[0, 4294967295, \"info\", []]");
	ok(p.e == PE_OK && p.m.msgid == 4294967295u && !proto_params(&p.m),
	   "msgid 2^32-1 and [] params: ok, no map");
	parsed_free(&p);
	parse_text(&p, "[0, 0, \"info\", [nil]]");
	ok(p.e == PE_OK && p.m.msgid == 0 && !proto_params(&p.m), "[nil] params: ok, no map");
	parsed_free(&p);
	parse_text(&p, "[0, 7, \"\\xc3\\xa9t\\xc3\\xa9\", [{}]]");
	ok(p.e == PE_OK && proto_params(&p.m) && p.m.method_len == 5, "UTF-8 method name, empty map");
	parsed_free(&p);
	parse_text(&p, "[0, 7, \"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\", []]");
	ok(p.e == PE_OK && p.m.method_len == 64, "64-byte method name: ok");
	parsed_free(&p);
	parse_text(&p, "[0, 7, \"x\", [{1: 2, \"a\": nil}]]");
	ok(p.e == PE_OK, "non-str keys in params are accepted (and ignored by lookups)");
	parsed_free(&p);

	parse_text(&p, "[1, 9, nil, {\"tokens\": [1, 2]}]");
	ok(p.e == PE_OK && p.m.type == MSG_RESPONSE && p.m.has_msgid && p.m.msgid == 9 &&
	   p.m.error && p.m.error->type == MSGPACK_OBJECT_NIL && p.m.result &&
	   p.m.result->type == MSGPACK_OBJECT_MAP && !proto_params(&p.m), "response parses");
	parsed_free(&p);
	parse_text(&p, "[1, nil, {\"code\": \"too_large\", \"message\": \"x\"}, nil]");
	ok(p.e == PE_OK && p.m.type == MSG_RESPONSE && !p.m.has_msgid && p.m.error->type == MSGPACK_OBJECT_MAP,
	   "response with nil msgid parses, has_msgid false");
	parsed_free(&p);
	parse_text(&p, "[2, \"generate.chunk\", [3, {\"response\": \"a\"}]]");
	ok(p.e == PE_OK && p.m.type == MSG_NOTIFICATION && !p.m.has_msgid &&
	   proto_method_is(&p.m, "generate.chunk") && p.m.params && p.m.params->via.array.size == 2 &&
	   !proto_params(&p.m), "notification parses, params array kept");
	parsed_free(&p);
}

static void test_parse_invalid(void)
{
	static const struct {
		const char *text;
		bool has_msgid;
		uint32_t msgid;
		const char *why;	/* substring of the reason */
	} cases[] = {
		{ "{\"a\": 1}", false, 0, "array" },
		{ "42", false, 0, "array" },
		{ "\"request\"", false, 0, "array" },
		{ "nil", false, 0, "array" },
		{ "[]", false, 0, "type" },
		{ "[0]", false, 0, "4 elements" },
		{ "[0, 1, \"info\"]", true, 1, "4 elements" },
		{ "[0, 1, \"info\", [], 5]", true, 1, "4 elements" },
		{ "[3, 1, \"info\", []]", true, 1, "type" },
		{ "[-1, 1, \"info\", []]", true, 1, "type" },
		{ "[\"0\", 1, \"info\", []]", true, 1, "type" },
		{ "[0.0, 1, \"info\", []]", true, 1, "type" },
		{ "[nil, 5, \"info\", []]", true, 5, "type" },
		{ "[0, -1, \"info\", []]", false, 0, "msgid" },
		{ "[0, 1.0, \"info\", []]", false, 0, "msgid" },
		{ "[0, 4294967296, \"info\", []]", false, 0, "msgid" },
		{ "[0, \"1\", \"info\", []]", false, 0, "msgid" },
		{ "[0, nil, \"info\", []]", false, 0, "msgid" },
		{ "[0, 1, 42, []]", true, 1, "method" },
		{ "[0, 1, b\"info\", []]", true, 1, "method" },
		{ "[0, 1, nil, []]", true, 1, "method" },
		{ "[0, 2, \"in\\xff\", []]", true, 2, "UTF-8" },
		{ "[0, 2, \"\\xed\\xa0\\x80\", []]", true, 2, "UTF-8" },
		{ "[0, 3, \"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\", []]", true, 3, "64" },
		{ "[0, 4, \"info\", {}]", true, 4, "params" },
		{ "[0, 4, \"info\", nil]", true, 4, "params" },
		{ "[0, 4, \"info\", \"x\"]", true, 4, "params" },
		{ "[0, 5, \"info\", [{}, {}]]", true, 5, "at most one" },
		{ "[0, 5, \"info\", [nil, nil]]", true, 5, "at most one" },
		{ "[0, 6, \"info\", [42]]", true, 6, "map" },
		{ "[0, 6, \"info\", [\"x\"]]", true, 6, "map" },
		{ "[0, 6, \"info\", [[]]]", true, 6, "map" },
		{ "[1, 1, nil]", true, 1, "4 elements" },
		{ "[1, -1, nil, nil]", false, 0, "msgid" },
		{ "[1, \"x\", nil, nil]", false, 0, "msgid" },
		{ "[2, \"x\"]", false, 0, "3 elements" },
		{ "[2, \"x\", {}]", false, 0, "params" },
		{ "[2, 5, []]", false, 0, "method" },
		{ "[2, \"\\xc0\\x80\", []]", false, 0, "UTF-8" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parsed p;
		bool good;

		parse_text(&p, cases[i].text);
		good = p.e == PE_INVALID_REQUEST && p.m.has_msgid == cases[i].has_msgid &&
		       (!cases[i].has_msgid || p.m.msgid == cases[i].msgid) && strstr(p.why, cases[i].why);
		if (!ok(good, "invalid %s: invalid_request, %s", cases[i].text,
			cases[i].has_msgid ? "addressable" : "no msgid"))
			diag("got %d has_msgid %d msgid %" PRIu32 " why '%s'", p.e, p.m.has_msgid, p.m.msgid,
			     p.why);
		parsed_free(&p);
	}

	/* a NULL or tiny reason buffer is fine */
	{
		struct parsed p;
		struct proto_msg m;
		char tiny[4];

		parse_text(&p, "[0, 1, 42, []]");
		ok(proto_parse(&p.up.data, &m, NULL, 0) == PE_INVALID_REQUEST, "NULL reason buffer");
		ok(proto_parse(&p.up.data, &m, tiny, sizeof(tiny)) == PE_INVALID_REQUEST && strlen(tiny) == 3,
		   "a short reason buffer is truncated and terminated");
		parsed_free(&p);
	}
}

/* ---- getters -------------------------------------------------------------------------------- */

static const char getter_map[] =
	"{\"b\": true, \"u\": 5, \"neg\": -3, \"f\": 0.5, \"f32\": 1.5f, \"fint\": 5.0, "
	"\"nan\": nan, \"inf\": inf, \"ninf\": -inf, \"s\": \"h\\xc3\\xa9llo\", \"bad\": \"a\\xff\", "
	"\"surr\": \"\\xed\\xb0\\x80\", \"arr\": [1, 2, 3], \"big\": 18446744073709551615, "
	"\"imin\": -9223372036854775808, \"imax\": 9223372036854775807, "
	"\"nil\": nil, 7: \"int key\", \"bin\": b\"xy\", \"e\": \"\", \"dup\": 1, \"dup\": 2, "
	"\"\": 9, \"map\": {}}";

static void test_getters(void)
{
	struct pk k;
	msgpack_unpacked up;
	const msgpack_object *m;
	size_t off = 0, len;
	char why[256];
	bool b;
	uint64_t u;
	int64_t i;
	double d;
	const char *s;
	const msgpack_object_array *a;

	tx_pack(&k, getter_map);
	msgpack_unpacked_init(&up);
	msgpack_unpack_next(&up, k.sb.data, k.sb.size, &off);
	m = &up.data;

#define UNTOUCHED(var, val) ((var) == (val))
	/* proto_find */
	ok(proto_find(m, "b") && proto_find(m, "b")->type == MSGPACK_OBJECT_BOOLEAN, "find b");
	ok(!proto_find(m, "absent") && !proto_find(m, "7") && !proto_find(NULL, "b"),
	   "find: absent, non-str key 7 ignored, NULL map");
	ok(proto_find(m, "dup") && proto_find(m, "dup")->via.u64 == 1, "duplicate keys: the first wins");
	ok(proto_find(m, "") && proto_find(m, "")->via.u64 == 9, "the empty key");
	ok(!proto_find(&m->via.map.ptr[0].val, "b"), "find in a non-map: absent");

	/* bool */
	b = false;
	ok(proto_get_bool(m, "absent", &b, why, sizeof(why)) == 0 && !b, "bool absent: 0, untouched");
	ok(proto_get_bool(m, "b", &b, why, sizeof(why)) == 1 && b, "bool present: 1, true");
	b = false;
	ok(proto_get_bool(m, "u", &b, why, sizeof(why)) == -1 && !b && strstr(why, "field 'u'"),
	   "bool given an int: -1 (%s)", why);
	ok(proto_get_bool(m, "nil", &b, why, sizeof(why)) == -1, "bool given nil: -1");
	ok(proto_get_bool(NULL, "b", &b, why, sizeof(why)) == 0, "bool in a NULL map: absent");

	/* uint */
	u = 77;
	ok(proto_get_uint(m, "absent", 10, &u, why, sizeof(why)) == 0 && UNTOUCHED(u, 77), "uint absent: 0, untouched");
	ok(proto_get_uint(m, "u", 10, &u, why, sizeof(why)) == 1 && u == 5, "uint 5 in [0, 10]");
	ok(proto_get_uint(m, "u", 5, &u, why, sizeof(why)) == 1 && u == 5, "uint 5 at max 5");
	u = 77;
	ok(proto_get_uint(m, "u", 4, &u, why, sizeof(why)) == -1 && u == 77 && strstr(why, "field 'u'"),
	   "uint 5 above max 4: -1 (%s)", why);
	ok(proto_get_uint(m, "neg", 10, &u, why, sizeof(why)) == -1 && u == 77, "uint given -3: -1 (%s)", why);
	ok(proto_get_uint(m, "fint", 10, &u, why, sizeof(why)) == -1 && u == 77,
	   "uint given 5.0: -1, float-for-int rejected (%s)", why);
	ok(proto_get_uint(m, "s", 10, &u, why, sizeof(why)) == -1, "uint given a str: -1");
	ok(proto_get_uint(m, "b", 10, &u, why, sizeof(why)) == -1, "uint given a bool: -1");
	ok(proto_get_uint(m, "big", UINT64_MAX, &u, why, sizeof(why)) == 1 && u == UINT64_MAX, "uint 2^64-1");

	/* int */
	i = 77;
	ok(proto_get_int(m, "absent", -10, 10, &i, why, sizeof(why)) == 0 && i == 77, "int absent: 0, untouched");
	ok(proto_get_int(m, "neg", -10, 10, &i, why, sizeof(why)) == 1 && i == -3, "int -3 in [-10, 10]");
	ok(proto_get_int(m, "u", -10, 10, &i, why, sizeof(why)) == 1 && i == 5, "int 5 (positive encoding)");
	i = 77;
	ok(proto_get_int(m, "neg", 0, 10, &i, why, sizeof(why)) == -1 && i == 77, "int -3 below min 0: -1 (%s)", why);
	ok(proto_get_int(m, "u", -10, 4, &i, why, sizeof(why)) == -1 && i == 77, "int 5 above max 4: -1");
	ok(proto_get_int(m, "big", INT64_MIN, INT64_MAX, &i, why, sizeof(why)) == -1 && i == 77,
	   "int 2^64-1: -1 (%s)", why);
	ok(proto_get_int(m, "imin", INT64_MIN, INT64_MAX, &i, why, sizeof(why)) == 1 && i == INT64_MIN, "int -2^63");
	ok(proto_get_int(m, "imax", INT64_MIN, INT64_MAX, &i, why, sizeof(why)) == 1 && i == INT64_MAX, "int 2^63-1");
	i = 77;
	ok(proto_get_int(m, "fint", -10, 10, &i, why, sizeof(why)) == -1 && i == 77,
	   "int given 5.0: -1, float-for-int rejected");
	ok(proto_get_int(m, "f", -10, 10, &i, why, sizeof(why)) == -1, "int given 0.5: -1");
	ok(proto_get_int(m, "s", -10, 10, &i, why, sizeof(why)) == -1 && strstr(why, "field 's'"), "int given a str: -1");

	/* float */
	d = 77;
	ok(proto_get_float(m, "absent", 0, 1, &d, why, sizeof(why)) == 0 && d == 77, "float absent: 0, untouched");
	ok(proto_get_float(m, "f", 0, 1, &d, why, sizeof(why)) == 1 && d == 0.5, "float 0.5 in [0, 1]");
	ok(proto_get_float(m, "f32", 0, 2, &d, why, sizeof(why)) == 1 && d == 1.5, "float32 1.5");
	ok(proto_get_float(m, "u", 0, 10, &d, why, sizeof(why)) == 1 && d == 5.0, "float given int 5: accepted");
	ok(proto_get_float(m, "neg", -10, 10, &d, why, sizeof(why)) == 1 && d == -3.0, "float given int -3: accepted");
	ok(proto_get_float(m, "fint", 0, 10, &d, why, sizeof(why)) == 1 && d == 5.0, "float 5.0");
	d = 77;
	ok(proto_get_float(m, "nan", -1e300, 1e300, &d, why, sizeof(why)) == -1 && d == 77, "float NaN: -1 (%s)", why);
	ok(proto_get_float(m, "inf", -(double)INFINITY, (double)INFINITY, &d, why, sizeof(why)) == -1 && d == 77,
	   "float inf: -1 even with an infinite max");
	ok(proto_get_float(m, "ninf", -(double)INFINITY, (double)INFINITY, &d, why, sizeof(why)) == -1 && d == 77, "float -inf: -1");
	ok(proto_get_float(m, "f", 0.6, 1, &d, why, sizeof(why)) == -1 && d == 77, "float 0.5 below 0.6: -1 (%s)", why);
	ok(proto_get_float(m, "u", 0, 4.9, &d, why, sizeof(why)) == -1 && d == 77, "float 5 above 4.9: -1");
	ok(proto_get_float(m, "s", 0, 1, &d, why, sizeof(why)) == -1, "float given a str: -1");
	ok(proto_get_float(m, "b", 0, 1, &d, why, sizeof(why)) == -1, "float given a bool: -1");
	ok(proto_get_float(m, "nil", 0, 1, &d, why, sizeof(why)) == -1, "float given nil: -1");

	/* str */
	s = NULL;
	len = 99;
	ok(proto_get_str(m, "absent", 100, &s, &len, why, sizeof(why)) == 0 && !s && len == 99, "str absent: 0, untouched");
	ok(proto_get_str(m, "s", 100, &s, &len, why, sizeof(why)) == 1 && len == 6 && !memcmp(s, "h\xc3\xa9llo", 6),
	   "str present");
	ok(proto_get_str(m, "s", 6, &s, &len, why, sizeof(why)) == 1, "str at max length");
	s = NULL;
	ok(proto_get_str(m, "s", 5, &s, &len, why, sizeof(why)) == -1 && !s, "str longer than max: -1 (%s)", why);
	ok(proto_get_str(m, "bad", 100, &s, &len, why, sizeof(why)) == -1 && !s && strstr(why, "UTF-8"),
	   "str with invalid UTF-8: -1 (%s)", why);
	ok(proto_get_str(m, "surr", 100, &s, &len, why, sizeof(why)) == -1 && !s, "str with a surrogate: -1");
	ok(proto_get_str(m, "bin", 100, &s, &len, why, sizeof(why)) == -1 && !s, "str given bin: -1");
	ok(proto_get_str(m, "u", 100, &s, &len, why, sizeof(why)) == -1, "str given an int: -1");
	ok(proto_get_str(m, "e", 100, &s, &len, why, sizeof(why)) == 1 && len == 0, "empty str");

	/* array */
	a = NULL;
	ok(proto_get_array(m, "absent", 10, &a, why, sizeof(why)) == 0 && !a, "array absent: 0, untouched");
	ok(proto_get_array(m, "arr", 3, &a, why, sizeof(why)) == 1 && a && a->size == 3, "array of 3 at max 3");
	a = NULL;
	ok(proto_get_array(m, "arr", 2, &a, why, sizeof(why)) == -1 && !a, "array of 3 above max 2: -1 (%s)", why);
	ok(proto_get_array(m, "map", 10, &a, why, sizeof(why)) == -1 && !a, "array given a map: -1");
	ok(proto_get_array(m, "s", 10, &a, why, sizeof(why)) == -1, "array given a str: -1");
	ok(proto_get_array(m, "u", 10, &a, NULL, 0) == -1, "NULL reason buffer is fine");
#undef UNTOUCHED

	msgpack_unpacked_destroy(&up);
	pk_free(&k);
}

/* ---- errors and packers ------------------------------------------------------------------------ */

static void test_err_names(void)
{
	static const char *const names[] = {
		"invalid_request", "invalid_params", "unknown_method", "context_overflow", "busy",
		"cancelled", "shutting_down", "loading", "too_large", "internal",
	};
	bool good = true;

	for (int e = PE_INVALID_REQUEST; e < PE_COUNT; e++) {
		const char *n = proto_err_name((enum proto_err)e);

		good &= !strcmp(n, names[e - 1]);
		good &= proto_err_from_name(n, strlen(n)) == (enum proto_err)e;
	}
	ok(good, "error names match the spec and round-trip");
	ok(proto_err_from_name("nope", 4) == PE_INTERNAL && proto_err_from_name("busy", 3) == PE_INTERNAL &&
	   proto_err_from_name("busyx", 4) == PE_BUSY, "unknown or prefix names: internal; length respected");
	ok(!strcmp(proto_err_name(PE_COUNT), "internal") && !strcmp(proto_err_name((enum proto_err)-1), "internal"),
	   "out-of-range codes name as internal");
}

static bool bytes_eq(const struct pk *k, const char *hex)
{
	uint8_t want[256];
	size_t n = 0;

	while (*hex && n < sizeof(want)) {
		if (*hex == ' ') {
			hex++;
			continue;
		}
		want[n++] = (uint8_t)strtoul((char[3]){ hex[0], hex[1], 0 }, NULL, 16);
		hex += 2;
	}
	if (k->sb.size == n && !memcmp(k->sb.data, want, n))
		return true;
	printf("# got:");
	for (size_t i = 0; i < k->sb.size; i++)
		printf(" %02x", pk_data(k)[i]);
	printf("\n");
	return false;
}

/* Scans, unpacks and parses a packed message. */
static enum proto_err roundtrip(const struct pk *k, msgpack_unpacked *up, struct proto_msg *m)
{
	size_t off = 0;
	char why[128];

	if (scan_whole(pk_data(k), k->sb.size, 1 * MiB, 16) != (ssize_t)k->sb.size)
		return PE_COUNT;
	msgpack_unpacked_init(up);
	if (msgpack_unpack_next(up, k->sb.data, k->sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
		return PE_COUNT;
	return proto_parse(&up->data, m, why, sizeof(why));
}

static bool str_is(const msgpack_object *o, const char *s)
{
	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
	       !memcmp(o->via.str.ptr, s, o->via.str.size);
}

static void test_packers(void)
{
	struct pk k;
	msgpack_unpacked up;
	struct proto_msg m;
	const char *s;
	size_t n;
	char why[128];

	/* the worked example of the protocol spec */
	pk_init(&k);
	proto_pack_request_head(&k.p, 1, "tokenize");
	msgpack_pack_map(&k.p, 1);
	proto_pack_cstr(&k.p, "text");
	proto_pack_str(&k.p, "Hi", 2);
	ok(bytes_eq(&k, "94 00 01 a8 74 6f 6b 65 6e 69 7a 65 91 81 a4 74 65 78 74 a2 48 69"),
	   "worked example request: tokenize {text: Hi} msgid 1, byte for byte");
	ok(roundtrip(&k, &up, &m) == PE_OK && m.type == MSG_REQUEST && m.msgid == 1 &&
	   proto_method_is(&m, "tokenize") &&
	   proto_get_str(proto_params(&m), "text", 10, &s, &n, why, sizeof(why)) == 1 && n == 2 &&
	   !memcmp(s, "Hi", 2), "worked example request round-trips through proto_parse");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	pk_init(&k);
	proto_pack_result_head(&k.p, 1);
	msgpack_pack_map(&k.p, 1);
	proto_pack_cstr(&k.p, "tokens");
	msgpack_pack_array(&k.p, 2);
	msgpack_pack_uint32(&k.p, 1);
	msgpack_pack_uint32(&k.p, 15043);
	ok(bytes_eq(&k, "94 01 01 c0 81 a6 74 6f 6b 65 6e 73 92 01 cd 3a c3"),
	   "worked example response: [1, 1, nil, {tokens: [1, 15043]}], byte for byte");
	ok(roundtrip(&k, &up, &m) == PE_OK && m.type == MSG_RESPONSE && m.has_msgid && m.msgid == 1 &&
	   m.error->type == MSGPACK_OBJECT_NIL && proto_find(m.result, "tokens"),
	   "worked example response round-trips");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	/* a request with no params map */
	pk_init(&k);
	proto_pack_request_head(&k.p, 4294967295u, "info");
	msgpack_pack_nil(&k.p);
	ok(roundtrip(&k, &up, &m) == PE_OK && m.msgid == 4294967295u && !proto_params(&m),
	   "request head with msgid 2^32-1 and nil params round-trips");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	/* error responses */
	pk_init(&k);
	proto_pack_error(&k.p, true, 42, PE_CONTEXT_OVERFLOW, "prompt is 5000 tokens, context is 4096");
	ok(roundtrip(&k, &up, &m) == PE_OK && m.type == MSG_RESPONSE && m.has_msgid && m.msgid == 42 &&
	   m.result->type == MSGPACK_OBJECT_NIL && str_is(proto_find(m.error, "code"), "context_overflow") &&
	   str_is(proto_find(m.error, "message"), "prompt is 5000 tokens, context is 4096"),
	   "error response round-trips: code and message");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	pk_init(&k);
	proto_pack_error(&k.p, false, 42, PE_TOO_LARGE, "message bigger than 1048576 bytes");
	ok(k.sb.size > 2 && pk_data(&k)[2] == 0xc0 && roundtrip(&k, &up, &m) == PE_OK && !m.has_msgid &&
	   str_is(proto_find(m.error, "code"), "too_large"), "error response without msgid: nil msgid");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	pk_init(&k);
	proto_pack_error(&k.p, true, 1, PE_INVALID_PARAMS, "field 'prompt': bad \xff\xc3 bytes \xe2\x82\xac");
	ok(roundtrip(&k, &up, &m) == PE_OK &&
	   str_is(proto_find(m.error, "message"),
		  "field 'prompt': bad \xef\xbf\xbd\xef\xbf\xbd bytes \xe2\x82\xac"),
	   "error message with invalid UTF-8 is sent with U+FFFD in its place");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	pk_init(&k);
	proto_pack_error(&k.p, true, 1, PE_BUSY, NULL);
	ok(roundtrip(&k, &up, &m) == PE_OK && str_is(proto_find(m.error, "message"), "busy"),
	   "NULL error message: the code name");
	ok(bytes_eq(&k, "94 01 01 82 a4 63 6f 64 65 a4 62 75 73 79 a7 6d 65 73 73 61 67 65 a4 62 75 73 79 c0"),
	   "error response bytes: a map of code and message, then nil");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	/* notifications */
	pk_init(&k);
	proto_pack_notification_head(&k.p, "generate.chunk", 2);
	msgpack_pack_uint32(&k.p, 7);
	msgpack_pack_map(&k.p, 1);
	proto_pack_cstr(&k.p, "response");
	proto_pack_str(&k.p, "", 0);
	ok(bytes_eq(&k, "93 02 ae 67 65 6e 65 72 61 74 65 2e 63 68 75 6e 6b 92 07 81 a8 72 65 73 70 6f 6e 73 65 a0"),
	   "notification head bytes");
	ok(roundtrip(&k, &up, &m) == PE_OK && m.type == MSG_NOTIFICATION && proto_method_is(&m, "generate.chunk") &&
	   m.params->via.array.size == 2 && m.params->via.array.ptr[0].via.u64 == 7,
	   "notification round-trips");
	msgpack_unpacked_destroy(&up);
	pk_free(&k);

	/* str sizes across format boundaries */
	{
		static char big[70000];
		bool good = true;
		static const size_t sizes[] = { 0, 31, 32, 255, 256, 65535, 65536, 70000 };

		memset(big, 'z', sizeof(big));
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			pk_init(&k);
			proto_pack_str(&k.p, big, sizes[i]);
			off_t want = (off_t)sizes[i] + (sizes[i] < 32 ? 1 : sizes[i] < 256 ? 2 : sizes[i] < 65536 ? 3 : 5);

			good &= (off_t)k.sb.size == want && scan_agrees(pk_data(&k), k.sb.size, "packed str");
			pk_free(&k);
		}
		ok(good, "proto_pack_str at every str format boundary scans and unpacks");
	}
}

/* ---- regressions from fuzzing ------------------------------------------------------------------ */

/*
 * Inputs for tests/fuzz_proto.c, run through its own oracle (it aborts on
 * any disagreement): first byte = limits (bits 0-4 max_depth, bits 5-7
 * max_bytes 16 << 2n), then the stream. Crash inputs the fuzzer finds go
 * here; the first runs of 8 x 2 minutes found none, so these are the seeds
 * and hand-picked edges.
 */
static void test_fuzz_regressions(void)
{
#define IN(name, lit) { name, lit, sizeof(lit) - 1 }
	static const struct {
		const char *name;
		const char *b;
		size_t n;
	} cases[] = {
		IN("worked example request", "\xf0\x94\x00\x01\xa8tokenize\x91\x81\xa4text\xa2Hi"),
		IN("worked example response", "\xf0\x94\x01\x01\xc0\x81\xa6tokens\x92\x01\xcd\x3a\xc3"),
		IN("two requests back to back", "\xf0\x94\x00\x01\xa1x\x90\x94\x00\x02\xa1y\x91\xc0"),
		IN("getters on NaN and bad UTF-8", "\xf0\x94\x00\x01\xa1x\x91\x82\xa4seed\xcb\x7f\xf8\0\0\0\0\0\0"
		  "\xa6prompt\xa2\xc3\x28"),
		IN("nested params arrays", "\xf0\x94\x00\x01\xa1x\x91\x81\xa8messages\x92\x81\xa0\xc3\x80"),
		IN("0xc1 after a complete message", "\xf0\x01\xc1"),
		IN("array32 of 2^32-1 at 16 bytes", "\x0f\xdd\xff\xff\xff\xff"),
		IN("31 nested arrays at max_depth 31", "\xff\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
		  "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x90"),
		IN("incomplete str8 at the size cap", "\x00\xd9\x0e" "abcdefghijklm"),
		IN("ext8 split at its type byte", "\x1f\xc7\x01"),
		IN("max_depth 0", "\x00\x90"),
		IN("empty", "\x00"),
	};

#undef IN

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(LLVMFuzzerTestOneInput((const uint8_t *)cases[i].b, cases[i].n) == 0,
		   "fuzz input: %s", cases[i].name);
}

int main(void)
{
	diag("random seed %#" PRIx64, rng_state);
	test_formats();
	test_raw_encodings();
	test_nested();
	test_random();
	test_trickle_linear();
	test_split_headers();
	test_limits();
	test_parse_valid();
	test_parse_invalid();
	test_getters();
	test_err_names();
	test_packers();
	test_fuzz_regressions();
	return done_testing();
}
