/* Unit tests for the compute kernels: every ISA table against a double-precision reference, ISA twins, matmul driver. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "kernels.h"
#include "quant.h"
#include "../tests/tap.h"
#include "simde_part.h"

static const uint32_t types[] = {
	GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
	GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

static const size_t sizes_any[] = { 1, 7, 9, 31, 32, 33, 64, 96, 1000, 4096 + 32 };
static const size_t sizes_q0[] = { 32, 64, 96, 4096 + 32 };
static const size_t sizes_k[] = { 256, 512, 768, 4096 + 256 };

#define MAX_N (4096 + 256)
#define MAX_ROW_BYTES (MAX_N * 4)   /* F32 is the widest format, Q8_K included */

/* xorshift64*: deterministic and independent of libc's rand. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_u64(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* Uniform in [-1, 1). */
static float rng_f(void)
{
	return (float)((double)(rng_u64() >> 11) * 0x1.0p-52 - 1.0);
}

static void fill_f(float *v, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		v[i] = scale * rng_f();
}

static int is_k_type(uint32_t t)
{
	return t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K || t == GGML_TYPE_Q6_K;
}

static int is_block_type(uint32_t t)
{
	return t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0 || is_k_type(t);
}

/*
 * Whether the table under test takes BF16 activations for BF16 weights
 * (vdpbf16ps, ms_kernels_avx512_bf16_part): set by main() from the CPU and
 * the table's origin, not from the table itself.
 */
static int bf16_act;

/* The activation format each weight type is expected to use. */
static uint32_t expected_act(uint32_t t)
{
	if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0)
		return GGML_TYPE_Q8_0;
	if (is_k_type(t))
		return GGML_TYPE_Q8_K;
	if (t == GGML_TYPE_BF16 && bf16_act)
		return GGML_TYPE_BF16;
	return GGML_TYPE_F32;
}

static size_t row_bytes(uint32_t t, size_t n)
{
	uint64_t b = 0;

	if (ms_ggml_row_bytes(t, n, &b))
		return 0;
	return (size_t)b;
}

/* A random finite f16 of magnitude in [lo, lo + span), positive or (when sign) either sign. */
static uint16_t rand_f16(float lo, float span, int sign)
{
	uint16_t d = ms_f32_to_f16(lo + span * fabsf(rng_f()));

	if (sign && (rng_u64() & 1))
		d |= 0x8000;
	return d;
}

static void put_f16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

/*
 * Fills a weight row of n elements of type t. raw=0: random floats through
 * ms_quantize_row (the realistic path); raw=1 for block types: random bytes
 * with random finite f16 scales, which also reaches q = -128, every nibble
 * and every 6-bit scale/min (and negative Q6_K scales down to -128).
 */
static int make_weights(uint32_t t, size_t n, void *dst, int raw)
{
	static float tmp[MAX_N];

	if (raw && is_block_type(t)) {
		const struct ggml_type_info *ti = ms_ggml_type_get(t);
		uint8_t *p = dst;

		for (size_t b = 0; b < n / ti->blck; b++, p += ti->bytes) {
			for (size_t j = 0; j < ti->bytes; j++)
				p[j] = (uint8_t)rng_u64();
			switch (t) {
			case GGML_TYPE_Q8_0:
			case GGML_TYPE_Q4_0:
				put_f16(p, rand_f16(0.001f, 0.05f, 1));
				break;
			case GGML_TYPE_Q4_K:
			case GGML_TYPE_Q5_K:
				put_f16(p, rand_f16(0.0001f, 0.005f, 1));
				put_f16(p + 2, rand_f16(0.0001f, 0.005f, 1));
				break;
			case GGML_TYPE_Q6_K:
				put_f16(p + 208, rand_f16(0.0001f, 0.005f, 1));
				break;
			}
		}
		return 0;
	}
	fill_f(tmp, n, 2.0f);
	return ms_quantize_row(t, tmp, dst, n);
}

/* Double-precision sum w*x and sum |w*x| over n floats. */
static void ref_dot(size_t n, const float *w, const float *x, double *dot, double *mag)
{
	double s = 0.0, m = 0.0;

	for (size_t i = 0; i < n; i++) {
		double p = (double)w[i] * (double)x[i];

		s += p;
		m += fabs(p);
	}
	*dot = s;
	*mag = m;
}

/* |a - b| within rel of the magnitude (plus a denormal-sized floor). */
static int close_to(double a, double b, double mag, double rel)
{
	return fabs(a - b) <= rel * mag + 1e-30;
}

/*
 * A priori bound on |sum w*(xq - x)| from quantizing the activations: per
 * block of the activation format, |xq - x| <= half a step d = amax/127,
 * plus for Q8_0 the f16 rounding of d times |q| <= 127 (2^-11 relative):
 * 0.5 + 127 * 2^-11 < 0.563. Computed from x, not from the quantized row,
 * so a conversion with a wrong scale fails.
 */
static double act_quant_bound(uint32_t act, size_t n, const float *w, const float *x)
{
	if (act == GGML_TYPE_BF16) {
		/*
		 * nearest of 8 significant bits: within half an ulp, which is
		 * 2^-8 of |x| just above a power of two (2^-9 was a bound that
		 * a product of n = 1 crossed: 1.97e-3 relative)
		 */
		double bound = 0.0;

		for (size_t i = 0; i < n; i++)
			bound += 0x1p-8 * fabs((double)w[i] * (double)x[i]);
		return bound;
	}
	const size_t blk = act == GGML_TYPE_Q8_0 ? 32 : 256;
	const double k = act == GGML_TYPE_Q8_0 ? 0.563 : 0.501;
	double bound = 0.0;

	for (size_t b = 0; b < n; b += blk) {
		double amax = 0.0, wsum = 0.0;

		for (size_t i = b; i < b + blk; i++) {
			amax = fmax(amax, fabs((double)x[i]));
			wsum += fabs((double)w[i]);
		}
		bound += k * amax / 127.0 * wsum;
	}
	return bound;
}

/* Q8_K structural checks: |q| <= 127 and bsums are the sums of 16. */
static int q8k_consistent(const void *row, size_t n)
{
	const struct block_q8_K *b = row;

	for (size_t i = 0; i < n / QK_K; i++)
		for (int j = 0; j < QK_K / 16; j++) {
			int s = 0;

			for (int l = 0; l < 16; l++) {
				if (b[i].qs[16 * j + l] < -127)
					return 0;
				s += b[i].qs[16 * j + l];
			}
			if (s != b[i].bsums[j])
				return 0;
		}
	return 1;
}

static const size_t *sizes_for(uint32_t t, size_t *count)
{
	if (is_k_type(t)) {
		*count = sizeof(sizes_k) / sizeof(sizes_k[0]);
		return sizes_k;
	}
	if (is_block_type(t)) {
		*count = sizeof(sizes_q0) / sizeof(sizes_q0[0]);
		return sizes_q0;
	}
	*count = sizeof(sizes_any) / sizeof(sizes_any[0]);
	return sizes_any;
}

/* Largest relative twin difference seen per type, reported once per table. */
static double worst_twin[MS_TYPE_SLOTS];

