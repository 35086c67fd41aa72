/* AVX2/F16C attention-side kernels: KV cache row conversion, scores, softmax numerators and value sums. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "quant.h"
#include "simd_avx2.h"

static void f32_to_f16_avx2(size_t n, const float *x, uint16_t *y)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);

		_mm_storeu_si128((__m128i *)(void *)(y + i), h);
	}
	for (; i < n; i++)
		y[i] = ms_f32_to_f16(x[i]);
}

/* Eight elements of a cached row as floats. */
static inline __m256 kv8(const void *row, uint32_t type, size_t i)
{
	if (type == GGML_TYPE_F16)
		return f16x8((const uint16_t *)row + i);
	return _mm256_loadu_ps((const float *)row + i);
}

/*
 * Two keys against up to four query heads per pass: each 8-element piece
 * of a query is loaded once for both keys and each converted key piece
 * serves four heads, 8 FMAs per 6 loads (the FMA units, not the loads,
 * set the pace). The type and head count are tested inside the loop;
 * instances with both constant measured within the noise (2-3%).
 */
#define SC_HEADS 4

static inline __attribute__((always_inline)) void scores_2keys(size_t hd, size_t nh, const float *q,
							       const void *k0, const void *k1, uint32_t type,
							       float scale, float *s, size_t s_stride)
{
	__m256 a0[SC_HEADS], a1[SC_HEADS];

	_Pragma("GCC unroll 4")
	for (size_t h = 0; h < SC_HEADS; h++)
		a0[h] = a1[h] = _mm256_setzero_ps();
	for (size_t i = 0; i < hd; i += 8) {
		const __m256 x0 = kv8(k0, type, i), x1 = kv8(k1, type, i);

		_Pragma("GCC unroll 4")
		for (size_t h = 0; h < SC_HEADS; h++) {
			if (h < nh) {
				__m256 qv = _mm256_loadu_ps(q + h * hd + i);

				/*
				 * One load for both keys: left to itself GCC folds the
				 * load into each FMA, 10 loads per 8 FMAs, and the load
				 * ports, not the FMA units, set the pace.
				 */
				__asm__("" : "+x"(qv));
				a0[h] = _mm256_fmadd_ps(qv, x0, a0[h]);
				a1[h] = _mm256_fmadd_ps(qv, x1, a1[h]);
			}
		}
	}
	_Pragma("GCC unroll 4")
	for (size_t h = 0; h < SC_HEADS; h++) {
		if (h < nh) {
			s[h * s_stride] = scale * hsum256(a0[h]);
			s[h * s_stride + 1] = scale * hsum256(a1[h]);
		}
	}
}

static void scores_avx2(size_t hd, size_t G, const float *q, const void *k, size_t kstride, uint32_t type,
			size_t nk, float scale, float *s, size_t s_stride)
{
	if (hd % 8) {
		ms_attn_generic.scores(hd, G, q, k, kstride, type, nk, scale, s, s_stride);
		return;
	}
	for (size_t t = 0; t < nk; t += 2) {
		const void *k0 = (const char *)k + t * kstride;

		att_prefetch_row(k, t, kstride, hd * (type == GGML_TYPE_F16 ? 2 : 4));
		att_prefetch_row(k, t + 1, kstride, hd * (type == GGML_TYPE_F16 ? 2 : 4));
		/* an odd last key is scored twice, the second result dropped */
		const void *k1 = t + 1 < nk ? (const char *)k0 + kstride : k0;

		for (size_t h = 0; h < G; h += SC_HEADS) {
			const size_t nh = G - h < SC_HEADS ? G - h : SC_HEADS;

			if (t + 1 < nk) {
				scores_2keys(hd, nh, q + h * hd, k0, k1, type, scale, s + h * s_stride + t, s_stride);
			} else {
				float tmp[2 * SC_HEADS];

				scores_2keys(hd, nh, q + h * hd, k0, k1, type, scale, tmp, 2);
				for (size_t j = 0; j < nh; j++)
					s[(h + j) * s_stride + t] = tmp[2 * j];
			}
		}
	}
}

/*
 * exp(x) for x <= 0 (x >= MS_EXP_MIN_ARG): x = n ln2 + r with |r| <= ln2/2
 * (ln2 in two parts, so r is exact to a few ulp), e^r by the degree-6
 * minimax polynomial of the Cephes expf, 2^n put into the exponent. Within
 * 2 ulp of expf over the range; NaN in, NaN out.
 */
