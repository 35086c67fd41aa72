/* Unit tests for the tokenizer: llama.cpp's SPM vectors, the detokenizer's UTF-8 guarantees, and corrupt vocabularies. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "tap.h"
#include "tokenizer.h"

#define MARK "\xe2\x96\x81"	/* U+2581 */

/* ---- helpers ------------------------------------------------------------- */

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		diag("out of memory");
		exit(99);
	}
	return p;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	size_t n = 0, cap = 0, r;

	if (!f)
		return NULL;
	do {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 65536;
			p = xrealloc(p, cap + 1);
		}
		r = fread(p + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	p[n] = '\0';
	*len = n;
	return p;
}

/* Printable rendering of arbitrary bytes for test names (static buffer). */
static const char *show(const char *s, size_t n)
{
	static char out[128];
	size_t i, o = 0;

	for (i = 0; i < n && o < sizeof(out) - 8; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n')
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\n");
		else if (c == '\t')
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\t");
		else if (c < 0x20 || c == 0x7f || c == '#' || c == '\\')
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	if (i < n)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "...");
	out[o] = '\0';
	return out;
}

/* Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF). */
static int valid_utf8(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i], lo = 0x80, hi = 0xBF;
		size_t need, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			need = 2;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 3;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 4;
		else
			return 0;
		if (c == 0xE0)
			lo = 0xA0;
		if (c == 0xED)
			hi = 0x9F;
		if (c == 0xF0)
			lo = 0x90;
		if (c == 0xF4)
			hi = 0x8F;
		if (i + need > n || p[i + 1] < lo || p[i + 1] > hi)
			return 0;
		for (k = 2; k < need; k++)
			if ((p[i + k] & 0xC0) != 0x80)
				return 0;
		i += need;
	}
	return 1;
}

static int ids_eq(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
	return na == nb && (na == 0 || memcmp(a, b, na * sizeof(*a)) == 0);
}

static void show_ids(const char *what, const int32_t *ids, size_t n)
{
	char buf[512];
	size_t i, o = 0;

	for (i = 0; i < n && o < sizeof(buf) - 16; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, " %" PRId32, ids[i]);
	buf[o] = '\0';
	diag("%s:%s%s", what, buf, i < n ? " ..." : "");
}

static int tokenize(const struct ms_tokenizer *t, const char *s, size_t n, bool bos,
		    bool special, int32_t **ids, size_t *nids)
{
	ms_err e = { 0, "" };
	int r = ms_tokenize(t, s, n, bos, special, ids, nids, &e);

	if (r)
		diag("ms_tokenize: %d %s", r, e.msg);
	return r;
}

/* Detokenizes through the incremental API, checking every chunk is valid UTF-8. */
static char *detok_stream(const struct ms_tokenizer *t, const int32_t *ids, size_t n,
			  bool strip, size_t *len, int *chunks_ok)
{
	struct ms_detok d;
	char chunk[MS_DETOK_MAX_OUT];
	char *out = NULL;
	size_t used = 0, i;
	int w;

	*chunks_ok = 1;
	ms_detok_init(&d, t, strip);
	for (i = 0; i <= n; i++) {
		w = i < n ? ms_detok_push(&d, ids[i], chunk, sizeof(chunk))
			  : ms_detok_flush(&d, chunk, sizeof(chunk));
		if (w < 0 || (size_t)w > sizeof(chunk)) {
			*chunks_ok = 0;
			continue;
		}
		if (!valid_utf8(chunk, (size_t)w))
			*chunks_ok = 0;
		out = xrealloc(out, used + (size_t)w + 1);
		memcpy(out + used, chunk, (size_t)w);
		used += (size_t)w;
	}
	out = xrealloc(out, used + 1);
	out[used] = '\0';
	*len = used;
	return out;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- a tiny GGUF v3 builder for in-memory vocabularies ------------------- */

struct gb {
	unsigned char *p;
	size_t n, cap;
	uint64_t n_kv;
};

static void gb_put(struct gb *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;

		while (cap < b->n + n)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, d, n);
	b->n += n;
}

static void gb_u8(struct gb *b, uint8_t v) { gb_put(b, &v, 1); }
static void gb_u32(struct gb *b, uint32_t v) { gb_put(b, &v, 4); }
static void gb_u64(struct gb *b, uint64_t v) { gb_put(b, &v, 8); }

static void gb_str(struct gb *b, const char *s)
{
	gb_u64(b, strlen(s));
	gb_put(b, s, strlen(s));
}

static void gb_begin(struct gb *b)
{
	memset(b, 0, sizeof(*b));
	gb_u32(b, GGUF_MAGIC);
	gb_u32(b, 3);
	gb_u64(b, 0);	/* tensors */
	gb_u64(b, 0);	/* kvs, patched by gb_end */
}

static void gb_key(struct gb *b, const char *k, uint32_t type)
{
	gb_str(b, k);
	gb_u32(b, type);
	b->n_kv++;
}

static void gb_arr(struct gb *b, const char *k, uint32_t elem, uint64_t n)
{
	gb_key(b, k, GGUF_ARRAY);
	gb_u32(b, elem);
	gb_u64(b, n);
}

static void gb_end(struct gb *b)
{
	memcpy(b->p + 16, &b->n_kv, 8);
	while (b->n % 32)
		gb_u8(b, 0);
}

struct vtok {
	const char *text;
	float score;
	int32_t type;
};

#define NO_KEY INT64_MIN

