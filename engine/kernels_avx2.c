/* AVX2 + FMA + F16C kernels (this file alone is built with -mavx2 -mfma -mf16c; reached only through run-time dispatch). */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#include "attention.h"
#include "kernels.h"
#include "quant.h"
#include "silu.h"
#include "simd_avx2.h"

/*
 * Weight formats that widen to f32 (F32, F16, BF16) share one loop: 32
 * elements per iteration in 4 accumulators (hides the 4-cycle FMA latency),
 * then 8 at a time, then a scalar tail so any n works.
 */
#define DOT_WIDE_BODY(LOAD8, LOAD1)						\
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();		\
	__m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();		\
	size_t i = 0;								\
	float tail = 0.0f;							\
										\
	for (; i + 32 <= n; i += 32) {						\
		acc0 = _mm256_fmadd_ps(LOAD8(i), _mm256_loadu_ps(x + i), acc0);	\
		acc1 = _mm256_fmadd_ps(LOAD8(i + 8), _mm256_loadu_ps(x + i + 8), acc1); \
		acc2 = _mm256_fmadd_ps(LOAD8(i + 16), _mm256_loadu_ps(x + i + 16), acc2); \
		acc3 = _mm256_fmadd_ps(LOAD8(i + 24), _mm256_loadu_ps(x + i + 24), acc3); \
	}									\
	for (; i + 8 <= n; i += 8)						\
		acc0 = _mm256_fmadd_ps(LOAD8(i), _mm256_loadu_ps(x + i), acc0);	\
	for (; i < n; i++)							\
		tail += LOAD1(i) * x[i];					\
	acc0 = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)); \
	return hsum256(acc0) + tail;

static float dot_f32_avx2(size_t n, const float *a, const float *x)
{
#define LOAD8(k) _mm256_loadu_ps(a + (k))
#define LOAD1(k) a[k]
	DOT_WIDE_BODY(LOAD8, LOAD1)
#undef LOAD8
#undef LOAD1
}

static float vec_dot_f32_avx2(size_t n, const void *w, const void *xv)
{
	return dot_f32_avx2(n, w, xv);
}

static float vec_dot_f16_avx2(size_t n, const void *w, const void *xv)
{
	const uint16_t *h = w;
	const float *x = xv;

#define LOAD8(k) f16x8(h + (k))
#define LOAD1(k) _cvtsh_ss(h[k])
	DOT_WIDE_BODY(LOAD8, LOAD1)
#undef LOAD8
#undef LOAD1
}

static inline float bf16x1(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static float vec_dot_bf16_avx2(size_t n, const void *w, const void *xv)
{
	const uint16_t *h = w;
	const float *x = xv;

#define LOAD8(k) bf16x8(h + (k))
#define LOAD1(k) bf16x1(h[k])
	DOT_WIDE_BODY(LOAD8, LOAD1)
#undef LOAD8
#undef LOAD1
}

#undef DOT_WIDE_BODY

/* ------------------------------------------------------------------------ */
/* Activation quantization (bit-identical to kernels_generic.c)              */
/* ------------------------------------------------------------------------ */

static inline float hmax256(__m256 v)
{
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

/* roundf() as quant.c's round_away does it: truncate, then step by the exact remainder. */
static inline __m256 round_away256(__m256 v)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	__m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
	__m256 fr = _mm256_sub_ps(v, t);
	__m256 up = _mm256_and_ps(_mm256_cmp_ps(fr, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one);
	__m256 dn = _mm256_and_ps(_mm256_cmp_ps(fr, _mm256_set1_ps(-0.5f), _CMP_LE_OQ), one);

	return _mm256_sub_ps(_mm256_add_ps(t, up), dn);
}

/* 32 integral floats in [-127, 127] -> 32 bytes in order. */
static inline __m256i pack_i8(__m256 a, __m256 b, __m256 c, __m256 d)
{
	__m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
	__m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(c), _mm256_cvtps_epi32(d));

	/* the packs work per 128-bit lane: undo the resulting 4-byte interleave */
	return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
					   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/*
 * Q8_0 activations. Blocks that quant.c sends down its clamping path
 * (non-finite values, or 1/d overflowing) go to ms_quantize_row itself; they
 * do not occur in a working model.
 */
static void act_q8_0_avx2(size_t n, const float *x, void *out)
{
	const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	const __m256 fmax = _mm256_set1_ps(FLT_MAX);
	struct block_q8_0 *y = out;

	for (size_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
		__m256 v[4], a[4], fin;
		float amax, d, id;

		for (int k = 0; k < 4; k++) {
			v[k] = _mm256_loadu_ps(x + 8 * k);
			a[k] = _mm256_and_ps(v[k], abs_mask);
		}
		/* ordered compare: false for NaN and inf */
		fin = _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(a[0], fmax, _CMP_LE_OQ),
						  _mm256_cmp_ps(a[1], fmax, _CMP_LE_OQ)),
				    _mm256_and_ps(_mm256_cmp_ps(a[2], fmax, _CMP_LE_OQ),
						  _mm256_cmp_ps(a[3], fmax, _CMP_LE_OQ)));
		amax = hmax256(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
		d = amax / 127.0f;
		id = d != 0.0f ? 1.0f / d : 0.0f;
		if (_mm256_movemask_ps(fin) != 0xff || !(id <= FLT_MAX)) {
			(void)ms_quantize_row(GGML_TYPE_Q8_0, x, &y[i], QK8_0);
			continue;
		}
		y[i].d = ms_f32_to_f16(d);
		{
			const __m256 vid = _mm256_set1_ps(id);

			_mm256_storeu_si256((__m256i *)(void *)y[i].qs,
					    pack_i8(round_away256(_mm256_mul_ps(v[0], vid)),
						    round_away256(_mm256_mul_ps(v[1], vid)),
						    round_away256(_mm256_mul_ps(v[2], vid)),
						    round_away256(_mm256_mul_ps(v[3], vid))));
		}
	}
}

/* Q8_K activations; see kernels.h for the format and kernels_generic.c for the scalar form. */
static void act_q8_K_avx2(size_t n, const float *x, void *out)
{
	const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	const __m256 fmax = _mm256_set1_ps(FLT_MAX);
	struct block_q8_K *y = out;

	for (size_t i = 0; i < n / QK_K; i++, x += QK_K) {
		__m256 vmax = _mm256_setzero_ps(), fin = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
		float amax, iscale;
		__m256 vs;

		for (int k = 0; k < QK_K; k += 8) {
			__m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask);

			fin = _mm256_and_ps(fin, _mm256_cmp_ps(a, fmax, _CMP_LE_OQ));
			vmax = _mm256_max_ps(vmax, a);
		}
		amax = hmax256(vmax);
		if (_mm256_movemask_ps(fin) != 0xff || !(amax >= MS_Q8K_MIN_AMAX)) {
			memset(&y[i], 0, sizeof(y[i]));
			y[i].d = _mm256_movemask_ps(fin) != 0xff ? NAN : 0.0f;
			continue;
		}
		iscale = 127.0f / amax;
		vs = _mm256_set1_ps(iscale);
		for (int k = 0; k < QK_K; k += 32) {
			__m256 r[4];

			for (int j = 0; j < 4; j++)
				r[j] = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * j), vs),
						       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			_mm256_storeu_si256((__m256i *)(void *)(y[i].qs + k), pack_i8(r[0], r[1], r[2], r[3]));
		}
		/* bsums: byte pairs, then word pairs, then the two 4-sums of each 16 */
		for (int k = 0; k < QK_K; k += 64) {
			const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
			__m256i q0 = _mm256_loadu_si256((const __m256i *)(const void *)(y[i].qs + k));
			__m256i q1 = _mm256_loadu_si256((const __m256i *)(const void *)(y[i].qs + k + 32));
			/* maddubs takes the unsigned operand first: 1 * q per byte, exact */
			__m256i s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q0), ones16);
			__m256i s1 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q1), ones16);
			/* s0 = 4-sums [a0 a1 a2 a3 | b0 b1 b2 b3] of 16-groups a, b; likewise s1 for c, d */
			__m256i h = _mm256_hadd_epi32(s0, s1);   /* [a01 a23 c01 c23 | b01 b23 d01 d23] */
			__m256i h2 = _mm256_hadd_epi32(h, h);    /* [a c a c | b d b d] */
			__m128i lo = _mm256_castsi256_si128(h2), hi = _mm256_extracti128_si256(h2, 1);

			y[i].bsums[k / 16 + 0] = (int16_t)_mm_extract_epi32(lo, 0);
			y[i].bsums[k / 16 + 1] = (int16_t)_mm_extract_epi32(hi, 0);
			y[i].bsums[k / 16 + 2] = (int16_t)_mm_extract_epi32(lo, 1);
			y[i].bsums[k / 16 + 3] = (int16_t)_mm_extract_epi32(hi, 1);
		}
		y[i].d = 1.0f / iscale;
	}
}

