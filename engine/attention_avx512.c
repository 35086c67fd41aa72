/*
 * AVX-512 attention-side kernels: KV row conversion, scores, softmax
 * numerators and value sums with 512-bit vectors. Built twice, as
 * engine/kernels_avx512.c is: natively (the avx512 level's table) and
 * with MS_SIMDE against SIMDe's portable AVX-512 (tests only), so the same
 * source is checked on a CPU without AVX-512.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef MS_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define MS_ATTN_AVX512 ms_attn_avx512_simde
#define MS_ATTN_AVX512_NAME "avx512-simde"
#else
#include <immintrin.h>
#define MS_ATTN_AVX512 ms_attn_avx512
#define MS_ATTN_AVX512_NAME "avx512"
#endif

#include "attention.h"
#include "quant.h"
#include "simd_avx2.h"

#ifdef MS_SIMDE
/*
 * SIMDe 0.7.4 has no 512-bit half conversions (vcvtph2ps/vcvtps2ph zmm):
 * two 256-bit ones stand in. A half converts to exactly one float and a
 * float rounds to nearest even either way, so the results are the same.
 */
static inline __m512 f16x16(const uint16_t *p)
{
	return _mm512_insertf32x8(_mm512_castps256_ps512(f16x8(p)), f16x8(p + 8), 1);
}

static inline void f16x16_store(const float *x, uint16_t *y)
{
	_mm_storeu_si128((__m128i *)(void *)y, _mm256_cvtps_ph(_mm256_loadu_ps(x), _MM_FROUND_TO_NEAREST_INT));
	_mm_storeu_si128((__m128i *)(void *)(y + 8),
			 _mm256_cvtps_ph(_mm256_loadu_ps(x + 8), _MM_FROUND_TO_NEAREST_INT));
}

/* SIMDe's vectors are not register operands. */
#define KEEP_IN_REG(v) ((void)0)
#else
static inline __m512 f16x16(const uint16_t *p)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

static inline void f16x16_store(const float *x, uint16_t *y)
{
	_mm256_storeu_si256((__m256i *)(void *)y,
			    _mm512_cvtps_ph(_mm512_loadu_ps(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/*
 * One load for all the keys of a tile: left to itself GCC folds the query
 * load into each FMA, five loads per four FMAs, and the load ports, not
 * the FMA units, set the pace (as in the AVX2 scores).
 */
#define KEEP_IN_REG(v) __asm__("" : "+v"(v))
#endif

static void f32_to_f16_avx512(size_t n, const float *x, uint16_t *y)
{
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		f16x16_store(x + i, y + i);
	for (; i < n; i++)
		y[i] = ms_f32_to_f16(x[i]);
}

/* Sixteen elements of a cached row from element i, as floats. */
static inline __m512 kv16(const void *row, uint32_t type, size_t i)
{
	if (type == GGML_TYPE_F16)
		return f16x16((const uint16_t *)row + i);
	return _mm512_loadu_ps((const float *)row + i);
}

/* Eight elements, the upper half zero: the last piece when hd % 16 == 8. */
static inline __m512 kv8z(const void *row, uint32_t type, size_t i)
{
	const __m256 h = type == GGML_TYPE_F16 ? f16x8((const uint16_t *)row + i)
					       : _mm256_loadu_ps((const float *)row + i);

	return _mm512_insertf32x8(_mm512_setzero_ps(), h, 0);
}

static inline float hsum512(__m512 v)
{
	const __m512i hi = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);

	return hsum256(_mm256_add_ps(_mm512_castps512_ps256(v),
				     _mm512_castps512_ps256(_mm512_permutexvar_ps(hi, v))));
}

/*
 * r[j] = the sum of v[j]'s sixteen lanes, for all sixteen j at once: 15
 * adds and 30 shuffles where sixteen separate horizontal sums take about
 * 130 instructions, which would cost as much as the FMAs of a 128-element
 * head. Pairs are folded within 128-bit lanes (unpack ps, then pd), then
 * lanes across vectors (two permutes).
 */
static inline __m512 sum16x16(const __m512 *v)
{
	const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
	const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
	__m512 t[8], u[4], w[2];

	/* t[j], each 128-bit lane: v[2j] in elements 0 and 2, v[2j + 1] in 1 and 3 */
	_Pragma("GCC unroll 8")
	for (int j = 0; j < 8; j++)
		t[j] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]),
				     _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]));
	/* u[j], each 128-bit lane: v[4j .. 4j + 3] in turn */
	_Pragma("GCC unroll 4")
	for (int j = 0; j < 4; j++) {
		const __m512d a = _mm512_castps_pd(t[2 * j]), b = _mm512_castps_pd(t[2 * j + 1]);

		u[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
				     _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
	}
	/* w[j]: lanes 0-1 partial sums of v[8j .. 8j + 3], lanes 2-3 of v[8j + 4 .. 8j + 7] */
	_Pragma("GCC unroll 2")
	for (int j = 0; j < 2; j++)
		w[j] = _mm512_add_ps(_mm512_permutex2var_ps(u[2 * j], lo, u[2 * j + 1]),
				     _mm512_permutex2var_ps(u[2 * j], hi, u[2 * j + 1]));
	return _mm512_add_ps(_mm512_permutex2var_ps(w[0], lo, w[1]), _mm512_permutex2var_ps(w[0], hi, w[1]));
}

