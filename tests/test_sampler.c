/* Tests for the sampler: validation, filters, penalties, seeding, distribution. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "../tests/tap.h"

#define MAXV 4096

/* Filters off: plain softmax(logits / T) sampling. */
static struct ms_sampler_params plain(float temp, uint64_t seed)
{
	struct ms_sampler_params p;

	ms_sampler_params_default(&p);
	p.temperature = temp;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.seed = seed;
	return p;
}

static struct ms_sampler *mk(const struct ms_sampler_params *p, uint32_t n)
{
	struct ms_sampler *s = NULL;
	ms_err err = { 0 };

	if (ms_sampler_create(p, n, &s, &err))
		diag("ms_sampler_create: %s", err.msg);
	return s;
}

/* Draws `draws` tokens from fresh copies of logits; counts per id. */
static void histogram(struct ms_sampler *s, const float *logits, uint32_t n, int draws,
		      long *counts)
{
	float tmp[MAXV];

	memset(counts, 0, n * sizeof(*counts));
	for (int i = 0; i < draws; i++) {
		int32_t t;

		memcpy(tmp, logits, n * sizeof(*tmp));
		t = ms_sampler_sample(s, tmp, NULL);
		if (t >= 0 && (uint32_t)t < n)
			counts[t]++;
	}
}

/* softmax(logits / T) in double, the reference every distribution test compares against. */
static void softmax_ref(const float *l, uint32_t n, double temp, double *p)
{
	double mx = -INFINITY, z = 0.0;

	for (uint32_t i = 0; i < n; i++)
		if ((double)l[i] > mx)
			mx = (double)l[i];
	for (uint32_t i = 0; i < n; i++) {
		p[i] = exp(((double)l[i] - mx) / temp);
		z += p[i];
	}
	for (uint32_t i = 0; i < n; i++)
		p[i] /= z;
}

/* Pearson chi-square of counts against probabilities p (bins with p == 0 must be empty). */
static double chi_square(const long *counts, const double *p, uint32_t n, int draws, bool *bad)
{
	double x2 = 0.0;

	*bad = false;
	for (uint32_t i = 0; i < n; i++) {
		double e = p[i] * draws;

		if (p[i] == 0.0) {
			if (counts[i])
				*bad = true;
			continue;
		}
		x2 += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
	}
	return x2;
}

/* ---- parameters ---- */

struct bad_case {
	const char *field;
	void (*set)(struct ms_sampler_params *p);
};

#define SETTER(name, stmt) \
	static void name(struct ms_sampler_params *p) { stmt; }
SETTER(t_nan, p->temperature = NAN)
SETTER(t_neg, p->temperature = -0.1f)
SETTER(t_inf, p->temperature = INFINITY)
SETTER(t_big, p->temperature = 100.5f)
SETTER(k_neg, p->top_k = -1)
SETTER(p_zero, p->top_p = 0.0f)
SETTER(p_big, p->top_p = 1.01f)
SETTER(p_nan, p->top_p = NAN)
SETTER(p_neg, p->top_p = -0.5f)
SETTER(m_neg, p->min_p = -0.01f)
SETTER(m_big, p->min_p = 1.5f)
SETTER(m_nan, p->min_p = NAN)
SETTER(r_zero, p->repetition_penalty = 0.0f)
SETTER(r_neg, p->repetition_penalty = -1.0f)
SETTER(r_big, p->repetition_penalty = 10.5f)
SETTER(r_nan, p->repetition_penalty = NAN)
SETTER(r_inf, p->repetition_penalty = INFINITY)
SETTER(f_low, p->frequency_penalty = -2.01f)
SETTER(f_big, p->frequency_penalty = 2.5f)
SETTER(f_nan, p->frequency_penalty = NAN)
SETTER(f_inf, p->frequency_penalty = -INFINITY)
SETTER(pr_low, p->presence_penalty = -3.0f)
SETTER(pr_big, p->presence_penalty = 2.01f)
SETTER(pr_nan, p->presence_penalty = NAN)
SETTER(n_neg, p->penalty_last_n = -1)
SETTER(n_big, p->penalty_last_n = 4097)

