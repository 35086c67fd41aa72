/* Token sampling: greedy, temperature, top-k, top-p, min-p, penalties, seeded. */
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

#endif
