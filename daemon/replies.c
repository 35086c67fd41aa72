/* The worker's answers as msgpack: tokenize, detokenize and info results, generation chunks and final results. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "proto.h"
#include "replies.h"
#include "seq.h"
#include "tokenizer.h"

static void pack_ids(msgpack_packer *pk, const int32_t *ids, size_t n)
{
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_uint32(pk, (uint32_t)ids[i]);
}

static void pack_token_text(msgpack_packer *pk, const struct ms_tokenizer *t, int32_t tok)
{
	char buf[MS_DETOK_MAX_OUT * 2];
	struct ms_detok d;
	int n, m;

	ms_detok_init(&d, t, false);
	n = ms_detok_push(&d, tok, buf, MS_DETOK_MAX_OUT);
	n = n < 0 ? 0 : n;
	m = ms_detok_flush(&d, buf + n, sizeof(buf) - (size_t)n);
	proto_pack_str(pk, buf, (size_t)n + (size_t)(m < 0 ? 0 : m));
}

/* logprobs entries [from, to) of s as msgpack maps. */
static void pack_logprobs(msgpack_packer *pk, const struct md_seq *s, size_t from, size_t to)
{
	const uint32_t k = s->job->logprobs;

	msgpack_pack_array(pk, (uint32_t)(to - from));
	for (size_t i = from; i < to; i++) {
		const struct md_lp_alt *e = s->lps + i * (1 + k);

		msgpack_pack_map(pk, 4);
		proto_pack_kv_u64(pk, "token", (uint32_t)e[0].tok);
		proto_pack_cstr(pk, "text");
		pack_token_text(pk, s->tok, e[0].tok);
		proto_pack_kv_f64(pk, "logprob", (double)e[0].lp);
		proto_pack_cstr(pk, "top");
		msgpack_pack_array(pk, k);
		for (uint32_t a = 1; a <= k; a++) {
			msgpack_pack_map(pk, 3);
			proto_pack_kv_u64(pk, "token", (uint32_t)e[a].tok);
			proto_pack_cstr(pk, "text");
			pack_token_text(pk, s->tok, e[a].tok);
			proto_pack_kv_f64(pk, "logprob", (double)e[a].lp);
		}
	}
}

void md_reply_tokens(msgpack_packer *pk, uint32_t msgid, const int32_t *ids, size_t n)
{
	proto_pack_result_head(pk, msgid);
	msgpack_pack_map(pk, 1);
	proto_pack_cstr(pk, "tokens");
	pack_ids(pk, ids, n);
}

void md_reply_text(msgpack_packer *pk, uint32_t msgid, const char *text, size_t len)
{
	proto_pack_result_head(pk, msgid);
	msgpack_pack_map(pk, 1);
	proto_pack_cstr(pk, "text");
	proto_pack_str(pk, text, len);
}

void md_reply_info(msgpack_packer *pk, uint32_t msgid, const struct md_bundle *b)
{
	const struct ms_model *m = b->model;
	const struct ms_hparams *hp = &m->hp;
	uint32_t n_types = 0;

	for (uint32_t t = 0; t < 32; t++)
		n_types += m->types_seen[t] != 0;
	proto_pack_result_head(pk, msgid);
	msgpack_pack_map(pk, 18);
	proto_pack_kv_str(pk, "name", m->name);
	proto_pack_kv_str(pk, "architecture", "llama");
	proto_pack_kv_str(pk, "path", b->path);
	proto_pack_cstr(pk, "hparams");
	msgpack_pack_map(pk, 10);
	proto_pack_kv_u64(pk, "dim", hp->dim);
	proto_pack_kv_u64(pk, "n_layers", hp->n_layers);
	proto_pack_kv_u64(pk, "n_heads", hp->n_heads);
	proto_pack_kv_u64(pk, "n_kv_heads", hp->n_kv_heads);
	proto_pack_kv_u64(pk, "head_dim", hp->head_dim);
	proto_pack_kv_u64(pk, "ffn", hp->ffn);
	proto_pack_kv_u64(pk, "vocab", hp->vocab);
	proto_pack_kv_u64(pk, "context_train", hp->ctx_train);
	/* float32 on the wire, as in the file: 1e-05 stays 1e-05 for the client. */
	proto_pack_cstr(pk, "rope_base");
	msgpack_pack_float(pk, hp->rope_base);
	proto_pack_cstr(pk, "rms_eps");
	msgpack_pack_float(pk, hp->eps);
	proto_pack_kv_str(pk, "attention", hp->n_kv_heads == hp->n_heads ? "mha" :
				     hp->n_kv_heads == 1 ? "mqa" : "gqa");
	proto_pack_kv_u64(pk, "context", b->n_ctx);
	proto_pack_kv_u64(pk, "sliding_window", m->window);
	proto_pack_kv_str(pk, "sliding_window_source", m->window_source);
	proto_pack_kv_u64(pk, "kv_cache_bytes_per_sequence", ms_kv_bytes(m, b->n_ctx, m->window, b->kv_type));
	proto_pack_kv_u64(pk, "kv_cache_bytes_per_token", 2ull * hp->n_layers * hp->kv_dim *
		    (b->kv_type == GGML_TYPE_F16 ? 2 : 4));
	proto_pack_kv_str(pk, "kv_cache_type", ggml_type_name(b->kv_type));
	proto_pack_cstr(pk, "tensor_types");
	msgpack_pack_map(pk, n_types);
	for (uint32_t t = 0; t < 32; t++) {
		if (m->types_seen[t])
			proto_pack_kv_u64(pk, ggml_type_name(t), m->types_seen[t]);
	}
	proto_pack_cstr(pk, "memory");
	msgpack_pack_map(pk, 4);
	proto_pack_kv_u64(pk, "weight_bytes", m->weight_bytes);
	proto_pack_kv_u64(pk, "arena_bytes", m->arena->size);
	proto_pack_kv_str(pk, "page_kind", ms_page_kind_name(m->arena->kind));
	proto_pack_kv_bool(pk, "locked", m->arena->locked);
	proto_pack_kv_u64(pk, "threads", b->threads);
	proto_pack_kv_u64(pk, "parallel", b->parallel);
	proto_pack_kv_str(pk, "kernel_isa", b->kernels->name);
	proto_pack_kv_str(pk, "template", ms_template_name(b->tmpl));
	proto_pack_kv_str(pk, "version", PACKAGE_VERSION);
}

