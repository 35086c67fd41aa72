/* The inference thread: owns the model and the KV caches, schedules queued jobs, streams results back. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "conf.h"
#include "counters.h"
#include "log.h"
#include "pcache.h"
#include "proto.h"
#include "replies.h"
#include "seq.h"
#include "tokenizer.h"
#include "worker.h"

/* ------------------------------------------------------------------------ */
/* Worker state                                                              */
/* ------------------------------------------------------------------------ */

struct md_worker {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, draining, aborting;

	struct md_job *q_head, *q_tail;        /* generation jobs, arrival order */
	uint32_t n_queued;
	struct md_job *fast_head, *fast_tail;  /* tokenize/detokenize/info: run between steps */
	uint32_t n_fast;
	uint32_t queue_depth;
	uint32_t load_wait;          /* seconds a job waits for the first model */

	struct md_bundle *cur;       /* serving model, worker-owned */
	struct md_bundle *next;      /* installed, waiting for the running sequences */
	struct md_seq *seqs;         /* [cur->parallel] */
	uint32_t n_active;
	struct md_pcache pc;         /* finished sequences of cur, for prompt reuse */

	pthread_mutex_t out_mu;
	struct md_out *out_head, *out_tail;
	md_wake_fn wake;
	void *wake_ud;

	atomic_ullong heartbeat;
	atomic_uint st_active, st_queued;
	atomic_bool has_model;
	atomic_bool swap_pending;    /* an installed model waits for the old one's sequences */
};

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

/* Hands packed bytes to the event loop; the final message carries the worker's job reference. */
static void post(struct md_worker *w, struct md_job *j, msgpack_sbuffer *sb, bool final)
{
	struct md_out *o = calloc(1, sizeof(*o));

	if (!o) {
		/* Nothing sensible to do without memory: the client sees the connection stall
		 * until its timeout; the job's reference is still released. */
		msgpack_sbuffer_destroy(sb);
		if (final)
			md_job_unref(j);
		return;
	}
	o->conn_id = j->conn_id;
	o->job = final ? j : NULL;
	o->final = final;
	o->len = sb->size;
	o->data = msgpack_sbuffer_release(sb);
	pthread_mutex_lock(&w->out_mu);
	if (w->out_tail)
		w->out_tail->next = o;
	else
		w->out_head = o;
	w->out_tail = o;
	pthread_mutex_unlock(&w->out_mu);
	w->wake(w->wake_ud);
}

struct md_out *md_worker_take_outputs(struct md_worker *w)
{
	struct md_out *o;

	pthread_mutex_lock(&w->out_mu);
	o = w->out_head;
	w->out_head = w->out_tail = NULL;
	pthread_mutex_unlock(&w->out_mu);
	return o;
}

