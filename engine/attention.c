/* Attention-side kernels, generic twins (the reference for every ISA), and the table lookup. */
#include "config.h"

#include <math.h>

#include "attention.h"
#include "quant.h"

static void f32_to_f16_generic(size_t n, const float *x, uint16_t *y)
{
	for (size_t i = 0; i < n; i++)
		y[i] = ms_f32_to_f16(x[i]);
}

static inline float kv_elt(const void *row, uint32_t type, size_t i)
{
	if (type == GGML_TYPE_F16)
		return ms_f16_to_f32(((const uint16_t *)row)[i]);
	return ((const float *)row)[i];
}

/* Eight-lane partial sums, as the generic dot product: error near (8 + hd/8) eps instead of hd eps. */
static void scores_generic(size_t hd, size_t G, const float *q, const void *k, size_t kstride, uint32_t type,
			   size_t nk, float scale, float *s, size_t s_stride)
{
	for (size_t t = 0; t < nk; t++) {
		const void *kr = (const char *)k + t * kstride;

		for (size_t h = 0; h < G; h++) {
			const float *qh = q + h * hd;
			float lane[8] = { 0 }, sum = 0.0f;

			for (size_t i = 0; i < hd; i++)
				lane[i % 8] += qh[i] * kv_elt(kr, type, i);
			for (int l = 0; l < 8; l++)
				sum += lane[l];
			s[h * s_stride + t] = scale * sum;
		}
	}
}

static float exp_sum_generic(size_t n, float mx, float *s)
{
	float sum = 0.0f;

	for (size_t t = 0; t < n; t++) {
		const float x = s[t] - mx;

		s[t] = x < MS_EXP_MIN_ARG ? 0.0f : expf(x);
		sum += s[t];
	}
	return sum;
}

static void accum_generic(size_t hd, size_t G, const float *p, size_t p_stride, const void *v, size_t vstride,
			  uint32_t type, size_t nk, float *out, size_t o_stride)
{
	for (size_t t = 0; t < nk; t++) {
		const void *vr = (const char *)v + t * vstride;

		for (size_t h = 0; h < G; h++) {
			const float w = p[h * p_stride + t];
			float *o = out + h * o_stride;

			for (size_t i = 0; i < hd; i++)
				o[i] += w * kv_elt(vr, type, i);
		}
	}
}

const struct ms_attn_kernels ms_attn_generic = {
	.name = "generic",
	.f32_to_f16 = f32_to_f16_generic,
	.scores = scores_generic,
	.exp_sum = exp_sum_generic,
	.accum = accum_generic,
};

const struct ms_attn_kernels *ms_attn_kernels_get(enum ms_isa isa)
{
	const struct ms_kernels *k = ms_kernels_get(isa);

	return k ? k->attn : NULL;
}