SETTER(ok_edges1, (p->temperature = 0.0f, p->top_k = 0, p->top_p = 1.0f, p->min_p = 0.0f,
		   p->repetition_penalty = 10.0f, p->frequency_penalty = -2.0f,
		   p->presence_penalty = 2.0f, p->penalty_last_n = 0))
SETTER(ok_edges2, (p->temperature = 100.0f, p->top_k = 1000000, p->top_p = 1e-6f,
		   p->min_p = 1.0f, p->repetition_penalty = 1e-3f, p->frequency_penalty = 2.0f,
		   p->presence_penalty = -2.0f, p->penalty_last_n = 4096, p->seed = UINT64_MAX))

static void test_params(void)
{
	static const struct bad_case bad[] = {
		{ "temperature", t_nan }, { "temperature", t_neg }, { "temperature", t_inf },
		{ "temperature", t_big }, { "top_k", k_neg }, { "top_p", p_zero },
		{ "top_p", p_big }, { "top_p", p_nan }, { "top_p", p_neg },
		{ "min_p", m_neg }, { "min_p", m_big }, { "min_p", m_nan },
		{ "repetition_penalty", r_zero }, { "repetition_penalty", r_neg },
		{ "repetition_penalty", r_big }, { "repetition_penalty", r_nan },
		{ "repetition_penalty", r_inf },
		{ "frequency_penalty", f_low }, { "frequency_penalty", f_big },
		{ "frequency_penalty", f_nan }, { "frequency_penalty", f_inf },
		{ "presence_penalty", pr_low }, { "presence_penalty", pr_big },
		{ "presence_penalty", pr_nan },
		{ "penalty_last_n", n_neg }, { "penalty_last_n", n_big },
	};
	struct ms_sampler_params p;
	struct ms_sampler *s;
	ms_err err = { 0 };
	int rc;

	ms_sampler_params_default(&p);
	ok(ms_sampler_params_check(&p, &err) == 0, "defaults are valid");
	ok(p.temperature == 0.6f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f &&
	   p.repetition_penalty == 1.0f && p.frequency_penalty == 0.0f &&
	   p.presence_penalty == 0.0f && p.penalty_last_n == 64 && p.seed == 0x5eed,
	   "defaults as documented");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ms_sampler_params_default(&p);
		bad[i].set(&p);
		ms_err_clear(&err);
		rc = ms_sampler_params_check(&p, &err);
		ok(rc == -EINVAL && err.code == -EINVAL && strstr(err.msg, bad[i].field),
		   "invalid %s rejected: %s", bad[i].field, err.msg);
	}
	ms_sampler_params_default(&p);
	ok_edges1(&p);
	ok(ms_sampler_params_check(&p, &err) == 0, "inclusive bounds accepted (low)");
	ms_sampler_params_default(&p);
	ok_edges2(&p);
	ok(ms_sampler_params_check(&p, &err) == 0, "inclusive bounds accepted (high)");
	ok(ms_sampler_params_check(NULL, &err) == -EINVAL, "NULL params rejected");

	ms_sampler_params_default(&p);
	t_nan(&p);
	s = (struct ms_sampler *)NULL;
	ok(ms_sampler_create(&p, 10, &s, &err) == -EINVAL && !s, "create refuses bad params");
	ms_sampler_params_default(&p);
	ok(ms_sampler_create(&p, 0, &s, &err) == -EINVAL && !s, "create refuses n_vocab 0");
	ms_sampler_free(NULL);
}

/* ---- greedy ---- */

