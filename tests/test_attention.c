/*
 * Attention-side kernels: every ISA's KV row conversion, scores, exp and
 * value sums against the generic twin and exact or double-precision
 * expectations, for every level this CPU runs natively and for the
 * AVX-512 source built against SIMDe.
 *
 * The contract: f32_to_f16 is bit-exact (one rounding, to nearest even).
 * scores, exp_sum and accum are not bit-identical across levels (the
 * generic twin sums 8 lanes with separate multiplies and adds, AVX2 8
 * lanes with FMAs, AVX-512 16 lanes folded by a tree), so each level,
 * the generic twin included, is held to the same error bound against a
 * double-precision sum; no caller compares attention bits across levels.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels.h"
#include "quant.h"
#include "simde_part.h"
#include "tap.h"

static uint64_t rng = 88172645463325252ull;

static uint32_t next_u32(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* Random floats over many magnitudes, with the awkward values mixed in. */
static float random_float(size_t i)
{
	static const float special[] = { 0.0f, -0.0f, 65504.0f, 65520.0f, 1e-8f, -6.1e-5f, 1e6f, -1e6f };
	uint32_t r = next_u32();

	if (r % 17 == 0)
		return special[i % (sizeof(special) / sizeof(special[0]))];
	return ((float)(r % 2000001) / 1e6f - 1.0f) * powf(2.0f, (float)((int)(next_u32() % 40) - 20));
}

static void test_isa(const struct ms_attn_kernels *k)
{
	static const size_t sizes[] = { 0, 1, 7, 8, 9, 15, 16, 17, 64, 127, 128, 1000 };

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si];
		float *x = malloc((n + 1) * sizeof(float));
		uint16_t *h = malloc((n + 1) * sizeof(uint16_t)), *hg = malloc((n + 1) * sizeof(uint16_t));
		int same_h = 1, exact = 1;

		for (size_t i = 0; i < n; i++)
			x[i] = random_float(i);
		h[n] = hg[n] = 0xBEEF;   /* guards: nothing written past n */
		k->f32_to_f16(n, x, h);
		ms_attn_generic.f32_to_f16(n, x, hg);
		for (size_t i = 0; i < n; i++) {
			same_h &= h[i] == hg[i];
			exact &= h[i] == ms_f32_to_f16(x[i]);
		}
		ok(same_h && exact && h[n] == 0xBEEF,
		   "[%s] f32_to_f16, n = %zu: equals the generic twin and the scalar rounding, no overrun", k->name, n);
		free(x);
		free(h);
		free(hg);
	}
	{
		/* Every half value back from its exact float. */
		uint16_t *all = malloc(65536 * sizeof(uint16_t)), *back = malloc(65536 * sizeof(uint16_t));
		float *f = malloc(65536 * sizeof(float));
		int good = all && back && f;

		for (uint32_t i = 0; good && i < 65536; i++)
			all[i] = (uint16_t)i;
		if (good) {
			for (uint32_t i = 0; i < 65536; i++)
				f[i] = ms_f16_to_f32(all[i]);
			k->f32_to_f16(65536, f, back);
		}
		for (uint32_t i = 0; good && i < 65536; i++) {
			int nan = ((i >> 10) & 31) == 31 && (i & 1023);

			good = nan ? isnan(f[i]) && (back[i] & 0x7c00) == 0x7c00 && (back[i] & 1023)
				   : back[i] == i;
		}
		ok(good, "[%s] all 65536 halves survive f16 -> f32 -> f16 (NaN stays NaN)", k->name);
		free(all);
		free(back);
		free(f);
	}
}

/* A row of n values in the cache type (F16 rounded, or F32). */
static void make_row(uint32_t type, size_t n, float scale, void *dst, float *as_float)
{
	for (size_t i = 0; i < n; i++) {
		float v = ((float)(next_u32() % 2000001) / 1e6f - 1.0f) * scale;

		if (type == GGML_TYPE_F16) {
			((uint16_t *)dst)[i] = ms_f32_to_f16(v);
			v = ms_f16_to_f32(((uint16_t *)dst)[i]);
		} else {
			((float *)dst)[i] = v;
		}
		as_float[i] = v;
	}
}

