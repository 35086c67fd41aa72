/* A generating sequence: the worker's state for one running generation, which the reply packing reads. */
#ifndef MD_SEQ_H
#define MD_SEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "generate.h"
#include "job.h"
#include "tokenizer.h"

/* One top alternative of a logprobs entry. */
struct md_lp_alt {
	int32_t tok;
	float lp;
};

/* A generating sequence: one job bound to one KV cache slot. */
struct md_seq {
	struct md_job *job;          /* NULL: slot free */
	struct ms_kv *kv;            /* kept across jobs; reset per job */
	struct ms_gen *g;            /* sampler, detokenizer and stop strings */
	const struct ms_tokenizer *tok;
	int32_t *prompt;
	size_t n_prompt, n_fed;
	int32_t *gen;                /* [limit] generated ids */
	size_t n_gen;
	uint32_t limit;              /* tokens to generate at most */
	char *text;                  /* whole response so far */
	size_t text_len, text_cap;
	float *logits;               /* [vocab] */
	float *raw;                  /* [vocab] logits before sampling, for logprobs */
	struct md_lp_alt *lps;       /* [limit][1 + logprobs]: chosen, then the top */
	int32_t pending;             /* sampled, to be fed next step */
	bool prompt_done;
	bool cache;                  /* the prompt cache applies: reuse a prefix, keep the state at the end */
	bool dirty;                  /* an evaluation failed: its state is not worth keeping */
	bool waiting;                /* has waited for another sequence's prefix (logged once) */
	uint32_t n_cached;           /* prompt tokens taken from the cache or another sequence, not evaluated */
	double t_start, t_prompt;
	size_t step_n;               /* tokens in the current step's batch item */
	int32_t *keep;               /* ended: the kv->pos tokens its cache holds, to keep after the step */
};

#endif