/* How a vocabulary file deviates from a well-formed one. */
struct vopt {
	const char *model;	/* NULL: "llama" */
	bool no_model;
	bool no_tokens;
	bool scores_u8;		/* scores stored as u8 instead of f32 */
	bool types_i8;		/* token types stored as i8 instead of i32 */
	int scores_delta;	/* store this many scores more (or fewer) than tokens */
	int64_t bos, eos, unk, pad;	/* NO_KEY (0 here means default) */
	int add_space;		/* -1 absent, else 0/1 */
};

static void build_vocab(struct gb *b, const struct vtok *v, size_t n, const struct vopt *o)
{
	uint32_t st = o->scores_u8 ? GGUF_U8 : GGUF_F32;
	uint32_t tt = o->types_i8 ? GGUF_I8 : GGUF_I32;
	size_t i, ns = (size_t)((int64_t)n + o->scores_delta);

	gb_begin(b);
	if (!o->no_model) {
		gb_key(b, "tokenizer.ggml.model", GGUF_STRING);
		gb_str(b, o->model ? o->model : "llama");
	}
	if (!o->no_tokens) {
		gb_arr(b, "tokenizer.ggml.tokens", GGUF_STRING, n);
		for (i = 0; i < n; i++)
			gb_str(b, v[i].text);
	}
	gb_arr(b, "tokenizer.ggml.scores", st, ns);
	for (i = 0; i < ns; i++) {
		float f = i < n ? v[i].score : 0.0f;

		if (st == GGUF_F32)
			gb_put(b, &f, 4);
		else
			gb_u8(b, (uint8_t)(int)f);
	}
	gb_arr(b, "tokenizer.ggml.token_type", tt, n);
	for (i = 0; i < n; i++) {
		if (tt == GGUF_I32)
			gb_put(b, &v[i].type, 4);
		else
			gb_u8(b, (uint8_t)v[i].type);
	}
	if (o->bos != NO_KEY) {
		gb_key(b, "tokenizer.ggml.bos_token_id", GGUF_U32);
		gb_u32(b, (uint32_t)(o->bos ? o->bos : 1));
	}
	if (o->eos != NO_KEY) {
		gb_key(b, "tokenizer.ggml.eos_token_id", GGUF_U32);
		gb_u32(b, (uint32_t)(o->eos ? o->eos : 2));
	}
	if (o->unk != NO_KEY) {
		gb_key(b, "tokenizer.ggml.unknown_token_id", GGUF_U32);
		gb_u32(b, (uint32_t)o->unk);
	}
	if (o->pad != NO_KEY) {
		gb_key(b, "tokenizer.ggml.padding_token_id", GGUF_U32);
		gb_u32(b, (uint32_t)o->pad);
	}
	if (o->add_space >= 0) {
		gb_key(b, "tokenizer.ggml.add_space_prefix", GGUF_BOOL);
		gb_u8(b, (uint8_t)o->add_space);
	}
	gb_end(b);
}

static const struct vopt plain = {
	.bos = 0, .eos = 0, .unk = 0, .pad = NO_KEY, .add_space = -1,
};

/*
 * Builds the file, parses it and loads the tokenizer; then frees the file
 * and its bytes, so that any later use of the mapping would trip ASan.
 */
static int load_mem(const struct vtok *v, size_t n, const struct vopt *o,
		    struct ms_tokenizer **t, ms_err *e)
{
	struct gb b;
	struct gguf *g = NULL;
	int r;

	build_vocab(&b, v, n, o);
	ms_err_clear(e);
	*t = NULL;
	r = ms_gguf_open_mem(b.p, b.n, &g, e);
	if (r) {
		diag("ms_gguf_open_mem: %d %s", r, e->msg);
		free(b.p);
		return r;
	}
	r = ms_tokenizer_load(g, t, e);
	ms_gguf_close(g);
	memset(b.p, 0xA5, b.n);
	free(b.p);
	return r;
}

static struct ms_tokenizer *load_file(const char *name)
{
	char path[4200];
	struct gguf *g = NULL;
	struct ms_tokenizer *t = NULL;
	ms_err e = { 0, "" };

	snprintf(path, sizeof(path), "%s/%s", test_data_dir(), name);
	if (ms_gguf_open(path, &g, &e)) {
		diag("%s: %s", path, e.msg);
		return NULL;
	}
	if (ms_tokenizer_load(g, &t, &e))
		diag("%s: %s", path, e.msg);
	ms_gguf_close(g);
	return t;
}

/* ---- llama.cpp's SPM vectors --------------------------------------------- */

struct vec {
	char *in;
	size_t in_len;
	int32_t *ids;
	size_t n_ids;
};

/* Inputs: lines up to a "__ggml_vocab_test__" line, joined by '\n'. */
static size_t parse_vectors(struct vec **out)
{
	char path[4200];
	char *inp, *outp, *p, *end, *line;
	size_t inp_len, out_len, n = 0, cap = 0, k;
	struct vec *v = NULL;
	size_t start;
	static const char sep[] = "__ggml_vocab_test__";

	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf.inp", test_data_dir());
	inp = read_file(path, &inp_len);
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf.out", test_data_dir());
	outp = read_file(path, &out_len);
	if (!inp || !outp) {
		free(inp);
		free(outp);
		*out = NULL;
		return 0;
	}
	p = inp;
	end = inp + inp_len;
	start = 0;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (ll == sizeof(sep) - 1 && memcmp(p, sep, ll) == 0) {
			size_t st = start, en = (size_t)(p - inp);

			/* drop the newline that precedes the separator */
			if (en > st)
				en--;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				v = xrealloc(v, cap * sizeof(*v));
			}
			v[n].in = xrealloc(NULL, en - st + 1);
			memcpy(v[n].in, inp + st, en - st);
			v[n].in[en - st] = '\0';
			v[n].in_len = en - st;
			v[n].ids = NULL;
			v[n].n_ids = 0;
			n++;
			start = nl ? (size_t)(nl + 1 - inp) : inp_len;
		}
		p = nl ? nl + 1 : end;
	}
	/* .out: line k holds the ids of input k */
	line = outp;
	for (k = 0; k < n && line < outp + out_len; k++) {
		char *nl = memchr(line, '\n', (size_t)(outp + out_len - line));
		char *q = line;

		if (nl)
			*nl = '\0';
		for (;;) {
			char *e;
			long id = strtol(q, &e, 10);

			if (e == q)
				break;
			v[k].ids = xrealloc(v[k].ids, (v[k].n_ids + 1) * sizeof(int32_t));
			v[k].ids[v[k].n_ids++] = (int32_t)id;
			q = e;
		}
		line = nl ? nl + 1 : outp + out_len;
	}
	if (k != n)
		diag(".out has %zu lines for %zu inputs", k, n);
	free(inp);
	free(outp);
	*out = v;
	return n;
}

