/*
 * AVX-512 BF16 kernels: BF16 weights against BF16 activations with
 * vdpbf16ps, 32 multiply-adds an instruction where the float tiles of
 * kernels_avx512.c do 16 (they widen each weight and FMA it against float
 * activations). The price is the activations' rounding to BF16 (8
 * significant bits), once per matmul. Built natively with -mavx512bf16
 * (chosen only on AMD CPUs whose cpuid shows AVX512_BF16:
 * ms_cpu_use_bf16dp) and against SIMDe for the
 * tests; kernels_generic.c's ms_kernels_bf16dp_generic_part is the twin.
 *
 * Arithmetic (the twin's, bit for bit): activations rounded to nearest
 * even, denormals to signed zero, NaN quieted (vcvtneps2bf16's rule);
 * then per row one f32 sum over element pairs (2j, 2j + 1) in order, each
 * pair added as vdpbf16ps does in the SDM's pseudo-code: acc += w1 * x1,
 * then acc += w0 * x0, each a fused multiply-add rounded to nearest even,
 * BF16 inputs denormal-as-zero and each result flushed to zero when
 * denormal. An odd last element pairs with a zero. SIMDe's portable
 * _mm512_dpbf16_ps adds the even product first and flushes nothing, so
 * the SIMDe build spells the SDM's order out in AVX-512F (dp_pairs).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef MS_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define MS_BF16_PART ms_kernels_avx512_bf16_simde_part
#define MS_BF16_NAME "avx512-simde"
#else
#include <immintrin.h>
#define MS_BF16_PART ms_kernels_avx512_bf16_part
#define MS_BF16_NAME "avx512"
#endif

#include "kernels.h"
#include "quant.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

/* Lanes whose exponent field is 0 (zero or denormal) made signed zeros. */
static inline __m512i zero_denormals(__m512i v)
{
	/* (SIMDe 0.7 has neither vptestnmd nor a not-equal compare: and + equal) */
	const __mmask16 tiny = _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, _mm512_set1_epi32(0x7f800000)),
						       _mm512_setzero_si512());

	return _mm512_mask_mov_epi32(v, tiny, _mm512_and_si512(v, _mm512_set1_epi32((int)0x80000000u)));
}

/*
 * acc + the products of the bf16 pairs in each dword lane of w and x,
 * odd element first (see the top of the file).
 */
static inline __attribute__((always_inline)) __m512 dp_pairs(__m512 acc, __m512i w, __m512i x)
{
#ifdef MS_SIMDE
	const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
	const __m512 w1 = _mm512_castsi512_ps(zero_denormals(_mm512_and_si512(w, hi)));
	const __m512 x1 = _mm512_castsi512_ps(zero_denormals(_mm512_and_si512(x, hi)));
	const __m512 w0 = _mm512_castsi512_ps(zero_denormals(_mm512_slli_epi32(w, 16)));
	const __m512 x0 = _mm512_castsi512_ps(zero_denormals(_mm512_slli_epi32(x, 16)));

	acc = _mm512_castsi512_ps(zero_denormals(_mm512_castps_si512(_mm512_fmadd_ps(w1, x1, acc))));
	return _mm512_castsi512_ps(zero_denormals(_mm512_castps_si512(_mm512_fmadd_ps(w0, x0, acc))));
#else
	return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
#endif
}

/* acc + dp of w with the pair at a (4 bytes, or 2 and a zero when half) in every lane. */
static inline __attribute__((always_inline)) __m512 dp_bcast(__m512 acc, __m512i w, const uint16_t *a, const int half)
{
	uint32_t v = a[0];

	if (!half)
		memcpy(&v, a, sizeof(v));
	return dp_pairs(acc, w, _mm512_set1_epi32((int)v));
}

/* ------------------------------------------------------------------------ */
/* Activations: f32 -> bf16                                                  */
/* ------------------------------------------------------------------------ */

static const uint16_t low_words[32] = {
	0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
	1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
};

