/* Attention-side kernels (KV row conversion, block scores, softmax numerators, value sums) behind their own small run-time dispatch. */
#ifndef MS_ATTENTION_H
#define MS_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/*
 * The KV cache stores keys and values as F16 (half the bytes of F32, so
 * twice the context per GiB and half the read traffic per decode step) or
 * F32 (exact). Rows are converted to F16 once when written; the attention
 * kernels below read either type in place.
 */
struct ms_attn_kernels {
	const char *name;
	void (*f32_to_f16)(size_t n, const float *x, uint16_t *y);   /* round to nearest even */
	/*
	 * The three steps of attention over a block of nk cached positions for
	 * the G query heads that share one KV head (head dimension hd); keys
	 * and values are rows of F16 or F32 (type) kstride/vstride bytes apart,
	 * read straight from the cache, each row once for all G heads.
	 *
	 * scores: s[h * s_stride + t] = scale * sum_i q[h * hd + i] * key_t[i].
	 */
	void (*scores)(size_t hd, size_t G, const float *q, const void *k, size_t kstride, uint32_t type,
		       size_t nk, float scale, float *s, size_t s_stride);
	/*
	 * Softmax numerators in place: s[t] = exp(s[t] - mx) for t < n (mx at
	 * least every s[t]); returns their sum. Arguments below -87 (terms
	 * under 2^-125 of the largest) give 0.
	 */
	float (*exp_sum)(size_t n, float mx, float *s);
	/* accum: out[h * o_stride + i] += sum_t p[h * p_stride + t] * value_t[i]. */
	void (*accum)(size_t hd, size_t G, const float *p, size_t p_stride, const void *v, size_t vstride,
		      uint32_t type, size_t nk, float *out, size_t o_stride);
};

/* Below this, exp_sum's terms are 0 (exp(-87) is within 2^4 of FLT_MIN). */
#define MS_EXP_MIN_ARG (-87.0f)

/* Generic twin: always available. */
extern const struct ms_attn_kernels ms_attn_generic;
/*
 * Defined only in x86 builds (engine/attention_avx2.c, attention_avx512.c);
 * reached through the kernel tables' attn (ms_kernels_get). The _simde
 * twin is the AVX-512 source compiled against SIMDe, linked into tests
 * only, as ms_kernels_avx512_simde_part (which carries it).
 */
extern const struct ms_attn_kernels ms_attn_avx2;
extern const struct ms_attn_kernels ms_attn_avx512;
extern const struct ms_attn_kernels ms_attn_avx512_simde;

/* ms_kernels_get(isa)->attn (NULL when the build or CPU lacks isa). */
const struct ms_attn_kernels *ms_attn_kernels_get(enum ms_isa isa);

#endif
