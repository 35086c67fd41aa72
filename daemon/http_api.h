/* The HTTP API's JSON: request bodies mapped to jobs, the worker's msgpack outputs rendered as OpenAI or Workers AI JSON and SSE. */
#ifndef MD_HTTP_API_H
#define MD_HTTP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "job.h"
#include "methods.h"

enum md_api { API_CHAT, API_COMPLETIONS, API_WORKERS };

/* A model's id: its name's 127 bytes, each possibly replaced by the 3 of U+FFFD, and the NUL. */
#define MD_API_MODEL_MAX (127 * 3 + 1)

/* An error answer: the HTTP status and the fields of the OpenAI error object. */
struct md_api_err {
	int status;
	const char *type;          /* "invalid_request_error", "server_error", ... */
	const char *code;          /* NULL: null */
	char param[64];            /* "": null */
	char message[512];
};

/* What rendering a request's outputs needs besides the outputs. */
struct md_api_req {
	enum md_api api;
	bool stream;
	bool include_usage;        /* stream_options.include_usage */
	bool logprobs;             /* render logprobs */
	uint32_t top_logprobs;     /* alternatives per token to render */
	bool started;              /* the first SSE event has gone out */
	size_t text_offset;        /* completions logprobs: bytes of text streamed so far */
	char id[48];
	long long created;
	char model[MD_API_MODEL_MAX];   /* the model's id (see md_api_models_body) */
};

/*
 * Parses a request body for api into a job (one reference, conn_id and
 * msgid left for the caller) and rq. 0, or -1 with the error in e
 * (status 400 naming the param, or 404 for another model's name).
 */
int md_api_parse(struct md_daemon *d, enum md_api api, const char *body, size_t len,
		 struct md_api_req *rq, struct md_job **out, struct md_api_err *e);

enum md_api_msg {
	API_MSG_CHUNK,             /* SSE events appended (possibly none) */
	API_MSG_DONE,              /* the last events and data: [DONE], or the whole JSON body, appended */
	API_MSG_ERROR,             /* the job failed: e filled in, nothing appended */
};

/* Renders one output of the worker (packed msgpack) into out. */
enum md_api_msg md_api_render(struct md_api_req *rq, const char *data, size_t len,
			      struct evbuffer *out, struct md_api_err *e);

/*
 * The error as JSON into out: OpenAI's {"error": {...}}, or with workers
 * Workers AI's {"result": null, "success": false, "errors": [{"code":
 * status, "message"}], "messages": []}.
 */
void md_api_error_body(const struct md_api_err *e, bool workers, struct evbuffer *out);

/* Fills e; the message is printf-formatted. */
void md_api_errf(struct md_api_err *e, int status, const char *type, const char *code, const char *param,
		 const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* GET /v1/models: the one model in service. */
void md_api_models_body(const char *model, long long created, struct evbuffer *out);

#endif
