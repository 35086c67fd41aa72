/* Attention-side kernels (KV cache row conversion) behind their own small run-time dispatch. */
#ifndef MS_ATTENTION_H
#define MS_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/*
 * The KV cache stores keys and values as F16 (half the bytes of F32, so
 * twice the context per GiB and half the read traffic per decode step) or
 * F32 (bit-exact with the float reference, for tests). Attention converts
 * each row it reads back to floats once and reuses it for every query head
 * of its group.
 */
struct ms_attn_kernels {
	const char *name;
	void (*f32_to_f16)(size_t n, const float *x, uint16_t *y);   /* round to nearest even */
	void (*f16_to_f32)(size_t n, const uint16_t *x, float *y);
};

/* Generic twin: always available. */
extern const struct ms_attn_kernels ms_attn_generic;
/* Defined only in x86 builds (engine/attention_avx2.c); reached through ms_attn_kernels_get(). */
extern const struct ms_attn_kernels ms_attn_avx2;

/* The table for isa (NULL when the build or CPU lacks it, as ms_kernels_get). */
const struct ms_attn_kernels *ms_attn_kernels_get(enum ms_isa isa);

#endif
