/* ggml tensor types: the type table, exact half-precision conversions and row (de)quantization. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "quant.h"

/*
 * Every type id ggml defines up to BF16, so that a file using one we cannot
 * run is reported by name instead of as "corrupt". Sizes are ggml's
 * block_* sizeof values; ids 4 and 5 (old Q4_2/Q4_3) were removed upstream.
 * Q8_K is convertible but not "supported": it only ever holds activations.
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
	[GGML_TYPE_Q4_K] = { "Q4_K", 256, 144, true },
	[GGML_TYPE_Q5_K] = { "Q5_K", 256, 176, true },
	[GGML_TYPE_Q6_K] = { "Q6_K", 256, 210, true },
	[GGML_TYPE_Q8_K] = { "Q8_K", 256, 292, false },
	[GGML_TYPE_BF16] = { "BF16",   1,   2, true },
};

const struct ggml_type_info *ms_ggml_type_get(uint32_t type)
{
	if (type >= sizeof(type_table) / sizeof(type_table[0]))
		return NULL;
	if (!type_table[type].name)
		return NULL;
	return &type_table[type];
}

/* Never NULL, so a message built without checking cannot crash. */
const char *ms_ggml_type_name(uint32_t type)
{
	const struct ggml_type_info *ti = ms_ggml_type_get(type);

	return ti ? ti->name : "unknown";
}

int ms_ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *out)
{
	const struct ggml_type_info *ti = ms_ggml_type_get(type);
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

/* ------------------------------------------------------------------------ */
/* K-quants                                                                 */
/* ------------------------------------------------------------------------ */

void ms_get_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (uint8_t)((q[j + 4] & 15) | (q[j - 4] >> 6) << 4);
		*m = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
	}
}

/* The inverse of ms_get_scale_min_k4, for ls, lm < 64, into zeroed q. */
static void put_scale_min_k4(int j, uint8_t *q, unsigned ls, unsigned lm)
{
	if (j < 4) {
		q[j] |= (uint8_t)ls;
		q[j + 4] |= (uint8_t)lm;
	} else {
		q[j + 4] |= (uint8_t)((ls & 15) | (lm & 15) << 4);
		q[j - 4] |= (uint8_t)((ls >> 4) << 6);
		q[j] |= (uint8_t)((lm >> 4) << 6);
	}
}

/*
 * Round to nearest, ties to even (ggml's nearest_int), for |v| < 2^22:
 * adding 1.5 * 2^23 leaves no fraction bits. Staying in float lets the
 * fitting loops below vectorise; the cast forces the rounding where
 * intermediates could be wider (x87).
 */
static inline float round_even(float v)
{
	return (float)(v + 12582912.0f) - 12582912.0f;
}

