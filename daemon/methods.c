/* Request methods: validate params, answer from the event loop or build a job for the inference thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "counters.h"
#include "kvmap.h"
#include "methods.h"

#define MAX_LOGPROBS   20
#define MAX_MESSAGES   256
#define MAX_TOKEN_ID   ((1ull << 31) - 1)

const char *md_state_name(enum md_state s)
{
	switch (s) {
	case MD_LOADING: return "loading";
	case MD_READY: return "ready";
	case MD_RELOADING: return "reloading";
	case MD_STOPPING: return "stopping";
	}
	return "unknown";
}

static void pack_error(msgpack_sbuffer *sb, uint32_t msgid, enum proto_err e, const char *msg)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	proto_pack_error(&pk, true, msgid, e, msg);
}

static char *dup_bytes(const char *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* ------------------------------------------------------------------------ */
/* Params shared by generate and chat                                        */
/* ------------------------------------------------------------------------ */

static int get_f32(const msgpack_object *p, const char *key, float *out, char *msg, size_t n)
{
	double v;
	int r = proto_get_float(p, key, -1e30, 1e30, &v, msg, n);

	if (r == 1)
		*out = (float)v;
	return r;
}

static int parse_stops(const msgpack_object *p, struct md_job *j, char *msg, size_t n)
{
	const msgpack_object *o = proto_find(p, "stop");
	const msgpack_object *items;
	uint32_t count;

	/* absent is "no stop strings"; nil is refused like every other nil field */
	if (!o)
		return 0;
	if (o->type == MSGPACK_OBJECT_STR) {
		items = o;
		count = 1;
	} else if (o->type == MSGPACK_OBJECT_ARRAY) {
		items = o->via.array.ptr;
		count = o->via.array.size;
	} else {
		snprintf(msg, n, "field 'stop': expected a string or an array of strings");
		return -1;
	}
	if (count > MS_STOP_MAX_COUNT) {
		snprintf(msg, n, "field 'stop': %u strings, at most %d", count, MS_STOP_MAX_COUNT);
		return -1;
	}
	j->stops = calloc(count ? count : 1, sizeof(*j->stops));
	j->stop_lens = calloc(count ? count : 1, sizeof(*j->stop_lens));
	if (!j->stops || !j->stop_lens) {
		snprintf(msg, n, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < count; i++) {
		const msgpack_object *s = &items[i];

		if (s->type != MSGPACK_OBJECT_STR || s->via.str.size == 0 ||
		    s->via.str.size > MS_STOP_MAX_LEN || !utf8_valid(s->via.str.ptr, s->via.str.size)) {
			snprintf(msg, n, "field 'stop': element %u must be a UTF-8 string of 1 to %d bytes",
				 i, MS_STOP_MAX_LEN);
			return -1;
		}
		j->stops[i] = dup_bytes(s->via.str.ptr, s->via.str.size);
		if (!j->stops[i]) {
			snprintf(msg, n, "out of memory");
			return -1;
		}
		j->stop_lens[i] = s->via.str.size;
		j->n_stops++;
	}
	return 0;
}

#define KEY(p) (proto_sampling[PS_##p].key)

static int parse_sampling(struct md_daemon *d, const msgpack_object *p, struct md_job *j,
			  char *msg, size_t n)
{
	const uint32_t limit = d->cfg->max_tokens_limit;
	uint64_t u;
	int64_t i;
	ms_err err = { 0 };
	int r;

	j->stream = true;
	j->max_tokens = limit < 256 ? limit : 256;
	if (proto_get_bool(p, "stream", &j->stream, msg, n) < 0 ||
	    proto_get_bool(p, "cache_prompt", &j->cache_prompt, msg, n) < 0)
		return -1;
	if ((r = proto_get_uint(p, KEY(MAX_TOKENS), UINT32_MAX, &u, msg, n)) < 0)
		return -1;
	if (r == 1) {
		if (u == 0 || u > limit) {
			snprintf(msg, n, "field '%s': %llu is outside 1..%u (max_tokens_limit)",
				 KEY(MAX_TOKENS), (unsigned long long)u, limit);
			return -1;
		}
		j->max_tokens = (uint32_t)u;
	}
	if (get_f32(p, KEY(TEMPERATURE), &j->sp.temperature, msg, n) < 0 ||
	    get_f32(p, KEY(TOP_P), &j->sp.top_p, msg, n) < 0 ||
	    get_f32(p, KEY(MIN_P), &j->sp.min_p, msg, n) < 0 ||
	    get_f32(p, KEY(REPETITION_PENALTY), &j->sp.repetition_penalty, msg, n) < 0 ||
	    get_f32(p, KEY(FREQUENCY_PENALTY), &j->sp.frequency_penalty, msg, n) < 0 ||
	    get_f32(p, KEY(PRESENCE_PENALTY), &j->sp.presence_penalty, msg, n) < 0)
		return -1;
	/* the range the sampler takes, so every refusal states the same one */
	if ((r = proto_get_int(p, KEY(TOP_K), 0, INT32_MAX, &i, msg, n)) < 0)
		return -1;
	if (r == 1)
		j->sp.top_k = (int32_t)i;
	if ((r = proto_get_uint(p, KEY(SEED), UINT64_MAX, &u, msg, n)) < 0)
		return -1;
	if (r == 1) {
		j->sp.seed = u;
	} else if (getrandom(&j->sp.seed, sizeof(j->sp.seed), GRND_NONBLOCK) != sizeof(j->sp.seed)) {
		/* No entropy yet (early boot): any distinct value will do. */
		j->sp.seed = (uint64_t)(md_now() * 1e9) ^ ((uint64_t)j->msgid << 32);
	}
	if ((r = proto_get_uint(p, KEY(LOGPROBS), MAX_LOGPROBS, &u, msg, n)) < 0)
		return -1;
	if (r == 1)
		j->logprobs = (uint32_t)u;
	if (ms_sampler_params_check(&j->sp, &err) < 0) {
		snprintf(msg, n, "%s", err.msg);
		return -1;
	}
	return parse_stops(p, j, msg, n);
}

#undef KEY

/* Copies a msgpack array of token ids (vocabulary bounds are the worker's to check). */
static int copy_token_ids(const msgpack_object_array *toks, struct md_job *j, char *msg, size_t n)
{
	j->tokens = malloc((toks->size ? toks->size : 1) * sizeof(int32_t));
	if (!j->tokens) {
		snprintf(msg, n, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < toks->size; i++) {
		const msgpack_object *o = &toks->ptr[i];

		if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > MAX_TOKEN_ID) {
			snprintf(msg, n, "field 'tokens': element %u is not a token id", i);
			return -1;
		}
		j->tokens[i] = (int32_t)o->via.u64;
	}
	j->n_tokens = toks->size;
	return 0;
}

static int parse_generate(struct md_daemon *d, const msgpack_object *p, struct md_job *j,
			  char *msg, size_t n)
{
	const msgpack_object_array *toks = NULL;
	const char *s;
	size_t len;
	int has_prompt, has_tokens;

	if ((has_prompt = proto_get_str(p, "prompt", SIZE_MAX, &s, &len, msg, n)) < 0)
		return -1;
	if (has_prompt) {
		j->prompt = dup_bytes(s, len);
		j->prompt_len = len;
	}
	if ((has_tokens = proto_get_array(p, "tokens", SIZE_MAX, &toks, msg, n)) < 0)
		return -1;
	if (has_prompt == has_tokens) {
		snprintf(msg, n, "give exactly one of 'prompt' and 'tokens'");
		return -1;
	}
	if (has_tokens) {
		if (toks->size == 0) {
			snprintf(msg, n, "field 'tokens': the array is empty");
			return -1;
		}
		if (copy_token_ids(toks, j, msg, n) < 0)
			return -1;
	}
	if (proto_get_bool(p, "raw", &j->raw, msg, n) < 0)
		return -1;
	switch (proto_get_str(p, "system", SIZE_MAX, &s, &len, msg, n)) {
	case -1:
		return -1;
	case 1:
		j->system = dup_bytes(s, len);
		j->system_len = len;
		break;
	}
	if ((has_prompt && !j->prompt) || (j->system_len && !j->system)) {
		snprintf(msg, n, "out of memory");
		return -1;
	}
	return parse_sampling(d, p, j, msg, n);
}

static int parse_role(const msgpack_object *o, enum ms_role *role)
{
	static const struct { const char *name; enum ms_role role; } roles[] = {
		{ "system", MS_ROLE_SYSTEM }, { "user", MS_ROLE_USER }, { "assistant", MS_ROLE_ASSISTANT },
	};

	for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
		if (o->via.str.size == strlen(roles[i].name) &&
		    !memcmp(o->via.str.ptr, roles[i].name, o->via.str.size)) {
			*role = roles[i].role;
			return 0;
		}
	}
	return -1;
}

