/* The inference thread: owns the model and the KV caches, schedules queued jobs, streams results back. */
#ifndef MD_WORKER_H
#define MD_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "bundle.h"
#include "job.h"

/* Called by the worker (any thread) after queueing outputs; must only wake the loop. */
typedef void (*md_wake_fn)(void *ud);

struct md_worker;

/* Jobs submitted before the first model is installed wait for it up to load_wait seconds. */
int md_worker_start(struct md_worker **out, md_wake_fn wake, void *ud, uint32_t queue_depth,
		    uint32_t load_wait);
/* Stops the thread: every job still queued or running is failed with shutting_down. */
void md_worker_stop(struct md_worker *w);

/* Installs a model: at once when none is serving, else as soon as the running sequences finish. */
void md_worker_install(struct md_worker *w, struct md_bundle *b);
bool md_worker_has_model(struct md_worker *w);
/*
 * True from md_worker_install until the installed model serves (or was
 * dropped for lack of memory); the worker wakes the loop when it turns
 * false, so READY=1 after a reload means the new model answers.
 */
bool md_worker_swap_pending(struct md_worker *w);
/* The first model failed to load: every job waiting for it fails with `loading` and why. */
void md_worker_fail_waiting(struct md_worker *w, const char *why);

/*
 * Queues a job (takes the caller's reference). Returns 0, or -EBUSY when
 * parallel + queue_depth generation jobs are already admitted (model jobs
 * such as tokenize are not limited by the queue: they run between steps),
 * or, before the first model serves, when that many jobs of any kind wait
 * for it (parallel counts as 1 then).
 */
int md_worker_submit(struct md_worker *w, struct md_job *j);

/* Takes every pending output (a list in order); the caller frees each with md_out_free. */
struct md_out *md_worker_take_outputs(struct md_worker *w);

/* Wakes the thread so it notices a cancel flag quickly. */
void md_worker_kick(struct md_worker *w);

/* Graceful shutdown: queued jobs fail with shutting_down now; running ones may finish. */
void md_worker_drain(struct md_worker *w);
/* Ends running jobs too (the shutdown deadline passed). */
void md_worker_abort(struct md_worker *w);

struct md_worker_stats {
	uint32_t active, queued;
	uint64_t heartbeat;          /* increments every loop iteration and step */
};
void md_worker_stats(struct md_worker *w, struct md_worker_stats *st);

#endif