/*
 * Four keys against up to four query heads per pass: sixteen 16-lane
 * accumulators (of 32 registers), so each 16-element query piece, loaded
 * once, feeds four FMAs, and each converted key piece four heads: 16 FMAs
 * per 8 loads. Accumulator j = 4h + key, so after sum16x16 the 128-bit
 * lane h holds head h's four scores in key order.
 */
#define SC_HEADS 4
#define SC_KEYS 4

static inline __attribute__((always_inline)) void scores_tile(size_t hd, size_t nh, const float *q,
							      const void *const *kr, uint32_t type, float scale,
							      size_t nkeys, float *s, size_t s_stride)
{
	__m512 a[SC_HEADS * SC_KEYS], sum;
	float r[SC_HEADS * SC_KEYS];
	size_t i = 0;

	_Pragma("GCC unroll 16")
	for (int j = 0; j < SC_HEADS * SC_KEYS; j++)
		a[j] = _mm512_setzero_ps();
	for (; i + 16 <= hd; i += 16) {
		__m512 x[SC_KEYS];

		_Pragma("GCC unroll 4")
		for (int k = 0; k < SC_KEYS; k++)
			x[k] = kv16(kr[k], type, i);
		_Pragma("GCC unroll 4")
		for (size_t h = 0; h < SC_HEADS; h++) {
			if (h < nh) {
				__m512 qv = _mm512_loadu_ps(q + h * hd + i);

				KEEP_IN_REG(qv);
				_Pragma("GCC unroll 4")
				for (int k = 0; k < SC_KEYS; k++)
					a[h * SC_KEYS + k] = _mm512_fmadd_ps(qv, x[k], a[h * SC_KEYS + k]);
			}
		}
	}
	if (i < hd) {
		__m512 x[SC_KEYS];

		_Pragma("GCC unroll 4")
		for (int k = 0; k < SC_KEYS; k++)
			x[k] = kv8z(kr[k], type, i);
		_Pragma("GCC unroll 4")
		for (size_t h = 0; h < SC_HEADS; h++) {
			if (h < nh) {
				const __m512 qv = _mm512_insertf32x8(_mm512_setzero_ps(), _mm256_loadu_ps(q + h * hd + i), 0);

				_Pragma("GCC unroll 4")
				for (int k = 0; k < SC_KEYS; k++)
					a[h * SC_KEYS + k] = _mm512_fmadd_ps(qv, x[k], a[h * SC_KEYS + k]);
			}
		}
	}
	sum = _mm512_mul_ps(sum16x16(a), _mm512_set1_ps(scale));
	if (nkeys == SC_KEYS) {
		/*
		 * Straight from the register: through r and memcpy the stores and
		 * reloads had about a quarter of the kernel's profile samples with
		 * a prompt chunk's tile of 32 query heads, and attention took 10%
		 * more CPU time.
		 */
		_mm_storeu_ps(s, _mm512_castps512_ps128(sum));
		if (nh > 1)
			_mm_storeu_ps(s + s_stride, _mm512_extractf32x4_ps(sum, 1));
		if (nh > 2)
			_mm_storeu_ps(s + 2 * s_stride, _mm512_extractf32x4_ps(sum, 2));
		if (nh > 3)
			_mm_storeu_ps(s + 3 * s_stride, _mm512_extractf32x4_ps(sum, 3));
		return;
	}
	_mm512_storeu_ps(r, sum);
	for (size_t h = 0; h < nh; h++)
		memcpy(s + h * s_stride, r + h * SC_KEYS, nkeys * sizeof(float));
}

