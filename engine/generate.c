/* The generation step (sampler, incremental detokenizer, stop strings, finish reason) and the streaming stop-string matcher. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"

/* ---- stop strings ---- */

struct ms_stop {
	size_t n;
	size_t len[MS_STOP_MAX_COUNT];
	char str[MS_STOP_MAX_COUNT][MS_STOP_MAX_LEN];
	char held[MS_STOP_MAX_LEN];     /* a proper prefix of some stop: < MAX_LEN bytes */
	size_t held_len;
	bool stopped;
};

int ms_stop_create(const char *const *stops, const size_t *lens, size_t n,
		   struct ms_stop **out, ms_err *err)
{
	struct ms_stop *s;

	if (!out)
		return ms_errf(err, -EINVAL, "stop: no output pointer");
	*out = NULL;
	if (n > MS_STOP_MAX_COUNT)
		return ms_errf(err, -EINVAL, "stop: %zu stop strings, at most %d allowed",
			       n, MS_STOP_MAX_COUNT);
	if (n && (!stops || !lens))
		return ms_errf(err, -EINVAL, "stop: no stop strings given");
	for (size_t i = 0; i < n; i++) {
		if (!stops[i] || lens[i] == 0)
			return ms_errf(err, -EINVAL, "stop: stop string %zu is empty", i);
		if (lens[i] > MS_STOP_MAX_LEN)
			return ms_errf(err, -EINVAL, "stop: stop string %zu is %zu bytes, at most %d allowed",
				       i, lens[i], MS_STOP_MAX_LEN);
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return ms_errf(err, -ENOMEM, "stop: out of memory");
	s->n = n;
	for (size_t i = 0; i < n; i++) {
		s->len[i] = lens[i];
		memcpy(s->str[i], stops[i], lens[i]);
	}
	*out = s;
	return 0;
}

void ms_stop_free(struct ms_stop *s)
{
	free(s);
}

/*
 * Works on buf = held + text, assembled in out (which the caller sized for
 * it). A match is the one that ends first, as if the text came one byte at
 * a time; of two ending at the same byte the longer (earlier) one wins.
 * Without a match, the longest suffix that is a proper prefix of a stop
 * string is held back; nothing before it can start a match any more.
 * Cost O(len * n_stops * stop_len) worst case, tiny for a token's bytes.
 */
int ms_stop_feed(struct ms_stop *s, const char *text, size_t n, char *out, size_t *out_len)
{
	size_t len, i, j;

	*out_len = 0;
	if (s->stopped)
		return 1;   /* sticky: generation is over once a stop string matched */
	memcpy(out, s->held, s->held_len);
	if (n)
		memcpy(out + s->held_len, text, n);
	len = s->held_len + n;

	/* Ends before held_len + 1 were checked by earlier feeds. */
	for (size_t e = s->held_len + 1; e <= len; e++) {
		size_t best = 0;

		for (j = 0; j < s->n; j++)
			if (s->len[j] <= e && s->len[j] > best &&
			    memcmp(out + e - s->len[j], s->str[j], s->len[j]) == 0)
				best = s->len[j];
		if (best) {
			*out_len = e - best;
			s->held_len = 0;
			s->stopped = true;
			return 1;
		}
	}

	for (i = len > MS_STOP_MAX_LEN ? len - MS_STOP_MAX_LEN : 0; i < len; i++) {
		for (j = 0; j < s->n; j++)
			if (len - i < s->len[j] && memcmp(out + i, s->str[j], len - i) == 0)
				break;
		if (j < s->n)
			break;
	}
	s->held_len = len - i;
	memcpy(s->held, out + i, s->held_len);
	*out_len = i;
	return 0;
}

void ms_stop_flush(struct ms_stop *s, char *out, size_t *out_len)
{
	memcpy(out, s->held, s->held_len);
	*out_len = s->held_len;
	s->held_len = 0;
}

/* ---- the generation step ---- */

struct ms_gen {
	const struct ms_tokenizer *tok;
	struct ms_sampler *smp;
	struct ms_stop *stop;       /* NULL: no stop strings */
	struct ms_detok dt;
	uint32_t n_vocab;
	int32_t eos;
	uint32_t max_tokens;
	size_t n_gen;
};

const char *ms_finish_name(enum ms_finish f)
{
	switch (f) {
	case MS_FINISH_STOP: return "stop";
	case MS_FINISH_LENGTH: return "length";
	case MS_FINISH_STOP_SEQUENCE: return "stop_sequence";
	case MS_FINISH_CANCELLED: return "cancelled";
	case MS_FINISH_NONE: break;
	}
	return "none";
}

int ms_gen_create(const struct ms_tokenizer *t, const struct ms_gen_params *p,
		  struct ms_gen **out, ms_err *err)
{
	struct ms_gen *g;
	int r;

