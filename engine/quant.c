/* ggml tensor types: the type table, exact half-precision conversions and row (de)quantization. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "quant.h"

/*
 * Every type id ggml defines up to BF16, so that a file using one we cannot
 * run is reported by name instead of as "corrupt". Sizes are ggml's
 * block_* sizeof values; ids 4 and 5 (old Q4_2/Q4_3) were removed upstream.
 */
static const struct ggml_type_info type_table[] = {
	[GGML_TYPE_F32]  = { "F32",    1,   4, true },
	[GGML_TYPE_F16]  = { "F16",    1,   2, true },
	[GGML_TYPE_Q4_0] = { "Q4_0",  32,  18, true },
	[GGML_TYPE_Q4_1] = { "Q4_1",  32,  20, false },
	[GGML_TYPE_Q5_0] = { "Q5_0",  32,  22, false },
	[GGML_TYPE_Q5_1] = { "Q5_1",  32,  24, false },
	[GGML_TYPE_Q8_0] = { "Q8_0",  32,  34, true },
	[GGML_TYPE_Q8_1] = { "Q8_1",  32,  36, false },
	[GGML_TYPE_Q2_K] = { "Q2_K", 256,  84, false },
	[GGML_TYPE_Q3_K] = { "Q3_K", 256, 110, false },
	[GGML_TYPE_Q4_K] = { "Q4_K", 256, 144, false },
	[GGML_TYPE_Q5_K] = { "Q5_K", 256, 176, false },
	[GGML_TYPE_Q6_K] = { "Q6_K", 256, 210, false },
	[GGML_TYPE_Q8_K] = { "Q8_K", 256, 292, false },
	[GGML_TYPE_BF16] = { "BF16",   1,   2, true },
};

const struct ggml_type_info *ggml_type_get(uint32_t type)
{
	if (type >= sizeof(type_table) / sizeof(type_table[0]))
		return NULL;
	if (!type_table[type].name)
		return NULL;
	return &type_table[type];
}

/* Never NULL, so a message built without checking cannot crash. */
const char *ggml_type_name(uint32_t type)
{
	const struct ggml_type_info *ti = ggml_type_get(type);

	return ti ? ti->name : "unknown";
}

int ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *out)
{
	const struct ggml_type_info *ti = ggml_type_get(type);
	uint64_t blocks;

	if (!ti || n % ti->blck)
		return -EINVAL;
	blocks = n / ti->blck;
	if (blocks > UINT64_MAX / ti->bytes)
		return -EOVERFLOW;
	*out = blocks * ti->bytes;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Half and bfloat16 conversion                                              */
/* ------------------------------------------------------------------------ */

/*
 * Done on the bit patterns rather than with _Float16 or F16C so the result is
 * the same on every compiler and CPU; the cost (a few integer ops) only
 * matters in tools and tests, the kernels have their own SIMD paths.
 */
static inline uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

float ms_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t mant = h & 0x3ff;

	if (exp == 0x1f)	/* inf, or NaN with its payload kept */
		return bits_f32(sign | 0x7f800000u | mant << 13);
	if (exp != 0)
		return bits_f32(sign | (exp + 112) << 23 | mant << 13);
	if (mant == 0)
		return bits_f32(sign);
	/* subnormal: mant * 2^-24, renormalised; every one is a normal float */
	exp = 113;
	while (!(mant & 0x400)) {
		mant <<= 1;
		exp--;
	}
	return bits_f32(sign | exp << 23 | (mant & 0x3ff) << 13);
}