static inline __m256 exp8(__m256 x)
{
	const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
					 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	__m256 p;
	__m256i e;

	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	p = _mm256_set1_ps(1.9875691500e-4f);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	/* n >= -126 here, so (n + 127) << 23 is a normal power of two */
	e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 exp8_clamped(__m256 x)
{
	/* below the range: 0; NaN compares false and stays in the computed lane */
	const __m256 low = _mm256_cmp_ps(x, _mm256_set1_ps(MS_EXP_MIN_ARG), _CMP_LT_OQ);
	const __m256 xs = _mm256_blendv_ps(x, _mm256_setzero_ps(), low);

	return _mm256_andnot_ps(low, exp8(xs));
}

static float exp_sum_avx2(size_t n, float mx, float *s)
{
	const __m256 vm = _mm256_set1_ps(mx);
	__m256 acc = _mm256_setzero_ps();
	size_t t = 0;

	for (; t + 8 <= n; t += 8) {
		const __m256 e = exp8_clamped(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));

		_mm256_storeu_ps(s + t, e);
		acc = _mm256_add_ps(acc, e);
	}
	if (t < n) {
		float buf[8];

		for (size_t j = 0; j < 8; j++)
			buf[j] = t + j < n ? s[t + j] - mx : -INFINITY;
		_mm256_storeu_ps(buf, exp8_clamped(_mm256_loadu_ps(buf)));
		for (size_t j = 0; t + j < n; j++)
			s[t + j] = buf[j];
		acc = _mm256_add_ps(acc, _mm256_loadu_ps(buf));
	}
	return hsum256(acc);
}

/*
 * 16 output elements of up to four heads stay in eight registers while
 * the block's value rows stream past: per row, two converted pieces and
 * one broadcast weight per head, 8 FMAs per 6 loads.
 */
static inline __attribute__((always_inline)) void accum_16(size_t nh, const float *p, size_t p_stride,
							   const void *v, size_t vstride, uint32_t type,
							   size_t nk, size_t i, size_t hd, int first,
							   float *out, size_t o_stride)
{
	__m256 a0[SC_HEADS], a1[SC_HEADS];

	_Pragma("GCC unroll 4")
	for (size_t h = 0; h < SC_HEADS; h++) {
		a0[h] = a1[h] = _mm256_setzero_ps();
		if (h < nh) {
			a0[h] = _mm256_loadu_ps(out + h * o_stride + i);
			a1[h] = _mm256_loadu_ps(out + h * o_stride + i + 8);
		}
	}
	for (size_t t = 0; t < nk; t++) {
		const void *vr = (const char *)v + t * vstride;
		const __m256 x0 = kv8(vr, type, i), x1 = kv8(vr, type, i + 8);

		if (i == 0 && first)
			att_prefetch_row(v, t, vstride, hd * (type == GGML_TYPE_F16 ? 2 : 4));

		_Pragma("GCC unroll 4")
		for (size_t h = 0; h < SC_HEADS; h++) {
			if (h < nh) {
				const __m256 w = _mm256_broadcast_ss(p + h * p_stride + t);

				a0[h] = _mm256_fmadd_ps(w, x0, a0[h]);
				a1[h] = _mm256_fmadd_ps(w, x1, a1[h]);
			}
		}
	}
	_Pragma("GCC unroll 4")
	for (size_t h = 0; h < SC_HEADS; h++) {
		if (h < nh) {
			_mm256_storeu_ps(out + h * o_stride + i, a0[h]);
			_mm256_storeu_ps(out + h * o_stride + i + 8, a1[h]);
		}
	}
}

static void accum_avx2(size_t hd, size_t G, const float *p, size_t p_stride, const void *v, size_t vstride,
		       uint32_t type, size_t nk, float *out, size_t o_stride)
{
	if (hd % 16) {
		ms_attn_generic.accum(hd, G, p, p_stride, v, vstride, type, nk, out, o_stride);
		return;
	}
	for (size_t h = 0; h < G; h += SC_HEADS) {
		const size_t nh = G - h < SC_HEADS ? G - h : SC_HEADS;

		for (size_t i = 0; i < hd; i += 16) {
			/*
			 * A constant head count takes the per-head tests out of
			 * the per-key loop: 10% less time in accum (one core, 256
			 * positions in cache; scores, tested the same way, gained
			 * nothing and stays generic).
			 */
			if (nh == SC_HEADS)
				accum_16(SC_HEADS, p + h * p_stride, p_stride, v, vstride, type, nk, i, hd, h == 0,
					 out + h * o_stride, o_stride);
			else
				accum_16(nh, p + h * p_stride, p_stride, v, vstride, type, nk, i, hd, h == 0,
					 out + h * o_stride, o_stride);
		}
	}
}

const struct ms_attn_kernels ms_attn_avx2 = {
	.name = "avx2",
	.f32_to_f16 = f32_to_f16_avx2,
	.scores = scores_avx2,
	.exp_sum = exp_sum_avx2,
	.accum = accum_avx2,
};
