/* The HTTP API's JSON: request bodies mapped to jobs, the worker's msgpack outputs rendered as OpenAI or Workers AI JSON and SSE. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>
#include <msgpack.h>

#include "counters.h"
#include "http_api.h"
#include "proto.h"

#define MAX_MESSAGES      256     /* as on the socket */
#define MAX_TOP_LOGPROBS  20

void md_api_errf(struct md_api_err *e, int status, const char *type, const char *code, const char *param,
		 const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	e->type = type;
	e->code = code;
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

/* A 400 naming the parameter; returns -1 for the caller to pass on. */
__attribute__((format(printf, 3, 4)))
static int bad(struct md_api_err *e, const char *param, const char *fmt, ...)
{
	va_list ap;
	char msg[sizeof(e->message)];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	md_api_errf(e, 400, "invalid_request_error", "invalid_params", param, "%s", msg);
	return -1;
}

/* ------------------------------------------------------------------------ */
/* Output helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Appends v as compact JSON and drops the reference; out of memory leaves "null". */
static void put_json(struct evbuffer *out, json_t *v)
{
	char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	evbuffer_add_printf(out, "%s", s ? s : "null");
	free(s);
	json_decref(v);
}

static void put_event(struct evbuffer *out, json_t *v)
{
	evbuffer_add(out, "data: ", 6);
	put_json(out, v);
	evbuffer_add(out, "\n\n", 2);
}

/*
 * A JSON string from bytes that may not be UTF-8 (one token of a
 * multi-byte character): invalid bytes become U+FFFD, as a decoder
 * would show them; the exact bytes go out separately where the API has
 * a field for them.
 */
static json_t *jstr_lossy(const char *s, size_t n)
{
	char *buf;
	size_t o = 0;
	json_t *v;

	if (utf8_valid(s, n))
		return json_stringn(s, n);
	buf = malloc(n * 3 + 1);
	if (!buf)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq((const unsigned char *)s + i, n - i);

		if (k == 0) {
			memcpy(buf + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		} else {
			memcpy(buf + o, s + i, k);
			o += k;
			i += k;
		}
	}
	v = json_stringn(buf, o);
	free(buf);
	return v;
}

static json_t *jbytes(const char *s, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_integer((unsigned char)s[i]));
	return a;
}

/*
 * The message may quote client bytes cut at a length (a model name, a
 * path) in the middle of a character: jansson refuses such a string, and
 * the answer would be "null", so it goes through jstr_lossy.
 */
void md_api_error_body(const struct md_api_err *e, bool workers, struct evbuffer *out)
{
	json_t *msg = jstr_lossy(e->message, strlen(e->message));

	if (workers) {
		put_json(out, json_pack("{s:n, s:b, s:[{s:i, s:o}], s:[]}", "result", "success", 0, "errors",
					"code", e->status, "message", msg, "messages"));
		return;
	}
	put_json(out, json_pack("{s:{s:o, s:s, s:o, s:o}}", "error",
				"message", msg,
				"type", e->type ? e->type : "invalid_request_error",
				"param", e->param[0] ? json_string(e->param) : json_null(),
				"code", e->code ? json_string(e->code) : json_null()));
}

/*
 * The model's id: its general.name, which is the file's bytes cut at 127,
 * so not always UTF-8. The id is the name with invalid bytes as U+FFFD,
 * everywhere: in the list, in answers, and what a request's "model" is
 * compared with. Returns an empty id without memory.
 */
static void model_id(const char *name, char out[MD_API_MODEL_MAX])
{
	json_t *v = jstr_lossy(name, strlen(name));

	snprintf(out, MD_API_MODEL_MAX, "%s", v ? json_string_value(v) : "");
	json_decref(v);
}

void md_api_models_body(const char *model, long long created, struct evbuffer *out)
{
	char id[MD_API_MODEL_MAX];

	model_id(model, id);
	put_json(out, json_pack("{s:s, s:[{s:s, s:s, s:I, s:s}]}", "object", "list", "data",
				"id", id, "object", "model", "created", (json_int_t)created,
				"owned_by", "mistrald"));
}

/* ------------------------------------------------------------------------ */
/* Request fields                                                            */
/* ------------------------------------------------------------------------ */