/* ------------------------------------------------------------------------ */
/* Q8_0 and Q4_0 weights x Q8_0 activations                                  */
/* ------------------------------------------------------------------------ */

/*
 * The blocks are processed four at a time so their scales cost little: the
 * four dw and four dx halves are gathered into two registers, converted
 * with one F16C instruction each and multiplied as a vector (the same
 * single f32 rounding per product as the scalar twin), and the four
 * blocks' int32 lane sums are reduced together (acc4). Per-block scalar
 * conversions, broadcasts and FMAs were a third of the Q4_0 kernel's time.
 */
static inline __m128i h4(uint16_t a, uint16_t b, uint16_t c, uint16_t d)
{
	/* assembled in a general register: pinsrw from memory loads the vector load pipes, which are busy */
	uint64_t v = a | (uint64_t)b << 16 | (uint64_t)c << 32 | (uint64_t)d << 48;

	return _mm_set_epi64x(0, (long long)v);
}

/* The four f16 scales of blocks i..i+3 of a Q8_0/Q4_0 row, as floats. */
#define D4(b, i) _mm_cvtph_ps(h4(b[i].d, b[i + 1].d, b[i + 2].d, b[i + 3].d))

/*
 * Accumulates four blocks' int32 lane sums s0..s3 scaled by d4 (their four
 * scales): two rounds of hadd leave [b0 b1 b2 b3] partial sums in each
 * 128-bit half, so the four blocks cost one convert and one FMA.
 */
static inline __m256 acc4(__m128 d4, __m256i s0, __m256i s1, __m256i s2, __m256i s3, __m256 acc)
{
	const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));

	return _mm256_fmadd_ps(_mm256_set_m128(d4, d4), _mm256_cvtepi32_ps(h), acc);
}

static inline __m256 scale2(uint16_t dw, uint16_t dx)
{
	return _mm256_set1_ps(_cvtsh_ss(dw) * _cvtsh_ss(dx));
}

static inline __m256i load256(const void *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

/*
 * Q8_0 x Q8_0: sum of w*y over 32 signed byte pairs as 8 int32 lanes.
 * maddubs needs one unsigned operand: |w| and y*sign(w). w may be -128
 * (|w| reads as 128 unsigned, correct); y never is (activations are within
 * +-127), so y*sign(w) cannot overflow, and a pair sum is at most
 * 2*128*127 < 2^15: no saturation. The weight half (w, |w|) is shared by
 * every token of a batched call.
 */
struct q8w {
	__m256i w, aw;
};

static inline struct q8w q8_0_w(const struct block_q8_0 *b)
{
	struct q8w r;

	r.w = load256(b->qs);
	r.aw = _mm256_sign_epi8(r.w, r.w);
	return r;
}

static inline __m256i q8_0_wsum(struct q8w w, const struct block_q8_0 *a)
{
	__m256i p = _mm256_maddubs_epi16(w.aw, _mm256_sign_epi8(load256(a->qs), w.w));

	return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static inline __m256i q8_0_sum(const struct block_q8_0 *b, const struct block_q8_0 *a)
{
	return q8_0_wsum(q8_0_w(b), a);
}

static float vec_dot_q8_0_q8_0_avx2(size_t n, const void *w, const void *x)
{
	const struct block_q8_0 *b = w;
	const struct block_q8_0 *a = x;
	size_t nb = n / QK8_0, i = 0;
	__m256 acc = _mm256_setzero_ps();

	for (; i + 4 <= nb; i += 4)
		acc = acc4(_mm_mul_ps(D4(b, i), D4(a, i)), q8_0_sum(b + i, a + i), q8_0_sum(b + i + 1, a + i + 1),
			   q8_0_sum(b + i + 2, a + i + 2), q8_0_sum(b + i + 3, a + i + 3), acc);
	for (; i < nb; i++)
		acc = _mm256_fmadd_ps(scale2(b[i].d, a[i].d), _mm256_cvtepi32_ps(q8_0_sum(b + i, a + i)), acc);
	return hsum256(acc);
}

/*
 * One Q4_0 block's codes u (0..15) as 32 unsigned bytes in element order:
 * the 16 nibble bytes are broadcast to both halves and the upper half
 * shifted by 4 (one variable shift), then masked. Against Q8_0
 * activations maddubs(u, y) is direct, and the -8 offset is subtracted as
 * maddubs(8, y) in int16 (|pairs| <= 3810 + 2032): cheaper than the sign
 * trick on signed codes.
 */
static inline __m256i q4_0_u(const struct block_q4_0 *b)
{
	return _mm256_and_si256(
		_mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)b->qs)),
				  _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
}

static inline __m256i q4_0_usum(__m256i u, const struct block_q8_0 *a)
{
	const __m256i y = load256(a->qs);
	__m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, y), _mm256_maddubs_epi16(_mm256_set1_epi8(8), y));

	return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static inline __m256i q4_0_sum(const struct block_q4_0 *b, const struct block_q8_0 *a)
{
	return q4_0_usum(q4_0_u(b), a);
}

static float vec_dot_q4_0_q8_0_avx2(size_t n, const void *w, const void *x)
{
	const struct block_q4_0 *b = w;
	const struct block_q8_0 *a = x;
	size_t nb = n / QK4_0, i = 0;
	__m256 acc = _mm256_setzero_ps();

	for (; i + 4 <= nb; i += 4)
		acc = acc4(_mm_mul_ps(D4(b, i), D4(a, i)), q4_0_sum(b + i, a + i), q4_0_sum(b + i + 1, a + i + 1),
			   q4_0_sum(b + i + 2, a + i + 2), q4_0_sum(b + i + 3, a + i + 3), acc);
	for (; i < nb; i++)
		acc = _mm256_fmadd_ps(scale2(b[i].d, a[i].d), _mm256_cvtepi32_ps(q4_0_sum(b + i, a + i)), acc);
	return hsum256(acc);
}

/*
 * Batched forms: one weight row against MS_DOT_TOKS activation rows. The
 * weight work (loads, unpacking, scale conversion) is done once for all
 * tokens; each token's float operations are exactly those of the single
 * dot above, in the same order, so the results are bit-identical to it.
 */
static void vec_dot_q8_0_q8_0_x4_avx2(size_t n, const void *w, const void *x, size_t xs, float *out, size_t os)
{
	const struct block_q8_0 *b = w;
	const struct block_q8_0 *a[MS_DOT_TOKS];
	size_t nb = n / QK8_0, i = 0;
	__m256 acc[MS_DOT_TOKS];

	for (int t = 0; t < MS_DOT_TOKS; t++) {
		a[t] = (const struct block_q8_0 *)(const void *)((const char *)x + t * xs);
		acc[t] = _mm256_setzero_ps();
	}
	for (; i + 4 <= nb; i += 4) {
		const __m128 dw = D4(b, i);
		const struct q8w w0 = q8_0_w(b + i), w1 = q8_0_w(b + i + 1);
		const struct q8w w2 = q8_0_w(b + i + 2), w3 = q8_0_w(b + i + 3);

		for (int t = 0; t < MS_DOT_TOKS; t++) {
			const struct block_q8_0 *at = a[t] + i;

			acc[t] = acc4(_mm_mul_ps(dw, D4(at, 0)), q8_0_wsum(w0, at), q8_0_wsum(w1, at + 1),
				      q8_0_wsum(w2, at + 2), q8_0_wsum(w3, at + 3), acc[t]);
		}
	}
	for (; i < nb; i++)
		for (int t = 0; t < MS_DOT_TOKS; t++)
			acc[t] = _mm256_fmadd_ps(scale2(b[i].d, a[t][i].d),
						 _mm256_cvtepi32_ps(q8_0_sum(b + i, a[t] + i)), acc[t]);
	for (int t = 0; t < MS_DOT_TOKS; t++)
		out[t * os] = hsum256(acc[t]);
}

