/* Which AVX-512 kernel build the tests can run whatever the CPU: SIMDe's, or none. */
#ifndef MS_TEST_SIMDE_PART_H
#define MS_TEST_SIMDE_PART_H

struct ms_kernels;

/*
 * The AVX-512 part table compiled against SIMDe (needs an AVX2 CPU, SIMDe
 * itself being built on AVX2 here), or NULL when the build has no SIMDe.
 */
const struct ms_kernels *test_simde_part(void);

#endif