static void scores_avx512(size_t hd, size_t G, const float *q, const void *k, size_t kstride, uint32_t type,
			  size_t nk, float scale, float *s, size_t s_stride)
{
	const size_t rb = hd * (type == GGML_TYPE_F16 ? 2 : 4);

	if (hd % 8) {
		ms_attn_generic.scores(hd, G, q, k, kstride, type, nk, scale, s, s_stride);
		return;
	}
	for (size_t t = 0; t < nk; t += SC_KEYS) {
		const size_t nkeys = nk - t < SC_KEYS ? nk - t : SC_KEYS;
		const void *kr[SC_KEYS];

		/* the last keys of an odd block are scored again, their results dropped */
		for (size_t j = 0; j < SC_KEYS; j++) {
			kr[j] = (const char *)k + (t + (j < nkeys ? j : nkeys - 1)) * kstride;
			att_prefetch_row(k, t + j, kstride, rb);
		}
		for (size_t h = 0; h < G; h += SC_HEADS) {
			const size_t nh = G - h < SC_HEADS ? G - h : SC_HEADS;

			/* a constant head count takes the per-head tests out of the loop */
			if (nh == SC_HEADS)
				scores_tile(hd, SC_HEADS, q + h * hd, kr, type, scale, nkeys, s + h * s_stride + t,
					    s_stride);
			else
				scores_tile(hd, nh, q + h * hd, kr, type, scale, nkeys, s + h * s_stride + t, s_stride);
		}
	}
}

/*
 * exp(x) for x <= 0 (x >= MS_EXP_MIN_ARG), as the AVX2 exp8: x = n ln2 + r
 * with ln2 in two parts, e^r by the Cephes expf polynomial, then scaled by
 * 2^n with vscalefps (one instruction for the AVX2 version's convert, add
 * and shift; both are one rounding of p * 2^n). Within 2 ulp of expf.
 */