static void vec_dot_q4_0_q8_0_x4_avx2(size_t n, const void *w, const void *x, size_t xs, float *out, size_t os)
{
	const struct block_q4_0 *b = w;
	const struct block_q8_0 *a[MS_DOT_TOKS];
	size_t nb = n / QK4_0, i = 0;
	__m256 acc[MS_DOT_TOKS];

	for (int t = 0; t < MS_DOT_TOKS; t++) {
		a[t] = (const struct block_q8_0 *)(const void *)((const char *)x + t * xs);
		acc[t] = _mm256_setzero_ps();
	}
	for (; i + 4 <= nb; i += 4) {
		const __m128 dw = D4(b, i);
		const __m256i u0 = q4_0_u(b + i), u1 = q4_0_u(b + i + 1);
		const __m256i u2 = q4_0_u(b + i + 2), u3 = q4_0_u(b + i + 3);

		for (int t = 0; t < MS_DOT_TOKS; t++) {
			const struct block_q8_0 *at = a[t] + i;

			acc[t] = acc4(_mm_mul_ps(dw, D4(at, 0)), q4_0_usum(u0, at), q4_0_usum(u1, at + 1),
				      q4_0_usum(u2, at + 2), q4_0_usum(u3, at + 3), acc[t]);
		}
	}
	for (; i < nb; i++)
		for (int t = 0; t < MS_DOT_TOKS; t++)
			acc[t] = _mm256_fmadd_ps(scale2(b[i].d, a[t][i].d),
						 _mm256_cvtepi32_ps(q4_0_sum(b + i, a[t] + i)), acc[t]);
	for (int t = 0; t < MS_DOT_TOKS; t++)
		out[t * os] = hsum256(acc[t]);
}

#undef D4

/* ------------------------------------------------------------------------ */
/* K-quants x Q8_K activations                                               */
/* ------------------------------------------------------------------------ */

/*
 * The 12 packed bytes of Q4_K/Q5_K scales -> 8 scales then 8 mins as
 * bytes, in vector registers (the scalar kmask form of this cost a fifth of
 * the kernel in general-register work and transfers). With A = bytes
 * [s0-3 s8-11 s4-7 s8-11] and B = [0 s0-3 0 s4-7]:
 *   sc0-3 = s0-3 & 63            sc4-7 = (s8-11 & 15) | (s0-3 >> 6) << 4
 *   m0-3  = s4-7 & 63            m4-7  = (s8-11 >> 4) | (s4-7 >> 6) << 4
 * The 16 bytes loaded run 4 past the scales into qs: never past the block.
 */
static inline __m128i k4_scales_mins(const uint8_t *s12)
{
	const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s12);
	const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
	const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
	const __m128i m1 = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
	const __m128i m2 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
	/* 16-bit shifts: the bits they carry across bytes are masked off */
	const __m128i lo = _mm_or_si128(_mm_and_si128(a, m1), _mm_and_si128(_mm_srli_epi16(a, 4), m2));

	return _mm_or_si128(lo, _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30)));
}

/* The eight scales of k4_scales_mins' result as 16-bit words, in both lanes. */
static inline __m256i k4_scales(__m128i sm)
{
	return _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(sm, sm));
}

/*
 * A token's min term sum_j m_j * (bsums[2j] + bsums[2j+1]) as 8 int32
 * lanes: the mins are widened with each one repeated for its two bsums, so
 * one madd does it. The batched dots unpack sm once for all their tokens.
 */
static inline __m256i k4_msum(__m128i sm, const int16_t *bsums)
{
	const __m128i mdup = _mm_shuffle_epi8(sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));

	return _mm256_madd_epi16(_mm256_cvtepu8_epi16(mdup), load256(bsums));
}

/* Broadcast 16-bit lane j (0..7) of a 128-bit half, duplicated in both halves. */
static inline __m256i bcast_w16(__m256i v, int j)
{
	return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)((2 * j) | ((2 * j + 1) << 8))));
}

/* d * dx and -dmin * dx from the adjacent f16 pair at the block start: one load, one conversion. */
static inline __m128 k4_d_dmin(const void *blk, float dx)
{
	uint32_t h;

	memcpy(&h, blk, sizeof(h));
	return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)), _mm_setr_ps(dx, -dx, 0.0f, 0.0f));
}

/*
 * A Q4_K/Q5_K block's float step for one token, the same in the single
 * and the batched dots (so they agree bit for bit): acc += d*dx * sumi,
 * accm += -dmin*dx * msum.
 */
static inline void k4_accumulate(const void *blk, float dx, __m256i sumi, __m256i msum, __m256 *acc,
				 __m256 *accm)
{
	const __m128 dd = k4_d_dmin(blk, dx);

	*acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(sumi), *acc);
	*accm = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(_mm256_castps128_ps256(dd), _mm256_set1_epi32(1)),
				_mm256_cvtepi32_ps(msum), *accm);
}

/*
 * Sub-blocks 2j and 2j+1 of a Q4_K/Q5_K block (codes lo, hi as unsigned
 * bytes, at most 31) against their 64 activations: int32 lanes of
 * sc_2j * sum(lo*y) + sc_2j+1 * sum(hi*y). Pair sums of maddubs are at
 * most 2*31*127, and times a 6-bit scale well inside int32.
 */
static inline __m256i k4_pair(__m256i lo, __m256i hi, const int8_t *q8, __m256i sc, int j)
{
	__m256i pl = _mm256_madd_epi16(bcast_w16(sc, 2 * j), _mm256_maddubs_epi16(lo, load256(q8)));
	__m256i ph = _mm256_madd_epi16(bcast_w16(sc, 2 * j + 1), _mm256_maddubs_epi16(hi, load256(q8 + 32)));

	return _mm256_add_epi32(pl, ph);
}

/* Codes of sub-blocks 2j (lo) and 2j+1 (hi) of a Q4_K block. */
static inline void q4_K_codes(const uint8_t *q4, int j, __m256i *lo, __m256i *hi)
{
	const __m256i m4 = _mm256_set1_epi8(15);
	const __m256i bits = load256(q4 + 32 * j);

	*lo = _mm256_and_si256(bits, m4);
	*hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
}

static inline __m256i q4_K_pair(const uint8_t *q4, const int8_t *q8, __m256i sc, int j)
{
	__m256i lo, hi;

	q4_K_codes(q4, j, &lo, &hi);
	return k4_pair(lo, hi, q8 + 64 * j, sc, j);
}