/* The field, or NULL when absent or null: clients send null for "not set". */
static json_t *field(json_t *body, const char *key)
{
	json_t *v = json_object_get(body, key);

	return v && !json_is_null(v) ? v : NULL;
}

static int get_bool(json_t *body, const char *key, bool *out, struct md_api_err *e)
{
	json_t *v = field(body, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(e, key, "'%s' must be a boolean", key);
	*out = json_is_true(v);
	return 1;
}

/*
 * A sampling field, held to the sampler's own ranges (ms_sampler_params_check,
 * the socket's check too) so the two front doors cannot drift apart. The
 * fields are set one at a time over valid defaults, so a failed check right
 * after setting this one names it.
 */
static int get_sampling(json_t *body, const char *key, float *out, const struct ms_sampler_params *sp,
			struct md_api_err *e)
{
	json_t *v = field(body, key);
	ms_err err = { 0 };

	if (!v)
		return 0;
	if (!json_is_number(v))
		return bad(e, key, "'%s' must be a number", key);
	*out = (float)json_number_value(v);
	if (ms_sampler_params_check(sp, &err) < 0)
		return bad(e, key, "%s", err.msg);
	return 1;
}

static int get_int(json_t *body, const char *key, long long lo, long long hi, long long *out,
		   struct md_api_err *e)
{
	json_t *v = field(body, key);

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return bad(e, key, "'%s' must be an integer", key);
	if (json_integer_value(v) < lo || json_integer_value(v) > hi)
		return bad(e, key, "'%s' must be between %lld and %lld, not %lld", key, lo, hi,
			   (long long)json_integer_value(v));
	*out = json_integer_value(v);
	return 1;
}

static int oom(struct md_api_err *e)
{
	md_api_errf(e, 500, "server_error", "internal", NULL, "out of memory");
	return -1;
}

/* jansson refuses \u0000 in strings (no JSON_ALLOW_NUL), so strndup copies all of one. */
static int parse_stop(json_t *body, struct md_job *j, struct md_api_err *e)
{
	json_t *v = field(body, "stop");
	size_t n;

	if (!v)
		return 0;
	if (!json_is_string(v) && !json_is_array(v))
		return bad(e, "stop", "'stop' must be a string or an array of strings");
	n = json_is_string(v) ? 1 : json_array_size(v);
	if (n > MS_STOP_MAX_COUNT)
		return bad(e, "stop", "'stop' has %zu strings, at most %d", n, MS_STOP_MAX_COUNT);
	j->stops = calloc(n ? n : 1, sizeof(*j->stops));
	j->stop_lens = calloc(n ? n : 1, sizeof(*j->stop_lens));
	if (!j->stops || !j->stop_lens)
		return oom(e);
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_is_string(v) ? v : json_array_get(v, i);
		size_t len = json_is_string(s) ? json_string_length(s) : 0;

		if (!json_is_string(s) || len == 0 || len > MS_STOP_MAX_LEN)
			return bad(e, "stop", "'stop': element %zu must be a string of 1 to %d bytes", i,
				   MS_STOP_MAX_LEN);
		if (!(j->stops[i] = strndup(json_string_value(s), len)))
			return oom(e);
		j->stop_lens[i] = len;
		j->n_stops++;
	}
	return 0;
}

/* The sampling fields every endpoint takes; ranges as ms_sampler_params documents them. */
static int parse_sampling(struct md_daemon *d, json_t *body, struct md_api_req *rq, struct md_job *j,
			  struct md_api_err *e)
{
	const uint32_t limit = d->cfg->max_tokens_limit;
	struct ms_sampler_params *sp = &j->sp;
	long long v;
	bool seeded = false;
	ms_err err = { 0 };
	int r;