uint16_t ms_f32_to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	uint32_t ax = x & 0x7fffffffu;
	uint32_t e, mant, shift, q, rem, half;

	/*
	 * NaN: keep the top payload bits; only when they are all zero set the
	 * quiet bit, so it cannot turn into inf and half NaNs round-trip exactly.
	 */
	if (ax > 0x7f800000u) {
		mant = (ax >> 13) & 0x3ff;
		return sign | 0x7c00 | (uint16_t)(mant ? mant : 0x200);
	}
	/* 65520 is halfway between 65504 (odd mantissa) and 2^16: ties go to inf */
	if (ax >= 0x477ff000u)
		return sign | 0x7c00;
	if (ax >= 0x38800000u) {
		/*
		 * Normal half (>= 2^-14): rebias, then round to nearest even by
		 * adding just under half an ulp plus the kept lsb. Branch-free,
		 * because for random data the rounding direction is a coin toss
		 * that a branch predictor loses half the time. A carry out of
		 * the mantissa correctly bumps the exponent.
		 */
		q = ax - (112u << 23);
		return sign | (uint16_t)((q + 0xfff + ((q >> 13) & 1)) >> 13);
	}
	/* subnormal half: round(|f| * 2^24) in units of 2^-24 */
	e = ax >> 23;
	if (e < 102)	/* below 2^-25: rounds to zero */
		return sign;
	mant = (ax & 0x7fffff) | 0x800000;
	shift = 126 - e;	/* 14..24 */
	q = mant >> shift;
	rem = mant & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rem > half || (rem == half && (q & 1)))
		q++;	/* 0x400 is the smallest normal: also right */
	return sign | (uint16_t)q;
}

float ms_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t ms_f32_to_bf16(float f)
{
	uint32_t x = f32_bits(f);

	/* NaN: as for half, set the quiet bit only if truncation would give inf */
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | ((x & 0x7f0000u) ? 0 : 0x40));
	/* round to nearest even; overflow past the largest finite gives inf */
	return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------------ */
/* Rows                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Blocks are read and written through byte pointers with memcpy for the
 * 16-bit fields: GGUF only promises alignment of whole tensors, and callers
 * (tests, fuzzers) may hand us any address.
 */
static inline uint16_t load_u16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void store_u16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void dequantize_q8_0(const uint8_t *src, float *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, src += sizeof(struct block_q8_0)) {
		const float d = ms_f16_to_f32(load_u16(src));
		const int8_t *qs = (const int8_t *)(src + 2);

		for (int j = 0; j < QK8_0; j++)
			*dst++ = (float)qs[j] * d;
	}
}

static void dequantize_q4_0(const uint8_t *src, float *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, src += sizeof(struct block_q4_0)) {
		const float d = ms_f16_to_f32(load_u16(src));
		const uint8_t *qs = src + 2;

		for (int j = 0; j < QK4_0 / 2; j++) {
			dst[j] = (float)((qs[j] & 15) - 8) * d;
			dst[j + QK4_0 / 2] = (float)((qs[j] >> 4) - 8) * d;
		}
		dst += QK4_0;
	}
}

/*
 * Clamp done in float before any conversion to int, so NaN or infinite input
 * (which has no quantized form) gives a defined code instead of an undefined
 * conversion; NaN becomes lo. Only blocks that need it take this path.
 */
static inline float clampf(float v, float lo, float hi)
{
	v = v > lo ? v : lo;
	return v < hi ? v : hi;
}

/*
 * roundf() (half away from zero) for |v| < 2^22 without a libm call per
 * element: the fraction left after truncation is exact at these magnitudes.
 */
static inline int round_away(float v)
{
	int i = (int)v;
	float fr = v - (float)i;

	return i + (fr >= 0.5f) - (fr <= -0.5f);
}

/*
 * The scan for the largest magnitude also notes whether the block is all
 * finite, and the caller checks that 1/d is (a subnormal d overflows it):
 * then every x * (1/d) is bounded by the code range and converts without a
 * clamp. The selects, not branches, matter: on random data "new maximum" is
 * unpredictable and a branch there cost more than the rest of the block.
 */

/* ggml's quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d). */
static void quantize_q8_0(const float *src, uint8_t *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, dst += sizeof(struct block_q8_0)) {
		float amax = 0.0f, d, id;
		int8_t *qs = (int8_t *)(dst + 2);
		int finite = 1;

		for (int j = 0; j < QK8_0; j++) {
			const float a = fabsf(src[j]);

			finite &= a <= FLT_MAX;
			amax = a > amax ? a : amax;
		}
		d = amax / 127.0f;
		id = d != 0.0f ? 1.0f / d : 0.0f;
		store_u16(dst, ms_f32_to_f16(d));
		if (finite && id <= FLT_MAX) {
			for (int j = 0; j < QK8_0; j++)
				qs[j] = (int8_t)round_away(src[j] * id);
		} else {
			for (int j = 0; j < QK8_0; j++)
				qs[j] = (int8_t)round_away(clampf(src[j] * id, -127.0f, 127.0f));
		}
		src += QK8_0;
	}
}

