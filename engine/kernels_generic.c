/* Portable C kernels: the always-available dispatch table and the reference the ISA tables are tested against. */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "kernels.h"
#include "quant.h"
#include "silu.h"

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

/*
 * Integer activation path. Activations are quantized once per matmul; each
 * block's products are summed exactly in int32 and scaled once in float, so
 * the SIMD twins differ from these only in how the float terms are added.
 */

/* Q8_0 activations: ggml's quantize_row_q8_0_ref, which quant.c implements. */
static void act_q8_0_generic(size_t n, const float *x, void *out)
{
	(void)ms_quantize_row(GGML_TYPE_Q8_0, x, out, n);
}

/*
 * Round to nearest, ties to even, for |v| < 2^22 (ggml's nearest_int):
 * adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
 * Bit operations only, so NaN gives a defined (clamped later) value.
 */
static inline int nearest_even(float v)
{
	float t = v + 12582912.0f;
	int32_t i;

	memcpy(&i, &t, sizeof(i));
	return (i & 0x007fffff) - 0x00400000;
}

/*
 * Q8_K activations: iscale = 127/amax, q = nearest_even(x*iscale), d =
 * 1/iscale, bsums = sums of 16. (ggml scales by -127/max with max the signed
 * value of largest magnitude; |q| <= 127 and the accuracy are the same, and
 * this form has no "first of equal magnitudes" rule a SIMD twin must copy.)
 * A block with a non-finite value gets d = NaN so the NaN reaches the
 * output; one below 1e-30 (whose iscale could overflow) is all zero.
 * kernels_avx2.c must produce exactly these bytes.
 */
static void act_q8_K_generic(size_t n, const float *x, void *out)
{
	struct block_q8_K *y = out;

	for (size_t i = 0; i < n / QK_K; i++, x += QK_K) {
		float amax = 0.0f, iscale;
		int finite = 1;

		for (int j = 0; j < QK_K; j++) {
			const float a = fabsf(x[j]);

			finite &= a <= FLT_MAX;
			amax = a > amax ? a : amax;
		}
		if (!finite || !(amax >= MS_Q8K_MIN_AMAX)) {
			memset(&y[i], 0, sizeof(y[i]));
			y[i].d = finite ? 0.0f : NAN;
			continue;
		}
		iscale = 127.0f / amax;
		for (int j = 0; j < QK_K; j++) {
			int q = nearest_even(x[j] * iscale);

			y[i].qs[j] = (int8_t)(q < -127 ? -127 : q > 127 ? 127 : q);
		}
		for (int j = 0; j < QK_K / 16; j++) {
			int s = 0;

			for (int l = 0; l < 16; l++)
				s += y[i].qs[16 * j + l];
			y[i].bsums[j] = (int16_t)s;
		}
		y[i].d = 1.0f / iscale;
	}
}

static float vec_dot_q8_0_q8_0_generic(size_t n, const void *w, const void *x)
{
	const struct block_q8_0 *b = w;
	const struct block_q8_0 *a = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK8_0; i++) {
		int32_t s = 0;

		for (int j = 0; j < QK8_0; j++)
			s += b[i].qs[j] * a[i].qs[j];
		total += ms_f16_to_f32(b[i].d) * ms_f16_to_f32(a[i].d) * (float)s;
	}
	return total;
}

/* Q4_0: low nibbles are elements 0..15, high nibbles 16..31, both offset by 8. */
static float vec_dot_q4_0_q8_0_generic(size_t n, const void *w, const void *x)
{
	const struct block_q4_0 *b = w;
	const struct block_q8_0 *a = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK4_0; i++) {
		int32_t s = 0;

		for (int j = 0; j < QK4_0 / 2; j++) {
			s += ((b[i].qs[j] & 15) - 8) * a[i].qs[j];
			s += ((b[i].qs[j] >> 4) - 8) * a[i].qs[j + QK4_0 / 2];
		}
		total += ms_f16_to_f32(b[i].d) * ms_f16_to_f32(a[i].d) * (float)s;
	}
	return total;
}