static int parse_chat(struct md_daemon *d, const msgpack_object *p, struct md_job *j, char *msg, size_t n)
{
	const msgpack_object_array *msgs;
	int r = proto_get_array(p, "messages", MAX_MESSAGES, &msgs, msg, n);

	if (r < 0)
		return -1;
	if (r == 0 || msgs->size == 0) {
		snprintf(msg, n, "field 'messages': a non-empty array is required");
		return -1;
	}
	j->msgs = calloc(msgs->size, sizeof(*j->msgs));
	if (!j->msgs) {
		snprintf(msg, n, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < msgs->size; i++) {
		const msgpack_object *m = &msgs->ptr[i];
		const msgpack_object *role = proto_find(m, "role");
		const char *content;
		size_t len;
		char sub[200];

		if (m->type != MSGPACK_OBJECT_MAP || !role || role->type != MSGPACK_OBJECT_STR ||
		    parse_role(role, &j->msgs[i].role) < 0) {
			snprintf(msg, n, "field 'messages': element %u needs a role of system, user or assistant", i);
			return -1;
		}
		sub[0] = '\0';
		if (proto_get_str(m, "content", SIZE_MAX, &content, &len, sub, sizeof(sub)) != 1) {
			snprintf(msg, n, "field 'messages': element %u: %s", i,
				 sub[0] ? sub : "a string 'content' is required");
			return -1;
		}
		j->msgs[i].content = dup_bytes(content, len);
		j->msgs[i].len = len;
		j->n_msgs++;
		if (!j->msgs[i].content) {
			snprintf(msg, n, "out of memory");
			return -1;
		}
	}
	return parse_sampling(d, p, j, msg, n);
}

static int parse_tokenize(const msgpack_object *p, struct md_job *j, char *msg, size_t n)
{
	const char *s;
	size_t len;
	int r = proto_get_str(p, "text", SIZE_MAX, &s, &len, msg, n);

	if (r < 0)
		return -1;
	if (r == 0) {
		snprintf(msg, n, "field 'text': a string is required");
		return -1;
	}
	j->text = dup_bytes(s, len);
	j->text_len = len;
	j->add_bos = true;
	if (!j->text) {
		snprintf(msg, n, "out of memory");
		return -1;
	}
	if (proto_get_bool(p, "add_bos", &j->add_bos, msg, n) < 0 ||
	    proto_get_bool(p, "special", &j->special, msg, n) < 0)
		return -1;
	return 0;
}

static int parse_detokenize(const msgpack_object *p, struct md_job *j, char *msg, size_t n)
{
	const msgpack_object_array *toks;
	int r = proto_get_array(p, "tokens", SIZE_MAX, &toks, msg, n);

	if (r < 0)
		return -1;
	if (r == 0) {
		snprintf(msg, n, "field 'tokens': an array of token ids is required");
		return -1;
	}
	return copy_token_ids(toks, j, msg, n);
}

/* ------------------------------------------------------------------------ */
/* Answered by the event loop                                                */
/* ------------------------------------------------------------------------ */

static void do_status(struct md_daemon *d, uint32_t msgid, msgpack_sbuffer *sb)
{
	struct md_worker_stats st;
	msgpack_packer pk;

	md_worker_stats(d->worker, &st);
	{
		const struct proto_kv kv[] = {
			PROTO_KV_STR("state", md_state_name((enum md_state)atomic_load(&d->state))),
			PROTO_KV_F64("uptime_s", md_now() - d->t_start),
			PROTO_KV_U64("load_bytes", atomic_load(&d->load_bytes)),
			PROTO_KV_U64("load_total_bytes", atomic_load(&d->load_total_bytes)),
			PROTO_KV_U64("load_wait", d->cfg->load_wait),
			PROTO_KV_U64("active", st.active),
			PROTO_KV_U64("queued", st.queued),
			PROTO_KV_U64("connections", d->connections),
			PROTO_KV_U64("requests_total", atomic_load(&md_counters.requests_total)),
			PROTO_KV_U64("tokens_generated_total", atomic_load(&md_counters.tokens_generated_total)),
			PROTO_KV_U64("prompt_tokens_total", atomic_load(&md_counters.prompt_tokens_total)),
		};

		msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
		proto_pack_result_head(&pk, msgid);
		proto_pack_map(&pk, kv, PROTO_KV_LEN(kv));
	}
}

void md_metrics_pack(struct md_daemon *d, msgpack_packer *pk)
{
	struct md_worker_stats st;

	md_worker_stats(d->worker, &st);
	{
		const struct proto_kv kv[] = {
			PROTO_KV_U64("requests_total", atomic_load(&md_counters.requests_total)),
			PROTO_KV_U64("requests_failed_total", atomic_load(&md_counters.requests_failed_total)),
			PROTO_KV_U64("requests_cancelled_total", atomic_load(&md_counters.requests_cancelled_total)),
			PROTO_KV_U64("busy_rejections_total", atomic_load(&md_counters.busy_rejections_total)),
			PROTO_KV_U64("prompt_tokens_total", atomic_load(&md_counters.prompt_tokens_total)),
			PROTO_KV_U64("tokens_generated_total", atomic_load(&md_counters.tokens_generated_total)),
			PROTO_KV_U64("connections_total", atomic_load(&md_counters.connections_total)),
			PROTO_KV_U64("connections_current", d->connections),
			PROTO_KV_U64("protocol_errors_total", atomic_load(&md_counters.protocol_errors_total)),
			PROTO_KV_U64("active_sequences", st.active),
			PROTO_KV_U64("queued_requests", st.queued),
			PROTO_KV_F64("prompt_seconds_total", (double)atomic_load(&md_counters.prompt_us_total) * 1e-6),
			PROTO_KV_F64("generate_seconds_total", (double)atomic_load(&md_counters.generate_us_total) * 1e-6),
			PROTO_KV_U64("prompt_cache_hits_total", atomic_load(&md_counters.prompt_cache_hits_total)),
			PROTO_KV_U64("prompt_cache_misses_total", atomic_load(&md_counters.prompt_cache_misses_total)),
			PROTO_KV_U64("prompt_cache_evictions_total", atomic_load(&md_counters.prompt_cache_evictions_total)),
			PROTO_KV_U64("prompt_cache_tokens_total", atomic_load(&md_counters.prompt_cache_tokens_total)),
			PROTO_KV_U64("prompt_cache_entries", atomic_load(&md_counters.prompt_cache_entries)),
			PROTO_KV_U64("prompt_cache_bytes", atomic_load(&md_counters.prompt_cache_bytes)),
			PROTO_KV_U64("model_weight_bytes", d->model_weight_bytes),
			PROTO_KV_F64("uptime_seconds", md_now() - d->t_start),
			PROTO_KV_U64("http_requests_total", atomic_load(&md_counters.http_requests_total)),
			PROTO_KV_U64("http_errors_total", atomic_load(&md_counters.http_errors_total)),
			PROTO_KV_U64("http_connections_total", atomic_load(&md_counters.http_connections_total)),
			PROTO_KV_U64("http_connections_current", d->http_connections),
		};

		proto_pack_map(pk, kv, PROTO_KV_LEN(kv));
	}
}

static void do_metrics(struct md_daemon *d, uint32_t msgid, msgpack_sbuffer *sb)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	proto_pack_result_head(&pk, msgid);
	md_metrics_pack(d, &pk);
}