static void test_greedy(void)
{
	struct ms_sampler_params p = plain(0.0f, 1);
	struct ms_sampler *s = mk(&p, 10);
	float l[10] = { 0, 1, 2, 3, 4, 5, 6, 9, 8, 7 };
	float tie[10] = { 0, 1, 2, 9, 4, 5, 6, 8, 8, 9 };
	float lp = 1.0f;
	bool all = true;

	if (!s) {
		ok(0, "greedy sampler created");
		return;
	}
	ok(ms_sampler_sample(s, l, NULL) == 7, "greedy picks the argmax");
	ok(ms_sampler_sample(s, tie, NULL) == 3, "greedy ties go to the lowest id");
	for (int i = 0; i < 100; i++) {
		float t2[10];

		memcpy(t2, tie, sizeof(t2));
		all &= ms_sampler_sample(s, t2, &lp) == 3;
	}
	ok(all, "greedy is stable over 100 calls");
	{
		double ref[10];

		softmax_ref(tie, 10, 1.0, ref);
		ok(fabs((double)lp - log(ref[3])) < 1e-5,
		   "greedy logprob = log softmax (%g vs %g)", (double)lp, log(ref[3]));
	}
	ms_sampler_free(s);

	/* Top-k 1 at a high temperature is greedy too. */
	{
		struct ms_sampler_params q = plain(1.5f, 9);
		float l2[10] = { 0.5f, 0.4f, 0.6f, 0.59f, 0, 0, 0, 0, 0, 0 };
		long cnt[10];

		q.top_k = 1;
		s = mk(&q, 10);
		histogram(s, l2, 10, 2000, cnt);
		ok(cnt[2] == 2000, "top_k=1 always picks the argmax (%ld/2000)", cnt[2]);
		ms_sampler_free(s);
	}
	/* Temperature near 0 behaves as argmax. */
	{
		float tiny[] = { 1e-3f, 1e-6f, 1e-30f };

		for (size_t i = 0; i < sizeof(tiny) / sizeof(tiny[0]); i++) {
			struct ms_sampler_params q = plain(tiny[i], 5);
			float l3[5] = { 1.0f, 1.02f, 0.5f, -3.0f, 0.98f };
			long cnt[5];

			s = mk(&q, 5);
			histogram(s, l3, 5, 1000, cnt);
			ok(cnt[1] == 1000, "temperature %g picks the argmax (%ld/1000)",
			   (double)tiny[i], cnt[1]);
			ms_sampler_free(s);
		}
	}
}

/* ---- seeding ---- */

static void test_seed(void)
{
	struct ms_sampler_params p = plain(1.0f, 42), q = plain(1.0f, 43);
	struct ms_sampler *a = mk(&p, 50), *b = mk(&p, 50), *c = mk(&q, 50);
	float l[50], t1[50], t2[50], t3[50];
	int same_ab = 0, same_ac = 0;

	for (int i = 0; i < 50; i++)
		l[i] = (float)((i * 37) % 11) * 0.3f;
	for (int i = 0; i < 1000; i++) {
		int32_t x, y, z;

		memcpy(t1, l, sizeof(l));
		memcpy(t2, l, sizeof(l));
		memcpy(t3, l, sizeof(l));
		x = ms_sampler_sample(a, t1, NULL);
		y = ms_sampler_sample(b, t2, NULL);
		z = ms_sampler_sample(c, t3, NULL);
		same_ab += x == y;
		same_ac += x == z;
	}
	ok(same_ab == 1000, "same seed, same 1000 tokens (%d)", same_ab);
	ok(same_ac < 500, "different seeds differ (%d/1000 equal)", same_ac);
	ms_sampler_free(a);
	ms_sampler_free(b);
	ms_sampler_free(c);
}

/* ---- distributions ---- */

