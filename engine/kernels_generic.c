/* Portable C kernels: the always-available dispatch table and the reference the ISA tables are tested against. */
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "quant.h"

/*
 * Plain float dot products summed in blocks of 32: each block's partial sum
 * is formed in 8 independent lanes (which also lets the compiler use SSE at
 * baseline), then added to the float total. Blocking keeps the rounding
 * error near 32*eps + (n/32)*eps of sum|a*b| instead of n*eps.
 */
#define GEN_BLK 32
#define GEN_LANES 8

static float dot_f32_generic(size_t n, const float *a, const float *b)
{
	float total = 0.0f;
	size_t i = 0;

	for (; i + GEN_BLK <= n; i += GEN_BLK) {
		float lane[GEN_LANES] = { 0 };

		for (size_t j = 0; j < GEN_BLK; j += GEN_LANES)
			for (size_t l = 0; l < GEN_LANES; l++)
				lane[l] += a[i + j + l] * b[i + j + l];
		total += ((lane[0] + lane[4]) + (lane[1] + lane[5])) +
			 ((lane[2] + lane[6]) + (lane[3] + lane[7]));
	}
	if (i < n) {
		float part = 0.0f;

		for (; i < n; i++)
			part += a[i] * b[i];
		total += part;
	}
	return total;
}

static float vec_dot_f32_generic(size_t n, const void *w, const void *x)
{
	return dot_f32_generic(n, w, x);
}

/* Halves are widened per block into a small local array; the conversion is exact. */
static float vec_dot_f16_generic(size_t n, const void *w, const void *x)
{
	const uint16_t *h = w;
	const float *xf = x;
	float buf[GEN_BLK];
	float total = 0.0f;

	for (size_t i = 0; i < n; i += GEN_BLK) {
		size_t m = n - i < GEN_BLK ? n - i : GEN_BLK;

		for (size_t j = 0; j < m; j++)
			buf[j] = ms_f16_to_f32(h[i + j]);
		total += dot_f32_generic(m, buf, xf + i);
	}
	return total;
}

static float vec_dot_bf16_generic(size_t n, const void *w, const void *x)
{
	const uint16_t *h = w;
	const float *xf = x;
	float buf[GEN_BLK];
	float total = 0.0f;

	for (size_t i = 0; i < n; i += GEN_BLK) {
		size_t m = n - i < GEN_BLK ? n - i : GEN_BLK;

		for (size_t j = 0; j < m; j++)
			buf[j] = ms_bf16_to_f32(h[i + j]);
		total += dot_f32_generic(m, buf, xf + i);
	}
	return total;
}

/* Q8_0: sum(q*x) per block in float (q*x is nearly exact), then one multiply by d. */
static float vec_dot_q8_0_generic(size_t n, const void *w, const void *x)
{
	const struct block_q8_0 *b = w;
	const float *xf = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK8_0; i++, xf += QK8_0) {
		float lane[GEN_LANES] = { 0 };

		for (size_t j = 0; j < QK8_0; j += GEN_LANES)
			for (size_t l = 0; l < GEN_LANES; l++)
				lane[l] += (float)b[i].qs[j + l] * xf[j + l];
		total += ms_f16_to_f32(b[i].d) *
			 (((lane[0] + lane[4]) + (lane[1] + lane[5])) +
			  ((lane[2] + lane[6]) + (lane[3] + lane[7])));
	}
	return total;
}

/* Q4_0: low nibbles are elements 0..15, high nibbles 16..31, both offset by 8. */
static float vec_dot_q4_0_generic(size_t n, const void *w, const void *x)
{
	const struct block_q4_0 *b = w;
	const float *xf = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK4_0; i++, xf += QK4_0) {
		float lo[GEN_LANES] = { 0 }, hi[GEN_LANES] = { 0 };

		for (size_t j = 0; j < QK4_0 / 2; j += GEN_LANES)
			for (size_t l = 0; l < GEN_LANES; l++) {
				uint8_t q = b[i].qs[j + l];

				lo[l] += (float)((int)(q & 15) - 8) * xf[j + l];
				hi[l] += (float)((int)(q >> 4) - 8) * xf[j + l + QK4_0 / 2];
			}
		for (size_t l = 0; l < GEN_LANES; l++)
			lo[l] += hi[l];
		total += ms_f16_to_f32(b[i].d) *
			 (((lo[0] + lo[4]) + (lo[1] + lo[5])) +
			  ((lo[2] + lo[6]) + (lo[3] + lo[7])));
	}
	return total;
}

static void axpy_f32_generic(size_t n, float a, const float *x, float *y)
{
	for (size_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

const struct ms_kernels ms_kernels_generic = {
	.isa = MS_ISA_GENERIC,
	.name = "generic",
	.type = {
		[GGML_TYPE_F32] = { GGML_TYPE_F32, NULL, vec_dot_f32_generic },
		[GGML_TYPE_F16] = { GGML_TYPE_F32, NULL, vec_dot_f16_generic },
		[GGML_TYPE_BF16] = { GGML_TYPE_F32, NULL, vec_dot_bf16_generic },
		[GGML_TYPE_Q8_0] = { GGML_TYPE_F32, NULL, vec_dot_q8_0_generic },
		[GGML_TYPE_Q4_0] = { GGML_TYPE_F32, NULL, vec_dot_q4_0_generic },
	},
	.dot_f32 = dot_f32_generic,
	.axpy_f32 = axpy_f32_generic,
};
