/*
 * Timing records of a step's pieces, off unless the calling thread turns
 * them on: a diagnostic for mistral-bench --trace (where a decode token's
 * time goes). The engine never prints; records go to the caller's buffer.
 * Off, each piece costs one thread-local load.
 */
#ifndef MS_TRACE_H
#define MS_TRACE_H

#include <stddef.h>
#include <stdint.h>

/* Team members whose times a matmul record keeps (the rest are not timed). */
#define MS_TRACE_THREADS 4

enum ms_trace_what {
	MS_TR_ROUND,       /* one eval round, every layer and the output: a = rows of the round */
	MS_TR_EMBED,       /* token embedding rows */
	MS_TR_NORM,        /* rmsnorm of the round's rows (attention, feed-forward or output norm) */
	MS_TR_ROPE,        /* rope tables or rotation */
	MS_TR_CACHE,       /* keys and values to the cache type, and into the ring */
	MS_TR_ATTN,        /* attention */
	MS_TR_SILU,        /* a separate silu(gate) * up pass (gate and up of different types) */
	MS_TR_MM,          /* one parallel matmul region: a = output rows of all its matrices, b = columns */
	MS_TR_GLU,         /* the same for ms_matmul_glu: a = the gate's rows */
	MS_TR_OUT,         /* logits rows copied out */
	MS_TR_KINDS
};

struct ms_trace_rec {
	uint32_t what;     /* enum ms_trace_what */
	uint32_t n_thr;    /* team members timed (MS_TR_MM/GLU; 0 for a region run by the caller alone) */
	uint64_t a, b;
	uint64_t t0, t1;   /* CLOCK_MONOTONIC ns: the piece's start and end (a matmul: the call's) */
	/* matmul regions, per team member: entered the region, past the conversion's
	 * barrier, done with its last work item; and the work items it claimed */
	uint64_t in[MS_TRACE_THREADS], conv[MS_TRACE_THREADS], done[MS_TRACE_THREADS];
	uint64_t items[MS_TRACE_THREADS];
};

struct ms_trace {
	struct ms_trace_rec *rec;
	size_t cap;
	size_t n;          /* records written */
	size_t dropped;    /* records that found the buffer full */
};

/* This thread's engine calls record into t (NULL: stop). Not thread-shared: each caller thread its own. */
void ms_trace_set(struct ms_trace *t);
struct ms_trace *ms_trace_get(void);

/* CLOCK_MONOTONIC in ns. */
uint64_t ms_trace_now(void);

/* Appends a record of what, [t0, now), with a and b; for pieces with no team times. */
void ms_trace_piece(struct ms_trace *t, uint32_t what, uint64_t t0, uint64_t a, uint64_t b);

/* A slot for a record filled by the caller (NULL when full: counted as dropped). */
struct ms_trace_rec *ms_trace_slot(struct ms_trace *t);

#endif