static void test_distribution(void)
{
	static const float l[8] = { 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, -1.0f, 0.2f, 1.2f };
	static const float temps[] = { 1.0f, 0.5f, 3.0f };
	const int draws = 200000;
	long cnt[8];
	double ref[8];
	bool bad;

	for (size_t t = 0; t < sizeof(temps) / sizeof(temps[0]); t++) {
		struct ms_sampler_params p = plain(temps[t], 1234 + t);
		struct ms_sampler *s = mk(&p, 8);
		double x2, worst = 0.0;

		histogram(s, l, 8, draws, cnt);
		softmax_ref(l, 8, (double)temps[t], ref);
		x2 = chi_square(cnt, ref, 8, draws, &bad);
		for (int i = 0; i < 8; i++) {
			double sd = sqrt(ref[i] * (1 - ref[i]) * draws);
			double z = fabs((double)cnt[i] - ref[i] * draws) / sd;

			if (z > worst)
				worst = z;
		}
		/* 7 degrees of freedom: P(X2 > 24.3) = 0.001. */
		ok(x2 < 24.3 && worst < 4.5 && !bad,
		   "T=%g matches softmax(l/T): chi2 %.2f (7 dof), worst bin %.2f sd",
		   (double)temps[t], x2, worst);
		ms_sampler_free(s);
	}

	/* High temperature flattens: near uniform. */
	{
		struct ms_sampler_params p = plain(100.0f, 77);
		struct ms_sampler *s = mk(&p, 8);
		long lo = draws, hi = 0;

		histogram(s, l, 8, draws, cnt);
		for (int i = 0; i < 8; i++) {
			if (cnt[i] < lo)
				lo = cnt[i];
			if (cnt[i] > hi)
				hi = cnt[i];
		}
		ok((double)hi / (double)lo < 1.1, "T=100 is nearly flat (max/min %.3f)",
		   (double)hi / (double)lo);
		ms_sampler_free(s);
	}
}

/* ---- filters ---- */

static void test_top_k(void)
{
	struct ms_sampler_params p = plain(2.0f, 3);
	struct ms_sampler *s;
	float l[6] = { 1.0f, 3.0f, 2.9f, 2.8f, 0.0f, 2.95f };
	long cnt[6];

	p.top_k = 2;
	s = mk(&p, 6);
	histogram(s, l, 6, 20000, cnt);
	ok(cnt[0] + cnt[2] + cnt[3] + cnt[4] == 0 && cnt[1] > 0 && cnt[5] > 0,
	   "top_k=2 never picks rank 3+ (ranks 1,2: %ld %ld; rank 3: %ld)", cnt[1], cnt[5],
	   cnt[2]);
	{
		double r = (double)cnt[1] / (double)(cnt[1] + cnt[5]);
		double want = 1.0 / (1.0 + exp((2.95 - 3.0) / 2.0));

		ok(fabs(r - want) < 0.02, "top_k=2 renormalises the survivors (%.4f vs %.4f)", r,
		   want);
	}
	ms_sampler_free(s);

	p.top_k = 100;   /* larger than the vocabulary: clamped */
	s = mk(&p, 6);
	histogram(s, l, 6, 20000, cnt);
	ok(cnt[4] > 0 && cnt[0] > 0, "top_k > n_vocab is clamped (all tokens reachable)");
	ms_sampler_free(s);

	/* Many equal logits: the survivors are the lowest ids. */
	{
		static float flat[MAXV];
		long c2[MAXV], seen;
		bool in = true;

		p = plain(1.0f, 8);
		p.top_k = 40;
		s = mk(&p, MAXV);
		histogram(s, flat, MAXV, 20000, c2);
		for (int i = 40; i < MAXV; i++)
			in &= c2[i] == 0;
		ok(in && c2[0] > 0 && c2[39] > 0, "top_k=40 over equal logits keeps ids 0..39");
		ms_sampler_free(s);

		/* k above the heap's range takes the quickselect path. */
		p.top_k = 1500;
		s = mk(&p, MAXV);
		histogram(s, flat, MAXV, 5000, c2);
		in = true;
		for (int i = 1500; i < MAXV; i++)
			in &= c2[i] == 0;
		seen = 0;
		for (int i = 0; i < 1500; i++)
			seen += c2[i] > 0;
		ok(in && seen > 1200,
		   "top_k=1500 (quickselect) over equal logits keeps ids 0..1499 (%ld seen)", seen);
		ms_sampler_free(s);
	}
	{
		static float sh[MAXV];
		long c2[MAXV];
		bool in = true;
		long top = 0;

		/* rank r at id (r * 1031) % MAXV, logit -r/1000 */
		for (int r = 0; r < MAXV; r++)
			sh[(r * 1031) % MAXV] = (float)r * -1e-3f;
		p = plain(1.0f, 10);
		p.top_k = 2000;
		s = mk(&p, MAXV);
		histogram(s, sh, MAXV, 5000, c2);
		for (int r = 0; r < MAXV; r++) {
			if (r >= 2000)
				in &= c2[(r * 1031) % MAXV] == 0;
			else
				top += c2[(r * 1031) % MAXV] > 0;
		}
		ok(in && top > 1500, "top_k=2000 of %d shuffled (quickselect): no rank >= 2000 drawn, "
		   "%ld of the 2000 seen", MAXV, top);
		ms_sampler_free(s);
	}
}

