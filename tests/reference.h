/* A naive reference forward pass for the tests: no cache, no chunks, no kernels, double precision. */
#ifndef MS_TEST_REFERENCE_H
#define MS_TEST_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/*
 * Logits for every position of toks[0..n), computed from scratch with the
 * full n x n attention matrix under the mask p - window < j <= p (window 0:
 * plain causal). Shares only the weight bytes and ms_dequantize_row with the
 * engine. Returns a malloc()ed [n][vocab] array, NULL on allocation failure.
 */
float *ref_forward(const struct ms_model *m, const int32_t *toks, size_t n, uint32_t window);

/*
 * Nonzero: the inputs of BF16 matrices are rounded to BF16 first, as the
 * vdpbf16ps kernels do (ms_kernels_avx512_bf16_part). 0 by default.
 */
extern int ref_bf16_acts;

#endif
