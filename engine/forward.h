/* The transformer forward pass: rolling KV cache, sliding-window GQA attention, batched prefill. */
#ifndef MS_FORWARD_H
#define MS_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "kernels.h"
#include "model.h"

/*
 * One sequence's key/value cache. With a sliding window W the cache is a
 * ring of min(W, n_ctx) slots: position j lives in slot j % n_slots, so a
 * Mistral 7B sequence of any length costs at most W slots: 4096 slots x
 * 128 KiB (F16 keys and values, 32 layers x 1024) = 512 MiB per sequence,
 * four times less than the same model with multi-head attention would need.
 * Keys are stored after RoPE, so slot order never matters to attention.
 */
struct ms_kv {
	uint32_t n_ctx;      /* positions this sequence may reach (RoPE positions) */
	uint32_t window;     /* effective window, 0 = none (a window >= n_ctx is none) */
	uint32_t n_slots;    /* window ? min(window, n_ctx) : n_ctx */
	uint32_t kv_dim;
	uint32_t n_layers;
	uint32_t type;       /* GGML_TYPE_F16 (default) or GGML_TYPE_F32 (exact, for tests) */
	size_t elt;          /* bytes per element: 2 or 4 */
	uint32_t pos;        /* tokens already in the cache = next position */
	/*
	 * [n_layers][n_kv_heads][n_slots][head_dim] of type: a KV head's slots
	 * are one contiguous run, so an attention task streams its rows back
	 * to back instead of reading a 256-byte slice (F16, head size 128) of
	 * every 2 kB position row: the attention kernels at 4096 positions
	 * take 7.9 ms instead of 12.9 for 8 layers of a 7B (two threads).
	 */
	void *k;
	void *v;
	struct ms_arena *mem;   /* k and v, in the pages the model's weights asked for */
};

/* window: 0 = none; otherwise the attention window in tokens. type: F16 or F32. */
int ms_kv_create(const struct ms_model *m, uint32_t n_ctx, uint32_t window, uint32_t type,
		 struct ms_kv **out, ms_err *err);
void ms_kv_reset(struct ms_kv *kv);           /* forget every position */
void ms_kv_free(struct ms_kv *kv);            /* accepts NULL */
/* Bytes a cache of this shape takes (for limits and `info`). */
size_t ms_kv_bytes(const struct ms_model *m, uint32_t n_ctx, uint32_t window, uint32_t type);
/*
 * Benchmarks: fills every slot that positions below pos would occupy with
 * deterministic pseudo-random values in [-1, 1] and sets kv->pos = pos, so
 * decode speed with a long cache can be measured without a long prefill.
 * -EINVAL when pos > n_ctx.
 */
int ms_kv_fill_synthetic(struct ms_kv *kv, uint32_t pos, uint64_t seed);

/* Scratch for evaluating up to max_batch tokens at once, shared by all sequences. */
struct ms_ctx;

int ms_ctx_create(const struct ms_model *m, const struct ms_kernels *k,
		  uint32_t max_batch, uint32_t n_threads, struct ms_ctx **out, ms_err *err);
void ms_ctx_free(struct ms_ctx *c);           /* accepts NULL */
uint32_t ms_ctx_threads(const struct ms_ctx *c);
/*
 * Called after every layer of every round (NULL: none). A daemon's
 * watchdog uses it to tell a long prompt chunk from a hung thread; it must
 * be cheap and must not call back into the engine. A nonzero return
 * abandons the round: ms_eval_batch returns -ECANCELED with every sequence
 * of that round left at the position it had before it (rounds finished
 * earlier in the same call stay done; kv->pos tells). The abandoned round
 * may have written ring slots of those sequences, so they must not be
 * continued: only abort when every sequence in the batch is being dropped.
 */
void ms_ctx_set_progress(struct ms_ctx *c, int (*fn)(void *ud), void *ud);

/*
 * Evaluates toks[0..n) at positions kv->pos.. and advances kv->pos by n.
 * The prompt is processed as a batch (each weight row read once per chunk)
 * in chunks of at most min(max_batch, window) tokens; each chunk attends to
 * the cached keys still inside the window plus its own, and is written into
 * the ring only after its attention, since it may overwrite slots its
 * first queries still need.
 * logits: NULL, or [vocab] for the last token, or [n][vocab] when all_logits.
 * -ENOSPC when kv->pos + n > kv->n_ctx (nothing is evaluated), -EINVAL for
 * a token id outside the vocabulary.
 */
int ms_eval(struct ms_ctx *c, struct ms_kv *kv, const int32_t *toks, size_t n,
	    float *logits, bool all_logits, ms_err *err);

/* One sequence's part of a batched evaluation. */
struct ms_batch_item {
	struct ms_kv *kv;       /* distinct per item */
	const int32_t *toks;
	size_t n;
	float *logits;          /* NULL, [vocab] (last token) or [n][vocab] (all_logits) */
	bool all_logits;
};

/*
 * Evaluates several sequences together, as ms_eval does for each: every
 * round takes the next chunk of each unfinished sequence, up to max_batch
 * rows in all, so concurrent decodes share one read of the weights. Items
 * are validated first (-ENOSPC, -EINVAL) and nothing is evaluated if any
 * is bad. At most max_batch items.
 */
int ms_eval_batch(struct ms_ctx *c, const struct ms_batch_item *items, size_t n_items, ms_err *err);

#endif