/*
 * scores and accum against double sums over the same rows, for head
 * dimensions on and off the SIMD widths (the AVX2 and AVX-512 kernels
 * hand those that are not multiples of 8 to the generic ones; AVX-512's
 * tiles take 64 elements a pass, then 16-element pieces, then 8), group
 * sizes around the 4 heads a pass handles and the tiles of a prompt
 * chunk (1 to 9 rows of 4 heads: up to 36 query heads at once), key counts
 * around the 2 and 4 keys a pass scores and the 64 and 128 of a block,
 * both cache types; nothing written outside the block.
 */
static void test_block_kernels(const struct ms_attn_kernels *k)
{
	static const size_t hds[] = { 8, 12, 16, 24, 40, 48, 72, 80, 96, 120, 128 };
	static const size_t gs[] = { 1, 2, 3, 4, 5, 8, 12, 28, 32, 36 };
	static const size_t nks[] = { 1, 2, 3, 4, 5, 7, 9, 64, 65, 127, 128, 130 };
	static const uint32_t tys[] = { GGML_TYPE_F16, GGML_TYPE_F32 };

	for (size_t ti = 0; ti < 2; ti++)
	for (size_t hi = 0; hi < sizeof(hds) / sizeof(hds[0]); hi++)
	for (size_t gi = 0; gi < sizeof(gs) / sizeof(gs[0]); gi++) {
		const uint32_t type = tys[ti];
		const size_t hd = hds[hi], G = gs[gi], ss = 133, os = hd + 3, es = type == GGML_TYPE_F16 ? 2 : 4;
		const size_t stride = hd * es + 8;   /* rows apart by more than their length, as in the cache */
		int sc_ok = 1, ac_ok = 1;
		double sc_worst = 0, ac_worst = 0;

		for (size_t ni = 0; ni < sizeof(nks) / sizeof(nks[0]); ni++) {
			const size_t nk = nks[ni];
			float *q = malloc(G * hd * sizeof(float)), *kf = malloc(nk * hd * sizeof(float));
			float *vf = malloc(nk * hd * sizeof(float)), *sc = malloc(G * ss * sizeof(float));
			float *p = malloc(G * ss * sizeof(float)), *out = malloc(G * os * sizeof(float));
			float *out0 = malloc(G * os * sizeof(float));
			unsigned char *kr = malloc(nk * stride), *vr = malloc(nk * stride);
			const float scale = 0.125f;

			for (size_t i = 0; i < G * hd; i++)
				q[i] = ((float)(next_u32() % 2000001) / 1e6f - 1.0f) * 3.0f;
			for (size_t t = 0; t < nk; t++) {
				make_row(type, hd, 4.0f, kr + t * stride, kf + t * hd);
				make_row(type, hd, 2.0f, vr + t * stride, vf + t * hd);
			}
			for (size_t i = 0; i < G * ss; i++) {
				sc[i] = -777.0f;
				p[i] = (float)(next_u32() % 1000) / 1000.0f;
			}
			for (size_t i = 0; i < G * os; i++)
				out[i] = out0[i] = ((float)(next_u32() % 2001) / 1000.0f - 1.0f);
			k->scores(hd, G, q, kr, stride, type, nk, scale, sc, ss);
			k->accum(hd, G, p, ss, vr, stride, type, nk, out, os);
			for (size_t h = 0; h < G; h++) {
				for (size_t t = 0; t < ss; t++) {
					double ref = 0, mag = 0, err;

					if (t >= nk) {
						sc_ok &= sc[h * ss + t] == -777.0f;
						continue;
					}
					for (size_t i = 0; i < hd; i++) {
						ref += (double)q[h * hd + i] * (double)kf[t * hd + i];
						mag += fabs((double)q[h * hd + i] * (double)kf[t * hd + i]);
					}
					err = fabs((double)sc[h * ss + t] - (double)scale * ref) / ((double)scale * mag + 1e-30);
					sc_worst = err > sc_worst ? err : sc_worst;
					sc_ok &= err <= 1.2e-7 * (double)(hd / 8 + 9);
				}
				for (size_t i = 0; i < os; i++) {
					double ref = (double)out0[h * os + i], mag = fabs(ref), err;

					if (i >= hd) {
						ac_ok &= out[h * os + i] == out0[h * os + i];
						continue;
					}
					for (size_t t = 0; t < nk; t++) {
						ref += (double)p[h * ss + t] * (double)vf[t * hd + i];
						mag += fabs((double)p[h * ss + t] * (double)vf[t * hd + i]);
					}
					err = fabs((double)out[h * os + i] - ref) / (mag + 1e-30);
					ac_worst = err > ac_worst ? err : ac_worst;
					ac_ok &= err <= 1.2e-7 * (double)(nk + 1);
				}
			}
			free(q);
			free(kf);
			free(vf);
			free(sc);
			free(p);
			free(out);
			free(out0);
			free(kr);
			free(vr);
		}
		ok(sc_ok, "[%s] scores, %s, hd %zu, %zu heads, 1-130 keys: match the double sums (worst %.2g of "
		   "sum|q*k|), nothing past the block", k->name, type == GGML_TYPE_F16 ? "F16" : "F32", hd, G, sc_worst);
		ok(ac_ok, "[%s] accum, %s, hd %zu, %zu heads, 1-130 rows: match the double sums (worst %.2g), "
		   "nothing past the head", k->name, type == GGML_TYPE_F16 ? "F16" : "F32", hd, G, ac_worst);
	}
}

