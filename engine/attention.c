/* Attention-side kernels (KV cache row conversion) behind their own small run-time dispatch. */
#include "config.h"

#include "attention.h"
#include "quant.h"

static void f32_to_f16_generic(size_t n, const float *x, uint16_t *y)
{
	for (size_t i = 0; i < n; i++)
		y[i] = ms_f32_to_f16(x[i]);
}

static void f16_to_f32_generic(size_t n, const uint16_t *x, float *y)
{
	for (size_t i = 0; i < n; i++)
		y[i] = ms_f16_to_f32(x[i]);
}

const struct ms_attn_kernels ms_attn_generic = {
	.name = "generic",
	.f32_to_f16 = f32_to_f16_generic,
	.f16_to_f32 = f16_to_f32_generic,
};

const struct ms_attn_kernels *ms_attn_kernels_get(enum ms_isa isa)
{
	if (isa == MS_ISA_GENERIC)
		return &ms_attn_generic;
#ifdef HAVE_X86
	if (isa == MS_ISA_AVX2 && ms_cpu_best_isa() >= MS_ISA_AVX2)
		return &ms_attn_avx2;
#endif
	return NULL;
}
