/* Tests for the generation step (sampler, detokenizer and stop strings composed, finish reasons) and the stop-string matcher. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "gguf.h"
#include "../tests/tap.h"

/* ---- stop strings ---- */

struct stop_run {
	char emitted[4096];
	size_t emitted_len;
	int matched;
};

/* Feeds text in chunks of the given sizes (cycled); flushes when nothing matched. */
static void run_stop(struct ms_stop *st, const char *text, size_t len, const size_t *chunks,
		     size_t nchunks, struct stop_run *r)
{
	char out[4096 + MS_STOP_MAX_LEN];
	size_t pos = 0, ci = 0, ol;

	r->emitted_len = 0;
	r->matched = 0;
	while (pos < len && !r->matched) {
		size_t n = chunks[ci++ % nchunks];

		if (n > len - pos)
			n = len - pos;
		r->matched = ms_stop_feed(st, text + pos, n, out, &ol);
		memcpy(r->emitted + r->emitted_len, out, ol);
		r->emitted_len += ol;
		pos += n;
	}
	if (!r->matched) {
		ms_stop_flush(st, out, &ol);
		memcpy(r->emitted + r->emitted_len, out, ol);
		r->emitted_len += ol;
	}
}

static struct ms_stop *mkstop(const char *const *stops, size_t n)
{
	size_t lens[MS_STOP_MAX_COUNT];
	struct ms_stop *st = NULL;
	ms_err err = { 0 };

	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(stops[i]);
	if (ms_stop_create(stops, lens, n, &st, &err))
		diag("ms_stop_create: %s", err.msg);
	return st;
}

/* Text for a one-line TAP description: newlines shown as \\n. */
static const char *esc(const char *t, size_t n, char *buf, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 3 < cap; i++) {
		if (t[i] == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else {
			buf[o++] = t[i];
		}
	}
	buf[o] = '\0';
	return buf;
}

/* One named case, fed whole, one byte at a time and in mixed chunks. */
static void stop_case(const char *name, const char *const *stops, size_t n, const char *text,
		      int want_match, const char *want_emitted)
{
	static const size_t whole[] = { 4096 }, bytes[] = { 1 }, mixed[] = { 2, 1, 3 };
	const size_t *modes[] = { whole, bytes, mixed };
	const size_t nmodes[] = { 1, 1, 3 };
	const char *mname[] = { "whole", "bytes", "mixed" };

	for (int m = 0; m < 3; m++) {
		struct ms_stop *st = mkstop(stops, n);
		struct stop_run r;
		char e1[128], e2[128];

		run_stop(st, text, strlen(text), modes[m], nmodes[m], &r);
		ok(r.matched == want_match && r.emitted_len == strlen(want_emitted) &&
		   memcmp(r.emitted, want_emitted, r.emitted_len) == 0,
		   "stop %s (%s): %s -> \"%s\"%s", name, mname[m],
		   esc(text, strlen(text), e1, sizeof(e1)),
		   esc(r.emitted, r.emitted_len, e2, sizeof(e2)), r.matched ? " + stop" : "");
		ms_stop_free(st);
	}
}

/* Reference: the stop that ends first (longest on a tie) in the whole text. */
static bool ref_stop(const char *const *stops, size_t n, const char *text, size_t len,
		     size_t *cut)
{
	for (size_t e = 1; e <= len; e++) {
		size_t best = 0;

		for (size_t j = 0; j < n; j++) {
			size_t sl = strlen(stops[j]);

			if (sl <= e && sl > best && memcmp(text + e - sl, stops[j], sl) == 0)
				best = sl;
		}
		if (best) {
			*cut = e - best;
			return true;
		}
	}
	return false;
}

/* Longest suffix of text[0..len) that is a proper prefix of a stop: what must be held. */
static size_t ref_hold(const char *const *stops, size_t n, const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		for (size_t j = 0; j < n; j++)
			if (len - i < strlen(stops[j]) && memcmp(text + i, stops[j], len - i) == 0)
				return len - i;
	return 0;
}

static uint64_t lcg(uint64_t *x)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	return *x >> 33;
}

