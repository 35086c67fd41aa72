/* AVX2 + FMA + F16C kernels (this file alone is built with -mavx2 -mfma -mf16c; reached only through run-time dispatch). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#include "kernels.h"
#include "quant.h"

/* Sum of the 8 lanes. */
static inline float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Block scale: one F16C conversion instead of a call into quant.c. */
static inline __m256 scale256(uint16_t d)
{
	return _mm256_set1_ps(_cvtsh_ss(d));
}

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

#define LOAD8(k) _mm256_cvtph_ps(_mm_loadu_si128((const void *)(h + (k))))
#define LOAD1(k) _cvtsh_ss(h[k])
	DOT_WIDE_BODY(LOAD8, LOAD1)
#undef LOAD8
#undef LOAD1
}

/* bf16 is the high half of an f32: zero-extend to 32 bits and shift left 16. */
static inline __m256 bf16x8(const uint16_t *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)p));

	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
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

/* 8 signed bytes -> 8 floats (exact). */
static inline __m256 i8x8_to_ps(__m128i v)
{
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

/*
 * One Q8_0 block against 32 float activations: sum(q*x) in two short FMA
 * chains. The caller scales it by d; blocks are independent, so the
 * out-of-order core overlaps consecutive blocks.
 */
static inline __m256 q8_0_block(const struct block_q8_0 *b, const float *x)
{
	__m256 s0 = _mm256_mul_ps(i8x8_to_ps(_mm_loadu_si64(b->qs)), _mm256_loadu_ps(x));
	__m256 s1 = _mm256_mul_ps(i8x8_to_ps(_mm_loadu_si64(b->qs + 8)), _mm256_loadu_ps(x + 8));

	s0 = _mm256_fmadd_ps(i8x8_to_ps(_mm_loadu_si64(b->qs + 16)), _mm256_loadu_ps(x + 16), s0);
	s1 = _mm256_fmadd_ps(i8x8_to_ps(_mm_loadu_si64(b->qs + 24)), _mm256_loadu_ps(x + 24), s1);
	return _mm256_add_ps(s0, s1);
}

/*
 * F32 activations for now: dequantize in registers and FMA. A later switch
 * to Q8_0 activations (int8 x int8, maddubs) only changes act_type/act_conv
 * in the table and this function.
 */
static float vec_dot_q8_0_avx2(size_t n, const void *w, const void *xv)
{
	const struct block_q8_0 *b = w;
	const float *x = xv;
	size_t nb = n / QK8_0, i = 0;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();

	for (; i + 2 <= nb; i += 2) {
		acc0 = _mm256_fmadd_ps(scale256(b[i].d), q8_0_block(b + i, x + i * QK8_0), acc0);
		acc1 = _mm256_fmadd_ps(scale256(b[i + 1].d), q8_0_block(b + i + 1, x + (i + 1) * QK8_0), acc1);
	}
	if (i < nb)
		acc0 = _mm256_fmadd_ps(scale256(b[i].d), q8_0_block(b + i, x + i * QK8_0), acc0);
	return hsum256(_mm256_add_ps(acc0, acc1));
}

/*
 * One Q4_0 block against 32 float activations. Each half of qs is
 * zero-extended straight from memory to 8 int32 lanes; byte j then holds
 * element j in its low nibble and element j+16 in its high one, so an AND
 * and a shift split them without the port-5 shuffles a byte-level unpack
 * costs (that version ran at half this speed).
 */
static inline __m256 q4_0_block(const struct block_q4_0 *b, const float *x)
{
	const __m256i m4 = _mm256_set1_epi32(0x0f), off = _mm256_set1_epi32(8);
	__m256i q0 = _mm256_cvtepu8_epi32(_mm_loadu_si64(b->qs));
	__m256i q1 = _mm256_cvtepu8_epi32(_mm_loadu_si64(b->qs + 8));
	__m256 lo0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(q0, m4), off));
	__m256 lo1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(q1, m4), off));
	__m256 hi0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(q0, 4), off));
	__m256 hi1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(q1, 4), off));
	__m256 s0 = _mm256_mul_ps(lo0, _mm256_loadu_ps(x));
	__m256 s1 = _mm256_mul_ps(lo1, _mm256_loadu_ps(x + 8));

	s0 = _mm256_fmadd_ps(hi0, _mm256_loadu_ps(x + 16), s0);
	s1 = _mm256_fmadd_ps(hi1, _mm256_loadu_ps(x + 24), s1);
	return _mm256_add_ps(s0, s1);
}

static float vec_dot_q4_0_avx2(size_t n, const void *w, const void *xv)
{
	const struct block_q4_0 *b = w;
	const float *x = xv;
	size_t nb = n / QK4_0, i = 0;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();

	for (; i + 2 <= nb; i += 2) {
		acc0 = _mm256_fmadd_ps(scale256(b[i].d), q4_0_block(b + i, x + i * QK4_0), acc0);
		acc1 = _mm256_fmadd_ps(scale256(b[i + 1].d), q4_0_block(b + i + 1, x + (i + 1) * QK4_0), acc1);
	}
	if (i < nb)
		acc0 = _mm256_fmadd_ps(scale256(b[i].d), q4_0_block(b + i, x + i * QK4_0), acc0);
	return hsum256(_mm256_add_ps(acc0, acc1));
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

const struct ms_kernels ms_kernels_avx2 = {
	.isa = MS_ISA_AVX2,
	.name = "avx2",
	.type = {
		[GGML_TYPE_F32] = { GGML_TYPE_F32, NULL, vec_dot_f32_avx2 },
		[GGML_TYPE_F16] = { GGML_TYPE_F32, NULL, vec_dot_f16_avx2 },
		[GGML_TYPE_BF16] = { GGML_TYPE_F32, NULL, vec_dot_bf16_avx2 },
		[GGML_TYPE_Q8_0] = { GGML_TYPE_F32, NULL, vec_dot_q8_0_avx2 },
		[GGML_TYPE_Q4_0] = { GGML_TYPE_F32, NULL, vec_dot_q4_0_avx2 },
	},
	.dot_f32 = dot_f32_avx2,
	.axpy_f32 = axpy_f32_avx2,
};