static inline __m512 exp16(__m512 x)
{
	const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
					      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	__m512 p;

	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

static inline __m512 exp16_clamped(__m512 x)
{
	/* below the range: 0; NaN compares false and stays in the computed lane */
	const __mmask16 low = _mm512_cmp_ps_mask(x, _mm512_set1_ps(MS_EXP_MIN_ARG), _CMP_LT_OQ);

	return _mm512_maskz_mov_ps((__mmask16)~low, exp16(_mm512_mask_blend_ps(low, x, _mm512_setzero_ps())));
}

static float exp_sum_avx512(size_t n, float mx, float *s)
{
	const __m512 vm = _mm512_set1_ps(mx);
	__m512 acc = _mm512_setzero_ps();
	size_t t = 0;

	for (; t + 16 <= n; t += 16) {
		const __m512 e = exp16_clamped(_mm512_sub_ps(_mm512_loadu_ps(s + t), vm));

		_mm512_storeu_ps(s + t, e);
		acc = _mm512_add_ps(acc, e);
	}
	if (t < n) {
		float buf[16];

		for (size_t j = 0; j < 16; j++)
			buf[j] = t + j < n ? s[t + j] - mx : -INFINITY;
		_mm512_storeu_ps(buf, exp16_clamped(_mm512_loadu_ps(buf)));
		for (size_t j = 0; t + j < n; j++)
			s[t + j] = buf[j];
		acc = _mm512_add_ps(acc, _mm512_loadu_ps(buf));
	}
	return hsum512(acc);
}

/*
 * 64 output elements (four pieces) of up to four heads stay in sixteen
 * registers while the block's value rows stream past: per row, four
 * converted pieces and one broadcast weight per head, 16 FMAs per 8 loads.
 * np < 4 pieces serve a head dimension that is not a multiple of 64.
 */
#define AC_PIECES 4

static inline __attribute__((always_inline)) void accum_tile(size_t nh, size_t np, const float *p, size_t p_stride,
							     const void *v, size_t vstride, uint32_t type, size_t nk,
							     size_t i, size_t rb, int first, float *out, size_t o_stride)
{
	__m512 a[SC_HEADS][AC_PIECES];

	_Pragma("GCC unroll 4")
	for (size_t h = 0; h < SC_HEADS; h++) {
		_Pragma("GCC unroll 4")
		for (size_t z = 0; z < AC_PIECES; z++)
			a[h][z] = h < nh && z < np ? _mm512_loadu_ps(out + h * o_stride + i + 16 * z)
						   : _mm512_setzero_ps();
	}
	for (size_t t = 0; t < nk; t++) {
		const void *vr = (const char *)v + t * vstride;
		__m512 x[AC_PIECES];

		_Pragma("GCC unroll 4")
		for (size_t z = 0; z < AC_PIECES; z++)
			x[z] = z < np ? kv16(vr, type, i + 16 * z) : _mm512_setzero_ps();
		if (first)
			att_prefetch_row(v, t, vstride, rb);
		_Pragma("GCC unroll 4")
		for (size_t h = 0; h < SC_HEADS; h++) {
			if (h < nh) {
				const __m512 w = _mm512_set1_ps(p[h * p_stride + t]);

				_Pragma("GCC unroll 4")
				for (size_t z = 0; z < AC_PIECES; z++)
					if (z < np)
						a[h][z] = _mm512_fmadd_ps(w, x[z], a[h][z]);
			}
		}
	}
	_Pragma("GCC unroll 4")
	for (size_t h = 0; h < SC_HEADS; h++) {
		_Pragma("GCC unroll 4")
		for (size_t z = 0; z < AC_PIECES; z++)
			if (h < nh && z < np)
				_mm512_storeu_ps(out + h * o_stride + i + 16 * z, a[h][z]);
	}
}

/* The last eight elements when hd % 16 == 8, in 256-bit registers. */
static void accum_tail8(size_t nh, const float *p, size_t p_stride, const void *v, size_t vstride, uint32_t type,
			size_t nk, size_t i, float *out, size_t o_stride)
{
	__m256 a[SC_HEADS];

	for (size_t h = 0; h < nh; h++)
		a[h] = _mm256_loadu_ps(out + h * o_stride + i);
	for (size_t t = 0; t < nk; t++) {
		const void *vr = (const char *)v + t * vstride;
		const __m256 x = type == GGML_TYPE_F16 ? f16x8((const uint16_t *)vr + i)
						       : _mm256_loadu_ps((const float *)vr + i);

		for (size_t h = 0; h < nh; h++)
			a[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + h * p_stride + t), x, a[h]);
	}
	for (size_t h = 0; h < nh; h++)
		_mm256_storeu_ps(out + h * o_stride + i, a[h]);
}

static void accum_avx512(size_t hd, size_t G, const float *p, size_t p_stride, const void *v, size_t vstride,
			 uint32_t type, size_t nk, float *out, size_t o_stride)
{
	const size_t rb = hd * (type == GGML_TYPE_F16 ? 2 : 4);

	if (hd % 8) {
		ms_attn_generic.accum(hd, G, p, p_stride, v, vstride, type, nk, out, o_stride);
		return;
	}
	for (size_t h = 0; h < G; h += SC_HEADS) {
		const size_t nh = G - h < SC_HEADS ? G - h : SC_HEADS;
		const float *ph = p + h * p_stride;
		float *oh = out + h * o_stride;
		size_t i = 0;

		for (; i + 16 * AC_PIECES <= hd; i += 16 * AC_PIECES) {
			if (nh == SC_HEADS)
				accum_tile(SC_HEADS, AC_PIECES, ph, p_stride, v, vstride, type, nk, i, rb, h == 0 && i == 0,
					   oh, o_stride);
			else
				accum_tile(nh, AC_PIECES, ph, p_stride, v, vstride, type, nk, i, rb, h == 0 && i == 0,
					   oh, o_stride);
		}
		if (i + 16 <= hd) {
			accum_tile(nh, (hd - i) / 16, ph, p_stride, v, vstride, type, nk, i, rb, h == 0 && i == 0, oh,
				   o_stride);
			i += (hd - i) / 16 * 16;
		}
		if (i < hd)
			accum_tail8(nh, ph, p_stride, v, vstride, type, nk, i, oh, o_stride);
	}
}

const struct ms_attn_kernels MS_ATTN_AVX512 = {
	.name = MS_ATTN_AVX512_NAME,
	.f32_to_f16 = f32_to_f16_avx512,
	.scores = scores_avx512,
	.exp_sum = exp_sum_avx512,
	.accum = accum_avx512,
};