/*
 * The fitting loops below are nearly all of a K-quant quantizer's time, and
 * the compiler will not vectorise their float sums by itself (that would
 * reorder additions). So they are written with GCC/Clang vector types:
 * eight partial sums in two 4-wide vectors, added in a fixed order, so the
 * result (and the file mistral-mkmodel writes) is the same on every build
 * and CPU. 16-byte vectors are SSE2 (x86-64 baseline) or NEON, and plain
 * scalar code elsewhere.
 */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f v4_load(const float *p)
{
	v4f v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline v4f v4_set1(float a)
{
	return (v4f){ a, a, a, a };
}

/* clampf lane by lane, NaN to lo: compare-and-select, as maxps/minps do */
static inline v4f v4_clamp(v4f v, v4f lo, v4f hi)
{
	v4i m = v > lo;

	v = (v4f)((m & (v4i)v) | (~m & (v4i)lo));
	m = v < hi;
	return (v4f)((m & (v4i)v) | (~m & (v4i)hi));
}

/* round_even lane by lane */
static inline v4f v4_round(v4f v)
{
	const v4f magic = v4_set1(12582912.0f);
	v4f t = v + magic;

	return t - magic;
}

/* Lanes k of a and b hold partial sums k and k+4 of eight. */
static inline float v4_sum8(v4f a, v4f b)
{
	float t[4];
	v4f s = a + b;

	memcpy(t, &s, sizeof(t));
	return (t[0] + t[1]) + (t[2] + t[3]);
}

/*
 * ggml's make_qkx2_quants for one 32-value sub-block: the scale s >= 0 and
 * min m >= 0 for which s*q - m, q in 0..nmax, best fits x under weights w.
 * It starts from the min-max fit, then for nstep+1 grid spacings around
 * nmax/(max - min) assigns codes and solves weighted least squares for s
 * and m, keeping the candidate of least weighted squared error. Unlike ggml
 * that error comes from the sums already at hand rather than a second pass
 * over the values (in double, as it is a small difference of large terms):
 * this loop is nearly all of a Q4_K quantizer's time. Codes are not
 * returned; the caller recomputes them from the 6-bit scales it stores.
 */
static float fit_scale_min(const float *x, const float *w, int nmax, float rmin, float rdelta,
			   int nstep, float *min_out)
{
	float lo = x[0], hi = x[0], sw = 0, swx = 0, swx2 = 0, range, xm[32], wx[32];
	double best_err = INFINITY, best_s = 0, best_m = 0, Sw, Swx, Swx2;
	v4f vxm[8], vw[8], vwx[8];
	const v4f zero = v4_set1(0.0f), vmax = v4_set1((float)nmax);

	for (int i = 0; i < 32; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
		sw += w[i];
		swx += w[i] * x[i];
		swx2 += w[i] * x[i] * x[i];
	}
	lo = lo < 0 ? lo : 0;	/* the offset is a subtracted min, so never positive */
	if (!(hi > lo)) {	/* all equal and >= 0 (or NaN): codes 0, value -m */
		*min_out = -lo;
		return 0;
	}
	range = hi - lo;
	Sw = (double)sw;
	Swx = (double)swx;
	Swx2 = (double)swx2;
	for (int i = 0; i < 32; i++) {
		xm[i] = x[i] - lo;
		wx[i] = w[i] * x[i];
	}
	for (int i = 0; i < 8; i++) {
		vxm[i] = v4_load(xm + 4 * i);
		vw[i] = v4_load(w + 4 * i);
		vwx[i] = v4_load(wx + 4 * i);
	}
	for (int is = -1; is <= nstep; is++) {
		const float iscale = is < 0 ? (float)nmax / range
					    : (rmin + rdelta * (float)is + (float)nmax) / range;
		const v4f vis = v4_set1(iscale);
		v4f sl0 = zero, sl1 = zero, sl20 = zero, sl21 = zero, sxl0 = zero, sxl1 = zero;
		double s, m, err, D, Sl, Sl2, Sxl;

		for (int i = 0; i < 8; i += 2) {
			const v4f l0 = v4_round(v4_clamp(vis * vxm[i], zero, vmax));
			const v4f l1 = v4_round(v4_clamp(vis * vxm[i + 1], zero, vmax));
			const v4f wl0 = vw[i] * l0, wl1 = vw[i + 1] * l1;

			sl0 += wl0;
			sl1 += wl1;
			sl20 += wl0 * l0;
			sl21 += wl1 * l1;
			sxl0 += vwx[i] * l0;
			sxl1 += vwx[i + 1] * l1;
		}
		Sl = (double)v4_sum8(sl0, sl1);
		Sl2 = (double)v4_sum8(sl20, sl21);
		Sxl = (double)v4_sum8(sxl0, sxl1);
		if (is < 0) {
			s = 1.0 / (double)iscale;
			m = (double)lo;
		} else {
			D = Sw * Sl2 - Sl * Sl;
			if (!(D > 0))
				continue;
			s = (Sw * Sxl - Swx * Sl) / D;
			m = (Sl2 * Swx - Sl * Sxl) / D;
			if (m > 0) {
				m = 0;
				s = Sxl / Sl2;
			}
		}
		err = s * s * Sl2 + 2 * s * m * Sl + m * m * Sw - 2 * s * Sxl - 2 * m * Swx + Swx2;
		if (err < best_err) {
			best_err = err;
			best_s = s;
			best_m = m;
		}
	}
	*min_out = (float)-best_m;
	return (float)best_s;
}

/*
 * ggml's quantize_row_q4_K_ref / q5_K_ref (nmax 15 / 31) for one block:
 * fit each sub-block under weights rms + |x| (the larger values matter
 * more), store the scales and mins as 6-bit multiples of d = max scale/63
 * and dmin = max min/63, then choose every code against the stored values.
 */
static void quantize_block_k45(const float *x, uint8_t *blk, int nmax)
{
	float scales[8], mins[8], w[32];
	float max_scale = 0, max_min = 0, iscale, imin, d, dmin;
	uint8_t L[QK_K], *sc = blk + 4;
	uint16_t d16, dmin16;

	for (int j = 0; j < 8; j++) {
		const float *xs = x + 32 * j;
		float s2 = 0, av;

		for (int l = 0; l < 32; l++)
			s2 += xs[l] * xs[l];
		av = sqrtf(s2 / 32);
		for (int l = 0; l < 32; l++)
			w[l] = av + fabsf(xs[l]);
		if (nmax == 15)
			scales[j] = fit_scale_min(xs, w, 15, -1.0f, 0.1f, 20, &mins[j]);
		else
			scales[j] = fit_scale_min(xs, w, 31, -0.5f, 0.1f, 15, &mins[j]);
		max_scale = scales[j] > max_scale ? scales[j] : max_scale;
		max_min = mins[j] > max_min ? mins[j] : max_min;
	}
	iscale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
	imin = max_min > 0 ? 63.0f / max_min : 0.0f;
	memset(sc, 0, K_SCALE_SIZE);
	for (int j = 0; j < 8; j++)
		put_scale_min_k4(j, sc, (unsigned)round_even(clampf(iscale * scales[j], 0, 63)),
				 (unsigned)round_even(clampf(imin * mins[j], 0, 63)));
	d16 = ms_f32_to_f16(max_scale / 63.0f);
	dmin16 = ms_f32_to_f16(max_min / 63.0f);
	store_u16(blk, d16);
	store_u16(blk + 2, dmin16);
	d = ms_f16_to_f32(d16);
	dmin = ms_f16_to_f32(dmin16);
	for (int j = 0; j < 8; j++) {
		uint8_t ls, lm;
		float dq, dm;

		ms_get_scale_min_k4(j, sc, &ls, &lm);
		dq = d * (float)ls;
		dm = dmin * (float)lm;
		if (dq == 0) {	/* every code gives -dm */
			memset(L + 32 * j, 0, 32);
			continue;
		}
		for (int l = 0; l < 32; l++)
			L[32 * j + l] = (uint8_t)round_even(clampf((x[32 * j + l] + dm) / dq, 0,
								   (float)nmax));
	}
	if (nmax == 15) {
		uint8_t *qs = blk + 16;

		for (int g = 0; g < 4; g++)
			for (int l = 0; l < 32; l++)
				qs[32 * g + l] = (uint8_t)(L[64 * g + l] | L[64 * g + 32 + l] << 4);
	} else {
		uint8_t *qh = blk + 16, *qs = blk + 48;

		memset(qh, 0, QK_K / 8);
		for (int g = 0; g < 4; g++) {
			for (int l = 0; l < 32; l++) {
				const unsigned a = L[64 * g + l], b = L[64 * g + 32 + l];

				qh[l] |= (uint8_t)((a >> 4) << (2 * g) | (b >> 4) << (2 * g + 1));
				qs[32 * g + l] = (uint8_t)((a & 15) | (b & 15) << 4);
			}
		}
	}
}

/*
 * ggml's make_qx_quants(16, 32, x, L, 1, NULL) for a Q6_K sub-block: the
 * signed scale s for codes in -32..31 maximising the weighted fit (weights
 * x^2, so the large values decide), trying 19 grid spacings around the one
 * that maps the value of largest magnitude to -32. Only s is needed.
 */
static float fit_scale_q6(const float *x)
{
	float amax = 0, max = 0, w[16], wx[16], best = 0, s = 0;
	const v4f lo = v4_set1(-32.0f), hi = v4_set1(31.0f);
	v4f vx[4], vw[4], vwx[4];

	for (int i = 0; i < 16; i++) {
		const float a = fabsf(x[i]);
		const int bigger = a > amax;

		max = bigger ? x[i] : max;
		amax = bigger ? a : amax;
		w[i] = x[i] * x[i];
		wx[i] = w[i] * x[i];
	}
	if (!(amax >= 1e-15f))	/* ggml's GROUP_MAX_EPS: an all-zero group */
		return 0;
	for (int i = 0; i < 4; i++) {
		vx[i] = v4_load(x + 4 * i);
		vw[i] = v4_load(w + 4 * i);
		vwx[i] = v4_load(wx + 4 * i);
	}
	for (int is = 0; is <= 18; is++) {
		/* is 0 first (spacing 32), then -9..-1 and 1..9 */
		const float step = is == 0 ? 0.0f : (float)(is <= 9 ? is - 10 : is - 9);
		const v4f vis = v4_set1(-(32.0f + 0.1f * step) / max);
		const v4f l0 = v4_round(v4_clamp(vis * vx[0], lo, hi));
		const v4f l1 = v4_round(v4_clamp(vis * vx[1], lo, hi));
		const v4f l2 = v4_round(v4_clamp(vis * vx[2], lo, hi));
		const v4f l3 = v4_round(v4_clamp(vis * vx[3], lo, hi));
		const float slx = v4_sum8(vwx[0] * l0 + vwx[2] * l2, vwx[1] * l1 + vwx[3] * l3);
		const float sl2 = v4_sum8(vw[0] * l0 * l0 + vw[2] * l2 * l2,
					  vw[1] * l1 * l1 + vw[3] * l3 * l3);
		if (is == 0) {
			s = sl2 > 0 ? slx / sl2 : 0.0f;
			best = s * slx;
		} else if (sl2 > 0 && slx * slx > best * sl2) {
			s = slx / sl2;
			best = s * slx;
		}
	}
	return s;
}

/*
 * ggml's quantize_row_q6_K_ref for one block: fit the sixteen scales, store
 * them as int8 multiples of d = (the scale of largest magnitude)/-128, then
 * choose every code against the stored values.
 */
static void quantize_block_q6_K(const float *x, uint8_t *blk)
{
	float scales[16], max_scale = 0, max_abs = 0, iscale, d;
	uint8_t L[QK_K], *ql = blk, *qh = blk + 128;
	int8_t *sc = (int8_t *)(blk + 192);
	uint16_t d16;

	for (int ib = 0; ib < 16; ib++) {
		const float s = fit_scale_q6(x + 16 * ib), a = fabsf(s);

		scales[ib] = s;
		if (a > max_abs) {
			max_abs = a;
			max_scale = s;
		}
	}
	memset(blk, 0, sizeof(struct block_q6_K));
	if (!(max_abs >= 1e-15f))
		return;		/* d = 0: an all-zero block */
	iscale = -128.0f / max_scale;
	d16 = ms_f32_to_f16(1.0f / iscale);
	store_u16(blk + 208, d16);
	d = ms_f16_to_f32(d16);
	for (int ib = 0; ib < 16; ib++)
		sc[ib] = (int8_t)round_even(clampf(iscale * scales[ib], -128.0f, 127.0f));
	for (int j = 0; j < 16; j++) {
		const float dq = d * (float)sc[j];

		if (dq == 0) {
			memset(L + 16 * j, 32, 16);
			continue;
		}
		for (int l = 0; l < 16; l++)
			L[16 * j + l] = (uint8_t)(32 + round_even(clampf(x[16 * j + l] / dq,
									  -32.0f, 31.0f)));
	}
	for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
		const uint8_t *Lh = L + 128 * h;

		for (int l = 0; l < 32; l++) {
			ql[l] = (uint8_t)((Lh[l] & 15) | (Lh[l + 64] & 15) << 4);
			ql[l + 32] = (uint8_t)((Lh[l + 32] & 15) | (Lh[l + 96] & 15) << 4);
			qh[l] = (uint8_t)(Lh[l] >> 4 | (Lh[l + 32] >> 4) << 2 |
					  (Lh[l + 64] >> 4) << 4 | (Lh[l + 96] >> 4) << 6);
		}
	}
}