static void test_dot_type(const struct ms_kernels *k, const struct ms_kernels *gen, uint32_t t)
{
	static unsigned char w[MAX_ROW_BYTES], xa[MAX_ROW_BYTES], xg[MAX_ROW_BYTES];
	static float x[MAX_N], wf[MAX_N], xq[MAX_N];
	const struct ms_type_kernels *tk = &k->type[t];
	const char *tn = ms_ggml_type_name(t);
	const uint32_t act = expected_act(t);
	size_t nsizes;
	const size_t *sizes = sizes_for(t, &nsizes);

	if (!ok(tk->dot != NULL, "%s: %s dot present", k->name, tn))
		return;
	if (!ok(tk->act_type == act && (act == GGML_TYPE_F32) == (tk->act_conv == NULL),
		"%s: %s activations are %s", k->name, tn, ms_ggml_type_name(act)))
		return;

	for (int raw = 0; raw <= (is_block_type(t) ? 1 : 0); raw++) {
		for (size_t si = 0; si < nsizes; si++) {
			const size_t n = sizes[si];
			const char *rs = raw ? " (raw blocks)" : "";
			double ref, mag, reff, magf;
			float got;
			int r;

			r = make_weights(t, n, w, raw);
			fill_f(x, n, 1.0f);
			if (r || ms_dequantize_row(t, w, wf, n)) {
				ok(0, "%s: %s n=%zu: quantize/dequantize of weights failed", k->name, tn, n);
				continue;
			}
			if (tk->act_conv) {
				size_t ab = row_bytes(act, n);

				tk->act_conv(n, x, xa);
				if (k != gen) {
					gen->type[t].act_conv(n, x, xg);
					ok(!memcmp(xa, xg, ab), "%s: %s n=%zu%s: activation bytes equal generic's",
					   k->name, tn, n, rs);
				}
				if (act == GGML_TYPE_Q8_0) {
					ms_quantize_row(GGML_TYPE_Q8_0, x, xg, n);
					ok(!memcmp(xa, xg, ab), "%s: %s n=%zu%s: activations equal ms_quantize_row Q8_0",
					   k->name, tn, n, rs);
				} else if (act == GGML_TYPE_BF16) {
					/* normal finite values: plain round-to-nearest-even */
					ms_quantize_row(GGML_TYPE_BF16, x, xg, n);
					ok(!memcmp(xa, xg, ab), "%s: %s n=%zu%s: activations equal ms_quantize_row BF16",
					   k->name, tn, n, rs);
				} else {
					ok(q8k_consistent(xa, n), "%s: %s n=%zu%s: Q8_K |q| <= 127 and bsums",
					   k->name, tn, n, rs);
				}
				if (ms_dequantize_row(act, xa, xq, n)) {
					ok(0, "%s: ms_dequantize_row(%s) failed", k->name, ms_ggml_type_name(act));
					continue;
				}
			} else {
				memcpy(xa, x, n * sizeof(float));
				memcpy(xq, x, n * sizeof(float));
			}

			/* (b) against the exact dot of what the kernel was given */
			got = tk->dot(n, w, xa);
			ref_dot(n, wf, xq, &ref, &mag);
			if (!ok(close_to((double)got, ref, mag, 1e-5),
				"%s: %s dot n=%zu%s matches double reference of dequantized rows",
				k->name, tn, n, rs))
				diag("got %.9g ref %.9g mag %.9g", (double)got, ref, mag);

			/* (a) the generic twin on the same bytes */
			if (k != gen) {
				float twin = gen->type[t].dot(n, w, xa);
				double rel = fabs((double)got - (double)twin) / (mag + 1e-30);
				double tol = tk->act_conv ? 2e-6 : 2e-5;

				if (rel > worst_twin[t])
					worst_twin[t] = rel;
				ok(rel <= tol, "%s: %s dot n=%zu%s matches generic twin (%.9g vs %.9g)",
				   k->name, tn, n, rs, (double)got, (double)twin);
			}

			/* the batched form: bit-identical to dot per token, writes only its outputs */
			if (tk->dot_x4) {
				static unsigned char xa4[MS_DOT_TOKS * MAX_ROW_BYTES];
				static float x4f[MAX_N];
				float out[3 * MS_DOT_TOKS], one;
				size_t ab = tk->act_conv ? row_bytes(act, n) : n * sizeof(float);
				int same = 1;

				for (int tt = 0; tt < MS_DOT_TOKS; tt++) {
					fill_f(x4f, n, 1.0f + (float)tt);
					if (tk->act_conv)
						tk->act_conv(n, x4f, xa4 + tt * ab);
					else
						memcpy(xa4 + tt * ab, x4f, ab);
				}
				for (int j = 0; j < 3 * MS_DOT_TOKS; j++)
					out[j] = -12345.0f;
				tk->dot_x4(n, w, xa4, ab, out, 3);
				for (int tt = 0; tt < MS_DOT_TOKS; tt++) {
					one = tk->dot(n, w, xa4 + tt * ab);
					if (memcmp(&one, &out[3 * tt], sizeof(one)) || out[3 * tt + 1] != -12345.0f ||
					    out[3 * tt + 2] != -12345.0f) {
						same = 0;
						diag("token %d: %.9g vs %.9g", tt, (double)out[3 * tt], (double)one);
					}
				}
				ok(same, "%s: %s dot_x4 n=%zu%s bit-identical to dot per token", k->name, tn, n, rs);
			}

			/* (c) against the float activations: only their quantization error */
			if (tk->act_conv) {
				double bound;

				ref_dot(n, wf, x, &reff, &magf);
				bound = act_quant_bound(act, n, wf, x) + 1e-5 * magf;
				if (!ok(fabs((double)got - reff) <= bound,
					"%s: %s dot n=%zu%s within activation quantization error of float dot",
					k->name, tn, n, rs))
					diag("got %.9g float ref %.9g bound %.3g", (double)got, reff, bound);
			}
		}
	}
}

/*
 * Activation conversion edge cases, each table against the generic bytes:
 * zero blocks, ties at .5 (Q8_0 rounds them away from zero, Q8_K to even),
 * magnitudes below MS_Q8K_MIN_AMAX, and non-finite values.
 */
static void test_act_edges(const struct ms_kernels *k, const struct ms_kernels *gen)
{
	static float x[1024];
	static unsigned char a[1024 * 2], g[1024 * 2];
	static const uint32_t acts[][2] = {
		{ GGML_TYPE_Q8_0, GGML_TYPE_Q8_0 }, { GGML_TYPE_Q4_K, GGML_TYPE_Q8_K },
	};

	for (size_t ai = 0; ai < 2; ai++) {
		const uint32_t wt = acts[ai][0], act = acts[ai][1];
		const size_t ab = row_bytes(act, 1024);
		const char *an = ms_ggml_type_name(act);

		if (!k->type[wt].act_conv || !gen->type[wt].act_conv) {
			ok(0, "%s: no %s conversion", k->name, an);
			continue;
		}
		/* block 0..255 (and each 32 of it): ties; amax 127 makes the step exactly 1 */
		for (size_t i = 0; i < 256; i++)
			x[i] = (float)((int)(i % 16) - 8) + 0.5f;
		for (size_t i = 0; i < 256; i += 32)
			x[i] = 127.0f;
		/* block 256..511: zero; 512..767: tiny; 768..1023: random then a NaN and an inf */
		memset(x + 256, 0, 256 * sizeof(float));
		for (size_t i = 512; i < 768; i++)
			x[i] = 1e-31f * rng_f();
		fill_f(x + 768, 256, 3.0f);
		x[800] = NAN;
		x[1000] = INFINITY;

		k->type[wt].act_conv(1024, x, a);
		gen->type[wt].act_conv(1024, x, g);
		ok(!memcmp(a, g, ab), "%s: %s conversion of ties/zero/tiny/non-finite equals generic",
		   k->name, an);
		if (act == GGML_TYPE_Q8_0) {
			const struct block_q8_0 *b = (const void *)a;

			/* x = -7.5 (i=16), -6.5 (i=17), 0.5 (i=8): away from zero */
			ok(b[0].qs[16] == -8 && b[0].qs[17] == -7 && b[0].qs[8] == 1,
			   "%s: Q8_0 ties round away from zero (%d %d %d)", k->name, b[0].qs[16], b[0].qs[17],
			   b[0].qs[8]);
			ms_quantize_row(GGML_TYPE_Q8_0, x, g, 1024);
			ok(!memcmp(a, g, ab), "%s: Q8_0 edge cases equal ms_quantize_row", k->name);
		} else {
			const struct block_q8_K *b = (const void *)a;

			/* -7.5 -> -8, -6.5 -> -6, 0.5 -> 0: to even */
			ok(b[0].qs[16] == -8 && b[0].qs[17] == -6 && b[0].qs[8] == 0 && b[0].d == 1.0f,
			   "%s: Q8_K ties round to even (%d %d %d, d %g)", k->name, b[0].qs[16], b[0].qs[17],
			   b[0].qs[8], (double)b[0].d);
			ok(b[1].d == 0.0f && b[2].d == 0.0f && isnan(b[3].d) && q8k_consistent(a, 1024),
			   "%s: Q8_K zero and tiny blocks are 0, a non-finite block has d = NaN", k->name);
		}
	}
}