/*
 * ggml's quantize_row_q4_0_ref: d = max/-8 with max the signed value of
 * largest magnitude, so that value maps exactly to -8 and the other sign
 * gets the range up to +7; q = min(15, (int)(x/d + 8.5)).
 */
static void quantize_q4_0(const float *src, uint8_t *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, dst += sizeof(struct block_q4_0)) {
		float amax = 0.0f, max = 0.0f, d, id;
		uint8_t *qs = dst + 2;
		int finite = 1;

		for (int j = 0; j < QK4_0; j++) {
			const float v = src[j], a = fabsf(v);
			const int bigger = a > amax;

			finite &= a <= FLT_MAX;
			max = bigger ? v : max;
			amax = bigger ? a : amax;
		}
		d = max / -8.0f;
		id = d != 0.0f ? 1.0f / d : 0.0f;
		store_u16(dst, ms_f32_to_f16(d));
		if (finite && id <= FLT_MAX) {
			/* x * id + 8.5 lies in [0.5, 16.5] here */
			for (int j = 0; j < QK4_0 / 2; j++) {
				int q0 = (int)(src[j] * id + 8.5f);
				int q1 = (int)(src[j + QK4_0 / 2] * id + 8.5f);

				q0 = q0 < 15 ? q0 : 15;
				q1 = q1 < 15 ? q1 : 15;
				qs[j] = (uint8_t)(q0 | q1 << 4);
			}
		} else {
			for (int j = 0; j < QK4_0 / 2; j++) {
				const int q0 = (int)clampf(src[j] * id + 8.5f, 0.0f, 15.0f);
				const int q1 = (int)clampf(src[j + QK4_0 / 2] * id + 8.5f, 0.0f, 15.0f);

				qs[j] = (uint8_t)(q0 | q1 << 4);
			}
		}
		src += QK4_0;
	}
}

int dequantize_row(uint32_t type, const void *src, float *dst, size_t n)
{
	const uint8_t *s = src;

	switch (type) {
	case GGML_TYPE_F32:
		memcpy(dst, src, n * sizeof(float));
		return 0;
	case GGML_TYPE_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = ms_f16_to_f32(load_u16(s + 2 * i));
		return 0;
	case GGML_TYPE_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = ms_bf16_to_f32(load_u16(s + 2 * i));
		return 0;
	case GGML_TYPE_Q8_0:
		if (n % QK8_0)
			return -EINVAL;
		dequantize_q8_0(s, dst, n / QK8_0);
		return 0;
	case GGML_TYPE_Q4_0:
		if (n % QK4_0)
			return -EINVAL;
		dequantize_q4_0(s, dst, n / QK4_0);
		return 0;
	default:
		return -EINVAL;
	}
}

int quantize_row(uint32_t type, const float *src, void *dst, size_t n)
{
	uint8_t *d = dst;

	switch (type) {
	case GGML_TYPE_F32:
		memcpy(dst, src, n * sizeof(float));
		return 0;
	case GGML_TYPE_F16:
		for (size_t i = 0; i < n; i++)
			store_u16(d + 2 * i, ms_f32_to_f16(src[i]));
		return 0;
	case GGML_TYPE_BF16:
		for (size_t i = 0; i < n; i++)
			store_u16(d + 2 * i, ms_f32_to_bf16(src[i]));
		return 0;
	case GGML_TYPE_Q8_0:
		if (n % QK8_0)
			return -EINVAL;
		quantize_q8_0(src, d, n / QK8_0);
		return 0;
	case GGML_TYPE_Q4_0:
		if (n % QK4_0)
			return -EINVAL;
		quantize_q4_0(src, d, n / QK4_0);
		return 0;
	default:
		return -EINVAL;
	}
}