/*
 * ggml's quantize_row_q8_K_ref: d = max/-127 with max the signed value of
 * largest magnitude, q = round-half-even(x/d) (which needs no clamp for
 * finite x); bsums for the kernels' min terms.
 */
static void quantize_block_q8_K(const float *x, uint8_t *blk)
{
	float amax = 0, max = 0, iscale, d;
	int8_t qs[QK_K];
	int16_t bsums[QK_K / 16];

	for (int j = 0; j < QK_K; j++) {
		const float a = fabsf(x[j]);
		const int bigger = a > amax;

		max = bigger ? x[j] : max;
		amax = bigger ? a : amax;
	}
	if (amax > 0) {
		iscale = -127.0f / max;
		d = 1.0f / iscale;
		for (int j = 0; j < QK_K; j++)
			qs[j] = (int8_t)round_even(clampf(iscale * x[j], -127.0f, 127.0f));
	} else {
		d = 0;
		memset(qs, 0, sizeof(qs));
	}
	for (int i = 0; i < QK_K / 16; i++) {
		int sum = 0;

		for (int l = 0; l < 16; l++)
			sum += qs[16 * i + l];
		bsums[i] = (int16_t)sum;
	}
	memcpy(blk, &d, sizeof(d));
	memcpy(blk + 4, qs, sizeof(qs));
	memcpy(blk + 4 + QK_K, bsums, sizeof(bsums));
}