static void test_vectors(const struct ms_tokenizer *t)
{
	struct vec *v;
	size_t n = parse_vectors(&v), i;

	ok(n == 46, "parsed %zu vectors from ggml-vocab-llama-spm.gguf.inp/.out", n);
	for (i = 0; i < n; i++) {
		int32_t *ids = NULL;
		size_t nids = 0;
		int r = tokenize(t, v[i].in, v[i].in_len, false, false, &ids, &nids);
		int good = !r && ids_eq(ids, nids, v[i].ids, v[i].n_ids);

		ok(good, "vector %zu: \"%s\"", i, show(v[i].in, v[i].in_len));
		if (!good) {
			show_ids("expected", v[i].ids, v[i].n_ids);
			show_ids("got     ", ids, nids);
		}
		free(ids);
	}

	/* Round trip: the space prefix comes back as one leading space, which
	 * strip_leading_space removes again. */
	for (i = 0; i < n; i++) {
		int32_t *ids = NULL;
		size_t nids = 0, len = 0, slen = 0;
		char *text = NULL, *stripped;
		int chunks_ok, good;
		ms_err e = { 0, "" };

		tokenize(t, v[i].in, v[i].in_len, false, false, &ids, &nids);
		good = !ms_detokenize(t, ids, nids, &text, &len, &e);
		if (v[i].in_len)
			good = good && len == v[i].in_len + 1 && text[0] == ' ' &&
			       memcmp(text + 1, v[i].in, v[i].in_len) == 0;
		else
			good = good && len == 0;
		stripped = detok_stream(t, ids, nids, true, &slen, &chunks_ok);
		good = good && chunks_ok && slen == v[i].in_len &&
		       memcmp(stripped, v[i].in, slen) == 0;
		ok(good, "round trip %zu: \"%s\"", i, show(v[i].in, v[i].in_len));
		free(text);
		free(stripped);
		free(ids);
	}
	for (i = 0; i < n; i++) {
		free(v[i].in);
		free(v[i].ids);
	}
	free(v);
}

/* ---- the llama vocabulary: API, specials, detokenizer ---------------------- */

static void test_basics(const struct ms_tokenizer *t)
{
	int32_t *ids = NULL;
	size_t n = 0, len;
	const char *p;
	char out[MS_DETOK_MAX_OUT];
	struct ms_detok d;

	ok(ms_tok_n_vocab(t) == 32000, "llama vocab: 32000 tokens");
	ok(ms_tok_bos(t) == 1 && ms_tok_eos(t) == 2 && ms_tok_add_bos(t), "bos 1, eos 2, add_bos");
	p = ms_tok_piece(t, 15043, &len);
	ok(p && len == 8 && memcmp(p, MARK "Hello", 8) == 0 && p[len] == '\0',
	   "piece 15043 is \"" MARK "Hello\", NUL-terminated");
	ok(ms_tok_piece(t, 32000, &len) == NULL && ms_tok_piece(t, -1, &len) == NULL,
	   "piece of an out-of-range id is NULL");
	ok(ms_tok_find(t, MARK "Hello", 8) == 15043 && ms_tok_find(t, "no such token", 13) == -1,
	   "ms_tok_find");
	ok(ms_tok_type(t, 1) == MS_TOK_CONTROL && ms_tok_type(t, 0) == MS_TOK_UNKNOWN &&
	   ms_tok_type(t, 3 + 0x41) == MS_TOK_BYTE && ms_tok_type(t, 15043) == MS_TOK_NORMAL &&
	   ms_tok_type(t, 32000) == -1, "ms_tok_type");

	ok(!tokenize(t, "", 0, true, false, &ids, &n) && n == 1 && ids[0] == 1,
	   "empty text with BOS gives just BOS");
	free(ids);
	ok(!tokenize(t, NULL, 0, false, false, &ids, &n) && n == 0 && ids != NULL,
	   "empty text without BOS gives no ids (non-NULL array)");
	free(ids);
	ok(!tokenize(t, "Hello world", 11, true, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 1, 15043, 3186 }, 3), "BOS + \"Hello world\"");
	free(ids);
	/* not NUL-terminated: the length rules */
	ok(!tokenize(t, "Hello worldXXXX", 11, false, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 15043, 3186 }, 2), "text need not be NUL-terminated");
	free(ids);

	/* Invalid UTF-8 goes through byte fallback, one byte token per bad byte. */
	ok(!tokenize(t, "a\xff" "b\xc3", 4, false, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 263, 3 + 0xff, 29890, 3 + 0xc3 }, 4),
	   "invalid UTF-8 bytes become byte tokens");
	if (n != 4)
		show_ids("got", ids, n);
	free(ids);
	ok(!tokenize(t, "\xe2\x82", 2, false, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 29871, 3 + 0xe2, 3 + 0x82 }, 3),
	   "a truncated character becomes byte tokens");
	if (n != 3)
		show_ids("got", ids, n);
	free(ids);

	/* Typed "<0x41>" is text, never the byte token it spells. */
	ok(!tokenize(t, "<0x41>", 6, false, true, &ids, &n) && n > 1, "\"<0x41>\" is plain text");
	free(ids);

	ms_detok_init(&d, t, false);
	ok(ms_detok_push(&d, 32000, out, sizeof(out)) == -EINVAL &&
	   ms_detok_push(&d, -5, out, sizeof(out)) == -EINVAL, "detok: out-of-range id is -EINVAL");
	ok(ms_detok_push(&d, 15043, out, 10) == -EINVAL, "detok: too small a buffer is -EINVAL");
	{
		ms_err e = { 0, "" };
		char *text = NULL;
		int32_t bad[] = { 15043, 99999 };

		ok(ms_detokenize(t, bad, 2, &text, &len, &e) == -EINVAL && !text && e.msg[0],
		   "ms_detokenize rejects an out-of-range id: %s", e.msg);
	}
}

