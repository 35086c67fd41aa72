/* The worker's answers as msgpack: tokenize, detokenize and info results, generation chunks and final results. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "counters.h"
#include "kvmap.h"
#include "pcache.h"
#include "proto.h"
#include "replies.h"
#include "seq.h"
#include "tokenizer.h"

/* One token's text on its own, into buf; its length. */
static size_t token_text(const struct ms_tokenizer *t, int32_t tok, char buf[MS_DETOK_MAX_OUT * 2])
{
	struct ms_detok d;
	int n, m;

	ms_detok_init(&d, t, false);
	n = ms_detok_push(&d, tok, buf, MS_DETOK_MAX_OUT);
	n = n < 0 ? 0 : n;
	m = ms_detok_flush(&d, buf + n, MS_DETOK_MAX_OUT * 2 - (size_t)n);
	return (size_t)n + (size_t)(m < 0 ? 0 : m);
}

/* One logprobs entry of a sequence: e[0] the chosen token, e[1..k] the top alternatives. */
struct lp_entry {
	const struct md_seq *s;
	const struct md_lp_alt *e;
};

static void pack_top(msgpack_packer *pk, const void *arg)
{
	const struct lp_entry *le = arg;
	const uint32_t k = le->s->job->logprobs;

	msgpack_pack_array(pk, k);
	for (uint32_t a = 1; a <= k; a++) {
		char buf[MS_DETOK_MAX_OUT * 2];
		size_t n = token_text(le->s->tok, le->e[a].tok, buf);
		const struct proto_kv alt[] = {
			PROTO_KV_U64("token", (uint32_t)le->e[a].tok),
			PROTO_KV_STRN("text", buf, n),
			PROTO_KV_F64("logprob", (double)le->e[a].lp),
		};

		proto_pack_map(pk, alt, PROTO_KV_LEN(alt));
	}
}

/* logprobs entries [from, to) of s. */
struct lp_range {
	const struct md_seq *s;
	size_t from, to;
};

static void pack_logprobs(msgpack_packer *pk, const void *arg)
{
	const struct lp_range *r = arg;
	const struct md_seq *s = r->s;
	const uint32_t k = s->job->logprobs;

	msgpack_pack_array(pk, (uint32_t)(r->to - r->from));
	for (size_t i = r->from; i < r->to; i++) {
		const struct lp_entry le = { s, s->lps + i * (1 + k) };
		char buf[MS_DETOK_MAX_OUT * 2];
		size_t n = token_text(s->tok, le.e[0].tok, buf);
		const struct proto_kv entry[] = {
			PROTO_KV_U64("token", (uint32_t)le.e[0].tok),
			PROTO_KV_STRN("text", buf, n),
			PROTO_KV_F64("logprob", (double)le.e[0].lp),
			PROTO_KV_FN("top", pack_top, &le),
		};

		proto_pack_map(pk, entry, PROTO_KV_LEN(entry));
	}
}

void md_reply_tokens(msgpack_packer *pk, uint32_t msgid, const int32_t *ids, size_t n)
{
	const struct proto_kv result[] = { PROTO_KV_IDS("tokens", ids, n) };

	proto_pack_result_head(pk, msgid);
	proto_pack_map(pk, result, PROTO_KV_LEN(result));
}

void md_reply_text(msgpack_packer *pk, uint32_t msgid, const char *text, size_t len)
{
	const struct proto_kv result[] = { PROTO_KV_STRN("text", text, len) };

	proto_pack_result_head(pk, msgid);
	proto_pack_map(pk, result, PROTO_KV_LEN(result));
}