	j->max_tokens = limit < 256 ? limit : 256;
	for (const char *const *k = (const char *const[]){ "max_tokens", "max_completion_tokens", NULL }; *k; k++) {
		if ((r = get_int(body, *k, 1, limit, &v, e)) < 0) {
			if (json_is_integer(field(body, *k)))   /* out of range: say where the bound comes from */
				snprintf(e->message + strlen(e->message), sizeof(e->message) - strlen(e->message),
					 " (max_tokens_limit)");
			return -1;
		}
		if (r)
			j->max_tokens = (uint32_t)v;
	}
	if (get_sampling(body, "temperature", &sp->temperature, sp, e) < 0 ||
	    get_sampling(body, "top_p", &sp->top_p, sp, e) < 0 ||
	    get_sampling(body, "min_p", &sp->min_p, sp, e) < 0 ||
	    get_sampling(body, "repetition_penalty", &sp->repetition_penalty, sp, e) < 0 ||
	    get_sampling(body, "frequency_penalty", &sp->frequency_penalty, sp, e) < 0 ||
	    get_sampling(body, "presence_penalty", &sp->presence_penalty, sp, e) < 0)
		return -1;
	if ((r = get_int(body, "top_k", 0, INT32_MAX, &v, e)) < 0)
		return -1;
	if (r)
		sp->top_k = (int32_t)v;
	/* "seed" for OpenAI, "random_seed" for Mistral's API */
	for (const char *const *k = (const char *const[]){ "seed", "random_seed", NULL }; *k; k++) {
		if ((r = get_int(body, *k, 0, INT64_MAX, &v, e)) < 0)
			return -1;
		if (r) {
			sp->seed = (uint64_t)v;
			seeded = true;
		}
	}
	if (!seeded && getrandom(&sp->seed, sizeof(sp->seed), GRND_NONBLOCK) != sizeof(sp->seed))
		sp->seed = (uint64_t)(md_now() * 1e9);
	/* cache_prompt: the socket's opt-out of the prompt cache, llama.cpp's name for it */
	if (get_bool(body, "stream", &rq->stream, e) < 0 || get_bool(body, "cache_prompt", &j->cache_prompt, e) < 0)
		return -1;
	j->stream = rq->stream;
	if ((r = get_int(body, "n", 1, 1, &v, e)) < 0) {
		snprintf(e->message, sizeof(e->message), "'n': only 1 choice per request is supported");
		return -1;
	}
	if (ms_sampler_params_check(sp, &err) < 0)
		return bad(e, NULL, "%s", err.msg);
	return parse_stop(body, j, e);
}

static int parse_stream_options(json_t *body, struct md_api_req *rq, struct md_api_err *e)
{
	json_t *so = field(body, "stream_options");

	if (!so)
		return 0;
	if (!json_is_object(so))
		return bad(e, "stream_options", "'stream_options' must be an object");
	if (!rq->stream)
		return bad(e, "stream_options", "'stream_options' is only allowed with 'stream': true");
	if (get_bool(so, "include_usage", &rq->include_usage, e) < 0) {
		snprintf(e->param, sizeof(e->param), "stream_options.include_usage");
		return -1;
	}
	return 0;
}

static int parse_role(const char *s, enum ms_role *role)
{
	static const struct { const char *name; enum ms_role role; } roles[] = {
		{ "system", MS_ROLE_SYSTEM }, { "user", MS_ROLE_USER }, { "assistant", MS_ROLE_ASSISTANT },
	};

	for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
		if (strcmp(s, roles[i].name) == 0) {
			*role = roles[i].role;
			return 0;
		}
	}
	return -1;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts joined. */
static int message_content(json_t *c, size_t i, char **out, size_t *len, struct md_api_err *e)
{
	char param[64];
	size_t total = 0, o = 0;

	snprintf(param, sizeof(param), "messages[%zu].content", i);
	if (json_is_string(c)) {
		*len = json_string_length(c);
		*out = strndup(json_string_value(c), *len);
		return *out ? 0 : oom(e);
	}
	if (!json_is_array(c))
		return bad(e, param, "'%s' must be a string or an array of text parts", param);
	for (size_t k = 0; k < json_array_size(c); k++) {
		json_t *p = json_array_get(c, k), *t = json_object_get(p, "type"), *x = json_object_get(p, "text");

		if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0 || !json_is_string(x))
			return bad(e, param, "'%s': part %zu is not {\"type\": \"text\", \"text\": string}", param, k);
		total += json_string_length(x);
	}
	if (!(*out = malloc(total + 1)))
		return oom(e);
	for (size_t k = 0; k < json_array_size(c); k++) {
		json_t *x = json_object_get(json_array_get(c, k), "text");

		memcpy(*out + o, json_string_value(x), json_string_length(x));
		o += json_string_length(x);
	}
	(*out)[o] = '\0';
	*len = o;
	return 0;
}