static inline float hsum128(__m128 s)
{
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/*
 * Two accumulators: d*sumi and -dmin*msum, both in float; the integer
 * sums are exact, as in the generic twin.
 */
static float vec_dot_q4_K_q8_K_avx2(size_t n, const void *w, const void *x)
{
	const struct block_q4_K *b = w;
	const struct block_q8_K *a = x;
	__m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();

	for (size_t i = 0; i < n / QK_K; i++) {
		const __m128i sm = k4_scales_mins(b[i].scales);
		const __m256i sc = k4_scales(sm);
		/* written out: the scale shuffles need constant controls */
		const __m256i sumi = _mm256_add_epi32(_mm256_add_epi32(q4_K_pair(b[i].qs, a[i].qs, sc, 0),
								       q4_K_pair(b[i].qs, a[i].qs, sc, 1)),
						      _mm256_add_epi32(q4_K_pair(b[i].qs, a[i].qs, sc, 2),
								       q4_K_pair(b[i].qs, a[i].qs, sc, 3)));

		k4_accumulate(&b[i], a[i].d, sumi, k4_msum(sm, a[i].bsums), &acc, &accm);
	}
	return hsum256(_mm256_add_ps(acc, accm));
}

/*
 * Q4_K plus the fifth bit: bit 2j of qh[l] belongs to element l of
 * sub-block 2j, bit 2j+1 to sub-block 2j+1; both are moved to bit 4.
 * 16-bit shifts are safe: the bits they carry across bytes are masked off.
 */
static inline void q5_K_codes(const uint8_t *q5, __m256i hb, int j, __m256i *lo, __m256i *hi)
{
	const __m256i b4 = _mm256_set1_epi8(16);
	__m256i h0, h1;

	q4_K_codes(q5, j, lo, hi);
	switch (j) {	/* constant after inlining: shift counts must be immediates */
	case 0:
		h0 = _mm256_slli_epi16(hb, 4);
		h1 = _mm256_slli_epi16(hb, 3);
		break;
	case 1:
		h0 = _mm256_slli_epi16(hb, 2);
		h1 = _mm256_slli_epi16(hb, 1);
		break;
	case 2:
		h0 = hb;
		h1 = _mm256_srli_epi16(hb, 1);
		break;
	default:
		h0 = _mm256_srli_epi16(hb, 2);
		h1 = _mm256_srli_epi16(hb, 3);
		break;
	}
	*lo = _mm256_or_si256(*lo, _mm256_and_si256(h0, b4));
	*hi = _mm256_or_si256(*hi, _mm256_and_si256(h1, b4));
}

static inline __m256i q5_K_pair(const uint8_t *q5, __m256i hb, const int8_t *q8, __m256i sc, int j)
{
	__m256i lo, hi;

	q5_K_codes(q5, hb, j, &lo, &hi);
	return k4_pair(lo, hi, q8 + 64 * j, sc, j);
}

static float vec_dot_q5_K_q8_K_avx2(size_t n, const void *w, const void *x)
{
	const struct block_q5_K *b = w;
	const struct block_q8_K *a = x;
	__m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();

	for (size_t i = 0; i < n / QK_K; i++) {
		const __m128i sm = k4_scales_mins(b[i].scales);
		const __m256i sc = k4_scales(sm);
		const __m256i hb = load256(b[i].qh);
		const __m256i sumi = _mm256_add_epi32(_mm256_add_epi32(q5_K_pair(b[i].qs, hb, a[i].qs, sc, 0),
								       q5_K_pair(b[i].qs, hb, a[i].qs, sc, 1)),
						      _mm256_add_epi32(q5_K_pair(b[i].qs, hb, a[i].qs, sc, 2),
								       q5_K_pair(b[i].qs, hb, a[i].qs, sc, 3)));

		k4_accumulate(&b[i], a[i].d, sumi, k4_msum(sm, a[i].bsums), &acc, &accm);
	}
	return hsum256(_mm256_add_ps(acc, accm));
}

/*
 * Shuffle control for Q6_K: word 2k of a lane in the low lane, word 2k+1
 * in the high one, each repeated 8 times.
 */
static inline __m256i q6_scale_ctl(int k)
{
	const short lo = (short)((4 * k) | ((4 * k + 1) << 8));
	const short hi = (short)((4 * k + 2) | ((4 * k + 3) << 8));

	return _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
}

/*
 * One Q6_K half (128 codes): the four 32-code groups as unsigned bytes
 * 0..63, and their scale words (group k: sub-block 8h+2k in the low lane,
 * 8h+2k+1 in the high one). A struct rather than arrays so that, inlined,
 * it lives in registers.
 */
struct q6h {
	__m256i q0, q1, q2, q3, s0, s1, s2, s3;
};

/* sch: the half's 8 scales as words in both 128-bit lanes. */
static inline struct q6h q6_K_unpack(const uint8_t *ql, const uint8_t *qh, __m256i sch)
{
	const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3 << 4);
	const __m256i l0 = load256(ql), l1 = load256(ql + 32), hb = load256(qh);
	struct q6h r;

	r.q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m3));
	r.q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m3));
	r.q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m3));
	r.q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
			       _mm256_and_si256(_mm256_srli_epi16(hb, 2), m3));
	r.s0 = _mm256_shuffle_epi8(sch, q6_scale_ctl(0));
	r.s1 = _mm256_shuffle_epi8(sch, q6_scale_ctl(1));
	r.s2 = _mm256_shuffle_epi8(sch, q6_scale_ctl(2));
	r.s3 = _mm256_shuffle_epi8(sch, q6_scale_ctl(3));
	return r;
}

/* A half's 128 codes against their activations, scaled, as int32 lanes. */
static inline __m256i q6_K_half(struct q6h h, const int8_t *q8)
{
	__m256i p0 = _mm256_madd_epi16(h.s0, _mm256_maddubs_epi16(h.q0, load256(q8)));
	__m256i p1 = _mm256_madd_epi16(h.s1, _mm256_maddubs_epi16(h.q1, load256(q8 + 32)));
	__m256i p2 = _mm256_madd_epi16(h.s2, _mm256_maddubs_epi16(h.q2, load256(q8 + 64)));
	__m256i p3 = _mm256_madd_epi16(h.s3, _mm256_maddubs_epi16(h.q3, load256(q8 + 96)));

	return _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3));
}

/* -32 * sum_k sc_k * bsums_k as 8 int32 lanes: the code offset, from the activation sums. */
static inline __m256i q6_K_bias(__m256i sc16, const int16_t *bsums)
{
	return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(bsums)), 5));
}

/*
 * Q6_K: the unsigned 6-bit q (0..63) goes straight into maddubs (pair
 * sums at most 2*63*127), and the -32 offset comes out once per block as
 * 32 * sum_k sc_k * bsums_k.
 */
static float vec_dot_q6_K_q8_K_avx2(size_t n, const void *w, const void *x)
{
	const struct block_q6_K *b = w;
	const struct block_q8_K *a = x;
	__m256 acc = _mm256_setzero_ps();

	for (size_t i = 0; i < n / QK_K; i++) {
		const float d = a[i].d * _cvtsh_ss(b[i].d);
		const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)b[i].scales));
		__m256i sumi = q6_K_bias(sc16, a[i].bsums);

		sumi = _mm256_add_epi32(sumi, q6_K_half(q6_K_unpack(b[i].ql, b[i].qh,
								    _mm256_permute2x128_si256(sc16, sc16, 0x00)),
							a[i].qs));
		sumi = _mm256_add_epi32(sumi, q6_K_half(q6_K_unpack(b[i].ql + 64, b[i].qh + 32,
								    _mm256_permute2x128_si256(sc16, sc16, 0x11)),
							a[i].qs + 128));
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
	}
	return hsum256(acc);
}

/*
 * Batched K-quant dots (see the Q8_0/Q4_0 ones): codes, scales and mins
 * are unpacked once per block for all tokens; each token's float work is
 * that of the single dot (its integer sums are exact whatever their
 * order), so the results are bit-identical to it.
 */
/* Sub-blocks 2j, 2j+1 of one K-quant block for every token of a batched call. */
static inline void q4_K_step_x4(const uint8_t *q4, const struct block_q8_K *const *a, size_t i, __m256i sc, int j,
				__m256i *sumi)
{
	__m256i lo, hi;

	q4_K_codes(q4, j, &lo, &hi);
	for (int t = 0; t < MS_DOT_TOKS; t++)
		sumi[t] = _mm256_add_epi32(sumi[t], k4_pair(lo, hi, a[t][i].qs + 64 * j, sc, j));
}

static inline void q5_K_step_x4(const uint8_t *q5, __m256i hb, const struct block_q8_K *const *a, size_t i,
				__m256i sc, int j, __m256i *sumi)
{
	__m256i lo, hi;

	q5_K_codes(q5, hb, j, &lo, &hi);
	for (int t = 0; t < MS_DOT_TOKS; t++)
		sumi[t] = _mm256_add_epi32(sumi[t], k4_pair(lo, hi, a[t][i].qs + 64 * j, sc, j));
}