/*
 * 6-bit scale and min of sub-block j of a Q4_K/Q5_K block, from the format
 * description (kept here rather than shared with quant.c so the tests
 * against ms_dequantize_row compare two independent readings of the format).
 */
static inline void scale_min_k4(int j, const uint8_t *s, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

/*
 * Q4_K/Q5_K: per super-block, isum = sum_j sc_j * sum_l q*y (exact: at most
 * 256 * 31 * 127 * 63 < 2^26) and the min term from the activation's
 * 16-element sums: msum = sum_j m_j * (bsums[2j] + bsums[2j+1]).
 */
static float vec_dot_q4_K_q8_K_generic(size_t n, const void *w, const void *x)
{
	const struct block_q4_K *b = w;
	const struct block_q8_K *a = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK_K; i++) {
		int32_t isum = 0, msum = 0;

		for (int j = 0; j < QK_K / 32; j++) {
			const uint8_t *q = b[i].qs + 32 * (j / 2);
			const int8_t *y = a[i].qs + 32 * j;
			const int shift = 4 * (j & 1);
			int32_t s = 0;
			int sc, m;

			scale_min_k4(j, b[i].scales, &sc, &m);
			for (int l = 0; l < 32; l++)
				s += ((q[l] >> shift) & 15) * y[l];
			isum += sc * s;
			msum += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
		}
		total += a[i].d * ms_f16_to_f32(b[i].d) * (float)isum -
			 a[i].d * ms_f16_to_f32(b[i].dmin) * (float)msum;
	}
	return total;
}

static float vec_dot_q5_K_q8_K_generic(size_t n, const void *w, const void *x)
{
	const struct block_q5_K *b = w;
	const struct block_q8_K *a = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK_K; i++) {
		int32_t isum = 0, msum = 0;

		for (int j = 0; j < QK_K / 32; j++) {
			const uint8_t *q = b[i].qs + 32 * (j / 2);
			const int8_t *y = a[i].qs + 32 * j;
			const int shift = 4 * (j & 1);
			int32_t s = 0;
			int sc, m;

			scale_min_k4(j, b[i].scales, &sc, &m);
			for (int l = 0; l < 32; l++)
				s += (((q[l] >> shift) & 15) | (((b[i].qh[l] >> j) & 1) << 4)) * y[l];
			isum += sc * s;
			msum += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
		}
		total += a[i].d * ms_f16_to_f32(b[i].d) * (float)isum -
			 a[i].d * ms_f16_to_f32(b[i].dmin) * (float)msum;
	}
	return total;
}

/*
 * Q6_K: two halves of 128; element l of a half (l < 32) and l+32, l+64,
 * l+96 share qh[l]. Sixteen 16-element sub-blocks, signed scales; the
 * (q - 32) offset is applied per element here (the AVX2 twin uses bsums).
 */
static float vec_dot_q6_K_q8_K_generic(size_t n, const void *w, const void *x)
{
	const struct block_q6_K *b = w;
	const struct block_q8_K *a = x;
	float total = 0.0f;

	for (size_t i = 0; i < n / QK_K; i++) {
		int32_t sub[QK_K / 16] = { 0 };
		int32_t isum = 0;

		for (int h = 0; h < 2; h++) {
			const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
			const int8_t *y = a[i].qs + 128 * h;
			int32_t *s = sub + 8 * h;

			for (int l = 0; l < 32; l++) {
				const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
				const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
				const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;

				s[l / 16 + 0] += q1 * y[l];
				s[l / 16 + 2] += q2 * y[l + 32];
				s[l / 16 + 4] += q3 * y[l + 64];
				s[l / 16 + 6] += q4 * y[l + 96];
			}
		}
		for (int j = 0; j < QK_K / 16; j++)
			isum += b[i].scales[j] * sub[j];
		total += a[i].d * ms_f16_to_f32(b[i].d) * (float)isum;
	}
	return total;
}

