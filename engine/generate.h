/* One generation step for every front end: sample, accept, end of sequence, incremental text, stop strings, finish reason. */
#ifndef MS_GENERATE_H
#define MS_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sampler.h"
#include "tokenizer.h"

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


/*
 * Why a generation ended. ms_finish_name gives the protocol's done_reason
 * strings, so the daemon and mistral-run cannot drift apart on them.
 */
enum ms_finish {
	MS_FINISH_NONE = 0,        /* not over: feed the token, then step again */
	MS_FINISH_STOP,            /* end-of-sequence token, or no valid token to go on with */
	MS_FINISH_LENGTH,          /* the token limit */
	MS_FINISH_STOP_SEQUENCE,   /* a stop string matched */
	MS_FINISH_CANCELLED,       /* the caller gave up; never returned by a step */
};

/* "stop", "length", "stop_sequence", "cancelled"; "none" for MS_FINISH_NONE. */
const char *ms_finish_name(enum ms_finish f);

/*
 * A generation in progress: the sampler, the incremental detokenizer (the
 * tokenizer's, which holds back a UTF-8 character cut across tokens) and
 * the stop-string matcher of one sequence, composed in the one order every
 * front end must use. The caller owns the model and feeds the logits.
 */
struct ms_gen_params {
	struct ms_sampler_params sp;
	uint32_t max_tokens;        /* tokens produced before MS_FINISH_LENGTH (0 acts as 1) */
	const char *const *stops;   /* copied; n_stops may be 0 */
	const size_t *stop_lens;
	size_t n_stops;
	bool strip_leading_space;   /* templated answers: drop the space that follows [/INST] */
};

/* Text one step or the end can release: a token's characters plus a held stop-string prefix. */
#define MS_GEN_MAX_OUT (MS_DETOK_MAX_OUT + MS_STOP_MAX_LEN)

struct ms_gen_out {
	int32_t tok;                /* the token produced (feed it to the model next), or -1: none */
	size_t len;
	char text[MS_GEN_MAX_OUT];  /* now safe to show: whole characters, no possible stop-string start */
};

struct ms_gen;

/* Errors are the sampler's and the stop matcher's (-EINVAL naming the field), or -ENOMEM. */
int ms_gen_create(const struct ms_tokenizer *t, const struct ms_gen_params *p,
		  struct ms_gen **out, ms_err *err);
void ms_gen_free(struct ms_gen *g);   /* accepts NULL */
/* Records prompt tokens in the penalties' history. */
void ms_gen_accept(struct ms_gen *g, const int32_t *ids, size_t n);

/*
 * One step: samples from logits[n_vocab] (modified in place) and goes on as
 * ms_gen_push. The sampler runs even when the caller copied the logits out
 * first (for logprobs): nothing here keeps them.
 */
enum ms_finish ms_gen_step(struct ms_gen *g, float *logits, struct ms_gen_out *out);
/*
 * One step with a given token: accepts it, and unless it ends the sequence
 * (end-of-sequence or out of the vocabulary: MS_FINISH_STOP, out->tok -1,
 * no text) counts it, detokenizes it and runs the stop matcher. Returns
 * MS_FINISH_STOP_SEQUENCE when a stop string completed (out holds the text
 * before it), MS_FINISH_LENGTH when this token reached max_tokens, else
 * MS_FINISH_NONE. out->text may be empty while text is held back.
 */
enum ms_finish ms_gen_push(struct ms_gen *g, int32_t tok, struct ms_gen_out *out);
/*
 * Ends the generation for the reason why (a step's, or the caller's own:
 * cancelled, a full context). Releases the text still held back (an
 * incomplete character as U+FFFD, a possible stop-string prefix) into out,
 * except after a stop string, where everything from the match on is
 * dropped. Returns the final reason: MS_FINISH_STOP_SEQUENCE if the
 * released text completed a stop string, else why.
 */
enum ms_finish ms_gen_end(struct ms_gen *g, enum ms_finish why, struct ms_gen_out *out);
/* Tokens produced so far (the end-of-sequence token is not one). */
size_t ms_gen_count(const struct ms_gen *g);

#endif
