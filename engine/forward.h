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
 * ring of min(W + margin, n_ctx) slots: position j lives in slot
 * j % n_slots, so a Mistral 7B sequence of any length costs at most
 * W + margin slots: 4096 slots x 128 KiB (F16 keys and values, 32 layers x
 * 1024) = 512 MiB per sequence, four times less than the same model with
 * multi-head attention would need. Keys are stored after RoPE, so slot
 * order never matters to attention.
 *
 * What the ring still holds, and when it may be rolled back (the prompt
 * cache's rule). The positions held are [first, pos): evaluating position
 * p overwrites the slot of p - n_slots, so first >= pos - n_slots always.
 * A sequence may continue at position P <= pos (truncate, or copy the
 * first P positions into another cache) only when every key the query at
 * P attends to is still held: first <= max(0, P + 1 - W). Without a window
 * nothing is overwritten and any P is fine. With exactly W slots the ring
 * can give back one position (the query at pos - 1 needs W - 1 keys), so
 * a cache built with a margin of M extra slots can roll back M + 1
 * positions: what a chat turn needs when the previous answer's last
 * tokens are tokenized differently the second time. Rolling back further
 * means evaluating from position 0; shorter prefixes are never easier,
 * since a smaller P needs older keys. The margin costs M x 128 KiB on
 * Mistral 7B (8 MiB for 64).
 */
struct ms_kv {
	uint32_t n_ctx;      /* positions this sequence may reach (RoPE positions) */
	uint32_t window;     /* effective window, 0 = none (a window >= n_ctx is none) */
	uint32_t n_slots;    /* window ? min(window + margin, n_ctx) : n_ctx */
	uint32_t kv_dim;
	uint32_t n_layers;
	uint32_t n_kv_heads;
	uint32_t type;       /* GGML_TYPE_F16 (default) or GGML_TYPE_F32 (exact, for tests) */
	size_t elt;          /* bytes per element: 2 or 4 */
	uint32_t pos;        /* tokens already in the cache = next position */
	uint32_t first;      /* oldest position still held: [first, pos) are valid */
	/*
	 * [n_layers][n_kv_heads][n_slots][head_dim] of type: a KV head's slots
	 * are one contiguous run, so an attention task streams its rows back
	 * to back instead of reading a 256-byte slice (F16, head size 128) of
	 * every 2 kB position row: the attention kernels at 4096 positions
	 * take 7.9 ms instead of 12.9 for 8 layers of a 7B (two threads).
	 */
	void *k;
	void *v;
	struct ms_arena *mem;   /* k and v: a ring in the pages the weights asked for, a snapshot see ms_kv_snapshot */
};

/*
 * window: 0 = none; otherwise the attention window in tokens. margin:
 * ring slots beyond the window, positions that can be rolled back (see
 * above; ignored without a window). type: F16 or F32.
 */
int ms_kv_create(const struct ms_model *m, uint32_t n_ctx, uint32_t window, uint32_t margin, uint32_t type,
		 struct ms_kv **out, ms_err *err);
void ms_kv_reset(struct ms_kv *kv);           /* forget every position */
void ms_kv_free(struct ms_kv *kv);            /* accepts NULL */
/* Bytes a cache of this shape takes (for limits and `info`). */
size_t ms_kv_bytes(const struct ms_model *m, uint32_t n_ctx, uint32_t window, uint32_t margin, uint32_t type);
/* Bytes this cache's mapping takes (rounded to its pages). */
size_t ms_kv_mapped_bytes(const struct ms_kv *kv);
/*
 * Benchmarks: fills every slot that positions below pos would occupy with
 * deterministic pseudo-random values in [-1, 1] and sets kv->pos = pos, so
 * decode speed with a long cache can be measured without a long prefill.
 * -EINVAL when pos > n_ctx.
 */
int ms_kv_fill_synthetic(struct ms_kv *kv, uint32_t pos, uint64_t seed);

/*
 * Whether a sequence attending over `window` positions (0: all) can
 * continue at position p from what kv holds (the rule above): p <= pos and
 * first <= max(0, p + 1 - window).
 */
bool ms_kv_resumable(const struct ms_kv *kv, uint32_t window, uint32_t p);
/* Rolls back to position p: -ERANGE (nothing changed) unless resumable with kv's own window. */
int ms_kv_truncate(struct ms_kv *kv, uint32_t p);
/*
 * Makes dst hold src's positions below n, as many of them as src holds
 * and dst's ring has slots for; dst->pos = n. Costs a copy of those
 * positions' keys and values (128 KiB a position on Mistral 7B, about a
 * thousandth of evaluating one). -EINVAL when the shapes or types differ
 * or n > src->pos, -ENOSPC when n > dst->n_ctx. Whether dst can then
 * continue is ms_kv_resumable's answer.
 */
int ms_kv_copy(struct ms_kv *dst, const struct ms_kv *src, uint32_t n);
/*
 * A compact copy of src's positions below n (n >= 1, n <= src->pos):
 * min(n, src->n_slots) slots, for keeping a finished sequence's state
 * around; restore it with ms_kv_copy. 16 MiB or more go in transparent
 * huge pages when src's ring got huge pages (a fresh 4 KiB page faults at
 * a few hundred MB/s under KVM; 2 MiB ones let the copy run at memory
 * speed), smaller ones in normal pages.
 */
int ms_kv_snapshot(const struct ms_kv *src, uint32_t n, struct ms_kv **out, ms_err *err);
/*
 * The bytes ms_kv_snapshot(src, n) maps at most (its ms_kv_mapped_bytes;
 * exactly that when it gets the pages it asks for), so a caller can make
 * room before allocating. 0 when n is 0 or above src->pos.
 */
size_t ms_kv_snapshot_bytes(const struct ms_kv *src, uint32_t n);

/* Length of the longest common prefix of two token sequences. */
size_t ms_common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb);

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
 * round takes the next chunk of each unfinished sequence that fits whole
 * in max_batch rows (the first always does), so concurrent decodes share
 * one read of the weights. Chunks are never cut to fill a round, and
 * attention splits a row's keys by the row's chunk and key count alone,
 * so each sequence's logits are the same bits as ms_eval gives it alone,
 * whatever the thread count. Items
 * are validated first (-ENOSPC, -EINVAL) and nothing is evaluated if any
 * is bad. At most max_batch items.
 */
int ms_eval_batch(struct ms_ctx *c, const struct ms_batch_item *items, size_t n_items, ms_err *err);

#endif
