/* Which AVX-512 kernel build the tests can run whatever the CPU: SIMDe's, or none. */
#ifndef MS_TEST_SIMDE_PART_H
#define MS_TEST_SIMDE_PART_H

#include "kernels.h"   /* test_extra_tables takes an array of tables */

/*
 * The AVX-512 part table compiled against SIMDe (needs an AVX2 CPU, SIMDe
 * itself being built on AVX2 here), or NULL when the build has no SIMDe.
 */
const struct ms_kernels *test_simde_part(void);
/* Its F16/BF16 tiles (ms_kernels_avx512_simde_wide_part), or NULL likewise. */
const struct ms_kernels *test_simde_wide_part(void);
/* Its K-quant 16-row GEMMs (ms_kernels_avx512_simde_k_part), or NULL likewise. */
const struct ms_kernels *test_simde_k_part(void);
/* Its vdpbf16ps BF16 kernels (ms_kernels_avx512_bf16_simde_part), or NULL likewise. */
const struct ms_kernels *test_simde_bf16_part(void);

/*
 * The tables the tests run beyond ms_kernels_get()'s: the native AVX-512
 * one with its float F16/BF16 tiles where this CPU would not choose them,
 * the native one with vdpbf16ps where the CPU has it but the table keeps
 * the float tiles, the SIMDe one (both parts over AVX2), and AVX2 with SIMDe's vdpbf16ps
 * BF16 kernels. Returns how many of tabs[] were filled; why_not[] gets
 * the reasons for the others (the caller reports them as SKIP), the rest
 * of it NULL. A table whose BF16 activations are BF16 is checked against
 * the generic table with ms_kernels_bf16dp_generic_part over it.
 */
#define TEST_EXTRA_MAX 4
int test_extra_tables(struct ms_kernels tabs[TEST_EXTRA_MAX], const char *why_not[TEST_EXTRA_MAX]);

#endif