/*
 * BF16 activations (vcvtneps2bf16's rule): ties to even, denormals to
 * signed zero, NaN quieted, overflow to inf; on 1000 values so the last
 * 8 take the masked tail. The table against the generic bytes and a few
 * values by hand.
 */
static void test_act_bf16_edges(const struct ms_kernels *k, const struct ms_kernels *gen)
{
	static const uint32_t edge[] = {
		0x3f808000u, 0x3f818000u, 0xbf808000u, 0x3f808001u,   /* 1 + 2^-8 (tie), 1 + 3 * 2^-8, -(1 + 2^-8), past the tie */
		0x00000001u, 0x807fffffu, 0x80000000u, 0x00800000u,   /* denormals, -0, smallest normal */
		0x7f800000u, 0xff800000u, 0x7f7fffffu, 0x7fc00000u,   /* inf, -inf, FLT_MAX (rounds to inf), quiet NaN */
		0x7f800001u, 0xffa00000u,                             /* signalling NaNs */
	};
	static const uint16_t want[] = {
		0x3f80, 0x3f82, 0xbf80, 0x3f81, 0x0000, 0x8000, 0x8000, 0x0080,
		0x7f80, 0xff80, 0x7f80, 0x7fc0, 0x7fc0, 0xffe0,
	};
	enum { N = 1000, NE = sizeof(edge) / sizeof(edge[0]) };
	static float x[N];
	static uint16_t a[N], g[N];
	int good = 1;

	if (!bf16_act)
		return;
	fill_f(x, N, 3.0f);
	for (size_t i = 0; i < NE; i++) {
		memcpy(&x[7 * i], &edge[i], sizeof(float));
		memcpy(&x[N - 1 - i], &edge[i], sizeof(float));
	}
	k->type[GGML_TYPE_BF16].act_conv(N, x, a);
	gen->type[GGML_TYPE_BF16].act_conv(N, x, g);
	for (size_t i = 0; i < NE; i++)
		if (a[7 * i] != want[i] || a[N - 1 - i] != want[i]) {
			good = 0;
			diag("%s: BF16 activation of 0x%08x: 0x%04x and 0x%04x, want 0x%04x", k->name, (unsigned)edge[i],
			     a[7 * i], a[N - 1 - i], want[i]);
		}
	ok(good && !memcmp(a, g, sizeof(a)),
	   "%s: BF16 activations: ties to even, denormals to signed zero, NaN quieted, overflow to inf; equal generic",
	   k->name);
}

static void test_f32_helpers(const struct ms_kernels *k, const struct ms_kernels *gen)
{
	static float a[MAX_N], b[MAX_N], y0[MAX_N + 1], y1[MAX_N + 1];

	for (size_t si = 0; si < sizeof(sizes_any) / sizeof(sizes_any[0]); si++) {
		size_t n = sizes_any[si];
		double ref = 0.0, mag = 0.0;
		float got;
		int good = 1;

		fill_f(a, n, 3.0f);
		fill_f(b, n, 1.0f);
		for (size_t i = 0; i < n; i++) {
			ref += (double)a[i] * (double)b[i];
			mag += fabs((double)a[i] * (double)b[i]);
		}
		{
			double sref = 0.0, smag = 0.0;
			float sgot;

			for (size_t i = 0; i < n; i++) {
				sref += (double)a[i];
				smag += fabs((double)a[i]);
			}
			for (unsigned ns = 1; ns <= MS_SUM_STREAMS; ns++) {
				sgot = k->sum_f32(n, a, ns);
				ok(close_to((double)sgot, sref, smag, 1e-6), "%s: sum_f32 n=%zu, %u streams (%.9g vs %.9g)",
				   k->name, n, ns, (double)sgot, sref);
				if (k != gen)
					ok(close_to((double)sgot, (double)gen->sum_f32(n, a, ns), smag, 2e-6),
					   "%s: sum_f32 n=%zu, %u streams matches generic twin", k->name, n, ns);
			}
			ok(close_to((double)k->sum_f32(n, a, 0), sref, smag, 1e-6) &&
			   close_to((double)k->sum_f32(n, a, 99), sref, smag, 1e-6),
			   "%s: sum_f32 n=%zu clamps the stream count into 1..%d", k->name, n, MS_SUM_STREAMS);
		}
		got = k->dot_f32(n, a, b);
		ok(close_to((double)got, ref, mag, 1e-5), "%s: dot_f32 n=%zu (%.9g vs %.9g)",
		   k->name, n, (double)got, ref);
		if (k != gen)
			ok(close_to((double)got, (double)gen->dot_f32(n, a, b), mag, 2e-5),
			   "%s: dot_f32 n=%zu matches generic twin", k->name, n);

		/* axpy: y0 via the table, y1 by hand in double; guard element past n untouched */
		fill_f(y0, n + 1, 1.0f);
		memcpy(y1, y0, (n + 1) * sizeof(float));
		k->axpy_f32(n, 0.75f, a, y0);
		for (size_t i = 0; i < n; i++) {
			double e = (double)y1[i] + 0.75 * (double)a[i];
			double m = fabs((double)y1[i]) + fabs(0.75 * (double)a[i]);

			if (!close_to((double)y0[i], e, m, 1.2e-7)) {
				good = 0;
				diag("axpy i=%zu: %.9g vs %.9g", i, (double)y0[i], e);
				break;
			}
		}
		ok(good && y0[n] == y1[n], "%s: axpy_f32 n=%zu", k->name, n);
		if (k != gen) {
			memcpy(y0, y1, (n + 1) * sizeof(float));
			k->axpy_f32(n, -1.5f, a, y0);
			gen->axpy_f32(n, -1.5f, a, y1);
			good = 1;
			for (size_t i = 0; i < n; i++)
				if (fabsf(y0[i] - y1[i]) > 2.4e-7f * (fabsf(y1[i]) + fabsf(1.5f * a[i])))
					good = 0;
			ok(good, "%s: axpy_f32 n=%zu matches generic twin", k->name, n);
		}
	}
}

/*
 * ms_matmul against a naive loop over the same table (act_conv of each
 * token, then dot per output): the driver must give bit-identical results,
 * for 1 and 2 threads. cols = 2304 has activation conversion split into
 * pieces with a short last one; rows = 150 with one token is the smallest
 * case here that runs in parallel.
 */
static void test_matmul(const struct ms_kernels *k, uint32_t t)
{
	static const size_t rows_list[] = { 5, 37, 150 };
	static const size_t cols_list[] = { 32, 256, 2304 };
	static const size_t ntok_list[] = { 1, 3, 17 };
	const struct ms_type_kernels *tk = &k->type[t];
	const char *tn = ms_ggml_type_name(t);

	if (!tk->dot)
		return;
	for (size_t ci = 0; ci < 3; ci++) {
		size_t cols = cols_list[ci], rb = row_bytes(t, cols);
		size_t arow = tk->act_conv ? row_bytes(tk->act_type, cols) : cols * sizeof(float);

		if (!rb)
			continue;   /* 32 columns: not a K-quant row */
		for (size_t ri = 0; ri < 3; ri++) {
			size_t rows = rows_list[ri];
			/* pad each row by 16 bytes: row_bytes larger than the data is allowed */
			size_t stride = rb + 16;
			unsigned char *w = calloc(rows, stride);
			float *x = malloc(17 * cols * sizeof(float));
			unsigned char *xa = malloc(17 * arow);
			float *ref = malloc(17 * rows * sizeof(float));
			float *y1 = malloc(17 * rows * sizeof(float));
			float *y2 = malloc(17 * rows * sizeof(float));

			if (!w || !x || !xa || !ref || !y1 || !y2) {
				ok(0, "out of memory");
				goto next;
			}
			for (size_t r = 0; r < rows; r++)
				make_weights(t, cols, w + r * stride, 0);
			fill_f(x, 17 * cols, 1.0f);
			for (size_t tok = 0; tok < 17; tok++) {
				if (tk->act_conv)
					tk->act_conv(cols, x + tok * cols, xa + tok * arow);
				else
					memcpy(xa + tok * arow, x + tok * cols, arow);
			}
			for (size_t ti = 0; ti < 3; ti++) {
				size_t nt = ntok_list[ti];
				size_t sb = ms_matmul_scratch_bytes(k, t, MS_LAYOUT_ROWS, cols, nt);
				void *scratch = sb ? malloc(sb) : NULL;
				int r1, r2;

				ok(sb == (tk->act_conv ? nt * arow : 0), "%s: %s scratch for cols=%zu n_tok=%zu",
				   k->name, tn, cols, nt);
				for (size_t tok = 0; tok < nt; tok++)
					for (size_t r = 0; r < rows; r++)
						ref[tok * rows + r] = tk->dot(cols, w + r * stride, xa + tok * arow);
				memset(y1, 0xff, nt * rows * sizeof(float));
				memset(y2, 0xff, nt * rows * sizeof(float));
				omp_set_num_threads(1);
				r1 = ms_matmul(k, t, MS_LAYOUT_ROWS, w, stride, rows, cols, x, nt, y1, scratch);
				omp_set_num_threads(2);
				r2 = ms_matmul(k, t, MS_LAYOUT_ROWS, w, stride, rows, cols, x, nt, y2, scratch);
				ok(r1 == 0 && r2 == 0 &&
				   !memcmp(y1, ref, nt * rows * sizeof(float)) &&
				   !memcmp(y2, ref, nt * rows * sizeof(float)),
				   "%s: %s matmul rows=%zu cols=%zu n_tok=%zu, 1 and 2 threads",
				   k->name, tn, rows, cols, nt);
				free(scratch);
			}
next:
			free(w);
			free(x);
			free(xa);
			free(ref);
			free(y1);
			free(y2);
		}
	}
}