/* exp_sum against exp in double: within 2 ulp in its range, 0 below it, NaN kept. */
static void test_exp_sum(const struct ms_attn_kernels *k)
{
	static const size_t ns[] = { 0, 1, 7, 8, 9, 64, 1000 };
	double worst = 0;
	int good = 1;

	for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
		const size_t n = ns[ni];
		float *s = malloc((n + 1) * sizeof(float)), *x = malloc((n + 1) * sizeof(float));
		const float mx = 3.5f;
		double ref_sum = 0, sum;

		for (size_t i = 0; i < n; i++) {
			/* mostly the softmax range, some below the cut-off */
			s[i] = mx - (float)(next_u32() % 1000001) / 1e6f * (i % 5 == 4 ? 120.0f : 30.0f);
			x[i] = s[i] - mx;
		}
		if (n > 2)
			s[1] = x[1] = -INFINITY;
		s[n] = 42.0f;
		sum = k->exp_sum(n, mx, s);
		for (size_t i = 0; i < n; i++) {
			double e = x[i] < MS_EXP_MIN_ARG ? 0.0 : exp((double)x[i]);
			double err = e > 0 ? fabs((double)s[i] - e) / e : fabs((double)s[i]);

			ref_sum += e;
			if (e > 0) {
				worst = err > worst ? err : worst;
				good &= err <= 2.4e-7;
			} else {
				good &= s[i] == 0.0f;
			}
		}
		good &= fabs(sum - ref_sum) <= 1e-6 * ref_sum + 1e-30 && s[n] == 42.0f;
		free(s);
		free(x);
	}
	ok(good, "[%s] exp_sum: within 2 ulp of exp (worst %.2g relative), 0 below -87 and for -inf, sums right",
	   k->name, worst);
	{
		float v[9] = { 0, -1, NAN, -2, -3, -4, -5, -6, -7 };
		float sum = k->exp_sum(9, 0.0f, v);

		ok(isnan(v[2]) && isnan(sum) && v[0] == 1.0f, "[%s] exp_sum: NaN stays NaN and reaches the sum",
		   k->name);
	}
}

static void test_all(const struct ms_attn_kernels *k, const char *how)
{
	diag("%s attention kernels: %s", k->name, how);
	test_isa(k);
	test_block_kernels(k);
	test_exp_sum(k);
}

int main(void)
{
	const struct ms_kernels *simde = test_simde_part();

	for (int isa = 0; isa < MS_ISA_COUNT; isa++) {
		const struct ms_attn_kernels *k = ms_attn_kernels_get((enum ms_isa)isa);

		if (!k) {
			skip("%s attention kernels: not supported by this CPU or build", ms_isa_name((enum ms_isa)isa));
			continue;
		}
		test_all(k, "native");
	}
	/* the AVX-512 source through SIMDe, whatever this CPU has (SIMDe itself is built on AVX2 here) */
	if (!simde || !simde->attn)
		skip("avx512 attention kernels through SIMDe: this build has no SIMDe (libsimde-dev)");
	else if (ms_cpu_best_isa() < MS_ISA_AVX2)
		skip("avx512 attention kernels through SIMDe: SIMDe is built on AVX2 here, which this CPU lacks");
	else
		test_all(simde->attn, "portable AVX-512 (SIMDe) on AVX2");
	return done_testing();
}
