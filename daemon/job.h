/* Requests that need the model, and the messages the worker answers them with: their lifetimes. */
#ifndef MD_JOB_H
#define MD_JOB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "generate.h"
#include "template.h"

enum md_job_kind { JOB_GENERATE, JOB_CHAT, JOB_TOKENIZE, JOB_DETOKENIZE, JOB_INFO };

/*
 * One request that needs the model. Built and validated by the event loop
 * (methods.c), then owned by the worker until its final message is posted.
 * Reference counted: the connection holds one reference while the request
 * is in flight, the worker one until it posts the final message.
 */
struct md_job {
	atomic_int refs;
	atomic_bool cancel;          /* `cancel` call, client gone or shutdown: stop within a token */
	atomic_bool gone;            /* nobody to answer: finish silently */
	enum md_job_kind kind;
	uint64_t conn_id;
	uint32_t msgid;
	double t_submit;             /* monotonic seconds */

	/* generate / chat */
	char *prompt;                /* generate: prompt text (owned), or NULL */
	size_t prompt_len;
	int32_t *tokens;             /* generate: token prompt (owned), or NULL */
	size_t n_tokens;
	bool raw;
	char *system;                /* optional system prompt (owned) */
	size_t system_len;
	struct ms_chat_msg *msgs;    /* chat: contents owned (cast away const on free) */
	size_t n_msgs;
	bool stream;
	uint32_t max_tokens;
	struct ms_sampler_params sp;
	char **stops;                /* owned */
	size_t *stop_lens;
	size_t n_stops;
	uint32_t logprobs;           /* top alternatives per token, 0 = none */
	bool cache_prompt;           /* reuse a cached prefix and keep this sequence (default true) */

	/* tokenize / detokenize */
	char *text;                  /* owned */
	size_t text_len;
	bool add_bos, special;

	struct md_job *next;         /* worker queue link */
	struct md_job *conn_next;    /* the connection's in-flight list (event loop only) */
};

struct md_job *md_job_new(enum md_job_kind kind);
void md_job_ref(struct md_job *j);
void md_job_unref(struct md_job *j);   /* frees on the last reference; accepts NULL */

/*
 * Messages from the worker to the event loop: packed msgpack bytes for a
 * connection. final marks the job's last message; the loop then drops the
 * job from the connection and releases the reference it carries.
 */
struct md_out {
	uint64_t conn_id;
	struct md_job *job;          /* reference owned by this message when final, else NULL */
	char *data;
	size_t len;
	bool final;
	struct md_out *next;
};
void md_out_free(struct md_out *o);   /* releases the job reference it carries; accepts NULL */

#endif
