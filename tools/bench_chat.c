/* mistral-bench --chat: an N-turn conversation with the prompt cache on and off, time to first token per turn. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_chat.h"
#include "cli.h"
#include "forward.h"
#include "kernels.h"
#include "model.h"
#include "quant.h"

#define PROG "mistral-bench"
/* Ring slots beyond the window, as mistrald gives each sequence (MD_PCACHE_MARGIN). */
#define CHAT_MARGIN 64u

struct chat {
	const struct bench_chat_opts *o;
	struct ms_model *m;
	struct ms_ctx *ctx;
	struct ms_kv *seq;       /* the sequence, cache on: restored from the kept state each turn */
	struct ms_kv *cold;      /* cache off, and the new-tokens-only reference */
	struct ms_kv *kept;      /* what the daemon's pool would hold after the previous turn */
	int32_t *kept_toks;
	uint32_t n_kept;
	float *logits;
	uint64_t rng;
};

static int cmp_double(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, long n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void add_random(struct chat *c, int32_t *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		c->rng ^= c->rng >> 12;
		c->rng ^= c->rng << 25;
		c->rng ^= c->rng >> 27;
		/* ids 3.. : no BOS/EOS/unknown inside the conversation */
		t[i] = (int32_t)(3 + (c->rng * 0x2545f4914f6cdd1dull) % (c->m->hp.vocab - 3));
	}
}

/* Evaluates toks on kv from its position on; seconds. */
static int timed_eval(struct chat *c, struct ms_kv *kv, const int32_t *toks, size_t n, double *s, ms_err *err)
{
	double t0 = cli_now();
	int r = ms_eval(c->ctx, kv, toks, n, c->logits, false, err);

	*s = cli_now() - t0;
	return r;
}

/*
 * Cache on, as the worker does it: the longest prefix of the prompt that
 * the kept state can be continued from (one token always left to
 * evaluate), copied in; then the rest. Time to first token in *ttft,
 * the copy's share in *copy_s, the position continued from in *cached.
 */
static int turn_cached(struct chat *c, const int32_t *prompt, uint32_t n, double *ttft, double *copy_s,
		       uint32_t *cached, ms_err *err)
{
	double t0 = cli_now(), t_eval;
	uint32_t p = 0;
	int r;

	ms_kv_reset(c->seq);
	if (c->kept) {
		p = (uint32_t)ms_common_prefix(c->kept_toks, c->n_kept, prompt, n - 1);
		if (!ms_kv_resumable(c->kept, c->seq->window, p) || ms_kv_copy(c->seq, c->kept, p) < 0)
			p = 0;
	}
	*copy_s = cli_now() - t0;
	if ((r = timed_eval(c, c->seq, prompt + p, n - p, &t_eval, err)) < 0)
		return r;
	*ttft = *copy_s + t_eval;
	*cached = p;
	return 0;
}

/* The answer's tokens but its last are evaluated (decode feeds each sampled token but the final one); then kept. */
static int keep_turn(struct chat *c, const int32_t *hist, uint32_t n, double *keep_s, ms_err *err)
{
	double t;
	int r;

	if ((r = ms_eval(c->ctx, c->seq, hist + c->seq->pos, n - c->seq->pos, NULL, false, err)) < 0)
		return r;
	t = cli_now();
	ms_kv_free(c->kept);
	c->kept = NULL;
	if ((r = ms_kv_snapshot(c->seq, n, &c->kept, err)) < 0)
		return r;
	memcpy(c->kept_toks, hist, n * sizeof(int32_t));
	c->n_kept = n;
	*keep_s = cli_now() - t;
	return 0;
}