/* 16 floats (as bits) to bf16 by the rule at the top: vcvtneps2bf16's, in AVX-512F. */
static inline __m256i bf16_round16(__m512i v)
{
	const __m512i one = _mm512_set1_epi32(1);
	const __m512i r = _mm512_srli_epi32(
		_mm512_add_epi32(_mm512_add_epi32(v, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(_mm512_srli_epi32(v, 16), one)),
		16);
	const __mmask16 nan = _mm512_cmp_ps_mask(_mm512_castsi512_ps(v), _mm512_castsi512_ps(v), _CMP_UNORD_Q);
	__m512i o = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(v, 16), _mm512_set1_epi32(0x40)));

	o = _mm512_mask_mov_epi32(o, _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, _mm512_set1_epi32(0x7f800000)),
							     _mm512_setzero_si512()),
				  _mm512_and_si512(_mm512_srli_epi32(v, 16), _mm512_set1_epi32(0x8000)));
	/* the low words in order (vpmovdw, which SIMDe 0.7 lacks) */
	return _mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_loadu_si512(low_words), o));
}

static void act_bf16_avx512(size_t n, const float *x, void *out)
{
	uint16_t *o = out;
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm256_storeu_si256((__m256i *)(void *)(o + i), bf16_round16(_mm512_loadu_si512(x + i)));
	if (i < n) {
		/* through buffers: SIMDe 0.7 has no masked loads and stores */
		float f[16] = { 0 };
		uint16_t h[16];

		memcpy(f, x + i, (n - i) * sizeof(float));
		_mm256_storeu_si256((__m256i *)(void *)h, bf16_round16(_mm512_loadu_si512(f)));
		memcpy(o + i, h, (n - i) * sizeof(uint16_t));
	}
}

/* ------------------------------------------------------------------------ */
/* Plain rows                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Lane l sums the pairs at elements 32s + 2l, 32s + 2l + 1 for s = 0, 1,
 * ... (the last 32 padded with zeros), then the lanes are added as a tree:
 * l + (l + 8), then + 4, + 2, + 1.
 */
static float dot_bf16_bf16_avx512(size_t n, const void *w, const void *x)
{
	const uint16_t *a = w, *b = x;
	__m512 acc = _mm512_setzero_ps();
	__m256 s8;
	__m128 s4;
	size_t i = 0;

	for (; i + 32 <= n; i += 32)
		acc = dp_pairs(acc, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
	if (i < n) {
		uint16_t wa[32] = { 0 }, xb[32] = { 0 };

		memcpy(wa, a + i, (n - i) * sizeof(uint16_t));
		memcpy(xb, b + i, (n - i) * sizeof(uint16_t));
		acc = dp_pairs(acc, _mm512_loadu_si512(wa), _mm512_loadu_si512(xb));
	}
	s8 = _mm256_add_ps(_mm512_castps512_ps256(acc),
			   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
	s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
	s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
	return _mm_cvtss_f32(_mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1)));
}

/* ------------------------------------------------------------------------ */
/* Interleaved (x8): 16 rows to a register                                  */
/* ------------------------------------------------------------------------ */

/*
 * Elements 2j and 2j + 1 of a group's 8 rows are 32 bytes (kernels.h):
 * two such loads of two groups in one zmm, and one vpermw puts row r's
 * two elements side by side in dword lane r, the pair vdpbf16ps wants.
 * The permute is shared by every token of the tile, so per two elements,
 * 16 rows and 12 tokens: 2 loads, 1 permute, 12 broadcasts folded into
 * 12 vdpbf16ps (384 multiply-adds), where the float tile needs 4 loads, 4
 * widenings and 24 FMAs.
 */
#define DP_ZG 2
#define DP_NT 12

static const uint16_t pair_idx[32] = {
	0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
	16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31,
};

/* Rows 0..7 of the group at p0, 8..15 of the one at p1: pairs (2j, 2j + 1), or (2j, 0) when half. */
static inline __attribute__((always_inline)) __m512i pairs16(const uint16_t *p0, const uint16_t *p1, const int half)
{
	__m256i a, b;

	if (half) {
		a = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p0));
		b = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p1));
	} else {
		a = _mm256_loadu_si256((const __m256i *)(const void *)p0);
		b = _mm256_loadu_si256((const __m256i *)(const void *)p1);
	}
	return _mm512_permutexvar_epi16(_mm512_loadu_si512(pair_idx),
					_mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
}

/* One pair step (elements j, j + 1; j + 1 a zero when half) of a zg x nt tile. */
static inline __attribute__((always_inline)) void dp_step(const uint16_t *w, size_t gs, size_t j,
							  const uint16_t *const *a, const int zg, const int lone,
							  const int nt, const int half, __m512 acc[DP_ZG][DP_NT])
{
	__m512i v[DP_ZG];

	_Pragma("GCC unroll 2")
	for (int z = 0; z < zg; z++) {
		const uint16_t *p0 = w + 2 * z * gs + MS_X8 * j;

		v[z] = pairs16(p0, lone && z == zg - 1 ? p0 : p0 + gs, half);
	}
	_Pragma("GCC unroll 12")
	for (int t = 0; t < nt; t++)
		_Pragma("GCC unroll 2")
		for (int z = 0; z < zg; z++)
			acc[z][t] = dp_bcast(acc[z][t], v[z], a[t] + j, half);
}