/*
 * Interleaved groups (kernels.h): byte j of row r's codes in block i sits
 * at qs[32 * (j / 4) + 4 * r + j % 4]. The float step is written as the
 * SIMD kernels do it (one rounded product of the two scales, then a fused
 * multiply-add) so the results are the same bits.
 */
static inline const uint8_t *x8_code(const uint8_t *qs, int r, int j)
{
	return qs + 32 * (j / 4) + 4 * r + j % 4;
}

/* One block of row r of a group against its activation block: the updated accumulator. */
typedef float (*x8_step_fn)(const void *blk, int r, const void *act, float acc);

static float q4_0x8_step(const void *blk, int r, const void *act, float acc)
{
	const struct block_q4_0x8 *b = blk;
	const struct ms_block_q8s *a = act;
	int32_t s = 0;

	for (int j = 0; j < QK4_0 / 2; j++) {
		const uint8_t q = *x8_code(b->qs, r, j);

		s += ((q & 15) - 8) * a->qs[j] + ((q >> 4) - 8) * a->qs[j + QK4_0 / 2];
	}
	return fmaf(ms_f16_to_f32(b->d[r]) * a->d, (float)s, acc);
}

static float q8_0x8_step(const void *blk, int r, const void *act, float acc)
{
	const struct block_q8_0x8 *b = blk;
	const struct ms_block_q8s *a = act;
	int32_t s = 0;

	for (int j = 0; j < QK8_0; j++)
		s += (int8_t)*x8_code((const uint8_t *)b->qs, r, j) * a->qs[j];
	return fmaf(ms_f16_to_f32(b->d[r]) * a->d, (float)s, acc);
}

/*
 * Q4_K and Q5_K: the packed scale bytes are interleaved like the codes;
 * row r's 12 are gathered back and read by scale_min_k4. Code byte 32g + l
 * of a row holds element 64g + l (low nibble, sub-block 2g) and 64g + 32
 * + l (high nibble, sub-block 2g + 1); Q5_K puts bit j of its qh byte l on
 * top of element 32j + l's nibble (qh NULL: Q4_K).
 */
static float k45x8_step(const uint8_t *scales, const uint8_t *qh, const uint8_t *qs, uint16_t d,
			uint16_t dmin, int r, const struct block_q8_K *a, float acc)
{
	uint8_t sc12[K_SCALE_SIZE];
	int32_t isum = 0, msum = 0;

	for (int k = 0; k < K_SCALE_SIZE; k++)
		sc12[k] = *x8_code(scales, r, k);
	for (int j = 0; j < QK_K / 32; j++) {
		const int shift = 4 * (j & 1);
		int32_t s = 0;
		int sc, m;

		scale_min_k4(j, sc12, &sc, &m);
		for (int l = 0; l < 32; l++) {
			int q = (*x8_code(qs, r, 32 * (j / 2) + l) >> shift) & 15;

			if (qh)
				q |= ((*x8_code(qh, r, l) >> j) & 1) << 4;
			s += q * a->qs[32 * j + l];
		}
		isum += sc * s;
		msum += m * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
	}
	acc = fmaf(ms_f16_to_f32(d) * a->d, (float)isum, acc);
	return fmaf(-(ms_f16_to_f32(dmin) * a->d), (float)msum, acc);
}

static float q4_Kx8_step(const void *blk, int r, const void *act, float acc)
{
	const struct block_q4_Kx8 *b = blk;

	return k45x8_step(b->scales, NULL, b->qs, b->d[r], b->dmin[r], r, act, acc);
}

static float q5_Kx8_step(const void *blk, int r, const void *act, float acc)
{
	const struct block_q5_Kx8 *b = blk;

	return k45x8_step(b->scales, b->qh, b->qs, b->d[r], b->dmin[r], r, act, acc);
}

/*
 * Q6_K: element 128h + 32k + l (l < 32) is ql byte 64h + l + 32 (k & 1),
 * low nibble for k < 2, high for k >= 2, with bits 2k..2k+1 of qh byte
 * 32h + l on top; minus 32; scale per 16 elements.
 */
