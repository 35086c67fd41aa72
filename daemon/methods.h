/* Request methods: validate params, answer from the event loop or build a job for the inference thread. */
#ifndef MD_METHODS_H
#define MD_METHODS_H

#include <stdatomic.h>
#include <stdint.h>

#include <msgpack.h>

#include "conf.h"
#include "proto.h"
#include "worker.h"

enum md_state { MD_LOADING = 0, MD_READY, MD_RELOADING, MD_STOPPING };

/* Daemon-wide state the methods read. */
struct md_daemon {
	struct md_config *cfg;        /* current configuration (replaced on reload) */
	struct md_worker *worker;
	atomic_int state;             /* enum md_state */
	double t_start;               /* monotonic start time */
	uint32_t connections;         /* open socket connections (event loop only) */
	uint32_t http_connections;    /* open HTTP connections (event loop only) */
	uint64_t model_weight_bytes;  /* of the model in service */
	char model_name[128];         /* of the model in service: the HTTP API's model id */
	/* The current or last load's weight bytes copied and their total (0 until the copy starts). */
	atomic_ullong load_bytes, load_total_bytes;
};

const char *md_state_name(enum md_state s);

/* The metrics map, as the metrics method answers it (socket and HTTP counters both). */
void md_metrics_pack(struct md_daemon *d, msgpack_packer *pk);

/*
 * Handles a parsed request other than `cancel` (the connection layer owns
 * that). Either packs a complete response into sb and returns 0, or builds
 * a job (conn_id and msgid set, one reference) into *job and returns 1 for
 * the caller to submit.
 */
int md_method_handle(struct md_daemon *d, const struct proto_msg *m, uint64_t conn_id,
		     msgpack_sbuffer *sb, struct md_job **job);

#endif