/*
 * zg units of 16 rows (the last may be a lone group: lone set) x nt
 * tokens; w points at the first group, each group 8 * n elements.
 */
static inline __attribute__((always_inline)) void dp_tile(size_t n, const uint16_t *w, const void *x, size_t xs,
							  const int zg, const int lone, const int nt, float *out,
							  size_t os)
{
	const uint16_t *a[DP_NT];
	__m512 acc[DP_ZG][DP_NT];
	const size_t gs = (size_t)MS_X8 * n;
	size_t j = 0;

	_Pragma("GCC unroll 12")
	for (int t = 0; t < nt; t++)
		a[t] = (const uint16_t *)(const void *)((const char *)x + (size_t)t * xs);
	_Pragma("GCC unroll 2")
	for (int z = 0; z < zg; z++)
		_Pragma("GCC unroll 12")
		for (int t = 0; t < nt; t++)
			acc[z][t] = _mm512_setzero_ps();
	for (; j + 2 <= n; j += 2) {
		/* one 64-byte line of each group per 4 elements */
		if (j % 4 == 0)
			_Pragma("GCC unroll 4")
			for (int g = 0; g < 2 * zg - lone; g++)
				_mm_prefetch((const char *)((uintptr_t)(w + g * gs + MS_X8 * j) + PF_BYTES), _MM_HINT_T0);
		dp_step(w, gs, j, a, zg, lone, nt, 0, acc);
	}
	if (j < n)
		dp_step(w, gs, j, a, zg, lone, nt, 1, acc);
	zmm_tile_store(&acc[0][0], DP_NT, zg, lone, nt, out, os);
}

/*
 * One token (decode): DP_DEC_GROUPS groups as as many streams, each
 * prefetched DP_DEC_PF_BYTES ahead, an accumulator a group pair. Over
 * DRAM-resident 14336 x 4096 BF16 matrices (a ring of three, 2 threads,
 * CPU time against the probe's, alternated in one process;
 * /work/notes/kb/fdec-mm.c, BENCHMARKS.md) four groups 1 kB ahead read
 * 0.94-1.07 of the probe where the eight at 3 kB this tile had (Q4_0's
 * DEC_GROUPS and DEC_PF_BYTES, never swept for BF16) read 0.79-0.86 and
 * two 0.77-0.92; 0.5, 1.5, 3 and 6 kB ahead, and T1, T2, NTA or no
 * prefetch (at 3 kB), read less than or as much as 1 kB T0 (as for F16's
 * wide_dec_tile and Q8_0's tile, four streams a thread beat eight).
 * Against the old library, process by process: 0.90-0.97 against
 * 0.80-0.84; 8-layer BF16 decode 4.51 / 7.33 / 7.12 tok/s against 4.09 /
 * 6.27 / 5.81 (loaded, alternated).
 * Per four elements of a group pair (128 bytes): two 64-byte loads and
 * two two-table vpermw (vpermt2w) that make the pairs (k, k + 1) and
 * (k + 2, k + 3) of both groups' rows, where pairs16 needs four loads,
 * two inserts and two vpermw. Each row's pairs are added in the same
 * order, by the same dp_pairs, as dp_tile's. From L2 (eight groups):
 * 2.61 cycles per 64 bytes where dp_tile's 2 x 1 took 2.78-3.13
 * (BENCHMARKS.md).
 */
#define DP_DEC_GROUPS 4
#define DP_DEC_PF_BYTES 1024

/* word r of dword lane r: (row r's element 2q, element 2q + 1) of the group in a (lanes 0..7) then b (8..15) */
static const uint16_t dec_pair_idx[2][32] = {
	{ 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
	  32, 40, 33, 41, 34, 42, 35, 43, 36, 44, 37, 45, 38, 46, 39, 47 },
	{ 16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31,
	  48, 56, 49, 57, 50, 58, 51, 59, 52, 60, 53, 61, 54, 62, 55, 63 },
};