static void vec_dot_q4_K_q8_K_x4_avx2(size_t n, const void *w, const void *x, size_t xs, float *out, size_t os)
{
	const struct block_q4_K *b = w;
	const struct block_q8_K *a[MS_DOT_TOKS];
	__m256 acc[MS_DOT_TOKS], accm[MS_DOT_TOKS];

	for (int t = 0; t < MS_DOT_TOKS; t++) {
		a[t] = (const struct block_q8_K *)(const void *)((const char *)x + t * xs);
		acc[t] = accm[t] = _mm256_setzero_ps();
	}
	for (size_t i = 0; i < n / QK_K; i++) {
		const __m128i sm = k4_scales_mins(b[i].scales);
		const __m256i sc = k4_scales(sm);
		__m256i sumi[MS_DOT_TOKS];

		for (int t = 0; t < MS_DOT_TOKS; t++)
			sumi[t] = _mm256_setzero_si256();
		/* written out: the scale shuffles need constant controls */
		q4_K_step_x4(b[i].qs, a, i, sc, 0, sumi);
		q4_K_step_x4(b[i].qs, a, i, sc, 1, sumi);
		q4_K_step_x4(b[i].qs, a, i, sc, 2, sumi);
		q4_K_step_x4(b[i].qs, a, i, sc, 3, sumi);
		for (int t = 0; t < MS_DOT_TOKS; t++)
			k4_accumulate(&b[i], a[t][i].d, sumi[t], k4_msum(sm, a[t][i].bsums), &acc[t], &accm[t]);
	}
	for (int t = 0; t < MS_DOT_TOKS; t++)
		out[t * os] = hsum256(_mm256_add_ps(acc[t], accm[t]));
}

static void vec_dot_q5_K_q8_K_x4_avx2(size_t n, const void *w, const void *x, size_t xs, float *out, size_t os)
{
	const struct block_q5_K *b = w;
	const struct block_q8_K *a[MS_DOT_TOKS];
	__m256 acc[MS_DOT_TOKS], accm[MS_DOT_TOKS];

	for (int t = 0; t < MS_DOT_TOKS; t++) {
		a[t] = (const struct block_q8_K *)(const void *)((const char *)x + t * xs);
		acc[t] = accm[t] = _mm256_setzero_ps();
	}
	for (size_t i = 0; i < n / QK_K; i++) {
		const __m128i sm = k4_scales_mins(b[i].scales);
		const __m256i sc = k4_scales(sm);
		const __m256i hb = load256(b[i].qh);
		__m256i sumi[MS_DOT_TOKS];

		for (int t = 0; t < MS_DOT_TOKS; t++)
			sumi[t] = _mm256_setzero_si256();
		q5_K_step_x4(b[i].qs, hb, a, i, sc, 0, sumi);
		q5_K_step_x4(b[i].qs, hb, a, i, sc, 1, sumi);
		q5_K_step_x4(b[i].qs, hb, a, i, sc, 2, sumi);
		q5_K_step_x4(b[i].qs, hb, a, i, sc, 3, sumi);
		for (int t = 0; t < MS_DOT_TOKS; t++)
			k4_accumulate(&b[i], a[t][i].d, sumi[t], k4_msum(sm, a[t][i].bsums), &acc[t], &accm[t]);
	}
	for (int t = 0; t < MS_DOT_TOKS; t++)
		out[t * os] = hsum256(_mm256_add_ps(acc[t], accm[t]));
}

static void vec_dot_q6_K_q8_K_x4_avx2(size_t n, const void *w, const void *x, size_t xs, float *out, size_t os)
{
	const struct block_q6_K *b = w;
	const struct block_q8_K *a[MS_DOT_TOKS];
	__m256 acc[MS_DOT_TOKS];

	for (int t = 0; t < MS_DOT_TOKS; t++) {
		a[t] = (const struct block_q8_K *)(const void *)((const char *)x + t * xs);
		acc[t] = _mm256_setzero_ps();
	}
	for (size_t i = 0; i < n / QK_K; i++) {
		const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)b[i].scales));
		const float dw = _cvtsh_ss(b[i].d);
		__m256i sumi[MS_DOT_TOKS];

		for (int t = 0; t < MS_DOT_TOKS; t++)
			sumi[t] = q6_K_bias(sc16, a[t][i].bsums);
		const struct q6h h0 = q6_K_unpack(b[i].ql, b[i].qh, _mm256_permute2x128_si256(sc16, sc16, 0x00));
		const struct q6h h1 = q6_K_unpack(b[i].ql + 64, b[i].qh + 32, _mm256_permute2x128_si256(sc16, sc16, 0x11));

		for (int t = 0; t < MS_DOT_TOKS; t++)
			sumi[t] = _mm256_add_epi32(_mm256_add_epi32(sumi[t], q6_K_half(h0, a[t][i].qs)),
						   q6_K_half(h1, a[t][i].qs + 128));
		for (int t = 0; t < MS_DOT_TOKS; t++)
			acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t][i].d * dw), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
	}
	for (int t = 0; t < MS_DOT_TOKS; t++)
		out[t * os] = hsum256(acc[t]);
}

/* ------------------------------------------------------------------------ */
/* Interleaved groups of 8 rows (MS_LAYOUT_X8) x Q8_0 activations with sums  */
/* ------------------------------------------------------------------------ */

/*
 * Register tile: X8_NT tokens share each decoded weight chunk, so the
 * weight work is paid once per 4 tokens in prefill. Per token the tile
 * holds an int16 or int32 partial sum and a float accumulator: with the
 * decoded chunk, its two halves and the constants that is 13-15 of the
 * 16 ymm registers; a fifth token would spill.
 */
#define X8_NT 4

/*
 * Keeps an accumulator a real register value at this point. Without it
 * GCC re-associates the integer sums of a whole block (every token's
 * products become one balanced tree), which needs 32 live vectors and
 * spills them: the prefill tiles ran at half speed.
 */
#define PIN(v) __asm__("" : "+x"(v))

static inline __m256i bcast4(const int8_t *p)
{
	int32_t v;

	memcpy(&v, p, sizeof(v));
	return _mm256_set1_epi32(v);
}

/*
 * Q4_0 codes u (0..15) against activations y: maddubs(u, y) pairs are at
 * most 2*15*127 = 3810, so a block's eight of them add up in int16
 * (<= 30480) before a single widening madd; the -8 offset is taken off
 * the int32 lanes as 8 * (sum of y), which the activation carries.
 */
static inline __attribute__((always_inline)) void q4_0x8_tile(size_t nb, const struct block_q4_0x8 *b,
							      const void *x, size_t xs, const int nt,
							      float *out, size_t os)
{
	const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
	X8_TILE_BEGIN(struct ms_block_q8s, X8_NT)
	for (size_t i = 0; i < nb; i++) {
		const __m256 dw = f16x8(b[i].d);
		__m256i p[X8_NT];

		prefetch_block(b, i, sizeof(*b));

		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			p[t] = _mm256_setzero_si256();
		_Pragma("GCC unroll 8")
		for (int c = 0; c < 4; c++) {
			const __m256i v = load256(b[i].qs + 32 * c);
			const __m256i lo = _mm256_and_si256(v, m4);
			const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);

			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++) {
				p[t] = _mm256_add_epi16(p[t], _mm256_maddubs_epi16(lo, bcast4(a[t][i].qs + 4 * c)));
				PIN(p[t]);
				p[t] = _mm256_add_epi16(p[t], _mm256_maddubs_epi16(hi, bcast4(a[t][i].qs + 16 + 4 * c)));
				PIN(p[t]);
			}
		}
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++) {
			/* broadcast from memory, then shift: 8 * s in a general register took 4 instructions */
			const __m256i s8 = _mm256_slli_epi32(_mm256_set1_epi32(a[t][i].s), 3);
			const __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(p[t], ones), s8);

			acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)), _mm256_cvtepi32_ps(s), acc[t]);
		}
	}
	x8_tile_store(acc, nt, out, os);
}

/*
 * Q8_0 codes: maddubs needs an unsigned operand, so |w| against y * sign(w)
 * (pairs at most 2*128*127 = 32512: one chunk per int16, then madd).
 */