static float q6_Kx8_step(const void *blk, int r, const void *act, float acc)
{
	const struct block_q6_Kx8 *b = blk;
	const struct block_q8_K *a = act;
	int32_t isum = 0;

	for (int j = 0; j < QK_K / 16; j++) {
		int32_t s = 0;

		for (int e = 16 * j; e < 16 * j + 16; e++) {
			const int h = e / 128, k = e % 128 / 32, l = e % 32;
			const uint8_t lq = *x8_code(b->ql, r, 64 * h + l + 32 * (k & 1));
			const uint8_t hq = *x8_code(b->qh, r, 32 * h + l);
			const int q = ((k < 2 ? lq : lq >> 4) & 15) | (((hq >> (2 * k)) & 3) << 4);

			s += (q - 32) * a->qs[e];
		}
		isum += (int8_t)*x8_code((const uint8_t *)b->scales, r, j) * s;
	}
	return fmaf(ms_f16_to_f32(b->d[r]) * a->d, (float)isum, acc);
}

/* The loops every interleaved twin shares: groups, tokens, the group's 8 rows, its blocks in order. */
static void x8_generic(x8_step_fn step, size_t nb, size_t bbytes, size_t abytes, const void *w, size_t rows,
		       const void *x, size_t xs, size_t n_tok, float *out, size_t os)
{
	for (size_t g = 0; g < rows / MS_X8; g++) {
		const char *wg = (const char *)w + g * nb * bbytes;

		for (size_t t = 0; t < n_tok; t++) {
			const char *xr = (const char *)x + t * xs;

			for (int r = 0; r < MS_X8; r++) {
				float acc = 0.0f;

				for (size_t i = 0; i < nb; i++)
					acc = step(wg + i * bbytes, r, xr + i * abytes, acc);
				out[t * os + g * MS_X8 + r] = acc;
			}
		}
	}
}

#define GEMM_X8_GENERIC(name, step, btype, atype, blck)						\
static void name(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,	\
		 float *out, size_t os)								\
{												\
	x8_generic(step, n / (blck), sizeof(btype), sizeof(atype), w, rows, x, xs, n_tok, out, os); \
}

GEMM_X8_GENERIC(gemm_q4_0x8_generic, q4_0x8_step, struct block_q4_0x8, struct ms_block_q8s, QK4_0)
GEMM_X8_GENERIC(gemm_q8_0x8_generic, q8_0x8_step, struct block_q8_0x8, struct ms_block_q8s, QK8_0)
GEMM_X8_GENERIC(gemm_q4_Kx8_generic, q4_Kx8_step, struct block_q4_Kx8, struct block_q8_K, QK_K)
GEMM_X8_GENERIC(gemm_q5_Kx8_generic, q5_Kx8_step, struct block_q5_Kx8, struct block_q8_K, QK_K)
GEMM_X8_GENERIC(gemm_q6_Kx8_generic, q6_Kx8_step, struct block_q6_Kx8, struct block_q8_K, QK_K)
#undef GEMM_X8_GENERIC

/*
 * F16 and BF16 (one element of the 8 rows per 16 bytes, float
 * activations) with their own loop: each element is widened once for up
 * to WIDE_GEN_TOKS tokens instead of once per row and token through a step
 * function, which made this twin 2.5x slower than the plain-row one. The
 * sums are the same fmaf chains in element order.
 */
#define WIDE_GEN_TOKS 16