/* A random activation row in the x8 kernels' format: codes within +-127, f16-exact scales. */
static void make_q8s(size_t n, struct ms_block_q8s *a)
{
	for (size_t i = 0; i < n / QK8_0; i++) {
		int32_t sum = 0;

		a[i].d = ms_f16_to_f32(rand_f16(0.001f, 0.05f, 0));
		for (int j = 0; j < QK8_0; j++) {
			a[i].qs[j] = (int8_t)((int)(rng_u64() % 255) - 127);
			sum += a[i].qs[j];
		}
		a[i].s = sum;
	}
}

/* Table's Q8_0 conversion widened to ms_block_q8s: what ms_matmul feeds the x8 kernels. */
static void q8s_from_f32(const struct ms_kernels *k, size_t n, const float *x, struct ms_block_q8s *a)
{
	struct block_q8_0 b[(MAX_N + 31) / 32];

	k->type[GGML_TYPE_Q8_0].act_conv(n, x, b);
	for (size_t i = 0; i < n / QK8_0; i++) {
		a[i].d = ms_f16_to_f32(b[i].d);
		a[i].s = 0;
		for (int j = 0; j < QK8_0; j++)
			a[i].s += b[i].qs[j];
		memcpy(a[i].qs, b[i].qs, QK8_0);
	}
}

/* Random Q8_K activation blocks (what the K-quant x8 kernels take), bsums consistent. */
static void make_q8k(size_t n, struct block_q8_K *a)
{
	for (size_t i = 0; i < n / QK_K; i++) {
		a[i].d = ms_f16_to_f32(rand_f16(0.001f, 0.05f, 0));
		for (int j = 0; j < QK_K; j++)
			a[i].qs[j] = (int8_t)((int)(rng_u64() % 255) - 127);
		for (int j = 0; j < QK_K / 16; j++) {
			a[i].bsums[j] = 0;
			for (int l = 0; l < 16; l++)
				a[i].bsums[j] = (int16_t)(a[i].bsums[j] + a[i].qs[16 * j + l]);
		}
	}
}

/* F16 and BF16 weights: float activations and one fma per element. */
static int is_wide_type(uint32_t t)
{
	return t == GGML_TYPE_F16 || t == GGML_TYPE_BF16;
}

/* Wide types whose x8 kernel takes the floats as they are (no conversion). */
static int float_acts(uint32_t t)
{
	return is_wide_type(t) && !(t == GGML_TYPE_BF16 && bf16_act);
}

/* Rounded terms each x8 sum adds in sequence: one per block, one per element for F16/BF16. */
static size_t x8_terms(uint32_t t, size_t n)
{
	return is_wide_type(t) ? n : n / 32;
}

/* The x8 kernels' activations: ms_block_q8s rows for Q4_0/Q8_0, Q8_K rows for the K-quants, floats. */
static size_t x8_act_bytes(uint32_t t, size_t n)
{
	if (is_wide_type(t))
		return float_acts(t) ? n * sizeof(float) : n * sizeof(uint16_t);
	return is_k_type(t) ? row_bytes(GGML_TYPE_Q8_K, n) : n / QK8_0 * sizeof(struct ms_block_q8s);
}

static void x8_make_act(uint32_t t, size_t n, void *a)
{
	if (!float_acts(t) && is_wide_type(t)) {
		static float f[MAX_N];

		fill_f(f, n, 1.0f);
		ms_quantize_row(GGML_TYPE_BF16, f, a, n);
	} else if (is_wide_type(t))
		fill_f(a, n, 1.0f);
	else if (is_k_type(t))
		make_q8k(n, a);
	else
		make_q8s(n, a);
}

/* Activation value i (scale times code) of a row in x8_make_act's format. */
static double x8_act_value(uint32_t t, const void *a, size_t i)
{
	if (is_wide_type(t)) {
		if (!float_acts(t))
			return ms_bf16_to_f32(((const uint16_t *)a)[i]);
		return ((const float *)a)[i];
	} else if (is_k_type(t)) {
		const struct block_q8_K *b = a;

		return (double)b[i / QK_K].d * b[i / QK_K].qs[i % QK_K];
	} else {
		const struct ms_block_q8s *b = a;

		return (double)b[i / QK8_0].d * b[i / QK8_0].qs[i % QK8_0];
	}
}

/* What ms_matmul feeds the x8 kernel of t, from floats, with table k's conversion. */
static void x8_act_from_f32(const struct ms_kernels *k, uint32_t t, size_t n, const float *x, void *a)
{
	if (float_acts(t))
		memcpy(a, x, n * sizeof(float));
	else if (is_wide_type(t))
		k->type[t].act_conv(n, x, a);
	else if (is_k_type(t))
		k->type[t].act_conv(n, x, a);
	else
		q8s_from_f32(k, n, x, a);
}

/*
 * The interleaved kernels: 8 rows repacked by ms_repack_x8 against 9
 * tokens, checked against a double-precision sum over the plain rows'
 * dequantized values, bit for bit against the generic twin, and bit for
 * bit between one call for 9 tokens and 9 calls of one token (so prefill
 * and decode agree). Raw random blocks include Q8_0's -128 code.
 */