static int parse_messages(json_t *body, struct md_job *j, struct md_api_err *e)
{
	json_t *msgs = field(body, "messages");

	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return bad(e, "messages", "'messages' must be a non-empty array");
	if (json_array_size(msgs) > MAX_MESSAGES)
		return bad(e, "messages", "'messages' has %zu entries, at most %d", json_array_size(msgs),
			   MAX_MESSAGES);
	j->msgs = calloc(json_array_size(msgs), sizeof(*j->msgs));
	if (!j->msgs)
		return oom(e);
	for (size_t i = 0; i < json_array_size(msgs); i++) {
		json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role");
		char *content = NULL;
		size_t len = 0;
		char param[64];

		snprintf(param, sizeof(param), "messages[%zu].role", i);
		if (!json_is_object(m) || !json_is_string(role) ||
		    parse_role(json_string_value(role), &j->msgs[i].role) < 0)
			return bad(e, param, "'%s' must be one of system, user, assistant", param);
		if (message_content(json_object_get(m, "content"), i, &content, &len, e) < 0)
			return -1;
		j->msgs[i].content = content;
		j->msgs[i].len = len;
		j->n_msgs++;
	}
	return 0;
}

static int parse_prompt(json_t *body, struct md_job *j, struct md_api_err *e)
{
	json_t *p = field(body, "prompt");

	/* the completions API takes a list of prompts; one is all a request may carry here */
	if (json_is_array(p) && json_array_size(p) == 1)
		p = json_array_get(p, 0);
	if (!json_is_string(p))
		return bad(e, "prompt", "'prompt' must be a string");
	j->prompt_len = json_string_length(p);
	j->prompt = strndup(json_string_value(p), j->prompt_len);
	return j->prompt ? 0 : oom(e);
}

static int check_model(struct md_daemon *d, json_t *body, struct md_api_req *rq, struct md_api_err *e)
{
	json_t *m = field(body, "model");

	model_id(d->model_name, rq->model);
	if (!m)
		return 0;
	if (!json_is_string(m))
		return bad(e, "model", "'model' must be a string");
	if (strcmp(json_string_value(m), rq->model) != 0) {
		md_api_errf(e, 404, "invalid_request_error", "model_not_found", "model",
			    "The model '%.100s' does not exist; this server serves '%s'", json_string_value(m),
			    rq->model);
		return -1;
	}
	return 0;
}

static int parse_logprobs(json_t *body, struct md_api_req *rq, struct md_job *j, struct md_api_err *e)
{
	long long v = 0;
	int r;

	if (rq->api == API_CHAT) {
		if (get_bool(body, "logprobs", &rq->logprobs, e) < 0 ||
		    (r = get_int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, &v, e)) < 0)
			return -1;
		if (r && !rq->logprobs)
			return bad(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
	} else if (rq->api == API_COMPLETIONS) {
		if ((r = get_int(body, "logprobs", 0, MAX_TOP_LOGPROBS, &v, e)) < 0)
			return -1;
		rq->logprobs = r == 1;
	}
	rq->top_logprobs = (uint32_t)v;
	/* the worker records at least one alternative whenever it records the chosen token */
	j->logprobs = rq->logprobs ? (rq->top_logprobs ? rq->top_logprobs : 1) : 0;
	return 0;
}