	if (!out)
		return ms_errf(err, -EINVAL, "generate: no output pointer");
	*out = NULL;
	if (!t || !p)
		return ms_errf(err, -EINVAL, "generate: no tokenizer or parameters");
	g = calloc(1, sizeof(*g));
	if (!g)
		return ms_errf(err, -ENOMEM, "generate: out of memory");
	g->tok = t;
	g->n_vocab = ms_tok_n_vocab(t);
	g->eos = ms_tok_eos(t);
	g->max_tokens = p->max_tokens;
	if ((r = ms_sampler_create(&p->sp, g->n_vocab, &g->smp, err)) < 0 ||
	    (p->n_stops && (r = ms_stop_create(p->stops, p->stop_lens, p->n_stops, &g->stop, err)) < 0)) {
		ms_gen_free(g);
		return r;
	}
	ms_detok_init(&g->dt, t, p->strip_leading_space);
	*out = g;
	return 0;
}

void ms_gen_free(struct ms_gen *g)
{
	if (!g)
		return;
	ms_sampler_free(g->smp);
	ms_stop_free(g->stop);
	free(g);
}

void ms_gen_accept(struct ms_gen *g, const int32_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ms_sampler_accept(g->smp, ids[i]);
}

enum ms_finish ms_gen_step(struct ms_gen *g, float *logits, struct ms_gen_out *out)
{
	return ms_gen_push(g, ms_sampler_sample(g->smp, logits, NULL), out);
}

/*
 * Without stop strings the detokenizer writes straight into out; with
 * them its piece goes through the matcher, which may hold part of it back.
 */
enum ms_finish ms_gen_push(struct ms_gen *g, int32_t tok, struct ms_gen_out *out)
{
	char piece[MS_DETOK_MAX_OUT];
	int n;

	out->tok = -1;
	out->len = 0;
	/* A sampler error (negative) has no token to go on with. */
	if (tok < 0 || (uint32_t)tok >= g->n_vocab)
		return MS_FINISH_STOP;
	ms_sampler_accept(g->smp, tok);
	if (tok == g->eos)
		return MS_FINISH_STOP;
	out->tok = tok;
	g->n_gen++;
	n = ms_detok_push(&g->dt, tok, g->stop ? piece : out->text, MS_DETOK_MAX_OUT);
	if (n < 0)
		n = 0;
	if (!g->stop)
		out->len = (size_t)n;
	else if (ms_stop_feed(g->stop, piece, (size_t)n, out->text, &out->len) == 1)
		return MS_FINISH_STOP_SEQUENCE;
	return g->n_gen >= g->max_tokens ? MS_FINISH_LENGTH : MS_FINISH_NONE;
}

enum ms_finish ms_gen_end(struct ms_gen *g, enum ms_finish why, struct ms_gen_out *out)
{
	char piece[MS_DETOK_MAX_OUT];
	size_t tail;
	int n;

	out->tok = -1;
	out->len = 0;
	if (why == MS_FINISH_STOP_SEQUENCE)
		return why;
	n = ms_detok_flush(&g->dt, g->stop ? piece : out->text, MS_DETOK_MAX_OUT);
	if (n < 0)
		n = 0;
	if (!g->stop) {
		out->len = (size_t)n;
		return why;
	}
	if (n && ms_stop_feed(g->stop, piece, (size_t)n, out->text, &out->len) == 1)
		return MS_FINISH_STOP_SEQUENCE;
	/* out has room: the feed wrote a prefix of held + piece, the flush the rest of it. */
	ms_stop_flush(g->stop, out->text + out->len, &tail);
	out->len += tail;
	return why;
}

size_t ms_gen_count(const struct ms_gen *g)
{
	return g->n_gen;
}