static void test_x8(const struct ms_kernels *k, const struct ms_kernels *gen, uint32_t t)
{
	static const size_t sizes_0[] = { 32, 96, 160, 4096 + 32 };
	static const size_t sizes_x8k[] = { 256, 768, 4096 + 256 };
	static const size_t sizes_wide[] = { 1, 7, 33, 4096 + 3 };
	const size_t *sizes = is_wide_type(t) ? sizes_wide : is_k_type(t) ? sizes_x8k : sizes_0;
	const size_t n_sizes = is_k_type(t) ? 3 : 4;
	enum { NT = 9, OS = 11 };
	const char *tn = ms_ggml_type_name(t);

	if (!ms_x8_type(t))
		return;
	if (!ok(k->type[t].gemm_x8 && gen->type[t].gemm_x8, "%s: %s has an x8 kernel", k->name, tn))
		return;
	for (size_t si = 0; si < n_sizes; si++) {
		for (int raw = 0; raw < 2; raw++) {
			size_t n = sizes[si], rb = row_bytes(t, n), ab = x8_act_bytes(t, n);
			unsigned char *w = malloc(8 * rb), *wx = malloc(8 * rb), *a = malloc(NT * ab);
			float *wf = malloc(8 * n * sizeof(float));
			float o_k[NT * OS], o_g[NT * OS], o_1[NT * OS];
			double worst = 0;
			int good = 1;

			if (!w || !wx || !a || !wf) {
				ok(0, "out of memory");
				goto next;
			}
			for (int r = 0; r < 8; r++) {
				make_weights(t, n, w + r * rb, raw);
				ms_dequantize_row(t, w + r * rb, wf + r * n, n);
			}
			for (int tok = 0; tok < NT; tok++)
				x8_make_act(t, n, a + tok * ab);
			ok(ms_repack_x8(t, w, rb, n, 1, wx) == 0, "%s: %s repack n=%zu", k->name, tn, n);
			for (int i = 0; i < NT * OS; i++)
				o_k[i] = o_g[i] = o_1[i] = -12345.0f;
			k->type[t].gemm_x8(n, wx, 8, a, ab, NT, o_k, OS);
			gen->type[t].gemm_x8(n, wx, 8, a, ab, NT, o_g, OS);
			for (int tok = 0; tok < NT; tok++)
				k->type[t].gemm_x8(n, wx, 8, a + tok * ab, ab, 1, o_1 + tok * OS, OS);
			for (int tok = 0; tok < NT; tok++) {
				for (int r = 0; r < 8; r++) {
					const double got = (double)o_k[tok * OS + r];
					double ref = 0, mag = 0;

					for (size_t i = 0; i < n; i++) {
						double p = (double)wf[r * n + i] * x8_act_value(t, a + tok * ab, i);

						ref += p;
						mag += fabs(p);
					}
					/* K-quant mins make |terms| much larger than sum|w*x|: bound by blocks */
					if (fabs(got - ref) > (is_wide_type(t) ? 1.2e-7 * (double)(n + 2) :
							       2e-6 * (double)(n / 32)) * mag + 1e-30)
						good = 0;
					if (mag > 0 && fabs(got - ref) / mag > worst)
						worst = fabs(got - ref) / mag;
				}
				for (int r = 8; r < OS; r++)
					if (o_k[tok * OS + r] != -12345.0f || o_g[tok * OS + r] != -12345.0f)
						good = 0;
			}
			ok(good, "%s: %s x8 n=%zu%s 8 rows x %d tokens match the double reference of the plain rows "
			   "(worst %.2g of sum|w*x|), gaps untouched", k->name, tn, n, raw ? " (raw blocks)" : "", NT, worst);
			ok(!memcmp(o_k, o_g, sizeof(o_k)), "%s: %s x8 n=%zu%s bit-identical to the generic twin",
			   k->name, tn, n, raw ? " (raw blocks)" : "");
			ok(!memcmp(o_k, o_1, sizeof(o_k)), "%s: %s x8 n=%zu%s: 9 tokens at once = 9 calls of one",
			   k->name, tn, n, raw ? " (raw blocks)" : "");
next:
			free(w);
			free(wx);
			free(a);
			free(wf);
		}
	}
}

/*
 * ms_matmul on interleaved weights against the kernel called group by
 * group on the table's own activation conversion: bit-identical, for 1 and
 * 2 threads; 71 tokens cross the driver's 64-token work items, 40 rows end
 * in half a 16-row chunk. Then against the plain-row matmul of the same
 * weights (other summation order: close, not equal).
 */
static void test_matmul_x8(const struct ms_kernels *k, uint32_t t)
{
	static const size_t rows_list[] = { 8, 40, 152 };
	static const size_t cols_list[] = { 32, 2304, 33 };   /* 32: no K-quant row, 33: F16/BF16 only */
	/* every tail of the 4- and 6-token tiles; 71 = a 64-token item (4 left) and 7 (6 + 1) */
	static const size_t ntok_list[] = { 1, 2, 3, 5, 7, 71 };
	enum { MAXT = 71 };
	const char *tn = ms_ggml_type_name(t);

	if (!ms_x8_type(t))
		return;
	for (size_t ci = 0; ci < 3; ci++) {
		if (!row_bytes(t, cols_list[ci]))
			continue;
		for (size_t ri = 0; ri < 3; ri++) {
			size_t cols = cols_list[ci], rows = rows_list[ri], rb = row_bytes(t, cols);
			size_t ab = x8_act_bytes(t, cols), nb = x8_terms(t, cols);
			unsigned char *w = malloc(rows * rb + 1), *wx = malloc(rows * rb + 1);
			float *x = malloc(MAXT * cols * sizeof(float));
			unsigned char *a = malloc(MAXT * ab + 1);
			float *ref = malloc(MAXT * rows * sizeof(float)), *y1 = malloc(MAXT * rows * sizeof(float));
			float *y2 = malloc(MAXT * rows * sizeof(float)), *yp = malloc(MAXT * rows * sizeof(float));
			float *wf = malloc(rows * cols * sizeof(float));

			if (!w || !wx || !x || !a || !ref || !y1 || !y2 || !yp || !wf) {
				ok(0, "out of memory");
				goto next;
			}
			for (size_t r = 0; r < rows; r++) {
				make_weights(t, cols, w + r * rb, 0);
				ms_dequantize_row(t, w + r * rb, wf + r * cols, cols);
			}
			ms_repack_x8(t, w, rb, cols, rows / 8, wx);
			fill_f(x, MAXT * cols, 1.0f);
			for (size_t tok = 0; tok < MAXT; tok++)
				x8_act_from_f32(k, t, cols, x + tok * cols, a + tok * ab);
			for (size_t ti = 0; ti < sizeof(ntok_list) / sizeof(ntok_list[0]); ti++) {
				size_t nt = ntok_list[ti];
				size_t sb = ms_matmul_scratch_bytes(k, t, MS_LAYOUT_X8, cols, nt);
				size_t sp = ms_matmul_scratch_bytes(k, t, MS_LAYOUT_ROWS, cols, nt);
				void *scratch = malloc(sb > sp ? sb : sp + 1);
				double worst = 0;
				int r1, r2, r3, close = 1;

				ok(sb == (float_acts(t) ? 0 : nt * ab), "%s: %s x8 scratch for cols=%zu n_tok=%zu",
				   k->name, tn, cols, nt);
				for (size_t tok = 0; tok < nt; tok++)
					for (size_t g = 0; g < rows / 8; g++)
						k->type[t].gemm_x8(cols, wx + g * 8 * rb, 8, a + tok * ab, ab, 1,
								   ref + tok * rows + g * 8, rows);
				memset(y1, 0xff, nt * rows * sizeof(float));
				memset(y2, 0xff, nt * rows * sizeof(float));
				omp_set_num_threads(1);
				r1 = ms_matmul(k, t, MS_LAYOUT_X8, wx, rb, rows, cols, x, nt, y1, scratch);
				omp_set_num_threads(2);
				r2 = ms_matmul(k, t, MS_LAYOUT_X8, wx, rb, rows, cols, x, nt, y2, scratch);
				r3 = ms_matmul(k, t, MS_LAYOUT_ROWS, w, rb, rows, cols, x, nt, yp, scratch);
				ok(r1 == 0 && r2 == 0 && !memcmp(y1, ref, nt * rows * sizeof(float)) &&
				   !memcmp(y2, ref, nt * rows * sizeof(float)),
				   "%s: %s x8 matmul rows=%zu cols=%zu n_tok=%zu, 1 and 2 threads", k->name, tn, rows,
				   cols, nt);
				/*
				 * Both sum nb exact block products in float, in other
				 * orders: each is within about (nb + 2) ulp-sized steps
				 * of sum |w*x| of the exact value.
				 */
				for (size_t i = 0; i < nt * rows; i++) {
					const double v = (double)y1[i], p = (double)yp[i];
					const size_t tok = i / rows, r = i % rows;
					double mag = 0, d;

					for (size_t c = 0; c < cols; c++)
						mag += fabs((double)wf[r * cols + c] * x8_act_value(t, a + tok * ab, c));
					d = fabs(v - p) / (mag + 1e-30);
					worst = d > worst ? d : worst;
					if (d > 1.2e-7 * (double)(nb + 2))
						close = 0;
				}
				ok(r3 == 0 && close, "%s: %s x8 matmul rows=%zu cols=%zu n_tok=%zu close to the plain-row "
				   "matmul (worst %.2g of sum|w*x|)", k->name, tn, rows, cols, nt, worst);
				free(scratch);
			}
next:
			free(w);
			free(wx);
			free(x);
			free(a);
			free(ref);
			free(y1);
			free(y2);
			free(yp);
			free(wf);
		}
	}
}