static inline __attribute__((always_inline)) void q8_0x8_tile(size_t nb, const struct block_q8_0x8 *b,
							      const void *x, size_t xs, const int nt,
							      float *out, size_t os)
{
	const __m256i ones = _mm256_set1_epi16(1);
	X8_TILE_BEGIN(struct ms_block_q8s, X8_NT)
	for (size_t i = 0; i < nb; i++) {
		const __m256 dw = f16x8(b[i].d);
		__m256i s[X8_NT];

		prefetch_block(b, i, sizeof(*b));

		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			s[t] = _mm256_setzero_si256();
		_Pragma("GCC unroll 8")
		for (int c = 0; c < 8; c++) {
			const __m256i v = load256(b[i].qs + 32 * c);
			const __m256i av = _mm256_sign_epi8(v, v);

			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++) {
				s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(
					av, _mm256_sign_epi8(bcast4(a[t][i].qs + 4 * c), v)), ones));
				PIN(s[t]);
			}
		}
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)), _mm256_cvtepi32_ps(s[t]), acc[t]);
	}
	x8_tile_store(acc, nt, out, os);
}

/*
 * Q4_K. The interleaved scale bytes put row r's packed 6-bit scales and
 * mins in dword r of three vectors, so the unpacking is done for the
 * eight rows at once; a byte shuffle then makes, for each sub-block j,
 * the vector whose dword r is (sc, sc) as int16, which a madd applies to
 * the int16 code sums, and for each pair of sub-blocks the (m, m') pairs
 * that a madd with the activation's 32-sums turns into the min term.
 * Sums: a sub-block's eight maddubs per row lane pair stay below 30480,
 * sc * that below 2^22, all eight sub-blocks below 2^25.
 */
/* Tokens per tile: four codes sums and an accumulator per token; 3 would spill. */
#define K_NT 2

/*
 * Bit s of each byte of v moved to bit 4, the rest cleared: one 16-bit
 * shift serves both bytes of a lane since the wanted bit never crosses
 * into the other byte.
 */
static inline __attribute__((always_inline)) __m256i bit_to_4(__m256i v, const int s)
{
	const __m256i k10 = _mm256_set1_epi8(0x10);

	if (s < 4)
		return _mm256_and_si256(_mm256_slli_epi16(v, 4 - s), k10);
	if (s > 4)
		return _mm256_and_si256(_mm256_srli_epi16(v, s - 4), k10);
	return _mm256_and_si256(v, k10);
}

/*
 * Q4_K and Q5_K (q5: Q4_K's fields and codes, with a fifth code bit per
 * element from qh between the scales and the codes). Q5_K codes reach 31,
 * so maddubs pairs reach 7874 and only four chunks add up in int16 before
 * the madd with the scale (Q4_K: all eight).
 */
_Static_assert(offsetof(struct block_q4_Kx8, scales) == 4 * MS_X8 && offsetof(struct block_q4_Kx8, qs) ==
	       4 * MS_X8 + MS_X8 * K_SCALE_SIZE, "k45x8_tile's Q4_K offsets");
_Static_assert(offsetof(struct block_q5_Kx8, qh) == 4 * MS_X8 + MS_X8 * K_SCALE_SIZE &&
	       offsetof(struct block_q5_Kx8, qs) == 4 * MS_X8 + MS_X8 * K_SCALE_SIZE + MS_X8 * QK_K / 8,
	       "k45x8_tile's Q5_K offsets");

static inline __attribute__((always_inline)) void k45x8_tile(size_t nb, const uint8_t *b, const size_t bb,
							     const int q5, const void *x, size_t xs, const int nt,
							     float *out, size_t os)
{
	const __m256i m4 = _mm256_set1_epi8(15);
	/* field offsets, as in struct block_q4_Kx8 / block_q5_Kx8 */
	const size_t o_dmin = 2 * MS_X8, o_sc = 4 * MS_X8, o_qh = o_sc + MS_X8 * K_SCALE_SIZE;
	const size_t o_qs = o_qh + (q5 ? MS_X8 * QK_K / 8 : 0);
	const int flush = q5 ? 4 : 8;
	X8_TILE_BEGIN(struct block_q8_K, X8_NT)
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *g = b + i * bb;

		prefetch_block(b, i, bb);
		const struct k45x8_sm sm = k45x8_scales(g + o_sc);
		const __m256i sclo = sm.sclo, schi = sm.schi;
		__m256i isum[X8_NT];

		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			isum[t] = _mm256_setzero_si256();
		_Pragma("GCC unroll 4")
		for (int h = 0; h < 4; h++) {
			/* sub-blocks 2h (low nibbles) and 2h + 1 (high nibbles) */
			const __m256i sc0 = _mm256_shuffle_epi8(h < 2 ? sclo : schi, dword_pick(2 * h % 4, 2 * h % 4));
			const __m256i sc1 = _mm256_shuffle_epi8(h < 2 ? sclo : schi,
								dword_pick(2 * h % 4 + 1, 2 * h % 4 + 1));
			__m256i plo[X8_NT], phi[X8_NT];

			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++)
				plo[t] = phi[t] = _mm256_setzero_si256();
			_Pragma("GCC unroll 8")
			for (int c = 0; c < 8; c++) {
				const __m256i v = load256(g + o_qs + 32 * (8 * h + c));
				__m256i lo = _mm256_and_si256(v, m4);
				__m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);

				if (q5) {
					/* qh byte l holds bit j of element 32j + l: bits 2h, 2h + 1 here */
					const __m256i qh = load256(g + o_qh + 32 * c);

					lo = _mm256_or_si256(lo, bit_to_4(qh, 2 * h));
					hi = _mm256_or_si256(hi, bit_to_4(qh, 2 * h + 1));
				}

				_Pragma("GCC unroll 8")
				for (int t = 0; t < nt; t++) {
					const int8_t *y = a[t][i].qs + 64 * h + 4 * c;

					plo[t] = _mm256_add_epi16(plo[t], _mm256_maddubs_epi16(lo, bcast4(y)));
					PIN(plo[t]);
					phi[t] = _mm256_add_epi16(phi[t], _mm256_maddubs_epi16(hi, bcast4(y + 32)));
					PIN(phi[t]);
				}
				if ((c + 1) % flush == 0) {
					_Pragma("GCC unroll 8")
					for (int t = 0; t < nt; t++) {
						isum[t] = _mm256_add_epi32(isum[t],
									   _mm256_add_epi32(_mm256_madd_epi16(plo[t], sc0),
											    _mm256_madd_epi16(phi[t], sc1)));
						plo[t] = phi[t] = _mm256_setzero_si256();
					}
				}
			}
		}
		{
			const __m256 dw = f16x8(g);
			const __m256 dm = f16x8(g + o_dmin);

			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++) {
				const __m256i msum = k45x8_msum(&sm, a[t][i].bsums);

				acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)),
							 _mm256_cvtepi32_ps(isum[t]), acc[t]);
				acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dm, _mm256_set1_ps(a[t][i].d)),
							  _mm256_cvtepi32_ps(msum), acc[t]);
			}
		}
	}
	x8_tile_store(acc, nt, out, os);
}

static inline __attribute__((always_inline)) void q4_Kx8_tile(size_t nb, const struct block_q4_Kx8 *b,
							      const void *x, size_t xs, const int nt,
							      float *out, size_t os)
{
	k45x8_tile(nb, (const uint8_t *)b, sizeof(*b), 0, x, xs, nt, out, os);
}

static inline __attribute__((always_inline)) void q5_Kx8_tile(size_t nb, const struct block_q5_Kx8 *b,
							      const void *x, size_t xs, const int nt,
							      float *out, size_t os)
{
	k45x8_tile(nb, (const uint8_t *)b, sizeof(*b), 1, x, xs, nt, out, os);
}

/*
 * Q6_K. For four consecutive elements l..l+3 of a 128-element half, one
 * chunk each of ql (l), ql (l + 32) and qh (l) hold the 6-bit codes of
 * elements l, l + 32, l + 64, l + 96 for the eight rows. Codes are 0..63,
 * so maddubs pairs reach 16002 and only two add up in int16 before the
 * madd that applies the sub-block's scale; the -32 offset is taken off at
 * the end as 32 * sum_j sc_j * (the activation's 16-sums), one madd per
 * pair of sub-blocks. Scales are signed: shuffled into the high byte of
 * each int16 and shifted back down arithmetically.
 */
#define K6_NT 2