/*
 * Reference for top_k/top_p/min_p: full sort in double, keep set as the
 * documented pipeline defines it. Returns the kept count and the smallest
 * distance of top_p to a cumulative boundary (to keep tests off edges).
 */
static int rank_desc(const void *a, const void *b)
{
	const double *x = a, *y = b;

	return (x[0] < y[0]) - (x[0] > y[0]);
}

static size_t ref_keep(const float *l, uint32_t n, double temp, uint32_t top_k, double top_p,
		       double min_p, bool *keep, double *margin)
{
	static double pr[MAXV][2];
	double z = 0.0, cum = 0.0, mx = -INFINITY;
	uint32_t k = top_k && top_k < n ? top_k : n;
	size_t kept = 0;

	for (uint32_t i = 0; i < n; i++) {
		pr[i][0] = (double)l[i];
		pr[i][1] = i;
		if (pr[i][0] > mx)
			mx = pr[i][0];
	}
	qsort(pr, n, sizeof(pr[0]), rank_desc);
	for (uint32_t i = 0; i < k; i++)
		z += exp((pr[i][0] - mx) / temp);
	memset(keep, 0, n * sizeof(*keep));
	*margin = 1.0;
	for (uint32_t i = 0; i < k; i++) {
		double q = exp((pr[i][0] - mx) / temp);

		cum += q / z;
		if (fabs(cum - top_p) < *margin)
			*margin = fabs(cum - top_p);
		if (q >= min_p) {
			keep[(int)pr[i][1]] = true;
			kept++;
		}
		if (cum >= top_p)
			break;
	}
	return kept;
}

static void check_keep(const char *what, const float *l, uint32_t n, struct ms_sampler_params p,
		       int draws)
{
	static bool keep[MAXV];
	long cnt[MAXV];
	double margin;
	size_t kept = ref_keep(l, n, (double)p.temperature, (uint32_t)p.top_k, (double)p.top_p,
			       (double)p.min_p, keep, &margin);
	struct ms_sampler *s = mk(&p, n);
	size_t outside = 0, seen = 0;

	histogram(s, l, n, draws, cnt);
	for (uint32_t i = 0; i < n; i++) {
		if (cnt[i] && !keep[i])
			outside++;
		if (cnt[i] && keep[i])
			seen++;
	}
	ok(outside == 0 && seen == kept && margin > 1e-4,
	   "%s: only the %zu kept tokens drawn (%zu outside, %zu seen, margin %.2g)", what, kept,
	   outside, seen, margin);
	ms_sampler_free(s);
}

