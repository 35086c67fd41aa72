/* AVX2/F16C attention-side kernels: KV cache rows between F32 and F16, eight at a time. */
#include <immintrin.h>
#include <string.h>

#include "attention.h"
#include "quant.h"

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

static void f16_to_f32_avx2(size_t n, const uint16_t *x, float *y)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(x + i))));
	for (; i < n; i++)
		y[i] = ms_f16_to_f32(x[i]);
}

const struct ms_attn_kernels ms_attn_avx2 = {
	.name = "avx2",
	.f32_to_f16 = f32_to_f16_avx2,
	.f16_to_f32 = f16_to_f32_avx2,
};