static void dequantize_q4_K(const uint8_t *src, float *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, src += sizeof(struct block_q4_K)) {
		const float d = ms_f16_to_f32(load_u16(src));
		const float dmin = ms_f16_to_f32(load_u16(src + 2));
		const uint8_t *sc = src + 4, *qs = src + 16;

		for (int g = 0; g < 4; g++, qs += 32, dst += 64) {
			uint8_t s0, m0, s1, m1;
			float d0, d1, o0, o1;

			ms_get_scale_min_k4(2 * g, sc, &s0, &m0);
			ms_get_scale_min_k4(2 * g + 1, sc, &s1, &m1);
			d0 = d * (float)s0;
			o0 = dmin * (float)m0;
			d1 = d * (float)s1;
			o1 = dmin * (float)m1;
			for (int l = 0; l < 32; l++) {
				dst[l] = d0 * (float)(qs[l] & 15) - o0;
				dst[l + 32] = d1 * (float)(qs[l] >> 4) - o1;
			}
		}
	}
}

static void dequantize_q5_K(const uint8_t *src, float *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, src += sizeof(struct block_q5_K)) {
		const float d = ms_f16_to_f32(load_u16(src));
		const float dmin = ms_f16_to_f32(load_u16(src + 2));
		const uint8_t *sc = src + 4, *qh = src + 16, *qs = src + 48;

		for (int g = 0; g < 4; g++, qs += 32, dst += 64) {
			uint8_t s0, m0, s1, m1;
			float d0, d1, o0, o1;

			ms_get_scale_min_k4(2 * g, sc, &s0, &m0);
			ms_get_scale_min_k4(2 * g + 1, sc, &s1, &m1);
			d0 = d * (float)s0;
			o0 = dmin * (float)m0;
			d1 = d * (float)s1;
			o1 = dmin * (float)m1;
			for (int l = 0; l < 32; l++) {
				const int h0 = (qh[l] >> (2 * g)) & 1, h1 = (qh[l] >> (2 * g + 1)) & 1;

				dst[l] = d0 * (float)((qs[l] & 15) | h0 << 4) - o0;
				dst[l + 32] = d1 * (float)((qs[l] >> 4) | h1 << 4) - o1;
			}
		}
	}
}