static int play(struct chat *c, int32_t *hist, size_t cap, ms_err *err)
{
	const struct bench_chat_opts *o = c->o;
	uint32_t n = 0;
	int r;

	printf("%-5s %8s %7s %6s %12s %12s %12s %8s %8s %8s %8s\n", "turn", "prompt", "cached", "new",
	       "ttft_on_ms", "ttft_off_ms", "new_only_ms", "on/new", "off/on", "copy_ms", "keep_ms");
	for (long t = 1; t <= o->turns; t++) {
		double on, copy_s, off, only, keep_s = 0;
		double on_runs[BENCH_CHAT_MAX_REPEAT], only_runs[BENCH_CHAT_MAX_REPEAT], copy_runs[BENCH_CHAT_MAX_REPEAT];
		uint32_t cached = 0, n_prompt;

		if (t == 1) {
			hist[n++] = 1;   /* BOS */
			add_random(c, hist + n, (size_t)o->system);
			n += (uint32_t)o->system;
		}
		/* The client resends the answer; its last tokens come back spelled differently. */
		if (t > 1 && o->retok)
			add_random(c, hist + n - o->retok, (size_t)o->retok);
		add_random(c, hist + n, (size_t)o->user);
		n_prompt = n + (uint32_t)o->user;
		if (n_prompt + (size_t)o->answer > cap)
			break;
		/*
		 * Off once (it is the long one); on and the new tokens alone
		 * alternately, repeat times each, medians: on a shared CPU one
		 * run of either can be off by half.
		 */
		ms_kv_reset(c->cold);
		if ((r = timed_eval(c, c->cold, hist, n_prompt, &off, err)) < 0)
			return r;
		/* turn 1 has nothing cached: on and new-only are the same evaluation */
		for (long i = 0; i < (t == 1 ? 1 : o->repeat); i++) {
			if ((r = turn_cached(c, hist, n_prompt, &on_runs[i], &copy_runs[i], &cached, err)) < 0)
				return r;
			ms_kv_reset(c->cold);
			if ((r = timed_eval(c, c->cold, hist + cached, n_prompt - cached, &only_runs[i], err)) < 0)
				return r;
		}
		on = median(on_runs, t == 1 ? 1 : o->repeat);
		copy_s = median(copy_runs, t == 1 ? 1 : o->repeat);
		only = median(only_runs, t == 1 ? 1 : o->repeat);
		/* the sequence must hold this turn's prompt for the answer: the last run did that */
		add_random(c, hist + n_prompt, (size_t)o->answer);
		n = n_prompt + (uint32_t)o->answer;
		if ((r = keep_turn(c, hist, n - 1, &keep_s, err)) < 0)
			return r;
		printf("%-5ld %8u %7u %6u %12.1f %12.1f %12.1f %8.2f %8.1f %8.1f %8.1f\n", t, n_prompt, cached,
		       n_prompt - cached, on * 1e3, off * 1e3, only * 1e3, on / only, off / on, copy_s * 1e3,
		       keep_s * 1e3);
		fflush(stdout);
	}
	return 0;
}

int bench_chat(const struct bench_chat_opts *o)
{
	const struct ms_kernels *k = cli_pick_kernels(o->isa);
	struct ms_load_opts lo = {
		.arena = { .policy = o->pages, .mlock = o->mlock },
		.window = MS_WINDOW_AUTO,
		.plain_rows = o->plain_rows,
	};
	const size_t cap = (size_t)o->system + (size_t)o->turns * (size_t)(o->user + o->answer) + 1;
	struct chat c = { .o = o, .rng = 0x9e3779b97f4a7c15ull };
	int32_t *hist = NULL;
	ms_err err = { 0 };
	int r;

	if ((r = ms_model_load(o->model, &lo, NULL, NULL, &c.m, &err)) < 0) {
		fprintf(stderr, PROG ": %s: %s\n", o->model, err.msg);
		return r;
	}
	if (cap > c.m->hp.ctx_train)
		fprintf(stderr, PROG ": note: %zu positions is past the model's context (%u); RoPE does not mind\n",
			cap, c.m->hp.ctx_train);
	hist = malloc(cap * sizeof(int32_t));
	c.kept_toks = malloc(cap * sizeof(int32_t));
	c.logits = malloc((size_t)c.m->hp.vocab * sizeof(float));
	if (!hist || !c.kept_toks || !c.logits) {
		fprintf(stderr, PROG ": out of memory\n");
		r = -ENOMEM;
		goto out;
	}
	if ((r = ms_kv_create(c.m, (uint32_t)cap, c.m->window, CHAT_MARGIN, o->kv_type, &c.seq, &err)) < 0 ||
	    (r = ms_kv_create(c.m, (uint32_t)cap, c.m->window, CHAT_MARGIN, o->kv_type, &c.cold, &err)) < 0 ||
	    (r = ms_ctx_create(c.m, k, (uint32_t)o->batch, (uint32_t)o->threads, &c.ctx, &err)) < 0) {
		fprintf(stderr, PROG ": %s\n", err.msg);
		goto out;
	}
	printf("# %s: %s, %s kernels, %ld threads, window %u (+%u rollback slots), batch %ld, "
	       "on and new-only: medians of %ld\n"
	       "# each turn: %ld user tokens, an answer of %ld whose last %ld come back re-tokenized; "
	       "system prompt %ld\n", o->model, c.m->name, k->name, o->threads, c.m->window, CHAT_MARGIN,
	       o->batch, o->repeat, o->user, o->answer, o->retok, o->system);
	/* One token first: thread team start-up and first-touch scratch are not speed. */
	hist[0] = 1;
	if ((r = ms_eval(c.ctx, c.cold, hist, 1, c.logits, false, &err)) < 0 ||
	    (r = play(&c, hist, cap, &err)) < 0)
		fprintf(stderr, PROG ": %s\n", err.msg);
out:
	free(hist);
	free(c.kept_toks);
	free(c.logits);
	ms_kv_free(c.seq);
	ms_kv_free(c.cold);
	ms_kv_free(c.kept);
	ms_ctx_free(c.ctx);
	ms_model_free(c.m);
	return r;
}
