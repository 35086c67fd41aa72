/* The AVX-512 tables the kernel and forward tests run beyond ms_kernels_get()'s (see simde_part.h). */
#include "config.h"

#include <stddef.h>

#include "kernels.h"
#include "simde_part.h"

int test_extra_tables(struct ms_kernels tabs[2], const char *why_not[2])
{
	int n = 0, nw = 0;

	why_not[0] = why_not[1] = NULL;
	if (ms_cpu_best_isa() >= MS_ISA_AVX512 && !ms_cpu_full_zmm()) {
		if (ms_kernels_overlay(&tabs[n], ms_kernels_get(MS_ISA_AVX512), ms_kernels_avx512_wide()) == 0) {
			tabs[n].name = "avx512+f16-tiles";
			n++;
		} else {
			why_not[nw++] = "avx512 with its F16/BF16 tiles: the tables do not overlay";
		}
	}
	if (!test_simde_part())
		why_not[nw++] = "avx512 kernels through SIMDe: this build has no SIMDe (libsimde-dev)";
	else if (ms_cpu_best_isa() < MS_ISA_AVX2)
		why_not[nw++] = "avx512 kernels through SIMDe: SIMDe is built on AVX2 here, which this CPU lacks";
	else if (ms_kernels_overlay(&tabs[n], ms_kernels_get(MS_ISA_AVX2), test_simde_part()) == 0 &&
		 ms_kernels_overlay(&tabs[n], &tabs[n], test_simde_k_part()) == 0 &&
		 ms_kernels_overlay(&tabs[n], &tabs[n], test_simde_wide_part()) == 0)
		n++;
	else
		why_not[nw++] = "avx512 kernels through SIMDe: the tables do not overlay";
	return n;
}