void md_reply_info(msgpack_packer *pk, uint32_t msgid, const struct md_bundle *b)
{
	const struct ms_model *m = b->model;
	const struct ms_hparams *hp = &m->hp;
	struct proto_kv types[32];
	size_t n_types = 0;

	for (uint32_t t = 0; t < 32; t++) {
		if (m->types_seen[t])
			types[n_types++] = PROTO_KV_U64(ms_ggml_type_name(t), m->types_seen[t]);
	}
	const struct proto_kv hparams[] = {
		PROTO_KV_U64("dim", hp->dim),
		PROTO_KV_U64("n_layers", hp->n_layers),
		PROTO_KV_U64("n_heads", hp->n_heads),
		PROTO_KV_U64("n_kv_heads", hp->n_kv_heads),
		PROTO_KV_U64("head_dim", hp->head_dim),
		PROTO_KV_U64("ffn", hp->ffn),
		PROTO_KV_U64("vocab", hp->vocab),
		PROTO_KV_U64("context_train", hp->ctx_train),
		/* float32 on the wire, as in the file: 1e-05 stays 1e-05 for the client. */
		PROTO_KV_F32("rope_base", hp->rope_base),
		PROTO_KV_F32("rms_eps", hp->eps),
	};
	const struct proto_kv memory[] = {
		PROTO_KV_U64("weight_bytes", m->weight_bytes),
		PROTO_KV_U64("arena_bytes", m->arena->size),
		PROTO_KV_STR("page_kind", ms_page_kind_name(m->arena->kind)),
		PROTO_KV_BOOL("locked", m->arena->locked),
	};
	const struct proto_kv pcache[] = {
		PROTO_KV_U64("max_entries", b->pcache_entries),
		PROTO_KV_U64("max_bytes", b->pcache_bytes),
		PROTO_KV_U64("rollback_margin", MD_PCACHE_MARGIN),
		PROTO_KV_U64("entries", atomic_load(&md_counters.prompt_cache_entries)),
		PROTO_KV_U64("bytes", atomic_load(&md_counters.prompt_cache_bytes)),
		PROTO_KV_U64("hits", atomic_load(&md_counters.prompt_cache_hits_total)),
		PROTO_KV_U64("misses", atomic_load(&md_counters.prompt_cache_misses_total)),
		PROTO_KV_U64("evictions", atomic_load(&md_counters.prompt_cache_evictions_total)),
		PROTO_KV_U64("tokens_saved", atomic_load(&md_counters.prompt_cache_tokens_total)),
	};
	const struct proto_kv info[] = {
		PROTO_KV_STR("name", m->name),
		PROTO_KV_STR("architecture", "llama"),
		PROTO_KV_STR("path", b->path),
		PROTO_KV_MAP("hparams", hparams),
		PROTO_KV_STR("attention", hp->n_kv_heads == hp->n_heads ? "mha" : hp->n_kv_heads == 1 ? "mqa" : "gqa"),
		PROTO_KV_U64("context", b->n_ctx),
		PROTO_KV_U64("sliding_window", m->window),
		PROTO_KV_STR("sliding_window_source", m->window_source),
		PROTO_KV_U64("kv_cache_bytes_per_sequence",
			     ms_kv_bytes(m, b->n_ctx, m->window, MD_PCACHE_MARGIN, b->kv_type)),
		PROTO_KV_U64("kv_cache_bytes_per_token",
			  2ull * hp->n_layers * hp->kv_dim * (b->kv_type == GGML_TYPE_F16 ? 2 : 4)),
		PROTO_KV_STR("kv_cache_type", ms_ggml_type_name(b->kv_type)),
		PROTO_KV_MAP_N("tensor_types", types, n_types),
		PROTO_KV_MAP("memory", memory),
		PROTO_KV_MAP("prompt_cache", pcache),
		PROTO_KV_U64("threads", b->threads),
		PROTO_KV_U64("parallel", b->parallel),
		PROTO_KV_STR("kernel_isa", b->kernels->name),
		PROTO_KV_STR("template", ms_template_name(b->tmpl)),
		PROTO_KV_STR("version", PACKAGE_VERSION),
	};

	proto_pack_result_head(pk, msgid);
	proto_pack_map(pk, info, PROTO_KV_LEN(info));
}

void md_reply_chunk(msgpack_packer *pk, const struct md_seq *s, const char *text, size_t n, bool with_token)
{
	const struct lp_range newest = { s, s->n_gen - 1, s->n_gen };
	const struct proto_kv chunk[] = {
		PROTO_KV_STRN("response", text, n),
		PROTO_KV_IDS("tokens", s->gen + s->n_gen - (with_token ? 1 : 0), with_token ? 1 : 0),
		with_token && s->job->logprobs ? PROTO_KV_FN("logprobs", pack_logprobs, &newest) : PROTO_KV_SKIP,
	};

	proto_pack_notification_head(pk, "generate.chunk", 2);
	msgpack_pack_uint32(pk, s->job->msgid);
	proto_pack_map(pk, chunk, PROTO_KV_LEN(chunk));
}

void md_reply_final(msgpack_packer *pk, const struct md_seq *s, enum ms_finish reason, double t_end)
{
	const struct md_job *j = s->job;
	double prompt_s = (s->prompt_done ? s->t_prompt : t_end) - s->t_start;
	double gen_s = s->prompt_done ? t_end - s->t_prompt : 0;
	const struct lp_range all = { s, 0, s->n_gen };
	const struct proto_kv usage[] = {
		PROTO_KV_U64("prompt_tokens", s->n_prompt),
		PROTO_KV_U64("completion_tokens", s->n_gen),
		PROTO_KV_U64("total_tokens", s->n_prompt + s->n_gen),
		PROTO_KV_U64("cached_tokens", s->n_cached),
	};
	const struct proto_kv timings[] = {
		PROTO_KV_F64("queue_ms", (s->t_start - j->t_submit) * 1e3),
		PROTO_KV_F64("prompt_ms", prompt_s * 1e3),
		PROTO_KV_F64("generate_ms", gen_s * 1e3),
		/* the tokens evaluated: cached ones cost (almost) nothing */
		PROTO_KV_F64("prompt_tokens_per_s", prompt_s > 0 ? (double)(s->n_prompt - s->n_cached) / prompt_s : 0.0),
		PROTO_KV_F64("generate_tokens_per_s", gen_s > 0 ? (double)s->n_gen / gen_s : 0.0),
	};
	const struct proto_kv result[] = {
		PROTO_KV_STRN("response", s->text ? s->text : "", s->text_len),
		PROTO_KV_IDS("tokens", s->gen, s->n_gen),
		PROTO_KV_STR("done_reason", ms_finish_name(reason)),
		PROTO_KV_MAP("usage", usage),
		PROTO_KV_MAP("timings", timings),
		PROTO_KV_U64("seed", j->sp.seed),
		j->logprobs ? PROTO_KV_FN("logprobs", pack_logprobs, &all) : PROTO_KV_SKIP,
	};

	proto_pack_result_head(pk, j->msgid);
	proto_pack_map(pk, result, PROTO_KV_LEN(result));
}