static inline __attribute__((always_inline)) void q6_Kx8_tile(size_t nb, const struct block_q6_Kx8 *b,
							      const void *x, size_t xs, const int nt,
							      float *out, size_t os)
{
	const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
	X8_TILE_BEGIN(struct block_q8_K, X8_NT)
	for (size_t i = 0; i < nb; i++) {
		const struct block_q6_Kx8 *g = b + i;
		__m256i isum[X8_NT];

		/*
		 * Here the prefetch matters most: the kernel walks three code
		 * streams of a block at once (ql at l and l + 32, qh), which the
		 * hardware prefetchers do not follow; without it this kernel ran
		 * at half the plain one's speed from DRAM.
		 */
		prefetch_block(b, i, sizeof(*b));

		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			isum[t] = _mm256_setzero_si256();
		_Pragma("GCC unroll 2")
		for (int h = 0; h < 2; h++) {
			_Pragma("GCC unroll 2")
			for (int kp = 0; kp < 8; kp += 2) {
				/* elements 4kp..4kp+7 (+ 32q) of half h: sub-blocks 8h + 2q + kp/4 */
				__m256i p[X8_NT][4];

				_Pragma("GCC unroll 2")
				for (int k = kp; k < kp + 2; k++) {
					const __m256i lq = load256(g->ql + 32 * (16 * h + k));
					const __m256i lq2 = load256(g->ql + 32 * (16 * h + 8 + k));
					const __m256i hq = load256(g->qh + 32 * (8 * h + k));

					_Pragma("GCC unroll 4")
					for (int q = 0; q < 4; q++) {
						/* codes of elements +32q: nibble of ql (l or l + 32), two bits of qh */
						const __m256i lo = (q & 1) ? lq2 : lq;
						const __m256i nib = q < 2 ? lo : _mm256_srli_epi16(lo, 4);
						const __m256i top = q == 0 ? _mm256_slli_epi16(hq, 4) :
								    q == 1 ? _mm256_slli_epi16(hq, 2) :
								    q == 2 ? hq : _mm256_srli_epi16(hq, 2);
						const __m256i e = _mm256_or_si256(_mm256_and_si256(nib, m4), _mm256_and_si256(top, m30));

						_Pragma("GCC unroll 8")
						for (int t = 0; t < nt; t++) {
							const __m256i m = _mm256_maddubs_epi16(e, bcast4(a[t][i].qs + 128 * h + 4 * k + 32 * q));

							if (k == kp) {
								p[t][q] = m;
							} else {
								p[t][q] = _mm256_add_epi16(p[t][q], m);
							}
							PIN(p[t][q]);
						}
					}
				}
				_Pragma("GCC unroll 4")
				for (int q = 0; q < 4; q++) {
					const int j = 8 * h + 2 * q + kp / 4;
					const __m256i sc = _mm256_srai_epi16(
						_mm256_shuffle_epi8(load256(g->scales + 32 * (j / 4)), dword_pick_hi(j % 4, j % 4)), 8);

					_Pragma("GCC unroll 8")
					for (int t = 0; t < nt; t++) {
						isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p[t][q], sc));
						PIN(isum[t]);
					}
				}
			}
		}
		{
			const __m256 dw = f16x8(g->d);

			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++) {
				isum[t] = _mm256_sub_epi32(isum[t], q6x8_offset(g->scales, a[t][i].bsums));
				acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)),
							 _mm256_cvtepi32_ps(isum[t]), acc[t]);
			}
		}
	}
	x8_tile_store(acc, nt, out, os);
}

/* Group by group: full tiles, then the 1-3 token tail with its own constant-size tile. */
#define GEMM_X8(name, tile, btype, blck, ntile)							\
static void name(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,	\
		 float *out, size_t os)								\
{												\
	size_t nb = n / (blck);									\
												\
	for (size_t g = 0; g < rows / MS_X8; g++) {						\
		const btype *b = (const btype *)w + g * nb;					\
		float *o = out + g * MS_X8;							\
		size_t t = 0;									\
												\
		for (; t + (ntile) <= n_tok; t += (ntile))					\
			tile(nb, b, (const char *)x + t * xs, xs, ntile, o + t * os, os);	\
		switch (n_tok - t) {								\
		case 3:										\
			tile(nb, b, (const char *)x + t * xs, xs, 3, o + t * os, os);		\
			break;									\
		case 2:										\
			tile(nb, b, (const char *)x + t * xs, xs, 2, o + t * os, os);		\
			break;									\
		case 1:										\
			tile(nb, b, (const char *)x + t * xs, xs, 1, o + t * os, os);		\
			break;									\
		default:									\
			break;									\
		}										\
	}											\
}

GEMM_X8(gemm_q4_0x8_avx2, q4_0x8_tile, struct block_q4_0x8, QK4_0, X8_NT)
GEMM_X8(gemm_q8_0x8_avx2, q8_0x8_tile, struct block_q8_0x8, QK8_0, X8_NT)
GEMM_X8(gemm_q4_Kx8_avx2, q4_Kx8_tile, struct block_q4_Kx8, QK_K, K_NT)
GEMM_X8(gemm_q5_Kx8_avx2, q5_Kx8_tile, struct block_q5_Kx8, QK_K, K_NT)
GEMM_X8(gemm_q6_Kx8_avx2, q6_Kx8_tile, struct block_q6_Kx8, QK_K, K6_NT)
#undef GEMM_X8

/* ------------------------------------------------------------------------ */
/* Interleaved F16 / BF16: a float GEMM                                      */
/* ------------------------------------------------------------------------ */

/*
 * Register tile of ng groups x nt tokens, one accumulator each (the lanes
 * are the group's 8 rows): per element, one widening load per group, one
 * broadcast per token and ng * nt FMAs. Prefill uses 2 x 6: 12
 * accumulators, 2 weights and a broadcast in the 16 registers, 12 FMAs
 * for 8 loads, so the FMA units, not the load ports, set the pace. Decode
 * uses 4 x 1: four independent chains cover most of the FMA latency and
 * 64 bytes of weights per element are far more than DRAM delivers.
 */
#define WIDE_NG 4
#define WIDE_NT 6

static inline __attribute__((always_inline)) __m256 wide_load(const uint16_t *p, int bf16)
{
	return bf16 ? bf16x8(p) : f16x8(p);
}

static inline __attribute__((always_inline)) void wide_tile(size_t n, const uint16_t *w, const float *x,
							    size_t xs, const int ng, const int nt, const int bf16,
							    float *out, size_t os)
{
	const float *a[WIDE_NT];
	__m256 acc[WIDE_NG][WIDE_NT];

	_Pragma("GCC unroll 8")
	for (int t = 0; t < nt; t++)
		a[t] = (const float *)(const void *)((const char *)x + (size_t)t * xs);
	_Pragma("GCC unroll 8")
	for (int g = 0; g < ng; g++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			acc[g][t] = _mm256_setzero_ps();
	for (size_t k = 0; k < n; k++) {
		__m256 v[WIDE_NG];

		/* one 64-byte line of each group per 4 elements */
		if (k % 4 == 0)
			_Pragma("GCC unroll 8")
			for (int g = 0; g < ng; g++)
				_mm_prefetch((const char *)((uintptr_t)(w + (size_t)g * MS_X8 * n + MS_X8 * k) +
							    PF_BYTES), _MM_HINT_T0);
		_Pragma("GCC unroll 8")
		for (int g = 0; g < ng; g++)
			v[g] = wide_load(w + (size_t)g * MS_X8 * n + MS_X8 * k, bf16);
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++) {
			const __m256 xb = _mm256_broadcast_ss(a[t] + k);

			_Pragma("GCC unroll 8")
			for (int g = 0; g < ng; g++)
				acc[g][t] = _mm256_fmadd_ps(v[g], xb, acc[g][t]);
		}
	}
	_Pragma("GCC unroll 8")
	for (int g = 0; g < ng; g++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			_mm256_storeu_ps(out + (size_t)t * os + MS_X8 * g, acc[g][t]);
}

/* Tokens of a run of ng groups: full tiles of WIDE_NT, then a constant-size tail tile. */
static inline __attribute__((always_inline)) void wide_tokens(size_t n, const uint16_t *w, const float *x,
							      size_t xs, size_t n_tok, const int ng, const int bf16,
							      float *out, size_t os)
{
	size_t t = 0;

#define WIDE_AT(nt) wide_tile(n, w, (const float *)(const void *)((const char *)x + t * xs), xs, ng, nt, bf16, \
			      out + t * os, os)
	for (; t + WIDE_NT <= n_tok; t += WIDE_NT)
		WIDE_AT(WIDE_NT);
	switch (n_tok - t) {
	case 5:
		WIDE_AT(5);
		break;
	case 4:
		WIDE_AT(4);
		break;
	case 3:
		WIDE_AT(3);
		break;
	case 2:
		WIDE_AT(2);
		break;
	case 1:
		WIDE_AT(1);
		break;
	default:
		break;
	}
#undef WIDE_AT
}