int md_method_handle(struct md_daemon *d, const struct proto_msg *m, uint64_t conn_id,
		     msgpack_sbuffer *sb, struct md_job **job)
{
	static const struct { const char *name; enum md_job_kind kind; } model_methods[] = {
		{ "generate", JOB_GENERATE }, { "chat", JOB_CHAT }, { "tokenize", JOB_TOKENIZE },
		{ "detokenize", JOB_DETOKENIZE }, { "info", JOB_INFO },
	};
	const msgpack_object *p = proto_params(m);
	struct md_job *j;
	char msg[512] = "";
	int r = 0;

	if (proto_method_is(m, "status")) {
		do_status(d, m->msgid, sb);
		return 0;
	}
	if (proto_method_is(m, "metrics")) {
		do_metrics(d, m->msgid, sb);
		return 0;
	}
	for (size_t i = 0; i < sizeof(model_methods) / sizeof(model_methods[0]); i++) {
		if (!proto_method_is(m, model_methods[i].name))
			continue;
		if (atomic_load(&d->state) == MD_STOPPING) {
			pack_error(sb, m->msgid, PE_SHUTTING_DOWN, "the daemon is shutting down");
			return 0;
		}
		/* Otherwise the job waits in the worker's queue for the first model (load_wait). */
		if (!md_worker_has_model(d->worker) && d->cfg->load_wait == 0) {
			pack_error(sb, m->msgid, PE_LOADING, "the model is still loading");
			return 0;
		}
		j = md_job_new(model_methods[i].kind);
		if (!j) {
			pack_error(sb, m->msgid, PE_INTERNAL, "out of memory");
			return 0;
		}
		j->conn_id = conn_id;
		j->msgid = m->msgid;
		switch (j->kind) {
		case JOB_GENERATE: r = parse_generate(d, p, j, msg, sizeof(msg)); break;
		case JOB_CHAT: r = parse_chat(d, p, j, msg, sizeof(msg)); break;
		case JOB_TOKENIZE: r = parse_tokenize(p, j, msg, sizeof(msg)); break;
		case JOB_DETOKENIZE: r = parse_detokenize(p, j, msg, sizeof(msg)); break;
		case JOB_INFO: r = 0; break;
		}
		if (r < 0) {
			pack_error(sb, m->msgid, PE_INVALID_PARAMS, msg);
			md_job_unref(j);
			atomic_fetch_add(&md_counters.requests_failed_total, 1);
			return 0;
		}
		*job = j;
		return 1;
	}
	{
		char name[80];

		snprintf(name, sizeof(name), "unknown method '%.*s'", (int)(m->method_len > 64 ? 64 : m->method_len),
			 m->method);
		pack_error(sb, m->msgid, PE_UNKNOWN_METHOD, name);
	}
	return 0;
}