/*
 * Every tile shape of an x8 GEMM against the generic twin, bit for bit:
 * 1 to 8, 11 and 19 groups (the AVX-512 tiles take groups in pairs, so
 * odd counts end in a lone 8-row group; one token goes four or eight
 * groups at a time first), every token count from 1 to 17 and
 * 65 to 71 (each tail of the 4-, 6-, 8- and 12-token tiles, after none,
 * one or several full tiles), blocks from one to enough that the prefetch
 * runs past a group's end into the next. Outputs sit os = rows + 3 apart
 * and the gaps must stay untouched.
 */
static void test_x8_shapes(const struct ms_kernels *k, const struct ms_kernels *gen, uint32_t t)
{
	/*
	 * One token goes several groups at a time first (avx512: Q4_0 eight,
	 * Q8_0, F16 and BF16 four), then a pair and an odd one: 4 and 8 end
	 * at a tile's end, 5-7, 11 and 19 in each tail after one or more.
	 */
	static const size_t groups_list[] = { 1, 2, 3, 4, 5, 6, 7, 8, 11, 19 };
	static const size_t ntok_extra[] = { 65, 66, 67, 68, 69, 70, 71 };
	enum { MAXT = 71, MAXG = 19 };
	const size_t blck = is_wide_type(t) ? 1 : is_k_type(t) ? QK_K : 32;
	const size_t nbs[] = { 1, 3, is_k_type(t) ? 17 : 131 };
	const char *tn = ms_ggml_type_name(t);

	if (!ms_x8_type(t) || !k->type[t].gemm_x8 || k->type[t].gemm_x8 == gen->type[t].gemm_x8)
		return;
	for (size_t bi = 0; bi < 3; bi++) {
		const size_t n = nbs[bi] * blck, rb = row_bytes(t, n), ab = x8_act_bytes(t, n);
		const size_t os = MS_X8 * MAXG + 3;
		unsigned char *w = malloc(MS_X8 * MAXG * rb), *wx = malloc(MS_X8 * MAXG * rb), *a = malloc(MAXT * ab);
		float *o_k = malloc(MAXT * os * sizeof(float)), *o_g = malloc(MAXT * os * sizeof(float));
		int good = 1, gaps = 1;

		if (!w || !wx || !a || !o_k || !o_g) {
			ok(0, "out of memory");
			goto next;
		}
		for (size_t r = 0; r < MS_X8 * MAXG; r++)
			make_weights(t, n, w + r * rb, 1);
		ms_repack_x8(t, w, rb, n, MAXG, wx);
		for (size_t tok = 0; tok < MAXT; tok++)
			x8_make_act(t, n, a + tok * ab);
		/* a row's result depends on neither the row count nor the token count (kernels.h): one reference */
		gen->type[t].gemm_x8(n, wx, MS_X8 * MAXG, a, ab, MAXT, o_g, os);
		for (size_t gi = 0; gi < sizeof(groups_list) / sizeof(groups_list[0]); gi++) {
			const size_t rows = MS_X8 * groups_list[gi];

			for (size_t ti = 0; ti < 17 + sizeof(ntok_extra) / sizeof(ntok_extra[0]); ti++) {
				const size_t nt = ti < 17 ? ti + 1 : ntok_extra[ti - 17];

				for (size_t i = 0; i < nt * os; i++)
					o_k[i] = -12345.0f;
				k->type[t].gemm_x8(n, wx, rows, a, ab, nt, o_k, os);
				for (size_t tok = 0; tok < nt; tok++) {
					if (memcmp(o_k + tok * os, o_g + tok * os, rows * sizeof(float))) {
						if (good)
							diag("%s: %s x8 first mismatch: %zu blocks, %zu rows, %zu tokens, "
							     "token %zu", k->name, tn, nbs[bi], rows, nt, tok);
						good = 0;
					}
					for (size_t r = rows; r < os; r++)
						if (o_k[tok * os + r] != -12345.0f)
							gaps = 0;
				}
			}
		}
		ok(good && gaps, "%s: %s x8 with %zu blocks a row: 1-19 groups x 1-17 and 65-71 tokens bit-identical to "
		   "the generic twin, gaps untouched", k->name, tn, nbs[bi]);
next:
		free(w);
		free(wx);
		free(a);
		free(o_k);
		free(o_g);
	}
}

/*
 * Q4_K and Q5_K blocks at their extremes: every code at its maximum (15,
 * 31), every sub-block scale 63, d = 1, dmin = 0, activations all +127 and
 * then all -127. The int16 partial sums of the 8-row tiles then sit
 * closest to overflow (Q5_K: four chunks of pairs of 31 * 127 = 31496),
 * and the 16-row tiles' int32 sub-block sums at their largest; random
 * data stays far below it. Two groups, so a 16-row tile takes them where
 * the table has one. Checked against the exact integer sum and the
 * plain-row dot of the same blocks.
 */
static void test_k_saturated(const struct ms_kernels *k, const struct ms_kernels *gen)
{
	static const uint8_t sc12[K_SCALE_SIZE] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x0f, 0x0f, 0x0f, 0x0f };
	enum { NB = 2, N = NB * QK_K, R = 2 * MS_X8 };

	for (int q5 = 0; q5 < 2; q5++) {
		const uint32_t t = q5 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K;
		const size_t rb = row_bytes(t, N);
		unsigned char w[R * NB * 176], wx[R * NB * 176];
		struct block_q8_K a[NB];

		for (size_t i = 0; i < R * NB; i++) {
			unsigned char *blk = w + i * (rb / NB);

			put_f16(blk, ms_f32_to_f16(1.0f));
			put_f16(blk + 2, 0);
			memcpy(blk + 4, sc12, K_SCALE_SIZE);
			memset(blk + 4 + K_SCALE_SIZE, 0xff, rb / NB - 4 - K_SCALE_SIZE);   /* qh (Q5_K) and qs */
		}
		ms_repack_x8(t, w, rb, N, R / MS_X8, wx);
		for (int sign = 1; sign >= -1; sign -= 2) {
			const double want = (double)(float)((double)NB * 8 * 63 * 32 * (q5 ? 31 : 15) * 127 * sign);
			float o_k[R], o_g[R];
			int good = 1;

			for (int i = 0; i < NB; i++) {
				a[i].d = 1.0f;
				memset(a[i].qs, sign > 0 ? 127 : -127, QK_K);
				for (int j = 0; j < QK_K / 16; j++)
					a[i].bsums[j] = (int16_t)(16 * 127 * sign);
			}
			k->type[t].gemm_x8(N, wx, R, a, sizeof(a), 1, o_k, R);
			gen->type[t].gemm_x8(N, wx, R, a, sizeof(a), 1, o_g, R);
			for (int r = 0; r < R; r++)
				if ((double)o_k[r] != want || (double)o_g[r] != want ||
				    (double)gen->type[t].dot(N, w + r * rb, a) != want)
					good = 0;
			ok(good, "%s: %s x8 with every code, scale and activation at its %s extreme: %.0f (exact; "
			   "generic twin and plain dot agree)", k->name, ms_ggml_type_name(t), sign > 0 ? "upper" : "lower",
			   (double)o_k[0]);
		}
	}
}