static void dequantize_q6_K(const uint8_t *src, float *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, src += sizeof(struct block_q6_K)) {
		const float d = ms_f16_to_f32(load_u16(src + 208));
		const uint8_t *ql = src, *qh = src + 128;
		const int8_t *sc = (const int8_t *)(src + 192);

		for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, dst += 128) {
			for (int l = 0; l < 32; l++) {
				const int is = l / 16;
				const int q1 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
				const int q2 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
				const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
				const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;

				dst[l] = d * (float)sc[is] * (float)q1;
				dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
				dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
				dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
			}
		}
	}
}

static void dequantize_q8_K(const uint8_t *src, float *dst, size_t nb)
{
	for (size_t i = 0; i < nb; i++, src += sizeof(struct block_q8_K)) {
		const int8_t *qs = (const int8_t *)(src + 4);
		float d;

		memcpy(&d, src, sizeof(d));
		for (int j = 0; j < QK_K; j++)
			*dst++ = d * (float)qs[j];
	}
}

int ms_dequantize_row(uint32_t type, const void *src, float *dst, size_t n)
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
	case GGML_TYPE_Q4_K:
	case GGML_TYPE_Q5_K:
	case GGML_TYPE_Q6_K:
	case GGML_TYPE_Q8_K:
		if (n % QK_K)
			return -EINVAL;
		if (type == GGML_TYPE_Q4_K)
			dequantize_q4_K(s, dst, n / QK_K);
		else if (type == GGML_TYPE_Q5_K)
			dequantize_q5_K(s, dst, n / QK_K);
		else if (type == GGML_TYPE_Q6_K)
			dequantize_q6_K(s, dst, n / QK_K);
		else
			dequantize_q8_K(s, dst, n / QK_K);
		return 0;
	default:
		return -EINVAL;
	}
}

int ms_quantize_row(uint32_t type, const float *src, void *dst, size_t n)
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
	case GGML_TYPE_Q4_K:
	case GGML_TYPE_Q5_K:
	case GGML_TYPE_Q6_K:
	case GGML_TYPE_Q8_K: {
		const size_t bytes = ms_ggml_type_get(type)->bytes;

		if (n % QK_K)
			return -EINVAL;
		for (size_t i = 0; i < n / QK_K; i++, src += QK_K, d += bytes) {
			if (type == GGML_TYPE_Q4_K)
				quantize_block_k45(src, d, 15);
			else if (type == GGML_TYPE_Q5_K)
				quantize_block_k45(src, d, 31);
			else if (type == GGML_TYPE_Q6_K)
				quantize_block_q6_K(src, d);
			else
				quantize_block_q8_K(src, d);
		}
		return 0;
	}
	default:
		return -EINVAL;
	}
}

int ms_kv_type_parse(const char *s, uint32_t *type)
{
	if (!s || !type)
		return -EINVAL;
	if (!strcasecmp(s, "f16"))
		*type = GGML_TYPE_F16;
	else if (!strcasecmp(s, "f32"))
		*type = GGML_TYPE_F32;
	else
		return -EINVAL;
	return 0;
}
