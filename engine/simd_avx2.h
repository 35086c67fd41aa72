/* Inline AVX2/F16C helpers shared by the AVX2 kernel files (include only from files built with -mavx2 -mfma -mf16c). */
#ifndef MS_SIMD_AVX2_H
#define MS_SIMD_AVX2_H

#include <stdint.h>

#include <immintrin.h>

/* Sum of the 8 lanes. */
static inline float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Eight f16 values from p (any alignment) as floats. */
static inline __m256 f16x8(const void *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* bf16 is the high half of an f32: zero-extend to 32 bits and shift left 16. */
static inline __m256 bf16x8(const uint16_t *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));

	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

#endif