int md_api_parse(struct md_daemon *d, enum md_api api, const char *body, size_t len,
		 struct md_api_req *rq, struct md_job **out, struct md_api_err *e)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	struct md_job *j = NULL;
	bool raw = false;
	int r = -1;

	if (!root) {
		md_api_errf(e, 400, "invalid_request_error", "invalid_json", NULL,
			    "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
		return -1;
	}
	if (!json_is_object(root)) {
		bad(e, NULL, "the body must be a JSON object");
		goto out;
	}
	rq->api = api;
	if (check_model(d, root, rq, e) < 0)
		goto out;
	if (api == API_CHAT || (api == API_WORKERS && field(root, "messages"))) {
		j = md_job_new(JOB_CHAT);
		if (!j || parse_messages(root, j, e) < 0)
			goto fail;
		if (api == API_WORKERS && field(root, "prompt")) {
			bad(e, "prompt", "give one of 'prompt' and 'messages'");
			goto fail;
		}
	} else {
		j = md_job_new(JOB_GENERATE);
		if (!j || parse_prompt(root, j, e) < 0)
			goto fail;
		/* completions continue the text as it is; Workers AI templates it unless raw */
		raw = api == API_COMPLETIONS;
		if (api == API_WORKERS && get_bool(root, "raw", &raw, e) < 0)
			goto fail;
		j->raw = raw;
	}
	if (parse_sampling(d, root, rq, j, e) < 0 || parse_stream_options(root, rq, e) < 0 ||
	    parse_logprobs(root, rq, j, e) < 0)
		goto fail;
	if (api == API_COMPLETIONS) {
		bool echo = false;
		long long best_of;

		if (get_bool(root, "echo", &echo, e) < 0 || get_int(root, "best_of", 1, 1, &best_of, e) < 0)
			goto fail;
		if (echo) {
			bad(e, "echo", "'echo' is not supported");
			goto fail;
		}
		if (field(root, "suffix")) {
			bad(e, "suffix", "'suffix' is not supported");
			goto fail;
		}
	}
	if (api == API_CHAT && field(root, "tools") && json_array_size(field(root, "tools"))) {
		bad(e, "tools", "'tools' is not supported");
		goto fail;
	}
	*out = j;
	j = NULL;
	r = 0;
	goto out;
fail:
	if (!j)
		oom(e);
	md_job_unref(j);
out:
	json_decref(root);
	return r;
}

/* ------------------------------------------------------------------------ */
/* Rendering the worker's outputs                                            */
/* ------------------------------------------------------------------------ */

static const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
	return map && map->type == MSGPACK_OBJECT_MAP ? proto_find(map, key) : NULL;
}

static uint64_t mp_u64(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = mp_get(map, key);

	return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0;
}

static double mp_f64(const msgpack_object *v)
{
	if (!v)
		return 0;
	if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
		return v->via.f64;
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (double)v->via.u64;
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return (double)v->via.i64;
	return 0;
}

/* A str field's bytes ("" when absent). */
static const char *mp_str(const msgpack_object *map, const char *key, size_t *n)
{
	const msgpack_object *v = mp_get(map, key);

	if (!v || v->type != MSGPACK_OBJECT_STR) {
		*n = 0;
		return "";
	}
	*n = v->via.str.size;
	return v->via.str.ptr;
}

static json_t *usage_json(const msgpack_object *res)
{
	const msgpack_object *u = mp_get(res, "usage");

	/* OpenAI reports prompt-cache reuse as prompt_tokens_details.cached_tokens */
	return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)mp_u64(u, "prompt_tokens"),
			 "completion_tokens", (json_int_t)mp_u64(u, "completion_tokens"),
			 "total_tokens", (json_int_t)mp_u64(u, "total_tokens"),
			 "prompt_tokens_details", "cached_tokens", (json_int_t)mp_u64(u, "cached_tokens"));
}

/* {"token", "logprob", "bytes"} of one daemon logprobs entry or alternative. */
static json_t *chat_lp_token(const msgpack_object *o)
{
	size_t n;
	const char *t = mp_str(o, "text", &n);

	return json_pack("{s:o, s:f, s:o}", "token", jstr_lossy(t, n), "logprob", mp_f64(mp_get(o, "logprob")),
			 "bytes", jbytes(t, n));
}

/* OpenAI chat logprobs {"content": [...]} from the daemon's entries. */
static json_t *chat_logprobs(const struct md_api_req *rq, const msgpack_object *lps)
{
	json_t *content = json_array();

	for (uint32_t i = 0; lps && lps->type == MSGPACK_OBJECT_ARRAY && i < lps->via.array.size; i++) {
		const msgpack_object *ent = &lps->via.array.ptr[i], *top = mp_get(ent, "top");
		json_t *t = chat_lp_token(ent), *alts = json_array();

		for (uint32_t a = 0; top && top->type == MSGPACK_OBJECT_ARRAY && a < top->via.array.size &&
				     a < rq->top_logprobs; a++)
			json_array_append_new(alts, chat_lp_token(&top->via.array.ptr[a]));
		json_object_set_new(t, "top_logprobs", alts);
		json_array_append_new(content, t);
	}
	return json_pack("{s:o}", "content", content);
}