static void test_top_p_min_p(void)
{
	/* p = 0.5, 0.3, 0.15, 0.05 at shuffled ids. */
	float l[4];
	struct ms_sampler_params p = plain(1.0f, 11);
	long cnt[4];
	struct ms_sampler *s;

	l[2] = logf(0.5f);
	l[0] = logf(0.3f);
	l[3] = logf(0.15f);
	l[1] = logf(0.05f);

	p.top_p = 0.79f;
	s = mk(&p, 4);
	histogram(s, l, 4, 40000, cnt);
	ok(cnt[3] == 0 && cnt[1] == 0 && cnt[2] > 0 && cnt[0] > 0,
	   "top_p 0.79 keeps p=0.5,0.3 only (%ld %ld %ld %ld)", cnt[2], cnt[0], cnt[3], cnt[1]);
	ok(fabs((double)cnt[2] / 40000.0 - 0.625) < 0.01,
	   "top_p renormalises: 0.5/0.8 = 0.625 (%.4f)", (double)cnt[2] / 40000.0);
	ms_sampler_free(s);

	p.top_p = 0.81f;
	s = mk(&p, 4);
	histogram(s, l, 4, 40000, cnt);
	ok(cnt[1] == 0 && cnt[3] > 0, "top_p 0.81 adds p=0.15, never p=0.05 (%ld %ld)", cnt[3],
	   cnt[1]);
	ms_sampler_free(s);

	p.top_p = 0.49f;
	s = mk(&p, 4);
	histogram(s, l, 4, 2000, cnt);
	ok(cnt[2] == 2000, "top_p below the top probability keeps exactly one (%ld)", cnt[2]);
	ms_sampler_free(s);

	p.top_p = 1e-6f;
	s = mk(&p, 4);
	histogram(s, l, 4, 500, cnt);
	ok(cnt[2] == 500, "tiny top_p keeps at least one");
	ms_sampler_free(s);

	/* min_p: pmax = 0.5; 0.12 * 0.5 = 0.06 keeps 0.15, drops 0.05. */
	p = plain(1.0f, 12);
	p.min_p = 0.12f;
	s = mk(&p, 4);
	histogram(s, l, 4, 40000, cnt);
	ok(cnt[1] == 0 && cnt[3] > 0 && cnt[0] > 0, "min_p 0.12 drops p=0.05 < 0.06 only (%ld %ld)",
	   cnt[3], cnt[1]);
	{
		double r = (double)cnt[3] / 40000.0;

		ok(fabs(r - 0.15 / 0.95) < 0.01, "min_p renormalises (%.4f vs %.4f)", r, 0.15 / 0.95);
	}
	ms_sampler_free(s);

	p.min_p = 0.35f;   /* threshold 0.175: drops 0.15 too */
	s = mk(&p, 4);
	histogram(s, l, 4, 40000, cnt);
	ok(cnt[1] == 0 && cnt[3] == 0 && cnt[0] > 0, "min_p 0.35 drops p=0.15 and p=0.05");
	ms_sampler_free(s);

	p.min_p = 1.0f;
	s = mk(&p, 4);
	histogram(s, l, 4, 500, cnt);
	ok(cnt[2] == 500, "min_p 1 keeps only the max");
	ms_sampler_free(s);

	/*
	 * Large vocabulary, slowly decaying probabilities at shuffled ids: the
	 * unsorted top_p path has to select several chunks; the top_k path
	 * sorts its survivors. Both are checked against a full sort.
	 */
	{
		static float big[MAXV];
		const uint32_t n = 1000;

		for (uint32_t i = 0; i < n; i++)
			big[(i * 389) % n] = (float)i * -0.005f;
		p = plain(1.0f, 21);
		p.top_p = 0.9f;
		check_keep("top_p 0.9 over 1000 tokens (unsorted path)", big, n, p, 30000);
		p.top_p = 0.3f;
		check_keep("top_p 0.3 over 1000 tokens", big, n, p, 10000);
		p.top_p = 0.8f;
		p.top_k = 600;
		check_keep("top_k 600 + top_p 0.8", big, n, p, 10000);
		p.top_k = 0;
		p.top_p = 0.93f;
		p.min_p = 0.2f;
		check_keep("top_p 0.93 + min_p 0.2", big, n, p, 30000);
		p.top_p = 0.5f;
		p.min_p = 0.2f;
		p.temperature = 0.7f;
		p.top_k = 300;
		check_keep("T 0.7 + top_k 300 + top_p 0.5 + min_p 0.2", big, n, p, 10000);
	}
}

/* ---- penalties ---- */