static inline __attribute__((always_inline)) void dp_dec_tile(size_t n, const uint16_t *w, const uint16_t *a,
							      float *out)
{
	const size_t gs = (size_t)MS_X8 * n, gb = gs * sizeof(uint16_t);
	const __m512i i0 = _mm512_loadu_si512(dec_pair_idx[0]), i1 = _mm512_loadu_si512(dec_pair_idx[1]);
	__m512 acc[DP_DEC_GROUPS / 2];
	size_t j = 0;

	_Pragma("GCC unroll 4")
	for (int z = 0; z < DP_DEC_GROUPS / 2; z++)
		acc[z] = _mm512_setzero_ps();
	for (; j + 4 <= n; j += 4) {
		/* 64 bytes of each stream a step: one line each, past the end into the next tile's */
		prefetch_streams(w, 2 * MS_X8 * j + DP_DEC_PF_BYTES / 64 * 64, gb, DP_DEC_GROUPS);
		_Pragma("GCC unroll 4")
		for (int z = 0; z < DP_DEC_GROUPS / 2; z++) {
			const uint16_t *p0 = w + 2 * z * gs + MS_X8 * j;
			const __m512i g0 = _mm512_loadu_si512(p0), g1 = _mm512_loadu_si512(p0 + gs);

			acc[z] = dp_bcast(acc[z], _mm512_permutex2var_epi16(g0, i0, g1), a + j, 0);
			acc[z] = dp_bcast(acc[z], _mm512_permutex2var_epi16(g0, i1, g1), a + j + 2, 0);
		}
	}
	for (; j < n; j += 2) {
		const int half = j + 1 == n;

		_Pragma("GCC unroll 4")
		for (int z = 0; z < DP_DEC_GROUPS / 2; z++) {
			const uint16_t *p0 = w + 2 * z * gs + MS_X8 * j;

			acc[z] = dp_bcast(acc[z], pairs16(p0, p0 + gs, half), a + j, half);
		}
	}
	_Pragma("GCC unroll 4")
	for (int z = 0; z < DP_DEC_GROUPS / 2; z++)
		_mm512_storeu_ps(out + 16 * z, acc[z]);
}

static inline __attribute__((always_inline)) void dp_tokens(size_t n, const uint16_t *w, const void *x, size_t xs,
							    size_t n_tok, const int zg, const int lone, float *out,
							    size_t os)
{
#define DP_AT(t, nt) dp_tile(n, w, (const char *)x + (t) * xs, xs, zg, lone, nt, out + (t) * os, os)
	size_t t = 0;

	for (; t + DP_NT <= n_tok; t += DP_NT)
		DP_AT(t, DP_NT);
	if (n_tok - t >= 8) {
		DP_AT(t, 8);
		t += 8;
	}
	if (n_tok - t >= 4) {
		DP_AT(t, 4);
		t += 4;
	}
	if (n_tok - t >= 2) {
		DP_AT(t, 2);
		t += 2;
	}
	if (n_tok - t >= 1)
		DP_AT(t, 1);
#undef DP_AT
}

static void gemm_bf16x8_dp_avx512(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
				  float *out, size_t os)
{
	const uint16_t *h = w;
	const size_t ng = rows / MS_X8, gs = MS_X8 * n;
	size_t g = 0;

	if (n_tok == 1)
		for (; g + DP_DEC_GROUPS <= ng; g += DP_DEC_GROUPS)
			dp_dec_tile(n, h + g * gs, x, out + MS_X8 * g);
	for (; g + 2 * DP_ZG <= ng; g += 2 * DP_ZG)
		dp_tokens(n, h + g * gs, x, xs, n_tok, DP_ZG, 0, out + MS_X8 * g, os);
	/* 1..3 groups left: a pair and/or a lone one */
	if (ng - g >= 2) {
		dp_tokens(n, h + g * gs, x, xs, n_tok, 1, 0, out + MS_X8 * g, os);
		g += 2;
	}
	if (g < ng)
		dp_tokens(n, h + g * gs, x, xs, n_tok, 1, 1, out + MS_X8 * g, os);
}

/*
 * BF16 weights only; ms_kernels_get() lays it over the avx512 table where
 * ms_cpu_use_bf16dp() says so (AVX512_BF16 on an AMD CPU).
 */
const struct ms_kernels MS_BF16_PART = {
	.isa = MS_ISA_AVX512,
	.name = MS_BF16_NAME,
	.type = {
		[GGML_TYPE_BF16] = { .act_type = GGML_TYPE_BF16, .act_conv = act_bf16_avx512,
				     .dot = dot_bf16_bf16_avx512, .gemm_x8 = gemm_bf16x8_dp_avx512 },
	},
};