static void wide_x8_generic(int bf16, size_t n, const void *w, size_t rows, const void *x, size_t xs,
			    size_t n_tok, float *out, size_t os)
{
	for (size_t g = 0; g < rows / MS_X8; g++) {
		const uint16_t *h = (const uint16_t *)w + g * MS_X8 * n;

		for (size_t t0 = 0; t0 < n_tok; t0 += WIDE_GEN_TOKS) {
			const size_t nt = n_tok - t0 < WIDE_GEN_TOKS ? n_tok - t0 : WIDE_GEN_TOKS;
			float acc[WIDE_GEN_TOKS][MS_X8] = { { 0 } };

			for (size_t k = 0; k < n; k++) {
				float wf[MS_X8];

				for (int r = 0; r < MS_X8; r++)
					wf[r] = bf16 ? ms_bf16_to_f32(h[MS_X8 * k + r]) : ms_f16_to_f32(h[MS_X8 * k + r]);
				for (size_t t = 0; t < nt; t++) {
					const float xv = ((const float *)(const void *)((const char *)x + (t0 + t) * xs))[k];

					for (int r = 0; r < MS_X8; r++)
						acc[t][r] = fmaf(wf[r], xv, acc[t][r]);
				}
			}
			for (size_t t = 0; t < nt; t++)
				for (int r = 0; r < MS_X8; r++)
					out[(t0 + t) * os + g * MS_X8 + r] = acc[t][r];
		}
	}
}

static void gemm_f16x8_generic(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
			       float *out, size_t os)
{
	wide_x8_generic(0, n, w, rows, x, xs, n_tok, out, os);
}

static void gemm_bf16x8_generic(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
				float *out, size_t os)
{
	wide_x8_generic(1, n, w, rows, x, xs, n_tok, out, os);
}

/*
 * The twin of engine/kernels_avx512_bf16.c (vdpbf16ps): BF16 weights
 * against BF16 activations, each pair of elements two fused steps, odd
 * element first, denormal inputs as zero and denormal results flushed
 * (kernels.h, ms_kernels_avx512_bf16_part). A product of two BF16 values
 * is exact in float, so fmaf is the instruction's one rounding per step.
 */
static float bf16_daz(uint16_t h)
{
	if (h & 0x7f80)
		return ms_bf16_to_f32(h);
	return (h & 0x8000) ? -0.0f : 0.0f;
}

static float flush_denormal(float r)
{
	return fabsf(r) < FLT_MIN ? copysignf(0.0f, r) : r;
}

static float dp_pair(float acc, uint16_t w0, uint16_t w1, uint16_t x0, uint16_t x1)
{
	acc = flush_denormal(fmaf(bf16_daz(w1), bf16_daz(x1), acc));
	return flush_denormal(fmaf(bf16_daz(w0), bf16_daz(x0), acc));
}

/* vcvtneps2bf16: nearest even, NaN quieted, denormals (and zeros) to signed zero. */
static void act_bf16_generic(size_t n, const float *x, void *out)
{
	uint16_t *o = out;

	for (size_t i = 0; i < n; i++) {
		uint32_t b;

		memcpy(&b, &x[i], sizeof(b));
		if ((b & 0x7fffffffu) > 0x7f800000u)
			o[i] = (uint16_t)((b >> 16) | 0x40);
		else if (!(b & 0x7f800000u))
			o[i] = (uint16_t)((b >> 16) & 0x8000);
		else
			o[i] = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
	}
}

/* 16 lanes, lane l the pairs at 32s + 2l (zeros past n), then a tree: l + (l + 8), + 4, + 2, + 1. */
static float dot_bf16_bf16_generic(size_t n, const void *w, const void *x)
{
	const uint16_t *a = w, *b = x;
	float lane[16] = { 0 };

	for (size_t i = 0; i < n; i += 32)
		for (size_t l = 0; l < 16; l++) {
			const size_t e = i + 2 * l;

			lane[l] = dp_pair(lane[l], e < n ? a[e] : 0, e + 1 < n ? a[e + 1] : 0, e < n ? b[e] : 0,
					  e + 1 < n ? b[e + 1] : 0);
		}
	for (size_t h = 8; h >= 1; h /= 2)
		for (size_t l = 0; l < h; l++)
			lane[l] += lane[l + h];
	return lane[0];
}