static void test_penalties(void)
{
	struct ms_sampler_params p = plain(0.0f, 1);
	struct ms_sampler *s;
	float l[10] = { 2.0f, -2.0f, 1.0f, -1.0f, 0.5f, 3.0f, 0.0f, 0.25f, -0.5f, 1.5f };
	float w[10];
	bool others = true;

	p.repetition_penalty = 2.0f;
	p.frequency_penalty = 0.5f;
	p.presence_penalty = 0.25f;
	p.penalty_last_n = 64;
	s = mk(&p, 10);
	ms_sampler_accept(s, 0);
	ms_sampler_accept(s, 1);
	ms_sampler_accept(s, 0);
	ms_sampler_accept(s, 2);
	ms_sampler_accept(s, 0);
	ms_sampler_accept(s, 1);
	ms_sampler_accept(s, 6);
	ms_sampler_accept(s, -1);      /* ignored: not a token */
	ms_sampler_accept(s, 10);      /* ignored: out of range */
	memcpy(w, l, sizeof(w));
	ms_sampler_sample(s, w, NULL);
	/*
	 * tok 0: count 3, 2/2 - 3*0.5 - 0.25 = -0.75
	 * tok 1: count 2, -2*2 - 2*0.5 - 0.25 = -5.25
	 * tok 2: count 1, 1/2 - 0.5 - 0.25 = -0.25
	 * tok 6: count 1, 0 (neither side) - 0.5 - 0.25 = -0.75
	 */
	ok(fabsf(w[0] + 0.75f) < 1e-6f, "tok 0 (x3, positive): 2/2 - 1.5 - 0.25 = -0.75 (%g)",
	   (double)w[0]);
	ok(fabsf(w[1] + 5.25f) < 1e-6f, "tok 1 (x2, negative): -2*2 - 1 - 0.25 = -5.25 (%g)",
	   (double)w[1]);
	ok(fabsf(w[2] + 0.25f) < 1e-6f, "tok 2 (x1): 1/2 - 0.5 - 0.25 = -0.25 (%g)", (double)w[2]);
	ok(fabsf(w[6] + 0.75f) < 1e-6f, "tok 6 (x1, zero logit): -0.75 (%g)", (double)w[6]);
	for (int i = 3; i < 10; i++)
		if (i != 6)
			others &= w[i] == l[i];
	ok(others, "tokens not in the history are untouched");
	ms_sampler_free(s);

	/* Only the last penalty_last_n tokens count; the ring wraps. */
	p = plain(0.0f, 1);
	p.presence_penalty = 1.0f;
	p.penalty_last_n = 3;
	s = mk(&p, 10);
	for (int i = 0; i < 10; i++)
		ms_sampler_accept(s, i);   /* window: 7, 8, 9 */
	memcpy(w, l, sizeof(w));
	ms_sampler_sample(s, w, NULL);
	ok(w[7] == l[7] - 1.0f && w[8] == l[8] - 1.0f && w[9] == l[9] - 1.0f && w[6] == l[6] &&
	   w[0] == l[0], "penalty_last_n 3: only the last 3 tokens are penalised");
	ms_sampler_free(s);

	/* Repetition only: divide positive, multiply negative, once per distinct token. */
	p = plain(0.0f, 1);
	p.repetition_penalty = 1.25f;
	s = mk(&p, 10);
	ms_sampler_accept(s, 5);
	ms_sampler_accept(s, 5);
	ms_sampler_accept(s, 5);
	ms_sampler_accept(s, 3);
	memcpy(w, l, sizeof(w));
	ms_sampler_sample(s, w, NULL);
	ok(w[5] == 3.0f / 1.25f && w[3] == -1.0f * 1.25f,
	   "repetition 1.25: 3 -> %g (once, not thrice), -1 -> %g", (double)w[5], (double)w[3]);
	ms_sampler_free(s);

	/* Negative frequency/presence raise logits; zero window means no penalty. */
	p = plain(0.0f, 1);
	p.frequency_penalty = -1.0f;
	p.presence_penalty = -0.5f;
	p.penalty_last_n = 0;
	s = mk(&p, 10);
	ms_sampler_accept(s, 4);
	memcpy(w, l, sizeof(w));
	ms_sampler_sample(s, w, NULL);
	ok(memcmp(w, l, sizeof(w)) == 0, "penalty_last_n 0 disables penalties");
	ms_sampler_free(s);
	p.penalty_last_n = 8;
	s = mk(&p, 10);
	ms_sampler_accept(s, 4);
	ms_sampler_accept(s, 4);
	memcpy(w, l, sizeof(w));
	ms_sampler_sample(s, w, NULL);
	ok(w[4] == 0.5f + 2.0f + 0.5f, "negative penalties encourage: 0.5 -> %g", (double)w[4]);
	ms_sampler_free(s);

	/* A penalty changes the greedy pick. */
	p = plain(0.0f, 1);
	p.repetition_penalty = 1.5f;
	s = mk(&p, 2);
	ms_sampler_accept(s, 0);
	{
		float two[2] = { 3.0f, 2.9f };

		ok(ms_sampler_sample(s, two, NULL) == 1, "penalised argmax loses to the runner-up");
	}
	ms_sampler_free(s);
}