void md_reply_chunk(msgpack_packer *pk, const struct md_seq *s, const char *text, size_t n, bool with_token)
{
	bool lp = with_token && s->job->logprobs;

	proto_pack_notification_head(pk, "generate.chunk", 2);
	msgpack_pack_uint32(pk, s->job->msgid);
	msgpack_pack_map(pk, lp ? 3 : 2);
	proto_pack_cstr(pk, "response");
	proto_pack_str(pk, text, n);
	proto_pack_cstr(pk, "tokens");
	pack_ids(pk, s->gen + s->n_gen - (with_token ? 1 : 0), with_token ? 1 : 0);
	if (lp) {
		proto_pack_cstr(pk, "logprobs");
		pack_logprobs(pk, s, s->n_gen - 1, s->n_gen);
	}
}

void md_reply_final(msgpack_packer *pk, const struct md_seq *s, enum ms_finish reason, double t_end)
{
	const struct md_job *j = s->job;
	double prompt_s = (s->prompt_done ? s->t_prompt : t_end) - s->t_start;
	double gen_s = s->prompt_done ? t_end - s->t_prompt : 0;

	proto_pack_result_head(pk, j->msgid);
	msgpack_pack_map(pk, j->logprobs ? 7 : 6);
	proto_pack_cstr(pk, "response");
	proto_pack_str(pk, s->text ? s->text : "", s->text_len);
	proto_pack_cstr(pk, "tokens");
	pack_ids(pk, s->gen, s->n_gen);
	proto_pack_kv_str(pk, "done_reason", ms_finish_name(reason));
	proto_pack_cstr(pk, "usage");
	msgpack_pack_map(pk, 3);
	proto_pack_kv_u64(pk, "prompt_tokens", s->n_prompt);
	proto_pack_kv_u64(pk, "completion_tokens", s->n_gen);
	proto_pack_kv_u64(pk, "total_tokens", s->n_prompt + s->n_gen);
	proto_pack_cstr(pk, "timings");
	msgpack_pack_map(pk, 5);
	proto_pack_kv_f64(pk, "queue_ms", (s->t_start - j->t_submit) * 1e3);
	proto_pack_kv_f64(pk, "prompt_ms", prompt_s * 1e3);
	proto_pack_kv_f64(pk, "generate_ms", gen_s * 1e3);
	proto_pack_kv_f64(pk, "prompt_tokens_per_s", prompt_s > 0 ? (double)s->n_prompt / prompt_s : 0.0);
	proto_pack_kv_f64(pk, "generate_tokens_per_s", gen_s > 0 ? (double)s->n_gen / gen_s : 0.0);
	proto_pack_kv_u64(pk, "seed", j->sp.seed);
	if (j->logprobs) {
		proto_pack_cstr(pk, "logprobs");
		pack_logprobs(pk, s, 0, s->n_gen);
	}
}