static void test_api(void)
{
	enum ms_isa isa = MS_ISA_COUNT;
	const struct ms_kernels *g = ms_kernels_get(MS_ISA_GENERIC);
	float x[256] = { 0 }, y[4];
	unsigned char w[4 * 144] = { 0 };

	ok(ms_isa_parse("generic", &isa) == 0 && isa == MS_ISA_GENERIC, "parse generic");
	ok(ms_isa_parse("avx2", &isa) == 0 && isa == MS_ISA_AVX2, "parse avx2");
	ok(ms_isa_parse("auto", &isa) == 0 && isa == ms_cpu_best_isa(), "parse auto = best (%s)",
	   ms_isa_name(ms_cpu_best_isa()));
	ok(ms_isa_parse("sse9", &isa) == -EINVAL, "parse rejects unknown");
	ok(ms_isa_parse("", &isa) == -EINVAL, "parse rejects empty");
	ok(ms_isa_parse(NULL, &isa) == -EINVAL, "parse rejects NULL");
	ok(!strcmp(ms_isa_name(MS_ISA_GENERIC), "generic") && !strcmp(ms_isa_name(MS_ISA_AVX2), "avx2"),
	   "isa names");
	ok(ms_isa_name(MS_ISA_COUNT) != NULL, "name of unknown isa is not NULL");
	ok(ms_cpu_best_isa() == ms_cpu_best_isa() && ms_cpu_best_isa() < MS_ISA_COUNT,
	   "best isa stable and in range");
	ok(g != NULL && g->isa == MS_ISA_GENERIC && !strcmp(g->name, "generic"),
	   "generic table present");
	ok(ms_kernels_get(MS_ISA_COUNT) == NULL, "no table for unknown isa");
	if (ms_cpu_best_isa() >= MS_ISA_AVX2) {
		const struct ms_kernels *a = ms_kernels_get(MS_ISA_AVX2);

		ok(a != NULL && a->isa == MS_ISA_AVX2 && !strcmp(a->name, "avx2"), "avx2 table present");
	} else {
		ok(ms_kernels_get(MS_ISA_AVX2) == NULL, "no avx2 table on this CPU/build");
	}
	ok(ms_isa_parse("avx512", &isa) == 0 && isa == MS_ISA_AVX512 && !strcmp(ms_isa_name(isa), "avx512"),
	   "parse and name avx512");
	if (ms_cpu_best_isa() >= MS_ISA_AVX512) {
		const struct ms_kernels *a = ms_kernels_get(MS_ISA_AVX512), *b = ms_kernels_get(MS_ISA_AVX2);

		ok(a != NULL && a == ms_kernels_get(MS_ISA_AVX512) && a->isa == MS_ISA_AVX512 &&
		   !strcmp(a->name, "avx512"), "avx512 table present, one instance");
		ok(a && b && a->type[GGML_TYPE_Q4_K].dot == b->type[GGML_TYPE_Q4_K].dot &&
		   a->type[GGML_TYPE_Q4_0].act_conv == b->type[GGML_TYPE_Q4_0].act_conv &&
		   a->type[GGML_TYPE_Q4_0].gemm_x8 != b->type[GGML_TYPE_Q4_0].gemm_x8 && a->dot_f32 == b->dot_f32,
		   "avx512 table: its own x8 GEMMs, the avx2 table's other kernels");
		ok(a && b && (a->type[GGML_TYPE_F16].gemm_x8 == b->type[GGML_TYPE_F16].gemm_x8) == !ms_cpu_full_zmm(),
		   "avx512 table: F16 tiles of its own only with full-width 512-bit FMAs (here: %s)",
		   ms_cpu_full_zmm() ? "yes" : "no, the avx2 tiles");
		ok(a && (a->type[GGML_TYPE_BF16].gemm_x8 == ms_kernels_avx512_bf16()->type[GGML_TYPE_BF16].gemm_x8 &&
			 a->type[GGML_TYPE_BF16].act_type == GGML_TYPE_BF16) == (ms_cpu_use_bf16dp() != 0),
		   "avx512 table: vdpbf16ps BF16 kernels and BF16 activations only where chosen (here: %s)",
		   ms_cpu_use_bf16dp() ? "yes" : ms_cpu_avx512_bf16() ? "no, AVX512_BF16 but not AMD's" : "no");
		ok(!ms_cpu_use_bf16dp() || ms_cpu_avx512_bf16(), "vdpbf16ps chosen only with AVX512_BF16");
	} else {
		ok(ms_kernels_get(MS_ISA_AVX512) == NULL, "no avx512 table on this CPU/build");
	}
	{
		static struct ms_kernels out, over;
		const struct ms_kernels *gk = ms_kernels_get(MS_ISA_GENERIC);

		ok(ms_kernels_overlay(NULL, gk, gk) == -EINVAL && ms_kernels_overlay(&out, NULL, gk) == -EINVAL &&
		   ms_kernels_overlay(&out, gk, NULL) == -EINVAL, "overlay rejects NULL tables");
		memset(&over, 0, sizeof(over));
		over.isa = MS_ISA_AVX512;
		over.name = "over";
		over.type[GGML_TYPE_Q4_0].gemm_x8 = gk->type[GGML_TYPE_Q8_0].gemm_x8;
		ok(ms_kernels_overlay(&out, gk, &over) == 0 && !strcmp(out.name, "over") &&
		   out.type[GGML_TYPE_Q4_0].gemm_x8 == gk->type[GGML_TYPE_Q8_0].gemm_x8 &&
		   out.type[GGML_TYPE_Q4_0].dot == gk->type[GGML_TYPE_Q4_0].dot &&
		   out.type[GGML_TYPE_Q8_0].gemm_x8 == gk->type[GGML_TYPE_Q8_0].gemm_x8 && out.axpy_f32 == gk->axpy_f32,
		   "overlay replaces only the kernels it names");
		over.type[GGML_TYPE_Q4_0].act_type = GGML_TYPE_Q8_K;
		over.type[GGML_TYPE_Q4_0].act_conv = gk->type[GGML_TYPE_Q4_K].act_conv;
		ok(ms_kernels_overlay(&out, gk, &over) == -EINVAL,
		   "overlay refuses another activation format under the base's dots");
	}
	if (!g)
		return;

	ok(g->type[GGML_TYPE_Q2_K].dot == NULL, "generic has no Q2_K dot");
	ok(ms_matmul(g, GGML_TYPE_Q2_K, MS_LAYOUT_ROWS, w, 84, 1, 256, x, 1, y, NULL) == -EINVAL,
	   "matmul with unsupported type: -EINVAL");
	ok(ms_matmul(g, 99, MS_LAYOUT_ROWS, w, 144, 1, 32, x, 1, y, NULL) == -EINVAL,
	   "matmul with out-of-range type: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_F16, MS_LAYOUT_ROWS, w, 96, 1, 48, x, 1, y, NULL) == 0,
	   "matmul F16 with 48 columns (no blocks): 0");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, MS_LAYOUT_ROWS, w, 34, 1, 48, x, 1, y, w) == -EINVAL,
	   "matmul with cols not a block multiple: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q4_K, MS_LAYOUT_ROWS, w, 144, 1, 128, x, 1, y, w) == -EINVAL,
	   "matmul Q4_K with 128 columns: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, MS_LAYOUT_ROWS, w, 33, 1, 32, x, 1, y, w) == -EINVAL,
	   "matmul with row_bytes too small: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, MS_LAYOUT_ROWS, w, 34, 1, 32, x, 1, y, NULL) == -EINVAL,
	   "matmul needing activation scratch without it: -EINVAL");
	ok(ms_matmul_scratch_bytes(g, GGML_TYPE_F16, MS_LAYOUT_ROWS, 4096, 8) == 0, "F16 (float activations) needs no scratch");
	ok(ms_matmul_scratch_bytes(g, GGML_TYPE_Q4_0, MS_LAYOUT_ROWS, 4096, 8) == 8 * 128 * 34,
	   "Q4_0 scratch: 8 rows of Q8_0");
	ok(ms_matmul_scratch_bytes(g, GGML_TYPE_Q6_K, MS_LAYOUT_ROWS, 4096, 8) == 8 * 16 * 292,
	   "Q6_K scratch: 8 rows of Q8_K");
	ok(ms_x8_type(GGML_TYPE_Q4_0) && ms_x8_type(GGML_TYPE_Q8_0) && ms_x8_type(GGML_TYPE_Q4_K) &&
	   ms_x8_type(GGML_TYPE_Q5_K) && ms_x8_type(GGML_TYPE_Q6_K) && ms_x8_type(GGML_TYPE_F16) &&
	   ms_x8_type(GGML_TYPE_BF16) && !ms_x8_type(GGML_TYPE_F32),
	   "x8 layout exists for Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, F16 and BF16");
	ok(ms_matmul_scratch_bytes(g, GGML_TYPE_F16, MS_LAYOUT_X8, 4096, 8) == 0,
	   "F16 x8 scratch: none (the floats are read as they are)");
	ok(ms_repack_x8(GGML_TYPE_F32, w, 128, 32, 1, x) == -EINVAL &&
	   ms_repack_x8(GGML_TYPE_Q8_0, w, 34, 48, 1, x) == -EINVAL,
	   "repack rejects a type without the layout and a partial block");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, MS_LAYOUT_X8, w, 34, 12, 32, x, 1, y, w) == -EINVAL,
	   "x8 matmul with rows not a multiple of 8: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_F32, MS_LAYOUT_X8, w, 128, 8, 32, x, 1, y, w) == -EINVAL,
	   "x8 matmul of a type without the layout: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, (enum ms_layout)7, w, 34, 8, 32, x, 1, y, w) == -EINVAL,
	   "unknown layout: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, MS_LAYOUT_X8, w, 40, 8, 32, x, 1, y, w) == -EINVAL,
	   "x8 matmul with padded rows (the groups are dense): -EINVAL");
}

