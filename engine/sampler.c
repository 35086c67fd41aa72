/* Token sampler: penalties, temperature, top-k/top-p/min-p, seeded draw. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

#define PENALTY_LAST_N_MAX 4096

/* One candidate token; carries its own sort key so qsort needs no context. */
struct cand {
	float logit;
	int32_t id;
	float e;        /* exp((logit - max) / T), the unnormalised probability */
};

struct ms_sampler {
	struct ms_sampler_params p;
	uint32_t n_vocab;
	uint64_t rng[4];        /* xoshiro256** state */

	/* Penalty history: ring of the last penalty_last_n accepted tokens. */
	int32_t *hist;
	uint32_t hist_len, hist_pos;

	/* Scratch, n_vocab-sized, allocated once: nothing is allocated per sample. */
	struct cand *cand;
	uint32_t *count;        /* kept all-zero between calls */
};

/* ---- PRNG: splitmix64 to seed xoshiro256** (both public domain, Vigna) ---- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
	uint64_t r = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
	return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

/* ---- parameters ---- */

void ms_sampler_params_default(struct ms_sampler_params *p)
{
	p->temperature = 0.6f;
	p->top_k = 40;
	p->top_p = 0.95f;
	p->min_p = 0.05f;
	p->repetition_penalty = 1.0f;
	p->frequency_penalty = 0.0f;
	p->presence_penalty = 0.0f;
	p->penalty_last_n = 64;
	p->seed = 0x5eed;
}

/*
 * Range checks written as !(lo <= x && x <= hi) so that NaN fails them too;
 * infinities fail the finite bounds.
 */
int ms_sampler_params_check(const struct ms_sampler_params *p, ms_err *err)
{
	if (!p)
		return ms_errf(err, -EINVAL, "sampler: no parameters");
	if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
		return ms_errf(err, -EINVAL, "temperature must be in [0, 100], got %g",
			       (double)p->temperature);
	if (p->top_k < 0)
		return ms_errf(err, -EINVAL, "top_k must be >= 0, got %d", (int)p->top_k);
	if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
		return ms_errf(err, -EINVAL, "top_p must be in (0, 1], got %g", (double)p->top_p);
	if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
		return ms_errf(err, -EINVAL, "min_p must be in [0, 1], got %g", (double)p->min_p);
	if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f))
		return ms_errf(err, -EINVAL, "repetition_penalty must be in (0, 10], got %g",
			       (double)p->repetition_penalty);
	if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
		return ms_errf(err, -EINVAL, "frequency_penalty must be in [-2, 2], got %g",
			       (double)p->frequency_penalty);
	if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
		return ms_errf(err, -EINVAL, "presence_penalty must be in [-2, 2], got %g",
			       (double)p->presence_penalty);
	if (p->penalty_last_n < 0 || p->penalty_last_n > PENALTY_LAST_N_MAX)
		return ms_errf(err, -EINVAL, "penalty_last_n must be in [0, %d], got %d",
			       PENALTY_LAST_N_MAX, (int)p->penalty_last_n);
	return 0;
}

/* ---- sampler ---- */

int ms_sampler_create(const struct ms_sampler_params *p, uint32_t n_vocab,
		      struct ms_sampler **out, ms_err *err)
{
	struct ms_sampler *s;
	uint64_t x;
	int rc;

	if (!out)
		return ms_errf(err, -EINVAL, "sampler: no output pointer");
	*out = NULL;
	rc = ms_sampler_params_check(p, err);
	if (rc)
		return rc;
	if (n_vocab == 0 || n_vocab > INT32_MAX)
		return ms_errf(err, -EINVAL, "sampler: n_vocab %u out of range", n_vocab);
	s = calloc(1, sizeof(*s));
	if (!s)
		return ms_errf(err, -ENOMEM, "sampler: out of memory");
	s->p = *p;
	s->n_vocab = n_vocab;
	s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
	s->count = calloc(n_vocab, sizeof(*s->count));
	if (p->penalty_last_n > 0)
		s->hist = malloc((size_t)p->penalty_last_n * sizeof(*s->hist));
	if (!s->cand || !s->count || (p->penalty_last_n > 0 && !s->hist)) {
		ms_sampler_free(s);
		return ms_errf(err, -ENOMEM, "sampler: out of memory for %u-token scratch",
			       n_vocab);
	}
	x = p->seed;
	for (int i = 0; i < 4; i++)
		s->rng[i] = splitmix64(&x);
	*out = s;
	return 0;
}

void ms_sampler_free(struct ms_sampler *s)
{
	if (!s)
		return;
	free(s->cand);
	free(s->count);
	free(s->hist);
	free(s);
}

void ms_sampler_accept(struct ms_sampler *s, int32_t tok)
{
	uint32_t cap;

	/* An id outside the vocabulary has no logit to penalise. */
	if (!s || tok < 0 || (uint32_t)tok >= s->n_vocab || s->p.penalty_last_n <= 0)
		return;
	cap = (uint32_t)s->p.penalty_last_n;
	s->hist[s->hist_pos] = tok;
	s->hist_pos = (s->hist_pos + 1) % cap;
	if (s->hist_len < cap)
		s->hist_len++;
}