static void test_stop_random(void)
{
	uint64_t x = 7;
	int fails = 0, eager_fails = 0, matches = 0;

	for (int it = 0; it < 3000; it++) {
		char sbuf[4][8], text[64];
		const char *stops[4];
		size_t ns = 1 + lcg(&x) % 4, len = lcg(&x) % 40, pos = 0, emitted = 0, cut = 0;
		char out[64 + MS_STOP_MAX_LEN], got[128];
		struct ms_stop *st;
		int matched = 0;
		bool want;

		for (size_t j = 0; j < ns; j++) {
			size_t sl = 1 + lcg(&x) % 4;

			for (size_t i = 0; i < sl; i++)
				sbuf[j][i] = (char)('a' + lcg(&x) % 3);
			sbuf[j][sl] = '\0';
			stops[j] = sbuf[j];
		}
		for (size_t i = 0; i < len; i++)
			text[i] = (char)('a' + lcg(&x) % 3);
		st = mkstop(stops, ns);
		while (pos < len && !matched) {
			size_t n = 1 + lcg(&x) % 5, ol;

			if (n > len - pos)
				n = len - pos;
			matched = ms_stop_feed(st, text + pos, n, out, &ol);
			memcpy(got + emitted, out, ol);
			emitted += ol;
			pos += n;
			/* Released as soon as it cannot match: exactly the reference hold is kept. */
			if (!matched && emitted != pos - ref_hold(stops, ns, text, pos))
				eager_fails++;
		}
		if (!matched) {
			size_t ol;

			ms_stop_flush(st, out, &ol);
			memcpy(got + emitted, out, ol);
			emitted += ol;
		}
		want = ref_stop(stops, ns, text, len, &cut);
		matches += want;
		if (matched != want || (want ? emitted != cut : emitted != len) ||
		    memcmp(got, text, emitted) != 0)
			fails++;
		ms_stop_free(st);
	}
	ok(fails == 0 && eager_fails == 0,
	   "3000 random texts/stops in random chunks match the reference byte-exact "
	   "(%d wrong, %d held too much or too little, %d with a match)",
	   fails, eager_fails, matches);
}

