/* Which AVX-512 kernel build the tests can run whatever the CPU: SIMDe's, or none. */
#ifndef MS_TEST_SIMDE_PART_H
#define MS_TEST_SIMDE_PART_H

struct ms_kernels;

/*
 * The AVX-512 part table compiled against SIMDe (needs an AVX2 CPU, SIMDe
 * itself being built on AVX2 here), or NULL when the build has no SIMDe.
 */
const struct ms_kernels *test_simde_part(void);
/* Its F16/BF16 tiles (ms_kernels_avx512_simde_wide_part), or NULL likewise. */
const struct ms_kernels *test_simde_wide_part(void);
/* Its K-quant 16-row GEMMs (ms_kernels_avx512_simde_k_part), or NULL likewise. */
const struct ms_kernels *test_simde_k_part(void);

/*
 * The tables the tests run beyond ms_kernels_get()'s: the native AVX-512
 * one with its F16/BF16 tiles where this CPU would not choose them, and
 * the SIMDe one (both parts over AVX2). Returns how many of tabs[] were
 * filled (at most 2); why_not[] gets the reasons for the others (the
 * caller reports them as SKIP), the rest of it NULL.
 */
int test_extra_tables(struct ms_kernels tabs[2], const char *why_not[2]);

#endif