/* Every check of one table against the generic twin. */
/*
 * silu_mul: every table's bits are ms_silu(g) * u (the fixed steps of
 * engine/silu.h), over every vector tail length and the clamp's edges.
 */
static void test_silu(const struct ms_kernels *k)
{
	static const float edges[] = { 0.0f, -0.0f, 1e-30f, -1e-30f, 1.0f, -1.0f, 20.0f, -20.0f, 86.9f, 87.0f,
				       87.1f, -87.9f, -88.0f, -88.1f, 100.0f, -100.0f, 1e30f, -1e30f };
	enum { N = 40 };
	float g[N + 1], u[N + 1], x[N + 1];
	int same = 1, guard = 1;

	for (size_t n = 0; n <= N && same && guard; n++) {
		for (size_t i = 0; i <= n; i++) {
			x[i] = i < sizeof(edges) / sizeof(edges[0]) && n == N ? edges[i] : 12.0f * rng_f();
			g[i] = x[i];
			u[i] = rng_f();
		}
		g[n] = 7.0f;
		k->silu_mul(n, g, u);
		for (size_t i = 0; i < n; i++)
			if (memcmp(&g[i], &(float){ ms_silu(x[i]) * u[i] }, sizeof(float))) {
				same = 0;
				diag("%s: silu_mul n=%zu i=%zu: x %.9g gives %a, ms_silu %a", k->name, n, i, (double)x[i],
				     (double)g[i], (double)(ms_silu(x[i]) * u[i]));
			}
		guard = g[n] == 7.0f;
	}
	ok(same, "%s: silu_mul equals ms_silu(g) * u bit for bit, every length 0..40 and the clamp's edges",
	   k->name);
	ok(guard, "%s: silu_mul writes nothing past n", k->name);
}

/* ms_silu itself (every table's reference): within a few ulp of x / (1 + e^-x) in double, and its edges. */
static void test_silu_ref(void)
{
	enum { N = 300 };
	int close = 1;
	double worst = 0;

	for (int i = 0; i < N; i++) {
		const float v = 20.0f * rng_f();
		const double want = (double)v / (1.0 + exp(-(double)v)), got = ms_silu(v);
		const double rel = fabs(got - want) / fmax(fabs(want), 1e-30);

		/* x / (1 + expf(-x)) with libm's expf: 1.7e-7 at worst over 2e6 samples, as these steps */
		worst = rel > worst ? rel : worst;
		close = close && rel < 3e-7;
	}
	ok(close, "ms_silu within 3e-7 of x / (1 + e^-x) over [-20, 20] (worst %.3g)", worst);
	ok(isnan(ms_silu(NAN)) && ms_silu(INFINITY) == INFINITY && ms_silu(-100.0f) > -1e-35f &&
	   ms_silu(-100.0f) <= 0.0f && ms_silu(100.0f) == 100.0f,
	   "ms_silu of NaN, +inf, -100 and 100: NaN, inf, within 1e-35 of 0, 100");
}

static void test_table(const struct ms_kernels *k, const struct ms_kernels *gen)
{
	memset(worst_twin, 0, sizeof(worst_twin));
	for (size_t ti = 0; ti < N_TYPES; ti++)
		test_dot_type(k, gen, types[ti]);
	if (k != gen)
		for (size_t ti = 0; ti < N_TYPES; ti++)
			diag("%s: %s worst twin difference %.3g of sum|w*x|", k->name,
			     ms_ggml_type_name(types[ti]), worst_twin[types[ti]]);
	test_act_edges(k, gen);
	test_act_bf16_edges(k, gen);
	test_k_saturated(k, gen);
	test_f32_helpers(k, gen);
	test_silu(k);
	for (size_t ti = 0; ti < N_TYPES; ti++) {
		test_matmul(k, types[ti]);
		test_x8(k, gen, types[ti]);
		test_x8_shapes(k, gen, types[ti]);
		test_matmul_x8(k, types[ti]);
	}
}

/* The fallback rule both the daemon and the tools use: min(asked, best), and what was asked. */
static void test_choose(void)
{
	enum ms_isa best = ms_cpu_best_isa(), want = MS_ISA_COUNT;
	const struct ms_kernels *k = NULL;

	ok(ms_kernels_choose(NULL, &k, &want) == 0 && k && k->isa == best && want == best,
	   "choose NULL: the best this CPU runs (%s)", ms_isa_name(best));
	ok(ms_kernels_choose("auto", &k, NULL) == 0 && k && k->isa == best, "choose auto: the best");
	for (int i = 0; i < MS_ISA_COUNT; i++) {
		const char *name = ms_isa_name((enum ms_isa)i);
		enum ms_isa fit = (enum ms_isa)i < best ? (enum ms_isa)i : best;

		ok(ms_kernels_choose(name, &k, &want) == 0 && k && k->isa == fit && want == (enum ms_isa)i,
		   "choose %s: %s table, %s asked", name, ms_isa_name(fit), name);
	}
	k = NULL;
	ok(ms_kernels_choose("sse9", &k, &want) == -EINVAL && !k, "choose rejects an unknown name");
	ok(ms_kernels_choose("generic", NULL, NULL) == -EINVAL, "choose needs somewhere to put the table");
}

int main(void)
{
	const struct ms_kernels *gen = ms_kernels_get(MS_ISA_GENERIC);
	static struct ms_kernels extra[TEST_EXTRA_MAX], gen_bf16;
	const char *why_not[TEST_EXTRA_MAX];
	int n_extra;

	test_api();
	test_choose();
	test_silu_ref();
	if (!gen)
		return done_testing();
	diag("best isa: %s%s", ms_isa_name(ms_cpu_best_isa()),
	     ms_cpu_use_bf16dp() ? ", with AVX512_BF16 (vdpbf16ps for BF16 weights)" :
	     ms_cpu_avx512_bf16() ? ", with AVX512_BF16 (vdpbf16ps tested, the float tiles chosen)" : "");
	/* the reference of the tables with BF16 activations */
	if (!ok(ms_kernels_overlay(&gen_bf16, gen, &ms_kernels_bf16dp_generic_part) == 0,
		"generic table with the vdpbf16ps twin over it"))
		return done_testing();
	/* the twin itself against the double-precision references */
	bf16_act = 1;
	test_table(&gen_bf16, &gen_bf16);
	bf16_act = 0;

	for (int i = 0; i < MS_ISA_COUNT; i++) {
		const struct ms_kernels *k = ms_kernels_get((enum ms_isa)i);

		if (!k) {
			skip("%s kernels: not supported by this CPU or build", ms_isa_name((enum ms_isa)i));
			continue;
		}
		diag("%s kernels: native", k->name);
		bf16_act = i == MS_ISA_AVX512 && ms_cpu_use_bf16dp();
		test_table(k, bf16_act ? &gen_bf16 : gen);
		bf16_act = 0;
	}
	/* the AVX-512 source's other tables: F16/BF16 tiles or vdpbf16ps this CPU would not pick, and SIMDe's build */
	n_extra = test_extra_tables(extra, why_not);
	for (int i = 0; i < TEST_EXTRA_MAX; i++)
		if (why_not[i])
			skip("%s", why_not[i]);
	for (int i = 0; i < n_extra; i++) {
		diag("%s kernels: %s", extra[i].name,
		     strstr(extra[i].name, "simde") ? "portable AVX-512 (SIMDe) on AVX2" : "native");
		bf16_act = strstr(extra[i].name, "bf16dp") != NULL;
		test_table(&extra[i], bf16_act ? &gen_bf16 : gen);
		bf16_act = 0;
	}
	return done_testing();
}