static void test_stop(void)
{
	const char *abc_bcd[] = { "abc", "bcd" };
	const char *aab[] = { "aab" };
	const char *end[] = { "</end>", "\n\nUser:" };
	const char *stop[] = { "STOP" };
	const char *nested[] = { "abcdef", "cd" };
	struct ms_stop *st = NULL;
	ms_err err = { 0 };

	stop_case("abc|bcd", abc_bcd, 2, "abcd", 1, "");
	stop_case("abc|bcd", abc_bcd, 2, "xxbcdabc", 1, "xx");
	stop_case("aab", aab, 1, "aaab", 1, "a");
	stop_case("aab", aab, 1, "aaaaaab", 1, "aaaa");
	stop_case("</end>", end, 2, "hello </en world </end> tail", 1, "hello </en world ");
	stop_case("User:", end, 2, "Sure.\n\nUser:", 1, "Sure.");
	stop_case("User: absent", end, 2, "Sure.\n\nUse", 0, "Sure.\n\nUse");
	stop_case("STOP false starts", stop, 1, "STOSTSTOPx", 1, "STOST");
	stop_case("STOP none", stop, 1, "STOSTSTO", 0, "STOSTSTO");
	stop_case("first to end wins", nested, 2, "xabcdef", 1, "xab");

	/* Held back across feeds, then released as soon as it cannot match. */
	{
		char out[64 + MS_STOP_MAX_LEN];
		size_t ol = 99;
		int m;

		st = mkstop(end, 2);
		m = ms_stop_feed(st, "ok </e", 6, out, &ol);
		ok(m == 0 && ol == 3 && memcmp(out, "ok ", 3) == 0, "partial stop held back");
		m = ms_stop_feed(st, "n", 1, out, &ol);
		ok(m == 0 && ol == 0, "still held while it can match");
		m = ms_stop_feed(st, "x", 1, out, &ol);
		ok(m == 0 && ol == 5 && memcmp(out, "</enx", 5) == 0,
		   "released at once when it cannot match (\"%.*s\")", (int)ol, out);
		m = ms_stop_feed(st, "\n", 1, out, &ol);
		ok(m == 0 && ol == 0, "a new partial match is held");
		ms_stop_flush(st, out, &ol);
		ok(ol == 1 && out[0] == '\n', "flush releases the held text");
		ms_stop_flush(st, out, &ol);
		ok(ol == 0, "second flush is empty");
		m = ms_stop_feed(st, "a</end>b", 8, out, &ol);
		ok(m == 1 && ol == 1 && out[0] == 'a', "match after a flush");
		m = ms_stop_feed(st, "more", 4, out, &ol);
		ok(m == 1 && ol == 0, "after a match nothing more is emitted");
		ms_stop_free(st);
	}
	/* A stop spanning many feeds, of the maximum length. */
	{
		static char longstop[MS_STOP_MAX_LEN + 1], text[2000];
		const char *ls[] = { longstop };
		const size_t chunks[] = { 7, 1, 13 };
		struct stop_run r;

		for (int i = 0; i < MS_STOP_MAX_LEN; i++)
			longstop[i] = (char)('A' + i % 26);
		memset(text, '.', 1000);
		memcpy(text + 1000, longstop, MS_STOP_MAX_LEN);
		memcpy(text + 1000 + MS_STOP_MAX_LEN, "tail", 5);
		st = mkstop(ls, 1);
		run_stop(st, text, strlen(text), chunks, 3, &r);
		ok(st && r.matched && r.emitted_len == 1000 && memcmp(r.emitted, text, 1000) == 0,
		   "256-byte stop spanning many feeds (%zu emitted)", r.emitted_len);
		ms_stop_free(st);
	}
	/* No stop strings: everything passes through at once. */
	{
		char out[16 + MS_STOP_MAX_LEN];
		size_t ol;

		st = NULL;
		ok(ms_stop_create(NULL, NULL, 0, &st, &err) == 0 && st, "zero stop strings allowed");
		ok(st && ms_stop_feed(st, "hello", 5, out, &ol) == 0 && ol == 5, "passes through");
		ms_stop_free(st);
	}
	/* Limits. */
	{
		static char big[MS_STOP_MAX_LEN + 2];
		const char *many[MS_STOP_MAX_COUNT + 1];
		size_t lens[MS_STOP_MAX_COUNT + 1];
		const char *one[1] = { big };
		size_t l1[1];

		for (int i = 0; i <= MS_STOP_MAX_COUNT; i++) {
			many[i] = "x";
			lens[i] = 1;
		}
		st = NULL;
		ok(ms_stop_create(many, lens, MS_STOP_MAX_COUNT + 1, &st, &err) == -EINVAL && !st,
		   "%d stop strings rejected: %s", MS_STOP_MAX_COUNT + 1, err.msg);
		ok(ms_stop_create(many, lens, MS_STOP_MAX_COUNT, &st, &err) == 0 && st,
		   "%d stop strings accepted", MS_STOP_MAX_COUNT);
		ms_stop_free(st);
		st = NULL;
		lens[3] = 0;
		ok(ms_stop_create(many, lens, 4, &st, &err) == -EINVAL && !st,
		   "empty stop string rejected: %s", err.msg);
		memset(big, 'z', MS_STOP_MAX_LEN + 1);
		l1[0] = MS_STOP_MAX_LEN + 1;
		ok(ms_stop_create(one, l1, 1, &st, &err) == -EINVAL && !st,
		   "%d-byte stop string rejected: %s", MS_STOP_MAX_LEN + 1, err.msg);
		l1[0] = MS_STOP_MAX_LEN;
		ok(ms_stop_create(one, l1, 1, &st, &err) == 0 && st, "%d-byte stop string accepted",
		   MS_STOP_MAX_LEN);
		ms_stop_free(st);
		ms_stop_free(NULL);
	}
	test_stop_random();
}

/* ---- the generation step, on stories260K's real vocabulary ---- */

static struct ms_tokenizer *load_tok(void)
{
	char path[4200];
	struct gguf *g = NULL;
	struct ms_tokenizer *t = NULL;
	ms_err e = { 0 };

	snprintf(path, sizeof(path), "%s/stories260K.gguf", test_data_dir());
	if (ms_gguf_open(path, &g, &e)) {
		diag("%s: %s", path, e.msg);
		return NULL;
	}
	if (ms_tokenizer_load(g, &t, &e))
		diag("%s: %s", path, e.msg);
	ms_gguf_close(g);
	return t;
}

static struct ms_gen *mkgen(const struct ms_tokenizer *t, uint32_t max_tokens, const char *stop,
			    bool strip)
{
	struct ms_gen_params p = { .max_tokens = max_tokens, .strip_leading_space = strip };
	size_t len = stop ? strlen(stop) : 0;
	struct ms_gen *g = NULL;
	ms_err err = { 0 };

	ms_sampler_params_default(&p.sp);
	p.sp.temperature = 0.0f;
	if (stop) {
		p.stops = &stop;
		p.stop_lens = &len;
		p.n_stops = 1;
	}
	if (ms_gen_create(t, &p, &g, &err))
		diag("ms_gen_create: %s", err.msg);
	return g;
}

