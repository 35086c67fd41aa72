/*
 * silu(x) = x / (1 + e^-x), the feed-forward gate's activation, as one
 * fixed sequence of IEEE operations that every kernel level repeats lane
 * for lane, so every table gives the same bits (kernels_generic.c's
 * silu_mul is this function element by element, kernels_avx2.c's the same
 * steps eight lanes at a time):
 *
 *   z = -x, clamped to [SILU_ZLO, SILU_ZHI] as maxps/minps clamp (a NaN z
 *       becomes SILU_ZLO; the result is NaN anyway, from x);
 *   n = z log2(e) rounded to the nearest integer inside one fused
 *       multiply-add with 1.5 * 2^23 (t), then t - 1.5 * 2^23;
 *   r = z - n ln2 in two fused steps (ln2 split as Cephes does);
 *   e^r = Cephes expf's polynomial by fused multiply-adds (within 2 ulp
 *       of e^r for |r| <= ln2 / 2);
 *   e^z = e^r * 2^n, 2^n built from t's low bits as an exponent field;
 *   silu = x / (1 + e^z).
 *
 * The clamp keeps 2^n a normal float (n in -126..127) and e^z finite.
 * For x above 87, e^z < 2^-125 and 1 + e^z is 1: silu is x, as it should
 * be. For x below -88 the result is x / (1 + e^88) instead of the true
 * x e^x: both within 1e-36 of zero. Against x / (1 + e^-x) in double
 * it is within 1.7e-7, as the libm expf version was. It replaced a scalar
 * expf call per element: the 57,344 products of a four-token 7B layer
 * took 128 us of one thread that way, 21 with the AVX2 silu_mul
 * (BENCHMARKS.md).
 */
#ifndef MS_SILU_H
#define MS_SILU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define SILU_ZLO (-87.0f)
#define SILU_ZHI 88.0f
#define SILU_LOG2E 1.44269504088896341f
#define SILU_SHIFT 12582912.0f          /* 1.5 * 2^23 */
#define SILU_SHIFT_BITS 0x4b400000
#define SILU_LN2_HI 0.693359375f
#define SILU_LN2_LO (-2.12194440e-4f)
#define SILU_P0 1.9875691500e-4f
#define SILU_P1 1.3981999507e-3f
#define SILU_P2 8.3334519073e-3f
#define SILU_P3 4.1665795894e-2f
#define SILU_P4 1.6666665459e-1f
#define SILU_P5 5.0000001201e-1f

static inline float silu_scalar(float x)
{
	float z = -x, t, n, r, p, two_n, e;
	uint32_t tb, eb;

	z = z > SILU_ZLO ? z : SILU_ZLO;
	z = z < SILU_ZHI ? z : SILU_ZHI;
	t = fmaf(z, SILU_LOG2E, SILU_SHIFT);
	n = t - SILU_SHIFT;
	r = fmaf(n, -SILU_LN2_HI, z);
	r = fmaf(n, -SILU_LN2_LO, r);
	p = fmaf(SILU_P0, r, SILU_P1);
	p = fmaf(p, r, SILU_P2);
	p = fmaf(p, r, SILU_P3);
	p = fmaf(p, r, SILU_P4);
	p = fmaf(p, r, SILU_P5);
	p = fmaf(p, r * r, r);
	p = p + 1.0f;
	memcpy(&tb, &t, sizeof(tb));
	eb = (tb - SILU_SHIFT_BITS + 127u) << 23;
	memcpy(&two_n, &eb, sizeof(two_n));
	e = p * two_n;
	return x / (1.0f + e);
}

#endif