/* Legacy completions logprobs {"tokens", "token_logprobs", "top_logprobs", "text_offset"}. */
static json_t *completion_logprobs(const struct md_api_req *rq, const msgpack_object *lps, size_t *offset)
{
	json_t *toks = json_array(), *lp = json_array(), *tops = json_array(), *offs = json_array();

	for (uint32_t i = 0; lps && lps->type == MSGPACK_OBJECT_ARRAY && i < lps->via.array.size; i++) {
		const msgpack_object *ent = &lps->via.array.ptr[i], *top = mp_get(ent, "top");
		json_t *alts = json_object();
		size_t n;
		const char *t = mp_str(ent, "text", &n);

		json_array_append_new(toks, jstr_lossy(t, n));
		json_array_append_new(lp, json_real(mp_f64(mp_get(ent, "logprob"))));
		json_array_append_new(offs, json_integer((json_int_t)*offset));
		*offset += n;
		for (uint32_t a = 0; top && top->type == MSGPACK_OBJECT_ARRAY && a < top->via.array.size &&
				     a < rq->top_logprobs; a++) {
			const msgpack_object *alt = &top->via.array.ptr[a];
			size_t an;
			const char *at = mp_str(alt, "text", &an);
			json_t *key = jstr_lossy(at, an);

			if (key)
				json_object_set_new(alts, json_string_value(key), json_real(mp_f64(mp_get(alt, "logprob"))));
			json_decref(key);
		}
		json_array_append_new(tops, alts);
	}
	return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lp, "top_logprobs", tops,
			 "text_offset", offs);
}

/* stop_sequence is OpenAI's "stop" too; cancelled only reaches a client that is gone. */
static const char *finish_reason(const msgpack_object *res)
{
	size_t n;
	const char *r = mp_str(res, "done_reason", &n);

	return n == 6 && !memcmp(r, "length", 6) ? "length" : "stop";
}

/* One streamed choice object: the chat delta or the completion text, with its logprobs and finish. */
static json_t *choice(struct md_api_req *rq, const char *text, size_t n, const msgpack_object *lps,
		      const char *finish, bool with_role)
{
	json_t *c;
	json_t *lp = rq->logprobs && lps ? (rq->api == API_CHAT ? chat_logprobs(rq, lps)
					    : completion_logprobs(rq, lps, &rq->text_offset)) : json_null();

	if (rq->api == API_CHAT) {
		json_t *delta = json_object();

		if (with_role)
			json_object_set_new(delta, "role", json_string("assistant"));
		if (with_role || n || !finish)
			json_object_set_new(delta, "content", json_stringn(text, n));
		c = json_pack("{s:i, s:o}", "index", 0, "delta", delta);
	} else {
		c = json_pack("{s:s%, s:i}", "text", text, n, "index", 0);
	}
	json_object_set_new(c, "logprobs", lp);
	json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
	return c;
}

static json_t *chunk_head(const struct md_api_req *rq)
{
	return json_pack("{s:s, s:s, s:I, s:s}", "id", rq->id, "object",
			 rq->api == API_CHAT ? "chat.completion.chunk" : "text_completion",
			 "created", (json_int_t)rq->created, "model", rq->model);
}

static void stream_event(const struct md_api_req *rq, struct evbuffer *out, json_t *ch, json_t *usage)
{
	json_t *ev = chunk_head(rq);

	json_object_set_new(ev, "choices", ch ? json_pack("[o]", ch) : json_array());
	/* with include_usage, every chunk carries "usage": null and the extra last one the counts */
	if (rq->include_usage)
		json_object_set_new(ev, "usage", usage ? usage : json_null());
	else
		json_decref(usage);
	put_event(out, ev);
}

static void render_chunk(struct md_api_req *rq, const msgpack_object *m, struct evbuffer *out)
{
	size_t n;
	const char *text = mp_str(m, "response", &n);
	const msgpack_object *lps = mp_get(m, "logprobs");
	bool first = !rq->started;

	rq->started = true;
	if (rq->api == API_WORKERS) {
		if (n)
			put_event(out, json_pack("{s:s%}", "response", text, n));
		return;
	}
	if (!n && !lps && !first)
		return;
	stream_event(rq, out, choice(rq, text, n, lps, NULL, first && rq->api == API_CHAT), NULL);
}