/* What a front end sees: every step's text, then the end's; the finish reason. */
struct gen_run {
	char text[1024];
	size_t len;
	size_t steps;               /* steps that produced a token */
	enum ms_finish fin, steps_fin;
};

static void gen_feed(struct ms_gen *g, const int32_t *ids, size_t n, struct gen_run *r)
{
	struct ms_gen_out o;

	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < n && r->steps_fin == MS_FINISH_NONE; i++) {
		r->steps_fin = ms_gen_push(g, ids[i], &o);
		if (o.tok >= 0)
			r->steps++;
		memcpy(r->text + r->len, o.text, o.len);
		r->len += o.len;
	}
	r->fin = ms_gen_end(g, r->steps_fin == MS_FINISH_NONE ? MS_FINISH_LENGTH : r->steps_fin, &o);
	memcpy(r->text + r->len, o.text, o.len);
	r->len += o.len;
	r->text[r->len] = '\0';
}

static int32_t byte_tok(const struct ms_tokenizer *t, unsigned b)
{
	char name[8];

	snprintf(name, sizeof(name), "<0x%02X>", b);
	return ms_tok_find(t, name, strlen(name));
}

static void test_gen(void)
{
	struct ms_tokenizer *t = load_tok();
	int32_t *ids = NULL, eos, c3, a9;
	size_t n = 0;
	struct ms_gen *g;
	struct gen_run r;
	ms_err err = { 0 };

	ok(!strcmp(ms_finish_name(MS_FINISH_STOP), "stop") &&
	   !strcmp(ms_finish_name(MS_FINISH_LENGTH), "length") &&
	   !strcmp(ms_finish_name(MS_FINISH_STOP_SEQUENCE), "stop_sequence") &&
	   !strcmp(ms_finish_name(MS_FINISH_CANCELLED), "cancelled"),
	   "finish reasons carry the protocol's done_reason names");
	ok(t != NULL, "stories260K tokenizer loads");
	if (!t)
		return;
	eos = ms_tok_eos(t);
	c3 = byte_tok(t, 0xC3);
	a9 = byte_tok(t, 0xA9);
	ok(c3 >= 0 && a9 >= 0, "byte tokens <0xC3> %d and <0xA9> %d exist", c3, a9);
	ok(!ms_tokenize(t, "Once upon a time", 16, false, false, &ids, &n, &err) && n == 4,
	   "\"Once upon a time\" is 4 tokens");
	if (n != 4 || c3 < 0 || a9 < 0) {
		free(ids);
		ms_tokenizer_free(t);
		return;
	}

	g = mkgen(t, 100, NULL, false);
	gen_feed(g, ids, n, &r);
	ok(r.steps == 4 && r.fin == MS_FINISH_LENGTH && !strcmp(r.text, " Once upon a time"),
	   "no stop: every token's text, in order (\"%s\")", r.text);
	ms_gen_free(g);

	g = mkgen(t, 100, NULL, true);
	gen_feed(g, ids, n, &r);
	ok(!strcmp(r.text, "Once upon a time"), "strip_leading_space drops the answer's first space");
	ms_gen_free(g);

	/* "pon a" starts inside "upon" and ends inside " a": two tokens' boundary. */
	g = mkgen(t, 100, "pon a", false);
	gen_feed(g, ids, n, &r);
	ok(r.fin == MS_FINISH_STOP_SEQUENCE && r.steps_fin == MS_FINISH_STOP_SEQUENCE && r.steps == 3 &&
	   !strcmp(r.text, " Once u"),
	   "stop string across token boundaries: ends at the token completing it, text before it (\"%s\")",
	   r.text);
	ok(!strstr(r.text, "pon a") && !strstr(r.text, "pon"), "the stop string is never emitted, nor its start");
	ms_gen_free(g);

	/* A held stop-string prefix comes out at the end when nothing matched. */
	g = mkgen(t, 100, "time!", false);
	gen_feed(g, ids, n, &r);
	ok(r.fin == MS_FINISH_LENGTH && !strcmp(r.text, " Once upon a time"),
	   "a stop string's prefix held back is released at the end (\"%s\")", r.text);
	ms_gen_free(g);

	/* U+00E9 as two byte tokens: nothing after the first, the character after the second. */
	{
		struct ms_gen_out o;
		enum ms_finish f;

		g = mkgen(t, 100, NULL, false);
		f = ms_gen_push(g, c3, &o);
		ok(f == MS_FINISH_NONE && o.tok == c3 && o.len == 0,
		   "held-back UTF-8: the first byte of a character shows nothing");
		f = ms_gen_push(g, a9, &o);
		ok(f == MS_FINISH_NONE && o.tok == a9 && o.len == 2 && !memcmp(o.text, "\xc3\xa9", 2),
		   "held-back UTF-8: the second byte completes the character");
		ms_gen_free(g);

		g = mkgen(t, 100, NULL, false);
		f = ms_gen_push(g, c3, &o);
		f = ms_gen_push(g, eos, &o);
		ok(f == MS_FINISH_STOP && o.tok == -1 && o.len == 0 && ms_gen_count(g) == 1,
		   "EOS: MS_FINISH_STOP, no token, not counted");
		f = ms_gen_end(g, f, &o);
		ok(f == MS_FINISH_STOP && o.len == 3 && !memcmp(o.text, "\xef\xbf\xbd", 3),
		   "a character cut off by the end becomes U+FFFD");
		ms_gen_free(g);

		/* The released U+FFFD can itself complete a stop string. */
		g = mkgen(t, 100, "\xef\xbf\xbd", false);
		f = ms_gen_push(g, c3, &o);
		f = ms_gen_end(g, MS_FINISH_CANCELLED, &o);
		ok(f == MS_FINISH_STOP_SEQUENCE && o.len == 0,
		   "text released at the end that completes a stop string: stop_sequence, not emitted");
		ms_gen_free(g);

		g = mkgen(t, 100, NULL, false);
		f = ms_gen_push(g, -1, &o);
		ok(f == MS_FINISH_STOP && o.tok == -1, "a negative token (sampler error) stops");
		f = ms_gen_push(g, (int32_t)ms_tok_n_vocab(t), &o);
		ok(f == MS_FINISH_STOP && o.tok == -1 && ms_gen_count(g) == 0,
		   "a token past the vocabulary stops");
		ms_gen_free(g);
	}

	/* Length: the step that reaches max_tokens says so, with its text. */
	g = mkgen(t, 2, NULL, false);
	gen_feed(g, ids, n, &r);
	ok(r.steps == 2 && r.steps_fin == MS_FINISH_LENGTH && !strcmp(r.text, " Once upon"),
	   "max_tokens 2: the second step returns length (\"%s\")", r.text);
	ms_gen_free(g);

	/* ms_gen_step samples: greedy picks the largest logit, EOS ends. */
	{
		uint32_t nv = ms_tok_n_vocab(t);
		float *l = calloc(nv, sizeof(*l));
		struct ms_gen_out o;
		enum ms_finish f;

		g = mkgen(t, 100, NULL, false);
		if (l) {
			l[ids[0]] = 5.0f;
			f = ms_gen_step(g, l, &o);
			ok(f == MS_FINISH_NONE && o.tok == ids[0] && o.len == 5 && !memcmp(o.text, " Once", 5),
			   "step: greedy sample of the largest logit, its text");
			memset(l, 0, nv * sizeof(*l));
			l[eos] = 5.0f;
			f = ms_gen_step(g, l, &o);
			ok(f == MS_FINISH_STOP && o.tok == -1 && ms_gen_count(g) == 1, "step: sampled EOS stops");
		}
		free(l);
		ms_gen_free(g);
	}

	/* Bad parameters fail with the sampler's or the matcher's reason. */
	{
		struct ms_gen_params p = { .max_tokens = 1 };
		const char *empty = "";
		size_t zero = 0;

		ms_sampler_params_default(&p.sp);
		p.sp.temperature = -1.0f;
		g = NULL;
		ok(ms_gen_create(t, &p, &g, &err) == -EINVAL && !g && strstr(err.msg, "temperature"),
		   "bad sampling parameters: %s", err.msg);
		p.sp.temperature = 0.0f;
		p.stops = &empty;
		p.stop_lens = &zero;
		p.n_stops = 1;
		ok(ms_gen_create(t, &p, &g, &err) == -EINVAL && !g, "an empty stop string: %s", err.msg);
		ms_gen_free(NULL);
	}
	free(ids);
	ms_tokenizer_free(t);
}

int main(void)
{
	test_stop();
	test_gen();
	return done_testing();
}