/* Final error for a job (a silent release when its client is gone). */
static void fail(struct md_worker *w, struct md_job *j, enum proto_err e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fail(struct md_worker *w, struct md_job *j, enum proto_err e, const char *fmt, ...)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char msg[512];
	va_list ap;

	atomic_fetch_add(&md_counters.requests_failed_total, 1);
	if (e == PE_CANCELLED)
		atomic_fetch_add(&md_counters.requests_cancelled_total, 1);
	if (atomic_load(&j->gone)) {
		md_job_unref(j);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_error(&pk, true, j->msgid, e, msg);
	post(w, j, &sb, true);
}

/* ------------------------------------------------------------------------ */
/* Fast jobs: tokenize, detokenize, info                                     */
/* ------------------------------------------------------------------------ */

static void run_tokenize(struct md_worker *w, struct md_job *j)
{
	struct ms_tokenizer *t = w->cur->model->tok;
	int32_t *ids = NULL;
	size_t n = 0;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	ms_err err = { 0 };

	if (ms_tokenize(t, j->text, j->text_len, j->add_bos, j->special, &ids, &n, &err) < 0) {
		fail(w, j, PE_INTERNAL, "tokenize: %s", err.msg);
		return;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	md_reply_tokens(&pk, j->msgid, ids, n);
	free(ids);
	post(w, j, &sb, true);
}

static void run_detokenize(struct md_worker *w, struct md_job *j)
{
	struct ms_tokenizer *t = w->cur->model->tok;
	char *text = NULL;
	size_t len = 0;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	ms_err err = { 0 };

	for (size_t i = 0; i < j->n_tokens; i++) {
		if (j->tokens[i] < 0 || (uint32_t)j->tokens[i] >= ms_tok_n_vocab(t)) {
			fail(w, j, PE_INVALID_PARAMS, "field 'tokens': id %d at index %zu is outside the vocabulary (%u)",
			     j->tokens[i], i, ms_tok_n_vocab(t));
			return;
		}
	}
	if (ms_detokenize(t, j->tokens, j->n_tokens, &text, &len, &err) < 0) {
		fail(w, j, PE_INTERNAL, "detokenize: %s", err.msg);
		return;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	md_reply_text(&pk, j->msgid, text, len);
	free(text);
	post(w, j, &sb, true);
}

static void run_info(struct md_worker *w, struct md_job *j)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	md_reply_info(&pk, j->msgid, w->cur);
	post(w, j, &sb, true);
}

/* ------------------------------------------------------------------------ */
/* Generation                                                                */
/* ------------------------------------------------------------------------ */

static int append_text(struct md_seq *s, const char *p, size_t n)
{
	if (s->text_len + n + 1 > s->text_cap) {
		size_t cap = s->text_cap ? s->text_cap : 256;
		char *t;

		while (cap < s->text_len + n + 1)
			cap *= 2;
		t = realloc(s->text, cap);
		if (!t)
			return -ENOMEM;
		s->text = t;
		s->text_cap = cap;
	}
	memcpy(s->text + s->text_len, p, n);
	s->text_len += n;
	return 0;
}

/* The prompt's token ids: raw ids, raw text, or the instruct template. */
static int build_prompt(struct md_worker *w, struct md_seq *s, ms_err *err)
{
	const struct md_job *j = s->job;
	struct ms_tokenizer *t = w->cur->model->tok;

	if (j->tokens) {
		for (size_t i = 0; i < j->n_tokens; i++) {
			if (j->tokens[i] < 0 || (uint32_t)j->tokens[i] >= ms_tok_n_vocab(t))
				return ms_errf(err, -EDOM, "field 'tokens': id %d at index %zu is outside the vocabulary (%u)",
					       j->tokens[i], i, ms_tok_n_vocab(t));
		}
		s->prompt = malloc((j->n_tokens ? j->n_tokens : 1) * sizeof(int32_t));
		if (!s->prompt)
			return ms_errf(err, -ENOMEM, "out of memory");
		memcpy(s->prompt, j->tokens, j->n_tokens * sizeof(int32_t));
		s->n_prompt = j->n_tokens;
		return 0;
	}
	if (j->kind == JOB_GENERATE && j->raw)
		return ms_tokenize(t, j->prompt, j->prompt_len, ms_tok_add_bos(t), false,
				   &s->prompt, &s->n_prompt, err);
	if (j->kind == JOB_CHAT)
		return ms_template_apply(t, w->cur->tmpl, j->msgs, j->n_msgs, &s->prompt, &s->n_prompt, err);
	{
		struct ms_chat_msg msgs[2];
		size_t n = 0;

		if (j->system)
			msgs[n++] = (struct ms_chat_msg){ MS_ROLE_SYSTEM, j->system, j->system_len };
		msgs[n++] = (struct ms_chat_msg){ MS_ROLE_USER, j->prompt, j->prompt_len };
		return ms_template_apply(t, w->cur->tmpl, msgs, n, &s->prompt, &s->n_prompt, err);
	}
}

/* ------------------------------------------------------------------------ */
/* Prompt reuse                                                              */
/* ------------------------------------------------------------------------ */

/*
 * A sequence that ends: notes the tokens its cache holds, to keep them and
 * their state in the prompt cache once the step is over (flush_keeps).
 * Sequences that end in the same step all get their final replies before
 * any of their states is copied into the pool.
 */
static void keep(struct md_worker *w, struct md_seq *s)
{
	const uint32_t n = s->kv ? s->kv->pos : 0;

	if (!s->cache || s->dirty || !n || !s->prompt || w->stop || s->keep)
		return;
	s->keep = malloc(n * sizeof(int32_t));
	if (!s->keep)
		return;
	for (uint32_t i = 0; i < n; i++)
		s->keep[i] = i < s->n_prompt ? s->prompt[i] : s->gen[i - s->n_prompt];
}

/* Keeps what the sequences that ended since the last call hold: their slots are untouched until then. */
static void flush_keeps(struct md_worker *w)
{
	for (uint32_t i = 0; w->seqs && i < w->cur->parallel; i++) {
		struct md_seq *s = &w->seqs[i];

		if (!s->keep)
			continue;
		if (!w->stop)
			md_pcache_put(&w->pc, s->keep, s->kv);
		free(s->keep);
		s->keep = NULL;
	}
}

/* How much of toks[0..n) running sequence t's cache holds: its prompt, then what it generated and fed. */
static uint32_t held_prefix(const struct md_seq *t, const int32_t *toks, size_t n)
{
	const size_t held = t->kv->pos;
	size_t c = ms_common_prefix(t->prompt, held < t->n_prompt ? held : t->n_prompt, toks, n);

	if (c == t->n_prompt && held > t->n_prompt)
		c += ms_common_prefix(t->gen, held - t->n_prompt, toks + c, n - c);
	return (uint32_t)c;
}

/*
 * Before a prompt chunk: continues from the furthest position that a kept
 * entry or another running sequence holds of this prompt (copying keys
 * and values costs about a thousandth of evaluating them), or waits this
 * step for a sequence ahead of it that is still evaluating the same
 * prefix, so that N requests with one long system prompt evaluate it
 * once, even when they arrive together. Sequences rank by position, then
 * slot: a total order, so the highest of any waiting chain always runs.
 * One token is always left to evaluate: its logits start the answer.
 * Returns true to wait.
 */
static bool reuse(struct md_worker *w, struct md_seq *s)
{
	const uint32_t limit = (uint32_t)s->n_prompt - 1, window = s->kv->window;
	uint32_t best = (uint32_t)s->n_fed, wait_for = 0, p;
	const struct ms_kv *from = NULL;
	long e;

	if (!s->cache || s->n_fed >= limit)
		return false;
	for (uint32_t i = 0; i < w->cur->parallel; i++) {
		const struct md_seq *t = &w->seqs[i];
		uint32_t c, shared;

		if (t == s || !t->job || !t->cache)
			continue;
		c = held_prefix(t, s->prompt, limit);
		if (c > best && ms_kv_resumable(t->kv, window, c)) {
			best = c;
			from = t->kv;
		}
		if (t->kv->pos > s->kv->pos || (t->kv->pos == s->kv->pos && t < s)) {
			shared = (uint32_t)ms_common_prefix(t->prompt, t->n_prompt, s->prompt, limit);
			if (t->kv->pos < shared && shared > wait_for)
				wait_for = shared;
		}
	}
	if ((e = md_pcache_match(&w->pc, s->prompt, limit, window, best, &p)) >= 0) {
		best = p;
		from = w->pc.e[e].kv;
		md_pcache_touch(&w->pc, (size_t)e);
	}
	if (wait_for > best) {
		if (!s->waiting)
			md_log(LOG_DEBUG, "request %u waits for the prefix another sequence is evaluating (%u tokens)",
			       s->job->msgid, wait_for);
		s->waiting = true;
		return true;
	}
	if (from && ms_kv_copy(s->kv, from, best) == 0) {
		atomic_fetch_add(&md_counters.prompt_cache_tokens_total, best - s->n_fed);
		s->n_cached += best - (uint32_t)s->n_fed;
		s->n_fed = best;
	}
	return false;
}

static void seq_release(struct md_worker *w, struct md_seq *s)
{
	keep(w, s);
	ms_gen_free(s->g);
	free(s->prompt);
	free(s->gen);
	free(s->text);
	free(s->logits);
	free(s->raw);
	free(s->lps);
	s->g = NULL;
	s->prompt = s->gen = NULL;
	s->text = NULL;
	s->logits = s->raw = NULL;
	s->lps = NULL;
	s->text_len = s->text_cap = 0;
	s->job = NULL;
	pthread_mutex_lock(&w->mu);
	w->n_active--;
	atomic_store(&w->st_active, w->n_active);
	pthread_mutex_unlock(&w->mu);
}

/* Binds job j to the free slot s; on failure the job gets its error and the slot stays free. */
static void seq_start(struct md_worker *w, struct md_seq *s, struct md_job *j)
{
	const struct md_bundle *b = w->cur;
	const uint32_t vocab = b->model->hp.vocab;
	struct ms_gen_params gp;
	ms_err err = { 0 };
	int r;

	struct ms_kv *kv;

	flush_keeps(w);
	kv = s->kv;
	memset(s, 0, sizeof(*s));
	s->kv = kv;
	s->job = j;
	s->t_start = md_now();
	pthread_mutex_lock(&w->mu);
	w->n_active++;
	atomic_store(&w->st_active, w->n_active);
	pthread_mutex_unlock(&w->mu);

	r = build_prompt(w, s, &err);
	if (r < 0) {
		fail(w, j, r == -ENOMEM ? PE_INTERNAL : PE_INVALID_PARAMS, "%s", err.msg);
		goto out;
	}
	if (s->n_prompt == 0) {
		fail(w, j, PE_INVALID_PARAMS, "the prompt has no tokens");
		goto out;
	}
	if (s->n_prompt >= b->n_ctx) {
		fail(w, j, PE_CONTEXT_OVERFLOW, "prompt is %zu tokens, context is %u", s->n_prompt, b->n_ctx);
		goto out;
	}
	if (!s->kv && (r = ms_kv_create(b->model, b->n_ctx, b->model->window, MD_PCACHE_MARGIN, b->kv_type,
					&s->kv, &err)) < 0) {
		fail(w, j, PE_INTERNAL, "%s", err.msg);
		goto out;
	}
	ms_kv_reset(s->kv);
	s->cache = j->cache_prompt && md_pcache_enabled(&w->pc);
	s->limit = j->max_tokens;
	if (s->limit > b->n_ctx - s->n_prompt)
		s->limit = b->n_ctx - (uint32_t)s->n_prompt;
	gp = (struct ms_gen_params){
		.sp = j->sp, .max_tokens = s->limit,
		.stops = (const char *const *)j->stops, .stop_lens = j->stop_lens, .n_stops = j->n_stops,
		/* A templated answer's first piece carries the space that separates
		 * it from [/INST]; raw continuations keep every byte. */
		.strip_leading_space = !(j->kind == JOB_GENERATE && (j->raw || j->tokens)),
	};
	if ((r = ms_gen_create(b->model->tok, &gp, &s->g, &err)) < 0) {
		fail(w, j, r == -ENOMEM ? PE_INTERNAL : PE_INVALID_PARAMS, "%s", err.msg);
		goto out;
	}
	s->tok = b->model->tok;
	s->gen = malloc(s->limit * sizeof(int32_t));
	s->logits = malloc(vocab * sizeof(float));
	if (j->logprobs) {
		s->raw = malloc(vocab * sizeof(float));
		s->lps = malloc((size_t)s->limit * (1 + j->logprobs) * sizeof(*s->lps));
	}
	if (!s->gen || !s->logits || (j->logprobs && (!s->raw || !s->lps))) {
		fail(w, j, PE_INTERNAL, "out of memory for a %u-token generation", s->limit);
		goto out;
	}
	ms_gen_accept(s->g, s->prompt, s->n_prompt);
	atomic_fetch_add(&md_counters.prompt_tokens_total, s->n_prompt);
	return;
out:
	seq_release(w, s);
}

/* Log-probabilities of the chosen token and the top k under the model's own distribution. */
static void record_logprobs(struct md_seq *s, int32_t tok, uint32_t vocab)
{
	const uint32_t k = s->job->logprobs;
	struct md_lp_alt *e = s->lps + s->n_gen * (1 + k);
	double max = -INFINITY, sum = 0, lse;
	uint32_t have = 0;

	for (uint32_t i = 0; i < vocab; i++)
		max = (double)s->raw[i] > max ? (double)s->raw[i] : max;
	/* sum >= 1 (the max's own term is exp(0)) unless every logit is -inf, which gives NaN, never log(0). */
	for (uint32_t i = 0; i < vocab; i++)
		sum += exp((double)s->raw[i] - max);
	lse = max + log(sum);
	e[0] = (struct md_lp_alt){ tok, (float)((double)s->raw[tok] - lse) };
	/* Insertion into a k-long sorted list: k <= 20, so this is vocab x small. */
	for (uint32_t i = 0; i < vocab; i++) {
		float v = s->raw[i];
		uint32_t p;

		if (have == k && v <= s->raw[e[k].tok])
			continue;
		p = have < k ? ++have : k;
		while (p > 1 && s->raw[e[p - 1].tok] < v) {
			e[p] = e[p - 1];
			p--;
		}
		e[p].tok = (int32_t)i;
	}
	for (uint32_t a = 1; a <= k; a++)
		e[a].lp = (float)((double)s->raw[e[a].tok] - lse);
}

static void post_chunk(struct md_worker *w, struct md_seq *s, const char *text, size_t n, bool with_token)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (!s->job->stream || atomic_load(&s->job->gone))
		return;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	md_reply_chunk(&pk, s, text, n, with_token);
	post(w, s->job, &sb, false);
}

/*
 * Ends a sequence. Text still held back (an incomplete character, a
 * possible stop-string prefix) is released first, except after a stop
 * string, where everything from the match on is dropped.
 */
static void seq_finish(struct md_worker *w, struct md_seq *s, enum ms_finish reason)
{
	struct md_job *j = s->job;
	double t_end = md_now();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct ms_gen_out o;
	size_t tail_start = s->text_len;

	if (atomic_load(&j->gone)) {
		atomic_fetch_add(&md_counters.requests_cancelled_total, 1);
		md_job_unref(j);
		seq_release(w, s);
		return;
	}
	reason = ms_gen_end(s->g, reason, &o);
	append_text(s, o.text, o.len);
	if (s->text_len > tail_start)
		post_chunk(w, s, s->text + tail_start, s->text_len - tail_start, false);
	if (reason == MS_FINISH_CANCELLED)
		atomic_fetch_add(&md_counters.requests_cancelled_total, 1);
	if (s->prompt_done)
		atomic_fetch_add(&md_counters.generate_us_total, (unsigned long long)((t_end - s->t_prompt) * 1e6));
	atomic_fetch_add(&md_counters.prompt_us_total,
			 (unsigned long long)(((s->prompt_done ? s->t_prompt : t_end) - s->t_start) * 1e6));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	md_reply_final(&pk, s, reason, t_end);
	post(w, j, &sb, true);
	seq_release(w, s);
}

/* Samples the next token from fresh logits and streams what it adds. */
static void seq_produce(struct md_worker *w, struct md_seq *s)
{
	const uint32_t vocab = w->cur->model->hp.vocab;
	struct ms_gen_out o;
	enum ms_finish fin;

	if (s->job->logprobs)
		memcpy(s->raw, s->logits, vocab * sizeof(float));
	fin = ms_gen_step(s->g, s->logits, &o);
	if (o.tok < 0) {
		seq_finish(w, s, fin);
		return;
	}
	if (s->job->logprobs)
		record_logprobs(s, o.tok, vocab);
	s->gen[s->n_gen++] = o.tok;
	atomic_fetch_add(&md_counters.tokens_generated_total, 1);
	if (append_text(s, o.text, o.len) < 0) {
		seq_finish(w, s, MS_FINISH_LENGTH);
		return;
	}
	post_chunk(w, s, o.text, o.len, true);
	if (fin != MS_FINISH_NONE)
		seq_finish(w, s, fin);
	else
		s->pending = o.tok;
}

/* Fails every running sequence (engine error or shutdown deadline). */
static void fail_active(struct md_worker *w, enum proto_err e, const char *why)
{
	for (uint32_t i = 0; w->cur && i < w->cur->parallel; i++) {
		struct md_seq *s = &w->seqs[i];

		if (s->job) {
			fail(w, s->job, e, "%s", why);
			seq_release(w, s);
		}
	}
}

/*
 * One scheduling step: every running sequence contributes its next prompt
 * chunk (at most `batch` tokens) or its one pending token, and all of them
 * are evaluated together, so concurrent decodes share each read of the
 * weights and a long prompt never holds up the others for more than a chunk.
 */
static void step_eval(struct md_worker *w)
{
	const struct md_bundle *b = w->cur;
	struct ms_batch_item items[MD_MAX_PARALLEL];
	struct md_seq *who[MD_MAX_PARALLEL];
	uint32_t pos0[MD_MAX_PARALLEL];
	size_t n = 0;
	ms_err err = { 0 };
	int r;

	for (uint32_t i = 0; i < b->parallel && n < MD_MAX_PARALLEL; i++) {
		struct md_seq *s = &w->seqs[i];

		if (!s->job)
			continue;
		if (atomic_load(&s->job->cancel)) {
			if (s->n_gen == 0 && !atomic_load(&s->job->gone)) {
				fail(w, s->job, PE_CANCELLED, "request cancelled");
				seq_release(w, s);
			} else {
				seq_finish(w, s, MS_FINISH_CANCELLED);
			}
			continue;
		}
		if (!s->prompt_done) {
			size_t left;

			if (reuse(w, s))
				continue;
			left = s->n_prompt - s->n_fed;

			s->step_n = left < b->batch ? left : b->batch;
			items[n] = (struct ms_batch_item){ s->kv, s->prompt + s->n_fed, s->step_n,
							   s->n_fed + s->step_n == s->n_prompt ? s->logits : NULL,
							   false };
		} else {
			s->step_n = 1;
			items[n] = (struct ms_batch_item){ s->kv, &s->pending, 1, s->logits, false };
		}
		pos0[n] = s->kv->pos;
		who[n++] = s;
	}
	if (!n)
		return;
	r = ms_eval_batch(b->ctx, items, n, &err);
	if (r < 0 && r != -ECANCELED) {
		for (size_t i = 0; i < n; i++)
			who[i]->dirty = true;
		md_log(LOG_ERR, "evaluation failed: %s", err.msg);
		fail_active(w, PE_INTERNAL, err.msg);
		return;
	}
	atomic_fetch_add(&w->heartbeat, 1);
	/* What each sequence got through: all of its item, or after an
	 * abandoned step (every sequence cancelled) possibly less; the cancel
	 * is then handled at the top of the next step. */
	for (size_t i = 0; i < n; i++) {
		struct md_seq *s = who[i];
		uint32_t done = s->kv->pos - pos0[i];

		if (!s->prompt_done) {
			s->n_fed += done;
			if (s->n_fed < s->n_prompt)
				continue;
			s->prompt_done = true;
			s->t_prompt = md_now();
			if (s->cache)
				atomic_fetch_add(s->n_cached ? &md_counters.prompt_cache_hits_total :
						 &md_counters.prompt_cache_misses_total, 1);
		} else if (done == 0) {
			continue;
		}
		seq_produce(w, s);
	}
}

/* A step, then the prompt-cache keeps of the sequences that ended in it (their replies are out). */
static void step(struct md_worker *w)
{
	step_eval(w);
	flush_keeps(w);
}

/* ------------------------------------------------------------------------ */
/* The thread                                                                */
/* ------------------------------------------------------------------------ */

static void free_seqs(struct md_worker *w)
{
	if (!w->seqs)
		return;
	for (uint32_t i = 0; i < w->cur->parallel; i++) {
		ms_kv_free(w->seqs[i].kv);
		free(w->seqs[i].keep);
	}
	free(w->seqs);
	w->seqs = NULL;
}

/*
 * Between layers: feeds the watchdog, and abandons the step when every
 * running sequence has been cancelled, so a cancel or a disconnect during a
 * long prompt chunk takes effect within a layer instead of a whole chunk.
 * With one live sequence in the step it must run to the end of the round.
 */
static int beat(void *ud)
{
	struct md_worker *w = ud;

	atomic_fetch_add(&w->heartbeat, 1);
	for (uint32_t i = 0; i < w->cur->parallel; i++) {
		const struct md_seq *s = &w->seqs[i];

		if (s->job && !atomic_load(&s->job->cancel))
			return 0;
	}
	return 1;
}

/* Called with mu held: puts the installed model in service once nothing runs on the old one. */
static void maybe_swap(struct md_worker *w)
{
	struct md_seq *seqs;

	if (!w->next || w->n_active)
		return;
	seqs = calloc(w->next->parallel, sizeof(*seqs));
	if (!seqs) {
		md_log(LOG_ERR, "out of memory installing the new model; keeping the old one");
		md_bundle_free(w->next);
		w->next = NULL;
		atomic_store(&w->swap_pending, false);
		w->wake(w->wake_ud);
		return;
	}
	free_seqs(w);
	/* Entries hold the old model's state: they never serve another. */
	md_pcache_clear(&w->pc);
	md_bundle_free(w->cur);
	w->cur = w->next;
	w->next = NULL;
	w->seqs = seqs;
	md_pcache_init(&w->pc, w->cur->pcache_entries, w->cur->pcache_bytes);
	/* A long prompt chunk on a big model keeps the watchdog fed layer by layer. */
	ms_ctx_set_progress(w->cur->ctx, beat, w);
	atomic_store(&w->has_model, true);
	atomic_store(&w->swap_pending, false);
	/* the loop says READY=1 for a reload only now (md_worker_swap_pending) */
	w->wake(w->wake_ud);
}

static struct md_job *pop(struct md_job **head, struct md_job **tail)
{
	struct md_job *j = *head;

	if (j) {
		*head = j->next;
		if (!*head)
			*tail = NULL;
		j->next = NULL;
	}
	return j;
}

/*
 * Called with mu held: moves the jobs of one queue whose client cancelled
 * or left, or that were submitted before `before` (monotonic seconds;
 * -INFINITY for none), onto *out. A queue is at most parallel +
 * queue_depth long, so a sweep per wake-up costs nothing.
 */
static void take_stale(struct md_job **head, struct md_job **tail, uint32_t *count, double before,
		       struct md_job **out)
{
	struct md_job **pp = head;

	*tail = NULL;
	while (*pp) {
		struct md_job *j = *pp;

		if (j->t_submit < before || atomic_load(&j->cancel) || atomic_load(&j->gone)) {
			*pp = j->next;
			j->next = *out;
			*out = j;
			(*count)--;
		} else {
			*tail = j;
			pp = &j->next;
		}
	}
}

/* Called with mu held, dropped meanwhile: answers the jobs take_stale took. */
static void settle_stale(struct md_worker *w, struct md_job *dead)
{
	atomic_store(&w->st_queued, w->n_queued);
	if (!dead)
		return;
	pthread_mutex_unlock(&w->mu);
	while (dead) {
		struct md_job *j = dead;

		dead = j->next;
		j->next = NULL;
		if (atomic_load(&j->gone))
			md_job_unref(j);
		else if (atomic_load(&j->cancel))
			fail(w, j, PE_CANCELLED, "request cancelled before it started");
		else
			fail(w, j, PE_LOADING, "the model is still loading after %u s (load_wait)", w->load_wait);
	}
	pthread_mutex_lock(&w->mu);
}

/* Called with mu held: queued jobs whose client cancelled or left give up their place
 * at once instead of when a slot frees. */
static void sweep_queue(struct md_worker *w)
{
	struct md_job *dead = NULL;

	take_stale(&w->q_head, &w->q_tail, &w->n_queued, -INFINITY, &dead);
	settle_stale(w, dead);
}

/* Called with mu held while no model serves: jobs that waited load_wait seconds for
 * the first one leave too. */
static void expire_loading(struct md_worker *w)
{
	const double before = md_now() - w->load_wait;
	struct md_job *dead = NULL;

	take_stale(&w->fast_head, &w->fast_tail, &w->n_fast, before, &dead);
	take_stale(&w->q_head, &w->q_tail, &w->n_queued, before, &dead);
	settle_stale(w, dead);
}

static void *worker_main(void *arg)
{
	struct md_worker *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct md_job *j;

		atomic_fetch_add(&w->heartbeat, 1);
		if (w->stop)
			break;
		maybe_swap(w);
		/* Until the first model serves, every job waits for it (load_wait at most). */
		if (!w->cur)
			expire_loading(w);
		if (w->cur && (j = pop(&w->fast_head, &w->fast_tail))) {
			w->n_fast--;
			pthread_mutex_unlock(&w->mu);
			if (atomic_load(&j->gone))
				md_job_unref(j);
			else if (j->kind == JOB_TOKENIZE)
				run_tokenize(w, j);
			else if (j->kind == JOB_DETOKENIZE)
				run_detokenize(w, j);
			else
				run_info(w, j);
			pthread_mutex_lock(&w->mu);
			continue;
		}
		if (w->aborting && w->n_active) {
			pthread_mutex_unlock(&w->mu);
			fail_active(w, PE_SHUTTING_DOWN, "the daemon is shutting down");
			pthread_mutex_lock(&w->mu);
			continue;
		}
		sweep_queue(w);
		/* Admission: queued jobs take free slots in arrival order (not while a new model waits). */
		while (w->cur && !w->next && w->q_head && w->n_active < w->cur->parallel) {
			struct md_seq *s = NULL;

			j = pop(&w->q_head, &w->q_tail);
			w->n_queued--;
			atomic_store(&w->st_queued, w->n_queued);
			if (atomic_load(&j->gone)) {
				md_job_unref(j);
				continue;
			}
			if (atomic_load(&j->cancel)) {
				pthread_mutex_unlock(&w->mu);
				fail(w, j, PE_CANCELLED, "request cancelled before it started");
				pthread_mutex_lock(&w->mu);
				continue;
			}
			for (uint32_t i = 0; i < w->cur->parallel; i++) {
				if (!w->seqs[i].job) {
					s = &w->seqs[i];
					break;
				}
			}
			pthread_mutex_unlock(&w->mu);
			seq_start(w, s, j);
			pthread_mutex_lock(&w->mu);
		}
		if (!w->n_active) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 250 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			/* Woken by a submit, a cancel or an install; the timeout only
			 * keeps the heartbeat moving for the watchdog. */
			pthread_cond_timedwait(&w->cv, &w->mu, &ts);
			continue;
		}
		pthread_mutex_unlock(&w->mu);
		step(w);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* API for the event loop                                                    */
/* ------------------------------------------------------------------------ */

int md_worker_start(struct md_worker **out, md_wake_fn wake, void *ud, uint32_t queue_depth,
		    uint32_t load_wait)
{
	struct md_worker *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_mutex_init(&w->out_mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->wake = wake;
	w->wake_ud = ud;
	w->queue_depth = queue_depth;
	w->load_wait = load_wait;
	r = pthread_create(&w->thread, NULL, worker_main, w);
	if (r) {
		free(w);
		return -r;
	}
	*out = w;
	return 0;
}

static void fail_list(struct md_worker *w, struct md_job *j, enum proto_err e, const char *why)
{
	while (j) {
		struct md_job *next = j->next;

		j->next = NULL;
		fail(w, j, e, "%s", why);
		j = next;
	}
}

void md_worker_stop(struct md_worker *w)
{
	struct md_job *q, *f;
	struct md_out *o;

	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	q = w->q_head;
	f = w->fast_head;
	w->q_head = w->fast_head = NULL;
	fail_list(w, q, PE_SHUTTING_DOWN, "the daemon is shutting down");
	fail_list(w, f, PE_SHUTTING_DOWN, "the daemon is shutting down");
	fail_active(w, PE_SHUTTING_DOWN, "the daemon is shutting down");
	free_seqs(w);
	md_pcache_clear(&w->pc);
	md_bundle_free(w->cur);
	md_bundle_free(w->next);
	/* Outputs nobody collected any more. */
	while ((o = md_worker_take_outputs(w))) {
		while (o) {
			struct md_out *next = o->next;

			md_out_free(o);
			o = next;
		}
	}
	pthread_mutex_destroy(&w->mu);
	pthread_mutex_destroy(&w->out_mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

void md_worker_install(struct md_worker *w, struct md_bundle *b)
{
	pthread_mutex_lock(&w->mu);
	md_bundle_free(w->next);
	w->next = b;
	atomic_store(&w->swap_pending, true);
	/*
	 * The first model goes into service here, before the caller says
	 * READY: left to the worker thread's next wake-up, a request that
	 * followed READY could still be told "loading" (on a busy machine the
	 * thread wakes milliseconds later). Nothing can be using a model while
	 * there is none; a reload still swaps on the worker thread, once the
	 * old model's sequences are done.
	 */
	if (!w->cur)
		maybe_swap(w);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void md_worker_fail_waiting(struct md_worker *w, const char *why)
{
	struct md_job *q, *f;

	pthread_mutex_lock(&w->mu);
	q = w->q_head;
	f = w->fast_head;
	w->q_head = w->q_tail = w->fast_head = w->fast_tail = NULL;
	w->n_queued = w->n_fast = 0;
	atomic_store(&w->st_queued, 0);
	pthread_mutex_unlock(&w->mu);
	fail_list(w, q, PE_LOADING, why);
	fail_list(w, f, PE_LOADING, why);
}

bool md_worker_has_model(struct md_worker *w)
{
	return atomic_load(&w->has_model);
}

bool md_worker_swap_pending(struct md_worker *w)
{
	return atomic_load(&w->swap_pending);
}

int md_worker_submit(struct md_worker *w, struct md_job *j)
{
	pthread_mutex_lock(&w->mu);
	if (w->draining || w->stop) {
		pthread_mutex_unlock(&w->mu);
		return -ESHUTDOWN;
	}
	/* Before the first model, every kind of job waits in the queue and counts against it. */
	uint32_t parallel = w->cur ? w->cur->parallel : 1;
	uint32_t waiting = w->n_queued + (w->cur ? 0 : w->n_fast);
	bool generation = j->kind == JOB_GENERATE || j->kind == JOB_CHAT;

	if ((generation || !w->cur) && w->n_active + waiting >= parallel + w->queue_depth) {
		pthread_mutex_unlock(&w->mu);
		return -EBUSY;
	}
	if (generation) {
		if (w->q_tail)
			w->q_tail->next = j;
		else
			w->q_head = j;
		w->q_tail = j;
		w->n_queued++;
		atomic_store(&w->st_queued, w->n_queued);
	} else {
		if (w->fast_tail)
			w->fast_tail->next = j;
		else
			w->fast_head = j;
		w->fast_tail = j;
		w->n_fast++;
	}
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

void md_worker_kick(struct md_worker *w)
{
	pthread_mutex_lock(&w->mu);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void md_worker_drain(struct md_worker *w)
{
	struct md_job *q, *f = NULL;

	pthread_mutex_lock(&w->mu);
	w->draining = true;
	q = w->q_head;
	w->q_head = w->q_tail = NULL;
	w->n_queued = 0;
	atomic_store(&w->st_queued, 0);
	/* with no model, the quick jobs wait for one that will not come now */
	if (!w->cur) {
		f = w->fast_head;
		w->fast_head = w->fast_tail = NULL;
		w->n_fast = 0;
	}
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	fail_list(w, q, PE_SHUTTING_DOWN, "the daemon is shutting down");
	fail_list(w, f, PE_SHUTTING_DOWN, "the daemon is shutting down");
}

void md_worker_abort(struct md_worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->aborting = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void md_worker_stats(struct md_worker *w, struct md_worker_stats *st)
{
	st->active = atomic_load(&w->st_active);
	st->queued = atomic_load(&w->st_queued);
	st->heartbeat = atomic_load(&w->heartbeat);
}