static void test_special(const struct ms_tokenizer *t)
{
	const char *s = "<s>Hi</s>";
	int32_t *ids = NULL;
	size_t n = 0, i;
	int has;

	ok(!tokenize(t, s, strlen(s), false, true, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 1, 6324, 2 }, 3),
	   "parse_special on: <s> and </s> become ids 1 and 2");
	if (n != 3)
		show_ids("got", ids, n);
	free(ids);

	ok(!tokenize(t, s, strlen(s), false, false, &ids, &n), "parse_special off: tokenizes");
	for (has = 0, i = 0; i < n; i++)
		has |= ids[i] == 1 || ids[i] == 2 || ids[i] == 0;
	ok(!has && n > 4, "parse_special off: no control or unknown ids for \"%s\" (%zu ids)", s, n);
	free(ids);

	s = "a<unk>b";
	ok(!tokenize(t, s, strlen(s), false, true, &ids, &n) && n >= 3 && ids[1] == 0,
	   "parse_special on: <unk> is split out too");
	free(ids);
	ok(!tokenize(t, s, strlen(s), false, false, &ids, &n), "parse_special off: <unk> tokenizes");
	for (has = 0, i = 0; i < n; i++)
		has |= ids[i] == 0;
	ok(!has, "parse_special off: <unk> text is not the unknown token");
	free(ids);

	/* After a special token the next fragment gets the space prefix again. */
	s = "Hi<s>Hi";
	ok(!tokenize(t, s, strlen(s), false, true, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 6324, 1, 6324 }, 3),
	   "space prefix after a special token");
	if (n != 3)
		show_ids("got", ids, n);
	free(ids);
}

/* Ids of the byte tokens for s. */
static size_t byte_ids(const struct ms_tokenizer *t, const char *s, int32_t *ids)
{
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++) {
		char name[8];

		snprintf(name, sizeof(name), "<0x%02X>", (unsigned char)s[i]);
		ids[i] = ms_tok_find(t, name, 6);
	}
	return n;
}

static void test_detok(const struct ms_tokenizer *t)
{
	struct ms_detok d;
	char out[MS_DETOK_MAX_OUT];
	int32_t ids[8];
	size_t n, i;
	int w, quiet;

	/* "€" (E2 82 AC) fed as three byte tokens */
	n = byte_ids(t, "\xe2\x82\xac", ids);
	ms_detok_init(&d, t, false);
	for (quiet = 1, i = 0; i + 1 < n; i++)
		quiet &= ms_detok_push(&d, ids[i], out, sizeof(out)) == 0;
	ok(quiet && d.npend == 2, "detok: the first two bytes of a 3-byte character print nothing");
	w = ms_detok_push(&d, ids[2], out, sizeof(out));
	ok(w == 3 && memcmp(out, "\xe2\x82\xac", 3) == 0, "detok: the third byte prints the character");
	ok(ms_detok_flush(&d, out, sizeof(out)) == 0, "detok: nothing left at flush");

	/* a 4-byte emoji, then normal text */
	n = byte_ids(t, "\xf0\x9f\x98\x80", ids);
	ms_detok_init(&d, t, false);
	for (quiet = 1, i = 0; i + 1 < n; i++)
		quiet &= ms_detok_push(&d, ids[i], out, sizeof(out)) == 0;
	w = ms_detok_push(&d, ids[3], out, sizeof(out));
	ok(quiet && w == 4 && memcmp(out, "\xf0\x9f\x98\x80", 4) == 0,
	   "detok: a 4-byte character appears only when complete");

	/* lone continuation byte: never valid, replaced at once */
	byte_ids(t, "\x80", ids);
	ms_detok_init(&d, t, false);
	w = ms_detok_push(&d, ids[0], out, sizeof(out));
	ok(w == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0, "detok: a lone continuation byte is U+FFFD");

	/* truncated sequence at the end of the stream */
	byte_ids(t, "\xe2\x82", ids);
	ms_detok_init(&d, t, false);
	w = ms_detok_push(&d, ids[0], out, sizeof(out));
	w += ms_detok_push(&d, ids[1], out, sizeof(out));
	ok(w == 0, "detok: a truncated sequence is held");
	w = ms_detok_flush(&d, out, sizeof(out));
	ok(w == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0, "detok: ...and becomes U+FFFD at flush");
	ok(ms_detok_flush(&d, out, sizeof(out)) == 0, "detok: a second flush prints nothing");

	/* truncated sequence interrupted by a normal token */
	byte_ids(t, "\xe2", ids);
	ms_detok_init(&d, t, false);
	w = ms_detok_push(&d, ids[0], out, sizeof(out));
	w = ms_detok_push(&d, 15043, out, sizeof(out));	/* "▁Hello" */
	ok(w == 9 && memcmp(out, "\xef\xbf\xbd Hello", 9) == 0,
	   "detok: an interrupted sequence becomes U+FFFD before the next text");

	/* invalid lead bytes and overlong/surrogate starts */
	byte_ids(t, "\xc0\xff\xed\xa0", ids);
	{
		size_t len;
		int chunks_ok;
		char *s = detok_stream(t, ids, 4, false, &len, &chunks_ok);

		ok(chunks_ok && valid_utf8(s, len) && len == 12,
		   "detok: C0, FF and a surrogate start give four U+FFFD (%zu bytes)", len);
		free(s);
	}

	/* control tokens print nothing; strip_leading_space */
	ms_detok_init(&d, t, true);
	w = ms_detok_push(&d, 1, out, sizeof(out));
	ok(w == 0 && d.strip_space, "detok: BOS prints nothing and leaves the strip pending");
	w = ms_detok_push(&d, 15043, out, sizeof(out));
	ok(w == 5 && memcmp(out, "Hello", 5) == 0, "strip_leading_space drops the first space");
	w = ms_detok_push(&d, 3186, out, sizeof(out));
	ok(w == 6 && memcmp(out, " world", 6) == 0, "strip_leading_space: only once");
	ms_detok_init(&d, t, false);
	w = ms_detok_push(&d, 15043, out, sizeof(out));
	ok(w == 6 && memcmp(out, " Hello", 6) == 0, "without strip the space stays");
	ms_detok_init(&d, t, true);
	w = ms_detok_push(&d, 29908, out, sizeof(out));	/* "H" */
	w = ms_detok_push(&d, 15043, out, sizeof(out));
	ok(w == 6 && memcmp(out, " Hello", 6) == 0,
	   "strip_leading_space: a first output without a space ends the stripping");
}