static void render_done(struct md_api_req *rq, const msgpack_object *res, struct evbuffer *out)
{
	size_t n;
	const char *text = mp_str(res, "response", &n);
	const msgpack_object *lps = mp_get(res, "logprobs");
	json_t *v, *c, *lp;
	size_t offset = 0;

	if (rq->stream) {
		if (rq->api == API_WORKERS) {
			put_event(out, json_pack("{s:s, s:o}", "response", "", "usage", usage_json(res)));
		} else {
			bool first = !rq->started;

			stream_event(rq, out, choice(rq, "", 0, NULL, finish_reason(res), first && rq->api == API_CHAT),
				     NULL);
			if (rq->include_usage)
				stream_event(rq, out, NULL, usage_json(res));
		}
		rq->started = true;
		evbuffer_add(out, "data: [DONE]\n\n", 14);
		return;
	}
	if (rq->api == API_WORKERS) {
		put_json(out, json_pack("{s:{s:s%, s:o}, s:b, s:[], s:[]}", "result", "response", text, n,
					"usage", usage_json(res), "success", 1, "errors", "messages"));
		return;
	}
	lp = !rq->logprobs ? json_null() : rq->api == API_CHAT ? chat_logprobs(rq, lps)
		: completion_logprobs(rq, lps, &offset);
	if (rq->api == API_CHAT)
		c = json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", 0, "message", "role", "assistant",
			      "content", text, n, "logprobs", lp, "finish_reason", finish_reason(res));
	else
		c = json_pack("{s:s%, s:i, s:o, s:s}", "text", text, n, "index", 0, "logprobs", lp,
			      "finish_reason", finish_reason(res));
	v = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", rq->id, "object",
		      rq->api == API_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)rq->created,
		      "model", rq->model, "choices", c, "usage", usage_json(res));
	put_json(out, v);
}

/* The daemon's error codes as HTTP statuses and OpenAI error fields. */
static void map_error(const msgpack_object *err, struct md_api_err *e)
{
	size_t cn, mn;
	const char *code = mp_str(err, "code", &cn), *msg = mp_str(err, "message", &mn);
	enum proto_err pe = proto_err_from_name(code, cn);
	int status = 500;
	const char *type = "server_error", *c = proto_err_name(pe);

	switch (pe) {
	case PE_INVALID_REQUEST:
	case PE_INVALID_PARAMS:
	case PE_TOO_LARGE:
		status = 400;
		type = "invalid_request_error";
		break;
	case PE_CONTEXT_OVERFLOW:
		status = 400;
		type = "invalid_request_error";
		c = "context_length_exceeded";
		break;
	case PE_BUSY:
		status = 429;
		type = "rate_limit_error";
		break;
	case PE_LOADING:
	case PE_SHUTTING_DOWN:
		status = 503;
		break;
	case PE_CANCELLED:
		status = 499;   /* nginx's "client closed request": nobody is left to read it */
		type = "invalid_request_error";
		break;
	default:
		break;
	}
	md_api_errf(e, status, type, c, NULL, "%.*s", (int)(mn > 400 ? 400 : mn), msg);
}

enum md_api_msg md_api_render(struct md_api_req *rq, const char *data, size_t len,
			      struct evbuffer *out, struct md_api_err *e)
{
	msgpack_unpacked u;
	size_t off = 0;
	enum md_api_msg r = API_MSG_ERROR;
	const msgpack_object *a;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_ARRAY ||
	    u.data.via.array.size < 3) {
		md_api_errf(e, 500, "server_error", "internal", NULL, "unreadable output from the worker");
		goto out;
	}
	a = u.data.via.array.ptr;
	if (a[0].via.u64 == MSG_NOTIFICATION) {
		const msgpack_object *params = &a[2];

		if (rq->stream && params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 2)
			render_chunk(rq, &params->via.array.ptr[1], out);
		r = API_MSG_CHUNK;
	} else if (u.data.via.array.size == 4 && a[2].type != MSGPACK_OBJECT_NIL) {
		map_error(&a[2], e);
	} else if (u.data.via.array.size == 4) {
		render_done(rq, &a[3], out);
		r = API_MSG_DONE;
	} else {
		md_api_errf(e, 500, "server_error", "internal", NULL, "unexpected output from the worker");
	}
out:
	msgpack_unpacked_destroy(&u);
	return r;
}
