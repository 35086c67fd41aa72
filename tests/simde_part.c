/* The SIMDe build of the AVX-512 kernels, for tests; tests/simde_none.c stands in where SIMDe is absent. */
#include "config.h"

#include "kernels.h"
#include "simde_part.h"

const struct ms_kernels *test_simde_part(void)
{
	return &ms_kernels_avx512_simde_part;
}

const struct ms_kernels *test_simde_wide_part(void)
{
	return &ms_kernels_avx512_simde_wide_part;
}

const struct ms_kernels *test_simde_k_part(void)
{
	return &ms_kernels_avx512_simde_k_part;
}

const struct ms_kernels *test_simde_bf16_part(void)
{
	return &ms_kernels_avx512_bf16_simde_part;
}