/* Random id sequences, biased towards byte tokens: every chunk stays valid UTF-8. */
static void test_random_utf8(const struct ms_tokenizer *t)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	int round, bad = 0, bad_stream = 0;
	uint32_t nv = ms_tok_n_vocab(t);

	for (round = 0; round < 2000; round++) {
		int32_t ids[64];
		size_t n = 1 + round % 64, i, len;
		char *text;
		int chunks_ok;

		for (i = 0; i < n; i++) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			ids[i] = (int32_t)((s >> 8) % 4 == 0 ? (s >> 16) % nv : 3 + (s >> 16) % 256);
		}
		text = detok_stream(t, ids, n, round & 1, &len, &chunks_ok);
		bad_stream += !chunks_ok;
		bad += !valid_utf8(text, len) || strlen(text) > len;
		free(text);
	}
	ok(!bad_stream, "random id sequences: every pushed chunk is valid UTF-8 (%d bad)", bad_stream);
	ok(!bad, "random id sequences: the whole output is valid UTF-8 (%d bad)", bad);
}

/*
 * A naive O(n^2) SentencePiece BPE straight from numerics.md section 4, as
 * a reference for the heap-based encoder: rescan all pairs, merge the best
 * (ties leftmost), repeat. Scores come from the file itself.
 */
static size_t ref_char_len(const unsigned char *s, size_t n)
{
	size_t k = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;

	return k <= n && valid_utf8((const char *)s, k) ? k : 1;
}

static size_t ref_encode(const struct ms_tokenizer *t, const float *scores,
			 const char *text, size_t len, int32_t *out)
{
	char buf[4096];
	size_t off[1400], n_sym = 0, m = 0, i, n_out = 0;

	memcpy(buf, MARK, 3);
	m = 3;
	for (i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(buf + m, MARK, 3);
			m += 3;
		} else {
			buf[m++] = text[i];
		}
	}
	for (i = 0; i < m; i += ref_char_len((unsigned char *)buf + i, m - i))
		off[n_sym++] = i;
	off[n_sym] = m;
	for (;;) {
		size_t best = SIZE_MAX;
		float best_score = 0.0f;

		for (i = 0; i + 1 < n_sym; i++) {
			int32_t id = ms_tok_find(t, buf + off[i], off[i + 2] - off[i]);
			int ty = ms_tok_type(t, id);

			if (id < 0 || ty == MS_TOK_CONTROL || ty == MS_TOK_UNKNOWN || ty == MS_TOK_BYTE)
				continue;
			if (best == SIZE_MAX || scores[id] > best_score) {
				best = i;
				best_score = scores[id];
			}
		}
		if (best == SIZE_MAX)
			break;
		memmove(off + best + 1, off + best + 2, (n_sym - best - 1) * sizeof(*off));
		n_sym--;
	}
	for (i = 0; i < n_sym; i++) {
		int32_t id = ms_tok_find(t, buf + off[i], off[i + 1] - off[i]);
		size_t k;

		if (id >= 0 && ms_tok_type(t, id) == MS_TOK_NORMAL) {
			out[n_out++] = id;
			continue;
		}
		for (k = off[i]; k < off[i + 1]; k++) {
			char name[8];

			snprintf(name, sizeof(name), "<0x%02X>", (unsigned char)buf[k]);
			out[n_out++] = ms_tok_find(t, name, 6);
		}
	}
	return n_out;
}

