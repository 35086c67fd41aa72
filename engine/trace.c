/* Timing records for mistral-bench --trace (trace.h). */
#include "config.h"

#include <string.h>
#include <time.h>

#include "trace.h"

static _Thread_local struct ms_trace *cur;

void ms_trace_set(struct ms_trace *t)
{
	cur = t;
}

struct ms_trace *ms_trace_get(void)
{
	return cur;
}

uint64_t ms_trace_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct ms_trace_rec *ms_trace_slot(struct ms_trace *t)
{
	struct ms_trace_rec *r;

	if (!t || !t->rec)
		return NULL;
	if (t->n >= t->cap) {
		t->dropped++;
		return NULL;
	}
	r = &t->rec[t->n++];
	memset(r, 0, sizeof(*r));
	return r;
}

void ms_trace_piece(struct ms_trace *t, uint32_t what, uint64_t t0, uint64_t a, uint64_t b)
{
	struct ms_trace_rec *r = ms_trace_slot(t);

	if (!r)
		return;
	r->what = what;
	r->a = a;
	r->b = b;
	r->t0 = t0;
	r->t1 = ms_trace_now();
}
