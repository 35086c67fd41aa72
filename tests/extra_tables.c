/* The AVX-512 tables the kernel and forward tests run beyond ms_kernels_get()'s (see simde_part.h). */
#include "config.h"

#include <stddef.h>

#include "kernels.h"
#include "quant.h"
#include "simde_part.h"

int test_extra_tables(struct ms_kernels tabs[TEST_EXTRA_MAX], const char *why_not[TEST_EXTRA_MAX])
{
	int n = 0, nw = 0;

	for (int i = 0; i < TEST_EXTRA_MAX; i++)
		why_not[i] = NULL;
	/*
	 * The float F16/BF16 tiles where this CPU's avx512 table has other
	 * kernels in their place: the AVX2 tiles (no full-width zmm FMAs) or,
	 * for BF16, vdpbf16ps.
	 */
	if (ms_cpu_best_isa() >= MS_ISA_AVX512 && (!ms_cpu_full_zmm() || ms_cpu_use_bf16dp())) {
		/* the BF16 entry back to float activations (the avx2 table's) under the wide part */
		tabs[n] = *ms_kernels_get(MS_ISA_AVX512);
		tabs[n].type[GGML_TYPE_BF16] = ms_kernels_get(MS_ISA_AVX2)->type[GGML_TYPE_BF16];
		if (ms_kernels_overlay(&tabs[n], &tabs[n], ms_kernels_avx512_wide()) == 0) {
			tabs[n].name = "avx512+float-tiles";
			n++;
		} else {
			why_not[nw++] = "avx512 with its float F16/BF16 tiles: the tables do not overlay";
		}
	}
	/* vdpbf16ps natively where the CPU has it but the avx512 table keeps the float tiles (Intel's) */
	if (ms_cpu_best_isa() >= MS_ISA_AVX512 && ms_cpu_avx512_bf16() && !ms_cpu_use_bf16dp()) {
		if (ms_kernels_overlay(&tabs[n], ms_kernels_get(MS_ISA_AVX512), ms_kernels_avx512_bf16()) == 0) {
			tabs[n].name = "avx512+bf16dp";
			n++;
		} else {
			why_not[nw++] = "avx512 with vdpbf16ps: the tables do not overlay";
		}
	}
	if (!test_simde_part()) {
		why_not[nw++] = "avx512 kernels through SIMDe: this build has no SIMDe (libsimde-dev)";
	} else if (ms_cpu_best_isa() < MS_ISA_AVX2) {
		why_not[nw++] = "avx512 kernels through SIMDe: SIMDe is built on AVX2 here, which this CPU lacks";
	} else {
		if (ms_kernels_overlay(&tabs[n], ms_kernels_get(MS_ISA_AVX2), test_simde_part()) == 0 &&
		    ms_kernels_overlay(&tabs[n], &tabs[n], test_simde_k_part()) == 0 &&
		    ms_kernels_overlay(&tabs[n], &tabs[n], test_simde_wide_part()) == 0)
			n++;
		else
			why_not[nw++] = "avx512 kernels through SIMDe: the tables do not overlay";
		/* only BF16 through SIMDe here: the rest of this table is the one above's business */
		if (ms_kernels_overlay(&tabs[n], ms_kernels_get(MS_ISA_AVX2), test_simde_bf16_part()) == 0) {
			tabs[n].name = "avx2+bf16dp-simde";
			n++;
		} else {
			why_not[nw++] = "avx512 BF16 (vdpbf16ps) kernels through SIMDe: the tables do not overlay";
		}
	}
	return n;
}