/* Random texts built from vocabulary pieces, spaces and stray bytes, against the reference. */
static void test_reference(const struct ms_tokenizer *t)
{
	char path[4200];
	struct gguf *g = NULL;
	struct gguf_arr a;
	float *scores;
	uint64_t s = 12345;
	uint32_t nv = ms_tok_n_vocab(t), i;
	int round, bad = 0;

	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf", test_data_dir());
	if (ms_gguf_open(path, &g, NULL) ||
	    ms_gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_F32, &a, NULL)) {
		ok(0, "reference: scores readable");
		ms_gguf_close(g);
		return;
	}
	scores = xrealloc(NULL, nv * sizeof(*scores));
	for (i = 0; i < nv; i++)
		scores[i] = ms_gguf_arr_f32(&a, i);
	ms_gguf_close(g);

	for (round = 0; round < 400; round++) {
		char text[400];
		int32_t want[1400], *ids = NULL;
		size_t len = 0, nw, n = 0;

		while (len < 40 + (size_t)round % 300) {
			size_t pl;
			const char *p;
			uint32_t r;

			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			r = (uint32_t)(s >> 20);
			if (r % 10 == 0) {
				text[len++] = ' ';
			} else if (r % 37 == 1) {
				text[len++] = (char)(0x80 + (r >> 8) % 128);	/* stray byte */
			} else {
				p = ms_tok_piece(t, (int32_t)(259 + (r >> 8) % (nv - 259)), &pl);
				if (pl + len > 360)
					break;
				/* unescape U+2581 so that the text looks like typed text */
				while (pl) {
					if (pl >= 3 && !memcmp(p, MARK, 3)) {
						text[len++] = ' ';
						p += 3;
						pl -= 3;
					} else {
						text[len++] = *p++;
						pl--;
					}
				}
			}
		}
		nw = ref_encode(t, scores, text, len, want);
		if (tokenize(t, text, len, false, false, &ids, &n) || !ids_eq(ids, n, want, nw)) {
			if (!bad++) {
				diag("text: \"%s\"", show(text, len));
				show_ids("reference", want, nw);
				show_ids("got      ", ids, n);
			}
		}
		free(ids);
	}
	ok(!bad, "400 random texts match a naive O(n^2) reference BPE (%d differ)", bad);

	/* Runs of one pattern: many equal-score pairs, so the leftmost rule decides. */
	bad = 0;
	for (round = 0; round < 6 * 64; round++) {
		static const char *const unit[] = { "a", " ", "ab", "\n", "aab ", "\xc3\xa9" };
		const char *u = unit[round / 64];
		size_t ul = strlen(u), len = (size_t)(round % 64 + 1) * ul, k, nw, n = 0;
		char text[400];
		int32_t want[1400], *ids = NULL;

		for (k = 0; k < len; k++)
			text[k] = u[k % ul];
		nw = ref_encode(t, scores, text, len, want);
		if (tokenize(t, text, len, false, false, &ids, &n) || !ids_eq(ids, n, want, nw)) {
			if (!bad++) {
				diag("text: \"%s\"", show(text, len));
				show_ids("reference", want, nw);
				show_ids("got      ", ids, n);
			}
		}
		free(ids);
	}
	ok(!bad, "runs of repeated patterns match the reference (%d differ)", bad);
	free(scores);
}

/* Sanitizers slow the encoder about twofold; the 1 s bound is for plain builds. */
#if defined(__SANITIZE_ADDRESS__)
#define PERF_LIMIT 3.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PERF_LIMIT 3.0
#endif
#endif
#ifndef PERF_LIMIT
#define PERF_LIMIT 1.0
#endif

static void test_perf(const struct ms_tokenizer *t)
{
	static const struct {
		const char *what;
		const char *unit;
		bool special;
	} cases[] = {
		{ "repeated 'a'", "a", false },
		{ "repeated spaces", " ", false },
		{ "repeated \"ab \"", "ab ", false },
		{ "repeated <s> with parse_special", "<s>", true },
		{ "repeated \"<s\" with parse_special", "<s", true },
		{ "repeated 2-byte chars", "\xc3\xa9", false },
	};
	size_t len = 1 << 20, i, k;
	char *s = xrealloc(NULL, len);

	for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		size_t ul = strlen(cases[k].unit), n = 0;
		int32_t *ids = NULL;
		double t0, dt;
		int r;

		for (i = 0; i < len; i++)
			s[i] = cases[k].unit[i % ul];
		t0 = now();
		r = tokenize(t, s, len - len % ul, false, cases[k].special, &ids, &n);
		dt = now() - t0;
		ok(!r && n > 0 && dt < PERF_LIMIT, "1 MiB of %s: %zu ids in %.3f s of CPU time (limit %.0f s)",
		   cases[k].what, n, dt, PERF_LIMIT);
		free(ids);
	}
	free(s);
}

/* ---- stories260K ---------------------------------------------------------- */

static void test_stories(void)
{
	static const int32_t gen[] = {
		432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
		410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394,
		261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432,
		398, 312, 286, 267, 414, 270, 333, 415, 426, 13, 438, 310, 439, 419, 357, 336,
	};
	static const char gen_text[] =
		", there was a little girl named Lily. She loved to play outside in the park. "
		"One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
		"Lily's mom said";
	struct ms_tokenizer *t = load_file("stories260K.gguf");
	int32_t *ids = NULL;
	size_t n = 0, len = 0;
	char *text = NULL;
	ms_err e = { 0, "" };

	ok(t != NULL, "stories260K.gguf: tokenizer loads (padding id 4294967295 accepted)");
	if (!t)
		return;
	ok(ms_tok_n_vocab(t) == 512, "stories260K: 512 tokens");
	ok(!tokenize(t, "Once upon a time", 16, true, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 1, 403, 407, 261, 378 }, 5),
	   "stories260K: \"Once upon a time\" with BOS is 1 403 407 261 378");
	if (n != 5)
		show_ids("got", ids, n);
	free(ids);
	ok(!ms_detokenize(t, gen, sizeof(gen) / sizeof(gen[0]), &text, &len, &e) &&
	   len == strlen(gen_text) && memcmp(text, gen_text, len) == 0,
	   "stories260K: the golden generation decodes to the expected text");
	if (text && (len != strlen(gen_text) || memcmp(text, gen_text, len)))
		diag("got: %s", text);
	free(text);
	ms_tokenizer_free(t);
}