/* Each row one chain over its pairs in element order. */
static void gemm_bf16x8_dp_generic(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
				   float *out, size_t os)
{
	for (size_t g = 0; g < rows / MS_X8; g++) {
		const uint16_t *h = (const uint16_t *)w + g * MS_X8 * n;

		for (size_t t = 0; t < n_tok; t++) {
			const uint16_t *a = (const uint16_t *)(const void *)((const char *)x + t * xs);
			float acc[MS_X8] = { 0 };

			for (size_t j = 0; j < n; j += 2) {
				const int full = j + 1 < n;

				for (int r = 0; r < MS_X8; r++)
					acc[r] = dp_pair(acc[r], h[MS_X8 * j + r], full ? h[MS_X8 * (j + 1) + r] : 0, a[j],
							 full ? a[j + 1] : 0);
			}
			for (int r = 0; r < MS_X8; r++)
				out[t * os + g * MS_X8 + r] = acc[r];
		}
	}
}

/* Not a run-time table: the reference the BF16 parts of the ISA tables are tested against. */
const struct ms_kernels ms_kernels_bf16dp_generic_part = {
	.isa = MS_ISA_GENERIC,
	.name = "generic-bf16dp",
	.type = {
		[GGML_TYPE_BF16] = { GGML_TYPE_BF16, act_bf16_generic, dot_bf16_bf16_generic, NULL,
				     gemm_bf16x8_dp_generic },
	},
};

static void axpy_f32_generic(size_t n, float a, const float *x, float *y)
{
	for (size_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

static void silu_mul_generic(size_t n, float *g, const float *u)
{
	for (size_t i = 0; i < n; i++)
		g[i] = silu_scalar(g[i]) * u[i];
}

/* Element i of each stream in turn, one float accumulator per stream. */
static float sum_f32_generic(size_t n, const float *x, unsigned streams)
{
	const size_t ns = streams <= 1 ? 1 : streams < MS_SUM_STREAMS ? 2 : MS_SUM_STREAMS;
	const size_t len = n / ns;
	float acc[MS_SUM_STREAMS] = { 0 }, total = 0;

	for (size_t i = 0; i < len; i++)
		for (size_t s = 0; s < ns; s++)
			acc[s] += x[s * len + i];
	for (size_t i = ns * len; i < n; i++)
		acc[ns - 1] += x[i];
	for (size_t s = 0; s < ns; s++)
		total += acc[s];
	return total;
}

const struct ms_kernels ms_kernels_generic = {
	.isa = MS_ISA_GENERIC,
	.name = "generic",
	.type = {
		[GGML_TYPE_F32] = { GGML_TYPE_F32, NULL, vec_dot_f32_generic },
		[GGML_TYPE_F16] = { GGML_TYPE_F32, NULL, vec_dot_f16_generic, NULL, gemm_f16x8_generic },
		[GGML_TYPE_BF16] = { GGML_TYPE_F32, NULL, vec_dot_bf16_generic, NULL, gemm_bf16x8_generic },
		[GGML_TYPE_Q8_0] = { GGML_TYPE_Q8_0, act_q8_0_generic, vec_dot_q8_0_q8_0_generic, NULL,
				     gemm_q8_0x8_generic },
		[GGML_TYPE_Q4_0] = { GGML_TYPE_Q8_0, act_q8_0_generic, vec_dot_q4_0_q8_0_generic, NULL,
				     gemm_q4_0x8_generic },
		[GGML_TYPE_Q4_K] = { GGML_TYPE_Q8_K, act_q8_K_generic, vec_dot_q4_K_q8_K_generic, NULL,
				     gemm_q4_Kx8_generic },
		[GGML_TYPE_Q5_K] = { GGML_TYPE_Q8_K, act_q8_K_generic, vec_dot_q5_K_q8_K_generic, NULL,
				     gemm_q5_Kx8_generic },
		[GGML_TYPE_Q6_K] = { GGML_TYPE_Q8_K, act_q8_K_generic, vec_dot_q6_K_q8_K_generic, NULL,
				     gemm_q6_Kx8_generic },
	},
	.dot_f32 = dot_f32_generic,
	.axpy_f32 = axpy_f32_generic,
	.sum_f32 = sum_f32_generic,
	.silu_mul = silu_mul_generic,
	.attn = &ms_attn_generic,
};
