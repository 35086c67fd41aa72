/* No SIMDe on this build machine: the tests skip the portable AVX-512 run and say so. */
#include "config.h"

#include <stddef.h>

#include "simde_part.h"

const struct ms_kernels *test_simde_part(void)
{
	return NULL;
}

const struct ms_kernels *test_simde_wide_part(void)
{
	return NULL;
}

const struct ms_kernels *test_simde_k_part(void)
{
	return NULL;
}

const struct ms_kernels *test_simde_bf16_part(void)
{
	return NULL;
}