/* ---- in-memory vocabularies: corrupt files and algorithm corners ---------- */

static const struct vtok small[] = {
	{ "<unk>", 0.0f, MS_TOK_UNKNOWN },
	{ "<s>", 0.0f, MS_TOK_CONTROL },
	{ "</s>", 0.0f, MS_TOK_CONTROL },
	{ "<0x41>", 0.0f, MS_TOK_BYTE },
	{ "<0x0a>", 0.0f, MS_TOK_BYTE },
	{ MARK, -1.0f, MS_TOK_NORMAL },
	{ "a", -2.0f, MS_TOK_NORMAL },
	{ "b", -2.0f, MS_TOK_NORMAL },
	{ MARK "a", -0.5f, MS_TOK_NORMAL },
};
#define N_SMALL (sizeof(small) / sizeof(small[0]))

static void expect_reject(const char *what, const struct vtok *v, size_t n,
			  const struct vopt *o, const char *needle)
{
	struct ms_tokenizer *t = NULL;
	ms_err e = { 0, "" };
	int r = load_mem(v, n, o, &t, &e);

	ok(r < 0 && !t && e.code == r && strstr(e.msg, needle) != NULL,
	   "rejects %s: %d \"%s\"", what, r, e.msg);
	ms_tokenizer_free(t);
}

static void test_corrupt(void)
{
	struct vtok v[N_SMALL];
	struct vopt o;
	struct ms_tokenizer *t = NULL;
	ms_err e = { 0, "" };
	int r;

	r = load_mem(small, N_SMALL, &plain, &t, &e);
	ok(r == 0 && t, "a well-formed small vocabulary loads (%s)", e.msg);
	if (t) {
		int32_t *ids = NULL;
		size_t n = 0;

		/* "ab\n": a merges with the prefix, b is normal, \n falls back to <0x0a> */
		ok(!tokenize(t, "ab\n", 3, false, false, &ids, &n) &&
		   ids_eq(ids, n, (const int32_t[]){ 8, 7, 4 }, 3),
		   "small vocab: \"ab\\n\" is " MARK "a b <0x0a> (lowercase byte token)");
		if (n != 3)
			show_ids("got", ids, n);
		free(ids);
		/* 'c' has no byte token: the unknown token stands in */
		ok(!tokenize(t, "c", 1, false, false, &ids, &n) &&
		   ids_eq(ids, n, (const int32_t[]){ 5, 0 }, 2), "small vocab: no byte token gives <unk>");
		free(ids);
		ok(!tokenize(t, "A", 1, false, false, &ids, &n) &&
		   ids_eq(ids, n, (const int32_t[]){ 5, 3 }, 2), "small vocab: 'A' uses <0x41>");
		free(ids);
		ms_tokenizer_free(t);
	}

	o = plain;
	o.scores_u8 = true;
	expect_reject("scores stored as u8", small, N_SMALL, &o, "scores");
	o = plain;
	o.types_i8 = true;
	expect_reject("token_type stored as i8", small, N_SMALL, &o, "token_type");
	o = plain;
	o.scores_delta = -1;
	expect_reject("fewer scores than tokens", small, N_SMALL, &o, "scores");
	o = plain;
	o.scores_delta = 2;
	expect_reject("more scores than tokens", small, N_SMALL, &o, "scores");

	memcpy(v, small, sizeof(v));
	v[3].text = "<0xZZ>";
	expect_reject("byte token <0xZZ>", v, N_SMALL, &plain, "<0xZZ>");
	v[3].text = "<0x-1>";
	expect_reject("byte token <0x-1>", v, N_SMALL, &plain, "<0x-1>");
	v[3].text = "<0x411>";
	expect_reject("byte token <0x411>", v, N_SMALL, &plain, "byte token");
	v[3].text = "A";
	expect_reject("byte token without <0x..>", v, N_SMALL, &plain, "byte token");

	memcpy(v, small, sizeof(v));
	v[6].type = 7;
	expect_reject("unknown token type 7", v, N_SMALL, &plain, "type");
	{
		static char longtok[MS_TOK_MAX_PIECE + 2];

		memset(longtok, 'x', MS_TOK_MAX_PIECE + 1);
		memcpy(v, small, sizeof(v));
		v[7].text = longtok;
		expect_reject("a token text over MS_TOK_MAX_PIECE", v, N_SMALL, &plain, "bytes long");
	}

	o = plain;
	o.bos = (int64_t)N_SMALL;
	expect_reject("bos id out of range", small, N_SMALL, &o, "bos_token_id");
	o = plain;
	o.eos = 70000;
	expect_reject("eos id out of range", small, N_SMALL, &o, "eos_token_id");
	o = plain;
	o.bos = 4294967295ll;
	expect_reject("bos id 4294967295 (none)", small, N_SMALL, &o, "bos_token_id");
	o = plain;
	o.unk = 1000;
	expect_reject("unknown id out of range", small, N_SMALL, &o, "unknown_token_id");
	o = plain;
	o.pad = 1000;
	expect_reject("padding id out of range", small, N_SMALL, &o, "padding_token_id");
	o = plain;
	o.no_tokens = true;
	expect_reject("missing tokens array", small, N_SMALL, &o, "tokenizer.ggml.tokens");
	o = plain;
	o.model = "gpt2";
	expect_reject("model gpt2", small, N_SMALL, &o, "gpt2");
	o = plain;
	o.no_model = true;
	expect_reject("missing model", small, N_SMALL, &o, "tokenizer.ggml.model");
	expect_reject("an empty vocabulary", small, 0, &plain, "tokens");

	o = plain;
	o.pad = 4294967295ll;
	r = load_mem(small, N_SMALL, &o, &t, &e);
	ok(r == 0 && t, "padding id 4294967295 means none and is accepted (%s)", e.msg);
	ms_tokenizer_free(t);
	o = plain;
	o.unk = 4294967295ll;
	r = load_mem(small, N_SMALL, &o, &t, &e);
	ok(r == 0 && t, "unknown id 4294967295 means none and is accepted (%s)", e.msg);
	if (t) {
		int32_t *ids = NULL;
		size_t n = 0;

		r = ms_tokenize(t, "c", 1, false, false, &ids, &n, &e);
		ok(r == -EINVAL && !ids && strstr(e.msg, "0x63"),
		   "a byte with neither byte token nor <unk> is a clean error: %s", e.msg);
		free(ids);
	}
	ms_tokenizer_free(t);
	o = plain;
	o.bos = NO_KEY;
	o.eos = NO_KEY;
	o.unk = NO_KEY;
	o.add_space = 0;
	r = load_mem(small, N_SMALL, &o, &t, &e);
	ok(r == 0 && t && ms_tok_bos(t) == 1 && ms_tok_eos(t) == 2,
	   "bos/eos default to 1/2 when absent");
	if (t) {
		int32_t *ids = NULL;
		size_t n = 0;

		ok(!tokenize(t, "a", 1, false, false, &ids, &n) &&
		   ids_eq(ids, n, (const int32_t[]){ 6 }, 1), "add_space_prefix false: no prefix");
		free(ids);
	}
	ms_tokenizer_free(t);
}