/* ---- logprob ---- */

static void test_logprob(void)
{
	struct ms_sampler_params p = plain(0.7f, 99);
	struct ms_sampler *s;
	float l[20], w[20];
	bool good = true;
	double worst = 0.0;

	for (int i = 0; i < 20; i++)
		l[i] = sinf((float)i * 1.7f) * 3.0f;
	p.top_k = 5;
	p.repetition_penalty = 1.3f;
	s = mk(&p, 20);
	ms_sampler_accept(s, 3);
	ms_sampler_accept(s, 11);
	for (int it = 0; it < 200; it++) {
		float lp = NAN;
		double ref[20];
		int32_t t;

		memcpy(w, l, sizeof(w));
		t = ms_sampler_sample(s, w, &lp);
		softmax_ref(w, 20, 1.0, ref);   /* w holds the penalised logits */
		if (t < 0 || t >= 20) {
			good = false;
			break;
		}
		if (fabs((double)lp - log(ref[t])) > worst)
			worst = fabs((double)lp - log(ref[t]));
	}
	ok(good && worst < 1e-5,
	   "logprob = log softmax at T=1 of the penalised logits (worst error %.2g)", worst);
	ms_sampler_free(s);
}

/* ---- robustness ---- */

static void test_robust(void)
{
	struct ms_sampler_params p;
	struct ms_sampler *s;
	float l[5] = { NAN, 1.0f, NAN, 0.5f, -INFINITY };
	float lp;
	long cnt[5];
	int32_t t;

	ms_sampler_params_default(&p);
	p.temperature = 1.0f;
	s = mk(&p, 5);
	histogram(s, l, 5, 2000, cnt);
	ok(cnt[0] == 0 && cnt[2] == 0 && cnt[4] == 0 && cnt[1] + cnt[3] == 2000,
	   "NaN and -inf logits are never drawn");
	{
		float inf[5] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };

		t = ms_sampler_sample(s, inf, &lp);
		ok(t == 0, "all -inf: falls back to the lowest id (%d)", t);
	}
	{
		float pinf[5] = { 0.0f, INFINITY, 1.0f, INFINITY, 0.0f };

		t = ms_sampler_sample(s, pinf, &lp);
		ok(t == 1 && lp == 0.0f, "+inf logit: taken (%d, logprob %g)", t, (double)lp);
	}
	ms_sampler_free(s);

	/* NULL arguments are refused before anything is read through them. */
	{
		float one[1] = { 0.0f };

		s = mk(&p, 1);
		ok(ms_sampler_sample(NULL, one, &lp) == -EINVAL && ms_sampler_sample(s, NULL, &lp) == -EINVAL,
		   "NULL sampler or logits: -EINVAL, never a token id");
		ms_sampler_free(s);
	}

	/* Defaults over a Mistral-sized vocabulary with ascending logits (sorted input). */
	{
		static float big[32000], w[32000];
		bool in = true;

		for (int i = 0; i < 32000; i++)
			big[i] = (float)i * 1e-3f;
		ms_sampler_params_default(&p);
		s = mk(&p, 32000);
		for (int i = 0; i < 300; i++) {
			memcpy(w, big, sizeof(w));
			t = ms_sampler_sample(s, w, NULL);
			in &= t >= 32000 - 40 && t < 32000;
		}
		ok(in, "defaults over 32000 sorted logits stay in the top 40");
		ms_sampler_free(s);
	}
}

int main(void)
{
	test_params();
	test_greedy();
	test_seed();
	test_distribution();
	test_top_k();
	test_top_p_min_p();
	test_penalties();
	test_logprob();
	test_robust();
	return done_testing();
}