static inline __attribute__((always_inline)) void wide_gemm(size_t n, const void *w, size_t rows, const void *x,
							    size_t xs, size_t n_tok, const int bf16, float *out,
							    size_t os)
{
	const uint16_t *h = w;
	const size_t ng = rows / MS_X8, gs = MS_X8 * n;
	size_t g = 0;

	if (n_tok == 1) {
		for (; g + WIDE_NG <= ng; g += WIDE_NG)
			wide_tile(n, h + g * gs, x, xs, WIDE_NG, 1, bf16, out + MS_X8 * g, os);
		for (; g < ng; g++)
			wide_tile(n, h + g * gs, x, xs, 1, 1, bf16, out + MS_X8 * g, os);
		return;
	}
	for (; g + 2 <= ng; g += 2)
		wide_tokens(n, h + g * gs, x, xs, n_tok, 2, bf16, out + MS_X8 * g, os);
	if (g < ng)
		wide_tokens(n, h + g * gs, x, xs, n_tok, 1, bf16, out + MS_X8 * g, os);
}

static void gemm_f16x8_avx2(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
			    float *out, size_t os)
{
	wide_gemm(n, w, rows, x, xs, n_tok, 0, out, os);
}

static void gemm_bf16x8_avx2(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
			     float *out, size_t os)
{
	wide_gemm(n, w, rows, x, xs, n_tok, 1, out, os);
}

static void axpy_f32_avx2(size_t n, float a, const float *x, float *y)
{
	__m256 va = _mm256_set1_ps(a);
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
		_mm256_storeu_ps(y + i + 8, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i + 8),
							  _mm256_loadu_ps(y + i + 8)));
	}
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * x[i];
}

/* silu_scalar (silu.h) in eight lanes: the same operations in the same order. */
static inline __m256 silu8(__m256 x)
{
	const __m256 one = _mm256_set1_ps(1.0f), shift = _mm256_set1_ps(SILU_SHIFT);
	__m256 z = _mm256_xor_ps(x, _mm256_set1_ps(-0.0f)), t, n, r, p, two_n;

	z = _mm256_max_ps(z, _mm256_set1_ps(SILU_ZLO));
	z = _mm256_min_ps(z, _mm256_set1_ps(SILU_ZHI));
	t = _mm256_fmadd_ps(z, _mm256_set1_ps(SILU_LOG2E), shift);
	n = _mm256_sub_ps(t, shift);
	r = _mm256_fmadd_ps(n, _mm256_set1_ps(-SILU_LN2_HI), z);
	r = _mm256_fmadd_ps(n, _mm256_set1_ps(-SILU_LN2_LO), r);
	p = _mm256_fmadd_ps(_mm256_set1_ps(SILU_P0), r, _mm256_set1_ps(SILU_P1));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SILU_P2));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SILU_P3));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SILU_P4));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SILU_P5));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
	p = _mm256_add_ps(p, one);
	two_n = _mm256_castsi256_ps(_mm256_slli_epi32(
		_mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(SILU_SHIFT_BITS)),
				 _mm256_set1_epi32(127)), 23));
	return _mm256_div_ps(x, _mm256_add_ps(one, _mm256_mul_ps(p, two_n)));
}

static void silu_mul_avx2(size_t n, float *g, const float *u)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(g + i, _mm256_mul_ps(silu8(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
	for (; i < n; i++)
		g[i] = silu_scalar(g[i]) * u[i];
}

/*
 * Four streams, two 32-byte loads each per step: eight independent adds
 * in flight cover the add latency, and each stream is one line per two
 * steps for the prefetchers to follow.
 */
static inline __attribute__((always_inline)) float sum_streams_avx2(size_t n, const float *x, const int ns)
{
	const size_t len = n / (size_t)ns;
	const float *p[MS_SUM_STREAMS];
	__m256 acc[2 * MS_SUM_STREAMS];
	float total;
	size_t i = 0;

	for (int s = 0; s < ns; s++) {
		p[s] = x + s * len;
		acc[2 * s] = acc[2 * s + 1] = _mm256_setzero_ps();
	}
	for (; i + 16 <= len; i += 16)
		for (int s = 0; s < ns; s++) {
			acc[2 * s] = _mm256_add_ps(acc[2 * s], _mm256_loadu_ps(p[s] + i));
			acc[2 * s + 1] = _mm256_add_ps(acc[2 * s + 1], _mm256_loadu_ps(p[s] + i + 8));
		}
	for (int s = 1; s < 2 * ns; s++)
		acc[0] = _mm256_add_ps(acc[0], acc[s]);
	total = hsum256(acc[0]);
	for (; i < len; i++)
		for (int s = 0; s < ns; s++)
			total += p[s][i];
	for (i = (size_t)ns * len; i < n; i++)
		total += x[i];
	return total;
}

/* One inlined copy per stream count: with a constant count the accumulators stay in registers. */
static float sum_f32_avx2(size_t n, const float *x, unsigned streams)
{
	switch (streams) {
	case 0:
	case 1:
		return sum_streams_avx2(n, x, 1);
	case 2:
	case 3:
		return sum_streams_avx2(n, x, 2);
	default:
		return sum_streams_avx2(n, x, MS_SUM_STREAMS);
	}
}

const struct ms_kernels ms_kernels_avx2 = {
	.isa = MS_ISA_AVX2,
	.name = "avx2",
	.type = {
		[GGML_TYPE_F32] = { GGML_TYPE_F32, NULL, vec_dot_f32_avx2 },
		[GGML_TYPE_F16] = { GGML_TYPE_F32, NULL, vec_dot_f16_avx2, NULL, gemm_f16x8_avx2 },
		[GGML_TYPE_BF16] = { GGML_TYPE_F32, NULL, vec_dot_bf16_avx2, NULL, gemm_bf16x8_avx2 },
		[GGML_TYPE_Q8_0] = { GGML_TYPE_Q8_0, act_q8_0_avx2, vec_dot_q8_0_q8_0_avx2, vec_dot_q8_0_q8_0_x4_avx2,
				     gemm_q8_0x8_avx2 },
		[GGML_TYPE_Q4_0] = { GGML_TYPE_Q8_0, act_q8_0_avx2, vec_dot_q4_0_q8_0_avx2, vec_dot_q4_0_q8_0_x4_avx2,
				     gemm_q4_0x8_avx2 },
		[GGML_TYPE_Q4_K] = { GGML_TYPE_Q8_K, act_q8_K_avx2, vec_dot_q4_K_q8_K_avx2, vec_dot_q4_K_q8_K_x4_avx2,
				     gemm_q4_Kx8_avx2 },
		[GGML_TYPE_Q5_K] = { GGML_TYPE_Q8_K, act_q8_K_avx2, vec_dot_q5_K_q8_K_avx2, vec_dot_q5_K_q8_K_x4_avx2,
				     gemm_q5_Kx8_avx2 },
		[GGML_TYPE_Q6_K] = { GGML_TYPE_Q8_K, act_q8_K_avx2, vec_dot_q6_K_q8_K_avx2, vec_dot_q6_K_q8_K_x4_avx2,
				     gemm_q6_Kx8_avx2 },
	},
	.dot_f32 = dot_f32_avx2,
	.axpy_f32 = axpy_f32_avx2,
	.sum_f32 = sum_f32_avx2,
	.silu_mul = silu_mul_avx2,
	.attn = &ms_attn_avx2,
};