/* Special-token splitting order, user-defined tokens, and resegmenting unused pieces. */
static void test_corners(void)
{
	static const struct vtok v[] = {
		{ "<unk>", 0.0f, MS_TOK_UNKNOWN },
		{ "<s>", 0.0f, MS_TOK_CONTROL },
		{ "</s>", 0.0f, MS_TOK_CONTROL },
		{ "ab", 0.0f, MS_TOK_USER_DEFINED },		/* 3 */
		{ "abcd", 0.0f, MS_TOK_CONTROL },		/* 4 */
		{ "cdefg", 0.0f, MS_TOK_USER_DEFINED },		/* 5 */
		{ "x", -1.0f, MS_TOK_NORMAL },			/* 6 */
		{ "y", -1.0f, MS_TOK_NORMAL },			/* 7 */
		{ "z", -1.0f, MS_TOK_NORMAL },			/* 8 */
		{ "xy", -0.1f, MS_TOK_UNUSED },			/* 9: merged, then split back */
		{ "xyz", -0.2f, MS_TOK_NORMAL },		/* 10 */
		{ "yz", -5.0f, MS_TOK_NORMAL },			/* 11 */
		{ MARK, -3.0f, MS_TOK_NORMAL },			/* 12 */
		{ "c", -1.0f, MS_TOK_NORMAL },			/* 13 */
		{ "d", -1.0f, MS_TOK_NORMAL },			/* 14 */
		{ "<0x78>", 0.0f, MS_TOK_BYTE },		/* 15 */
	};
	struct vopt o = plain;
	struct ms_tokenizer *t = NULL;
	int32_t *ids = NULL;
	size_t n = 0;
	ms_err e = { 0, "" };

	o.add_space = 0;
	if (load_mem(v, sizeof(v) / sizeof(v[0]), &o, &t, &e)) {
		ok(0, "corner vocabulary loads: %s", e.msg);
		return;
	}
	/* The longest special token goes first everywhere, even to the right:
	 * with specials on, "abcd" (4) loses to "cdefg" (5), then "ab" fits. */
	ok(!tokenize(t, "abcdefg", 7, false, true, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 3, 5 }, 2), "longest special first: ab cdefg");
	free(ids);
	ok(!tokenize(t, "abcdx", 5, false, true, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 4, 6 }, 2), "control abcd with parse_special");
	free(ids);
	/* Without special parsing control "abcd" is text but user-defined "ab" is still split. */
	ok(!tokenize(t, "abcdx", 5, false, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 3, 13, 14, 6 }, 4),
	   "user-defined tokens split out with parse_special off");
	if (n != 4)
		show_ids("got", ids, n);
	free(ids);
	/* x+y merges first (unused "xy", score -0.1), then xy+z gives "xyz". */
	ok(!tokenize(t, "xyz", 3, false, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 10 }, 1), "merge through an unused piece");
	free(ids);
	/* "xy" alone ends as the unused piece: resegmented into x y. */
	ok(!tokenize(t, "xy", 2, false, false, &ids, &n) &&
	   ids_eq(ids, n, (const int32_t[]){ 6, 7 }, 2), "an unused piece is split back into its pair");
	if (n != 2)
		show_ids("got", ids, n);
	free(ids);
	ms_tokenizer_free(t);
}

int main(void)
{
	struct ms_tokenizer *t = load_file("ggml-vocab-llama-spm.gguf");

	ok(t != NULL, "ggml-vocab-llama-spm.gguf: tokenizer loads");
	if (t) {
		test_vectors(t);
		test_basics(t);
		test_special(t);
		test_detok(t);
		test_random_utf8(t);
		test_reference(t);
		test_perf(t);
		ms_tokenizer_free(t);
	}
	test_stories();
	test_corrupt();
	test_corners();
	return done_testing();
}