/*
 * CTRL-style repetition penalty (positive logits divided, others
 * multiplied) once per distinct token, then frequency (times its count)
 * and presence (once) as in the OpenAI API. Cost O(penalty_last_n): the
 * count array is filled from the window and zeroed again as it is used.
 */
static void apply_penalties(struct ms_sampler *s, float *logits)
{
	const float rep = s->p.repetition_penalty;
	const float freq = s->p.frequency_penalty, pres = s->p.presence_penalty;
	uint32_t i;

	if (s->hist_len == 0 || (rep == 1.0f && freq == 0.0f && pres == 0.0f))
		return;
	for (i = 0; i < s->hist_len; i++)
		s->count[s->hist[i]]++;
	for (i = 0; i < s->hist_len; i++) {
		int32_t t = s->hist[i];
		uint32_t c = s->count[t];
		float l;

		if (c == 0)
			continue;   /* already done */
		s->count[t] = 0;
		l = logits[t];
		if (rep != 1.0f)
			l = l > 0.0f ? l / rep : l * rep;
		l -= (float)c * freq + pres;
		logits[t] = l;
	}
}

/* Descending logit, then ascending id: a total order, so results never depend on qsort. */
static int cand_cmp(const void *pa, const void *pb)
{
	const struct cand *a = pa, *b = pb;

	if (a->logit != b->logit)
		return a->logit > b->logit ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

static bool cand_before(const struct cand *a, const struct cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void cand_swap(struct cand *a, struct cand *b)
{
	struct cand t = *a;

	*a = *b;
	*b = t;
}

/*
 * Lomuto partition of c[lo..hi) around a median-of-three pivot: returns
 * its final index p, with c[lo..p) before it and c(p..hi) after it. Keys
 * are distinct (ids break ties), so every round makes progress. If sum is
 * not NULL it receives the sum of e over c[lo..p).
 */
static size_t partition(struct cand *c, size_t lo, size_t hi, double *sum)
{
	size_t mid = lo + (hi - lo) / 2, store = lo;
	double acc = 0.0;

	/* c[lo] gets the first of the three, c[hi - 1] the median */
	if (cand_before(&c[mid], &c[lo]))
		cand_swap(&c[mid], &c[lo]);
	if (cand_before(&c[hi - 1], &c[lo]))
		cand_swap(&c[hi - 1], &c[lo]);
	if (cand_before(&c[mid], &c[hi - 1]))
		cand_swap(&c[mid], &c[hi - 1]);
	for (size_t i = lo; i < hi - 1; i++) {
		if (cand_before(&c[i], &c[hi - 1])) {
			if (sum)
				acc += (double)c[i].e;
			cand_swap(&c[i], &c[store++]);
		}
	}
	cand_swap(&c[store], &c[hi - 1]);
	if (sum)
		*sum = acc;
	return store;
}

/* Past this many rounds the input is hostile to the pivot rule: sort instead. */
#define SELECT_MAX_DEPTH 64

/*
 * Partitions c[0..n) so that c[0..m) hold the m best candidates, in no
 * particular order. Quickselect: expected O(n), against O(n log n) for a
 * full sort; the depth limit bounds a degenerate run by one sort.
 */
static void select_top(struct cand *c, size_t n, size_t m)
{
	size_t lo = 0, hi = n;   /* the boundary m lies in [lo, hi) */
	int depth = 0;

	if (m == 0 || m >= n)
		return;
	while (hi - lo > 16 && ++depth <= SELECT_MAX_DEPTH) {
		size_t p = partition(c, lo, hi, NULL);

		if (p == m || p + 1 == m)
			return;
		if (m < p)
			hi = p;
		else
			lo = p + 1;
	}
	qsort(c + lo, hi - lo, sizeof(*c), cand_cmp);
}

/* Top-k by a heap instead of quickselect up to this k (the heap is O(n) for random logits). */
#define HEAP_MAX_K 1024

/* Sifts c[i] down a heap whose root is the worst candidate (the one after all others). */
static void heap_down(struct cand *h, size_t n, size_t i)
{
	for (;;) {
		size_t w = i, l = 2 * i + 1, r = l + 1;

		if (l < n && cand_before(&h[w], &h[l]))
			w = l;
		if (r < n && cand_before(&h[w], &h[r]))
			w = r;
		if (w == i)
			return;
		cand_swap(&h[i], &h[w]);
		i = w;
	}
}

/*
 * Best k of logits[0..n) into h[0..k), in no particular order. One pass;
 * most tokens cost one compare against the root (ids only grow, so an
 * equal logit never displaces it). Ascending logits are the worst case,
 * O(n log k).
 */
static void heap_top_k(const float *logits, uint32_t n, struct cand *h, size_t k)
{
	for (size_t i = 0; i < k; i++) {
		h[i].logit = logits[i];
		h[i].id = (int32_t)i;
	}
	for (size_t i = k / 2; i-- > 0;)
		heap_down(h, k, i);
	for (uint32_t i = (uint32_t)k; i < n; i++) {
		if (logits[i] > h[0].logit) {
			h[0].logit = logits[i];
			h[0].id = (int32_t)i;
			heap_down(h, k, 0);
		}
	}
}

/*
 * top_p: the shortest prefix of the candidates in descending order whose
 * mass reaches target. Sorted input is scanned; otherwise a quickselect
 * weighted by e finds the crossing in expected O(n) without sorting: the
 * kept tokens end up in c[0..cut), unordered, which the draw does not mind.
 */
static size_t cut_top_p(struct cand *c, size_t n, bool sorted, double target)
{
	size_t lo = 0, hi = n;
	double acc = 0.0;   /* mass of c[0..lo), all before c[lo..hi) */
	int depth = 0;

	if (!sorted) {
		while (hi - lo > 16 && ++depth <= SELECT_MAX_DEPTH) {
			double left;
			size_t p = partition(c, lo, hi, &left);

			if (acc + left >= target) {
				hi = p;
			} else if (acc + left + (double)c[p].e >= target) {
				return p + 1;
			} else {
				acc += left + (double)c[p].e;
				lo = p + 1;
			}
		}
		qsort(c + lo, hi - lo, sizeof(*c), cand_cmp);
	}
	for (size_t i = lo; i < hi; i++) {
		acc += (double)c[i].e;
		if (acc >= target)
			return i + 1;
	}
	/* Rounding left the target out of reach: everything stays. */
	return n;
}

int32_t ms_sampler_sample(struct ms_sampler *s, float *logits, float *logprob_out)
{
	uint32_t nv;
	float temp;
	struct cand *c;
	size_t n, k;
	bool sorted = false;
	double sum = 0.0, lse = 0.0, u;
	float max;
	int32_t tok;

	/*
	 * Checked before anything reads *s: a dereference ahead of the test
	 * would let the compiler assume s is not NULL and drop the test.
	 */
	if (!s || !logits)
		return -EINVAL;   /* a caller bug; never a valid token id */
	nv = s->n_vocab;
	temp = s->p.temperature;
	c = s->cand;
	n = nv;
	apply_penalties(s, logits);

	/*
	 * Argmax, ties to the lowest id. A NaN logit (a broken model) becomes
	 * -inf so it can neither win nor poison the softmax sum.
	 */
	tok = 0;
	for (uint32_t i = 0; i < nv; i++) {
		if (isnan(logits[i]))
			logits[i] = -INFINITY;
		if (logits[i] > logits[tok])
			tok = (int32_t)i;
	}
	max = logits[tok];

	if (logprob_out && isfinite(max)) {
		double z = 0.0;

		/* z >= 1 (the max's own term is exp(0)), so log(z) is finite. */
		for (uint32_t i = 0; i < nv; i++)
			z += exp((double)logits[i] - (double)max);
		lse = (double)max + log(z);
	}

	/* Greedy, or nothing to draw from (all -inf, or an +inf logit). */
	if (temp == 0.0f || !isfinite(max))
		goto out;

	k = s->p.top_k > 0 ? (size_t)s->p.top_k : n;
	if (k < n && k <= HEAP_MAX_K) {
		heap_top_k(logits, nv, c, k);
	} else {
		for (uint32_t i = 0; i < nv; i++) {
			c[i].logit = logits[i];
			c[i].id = (int32_t)i;
		}
		if (k < n)
			select_top(c, n, k);
	}
	if (k < n) {
		qsort(c, k, sizeof(*c), cand_cmp);   /* only the k survivors */
		n = k;
		sorted = true;
	}

	/* softmax(logits / T) over the survivors, unnormalised: e of the max is exactly 1. */
	for (size_t i = 0; i < n; i++) {
		c[i].e = expf((c[i].logit - max) / temp);
		sum += (double)c[i].e;
	}

	/*
	 * min_p keeps p >= min_p * p_max, i.e. e >= min_p, which never drops
	 * the max. It is applied before top_p (on the unsorted set, shrinking
	 * what top_p has to select from); both keep a prefix of the descending
	 * order, so the result is the same as top_p then min_p. top_p still
	 * normalises by the mass of all top_k survivors.
	 */
	if (s->p.min_p > 0.0f) {
		size_t w = 0;

		for (size_t i = 0; i < n; i++)
			if (c[i].e >= s->p.min_p)
				c[w++] = c[i];
		n = w;
	}
	if (s->p.top_p < 1.0f)
		n = cut_top_p(c, n, sorted, (double)s->p.top_p * sum);

	/* Draw from what is left; one PRNG step per sampled token. */
	sum = 0.0;
	for (size_t i = 0; i < n; i++)
		sum += (double)c[i].e;
	u = rng_uniform(s->rng) * sum;
	tok = c[n - 1].id;
	for (size_t i = 0; i < n; i++) {
		u -= (double)c[i].e;
		if (u < 0.0) {
			tok = c[i].id;
			break;
		}
	}
out:
	if (logprob_out)
		*logprob_out = isfinite(max) ? (float)((double)logits[tok] - lse)
					     : (logits[tok] == max ? 0.0f : -INFINITY);
	return tok;
}
