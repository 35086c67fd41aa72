/* Token sampling: greedy, temperature, top-k, top-p, min-p, penalties, seeded; and stop strings. */
#ifndef MS_SAMPLER_H
#define MS_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct ms_sampler_params {
	float temperature;         /* 0 = greedy; default 0.6; range [0, 100] */
	int32_t top_k;             /* 0 = off; default 40; range [0, n_vocab] (larger is clamped) */
	float top_p;               /* 1 = off; default 0.95; range (0, 1] */
	float min_p;               /* 0 = off; default 0.05; range [0, 1] */
	float repetition_penalty;  /* 1 = off; default 1.0; range (0, 10] (CTRL-style divide/multiply) */
	float frequency_penalty;   /* 0 = off; default 0; range [-2, 2] */
	float presence_penalty;    /* 0 = off; default 0; range [-2, 2] */
	int32_t penalty_last_n;    /* how many recent tokens penalties look at; default 64; [0, 4096] */
	uint64_t seed;             /* default 0x5eed */
};

void ms_sampler_params_default(struct ms_sampler_params *p);
/* -EINVAL with a reason naming the field for NaN/inf or out-of-range values. */
int ms_sampler_params_check(const struct ms_sampler_params *p, ms_err *err);

struct ms_sampler;

int ms_sampler_create(const struct ms_sampler_params *p, uint32_t n_vocab,
		      struct ms_sampler **out, ms_err *err);
void ms_sampler_free(struct ms_sampler *s);   /* accepts NULL */
/* Records a token (prompt or generated) for the penalties' history. */
void ms_sampler_accept(struct ms_sampler *s, int32_t tok);
/*
 * Picks the next token from logits[n_vocab] (modified in place). Pipeline:
 * penalties -> (temperature 0: argmax, ties to the lowest id) -> top_k ->
 * softmax(logits / T) -> top_p -> min_p -> draw with the seeded PRNG.
 * Same params, seed and history give the same token. If logprob_out is not
 * NULL it receives log softmax(logits) of the chosen token at temperature 1
 * after penalties (the model's own probability).
 */
int32_t ms_sampler_sample(struct ms_sampler *s, float *logits, float *logprob_out);

/*
 * Stop strings. Text is fed as it is generated; the matcher passes on only
 * text that cannot be the start of a stop string and holds back a possible
 * partial match until it is decided. Matching is on bytes; held text never
 * splits a UTF-8 character because the caller feeds whole characters.
 */
#define MS_STOP_MAX_COUNT 16
#define MS_STOP_MAX_LEN   256

struct ms_stop;

/* -EINVAL if more than MS_STOP_MAX_COUNT strings, one empty or longer than MS_STOP_MAX_LEN. */
int ms_stop_create(const char *const *stops, const size_t *lens, size_t n,
		   struct ms_stop **out, ms_err *err);
void ms_stop_free(struct ms_stop *s);   /* accepts NULL */
/*
 * Feeds text[0..n). Writes the text that is now safe to emit into
 * out (capacity at least n + MS_STOP_MAX_LEN) and sets *out_len. Returns 1
 * when a stop string completed (out holds the text before it; the stop
 * string and anything after it are dropped), else 0. After a match the
 * matcher stays stopped: later feeds return 1 and emit nothing.
 */
int ms_stop_feed(struct ms_stop *s, const char *text, size_t n, char *out, size_t *out_len);
/* End of generation without a match: releases the held-back text. */
void ms_stop_flush(struct ms_stop *s, char *out, size_t *out_len);

#endif
