/*
 * Inline AVX-512 helpers shared by the AVX-512 kernel files: include after
 * <immintrin.h> or, for the SIMDe builds (MS_SIMDE), after
 * <simde/x86/avx512.h> with native aliases, and after simd_avx2.h.
 */
#ifndef MS_SIMD_AVX512_H
#define MS_SIMD_AVX512_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * A zmm whose dword lane l is the 4-byte piece at p of row l of an x8
 * group (rows 0..7), then of the group gs bytes further (rows 8..15): two
 * 32-byte loads and an insert, shared by every token of a 16-row tile.
 */
static inline __attribute__((always_inline)) __m512i rows16(const uint8_t *p, size_t gs)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)p)),
				  _mm256_loadu_si256((const __m256i *)(const void *)(p + gs)), 1);
}

/* The f16 scales of rows 0..7 at p and 8..15 at p + gs, as floats. */
static inline __m512 f16x16(const uint8_t *p, size_t gs)
{
	/* two 256-bit conversions, as wide_load2: SIMDe has no _mm512_cvtph_ps */
	return _mm512_insertf32x8(_mm512_castps256_ps512(f16x8(p)), f16x8(p + gs), 1);
}

/* The 4 activation bytes at p as one int32 (any alignment). */
static inline int32_t act4(const int8_t *p)
{
	int32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * acc + vpdpbusd(w, the 4 bytes at y in every lane). GCC does not fold the
 * broadcast into the instruction's {1to16} memory operand: it emits a
 * vpbroadcastd per call, one more vector uop beside each dot product, so
 * the native build says it in assembly (SIMDe has no such operand).
 */
#ifdef MS_SIMDE
/*
 * SIMDe's vpdpbusd is a loop over the 64 byte products: inlined at each of
 * the K-quant tiles' ~2,000 call sites it made the SIMDe build of
 * kernels_avx512_k.c take over 10 minutes to compile. One out-of-line
 * copy does the same arithmetic; the tests run it a little slower.
 */
static __attribute__((noinline)) __m512i dpbusd_simde(__m512i acc, __m512i w, int32_t y)
{
	return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(y));
}
#endif

static inline __attribute__((always_inline)) __m512i dpbusd_b4(__m512i acc, __m512i w, const int8_t *y)
{
#ifdef MS_SIMDE
	return dpbusd_simde(acc, w, act4(y));
#else
	__asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)(const void *)y));
	return acc;
#endif
}

/*
 * acc + vpdpbusd(w, y in every lane) with y already a register: where two
 * dot products meet the same 4 activation bytes, one vpbroadcastd (a load)
 * serves both, which dpbusd_b4's memory operand cannot.
 */
static inline __attribute__((always_inline)) __m512i dpbusd_r(__m512i acc, __m512i w, int32_t y)
{
#ifdef MS_SIMDE
	return dpbusd_simde(acc, w, y);
#else
	return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(y));
#endif
}

/*
 * prefetch_block for the two streams a 16-row tile reads, gs bytes
 * apart. Past their end each goes on where the next pair's same stream
 * starts (gs further), so a pair's second group is not read cold: with
 * the 8-row prefetch that ran into the second group of the same pair (already
 * read), a one-token 14336 x 4096 Q4_0 matmul took 1.75 ms of CPU against
 * the 8-row tile's 1.3.
 */
static inline void prefetch_pair(const uint8_t *w, size_t i, size_t bb, size_t nb, size_t gs)
{
	const size_t j = i + PF_BYTES / bb + 1;
	const uintptr_t at = (uintptr_t)w + j * bb + (j >= nb ? gs : 0);

	for (size_t off = 0; off < bb; off += 64) {
		_mm_prefetch((const char *)(at + off), _MM_HINT_T0);
		_mm_prefetch((const char *)(at + gs + off), _MM_HINT_T0);
	}
}

/*
 * Stores a float tile's accumulators: acc[z * ld + t] holds rows 16z..16z + 15
 * of token t (zg units, the last only 8 rows when lone), out's rows os
 * floats apart. The F16/BF16 tiles of kernels_avx512.c and
 * kernels_avx512_bf16.c share it.
 */
static inline __attribute__((always_inline)) void zmm_tile_store(const __m512 *acc, const int ld, const int zg,
								 const int lone, const int nt, float *out, size_t os)
{
	_Pragma("GCC unroll 2")
	for (int z = 0; z < zg; z++)
		_Pragma("GCC unroll 12")
		for (int t = 0; t < nt; t++) {
			float *o = out + (size_t)t * os + 16 * z;

			if (lone && z == zg - 1)
				_mm256_storeu_ps(o, _mm512_castps512_ps256(acc[z * ld + t]));
			else
				_mm512_storeu_ps(o, acc[z * ld + t]);
		}
}

/* int32 -> float, round to nearest: SIMDe 0.7 has no 512-bit form, two 256-bit ones are the same. */
/*
 * One 64-byte line at offset pf of each of ng decode streams gs bytes
 * apart. Past a stream's end (pf >= gs) the lines are the next tile's
 * streams', which start (ng - 1) * gs further: the prefetch runs on into
 * them instead of each tile starting cold.
 */
static inline __attribute__((always_inline)) void prefetch_streams(const void *w, size_t pf, size_t gs, const int ng)
{
	const uintptr_t at = (uintptr_t)w + pf + (pf >= gs ? (size_t)(ng - 1) * gs : 0);

	_Pragma("GCC unroll 8")
	for (int k = 0; k < ng; k++)
		_mm_prefetch((const char *)(at + (size_t)k * gs), _MM_HINT_T0);
}

static inline __m512 cvt_i32x16(__m512i v)
{
#ifdef MS_SIMDE
	return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_cvtepi32_ps(_mm512_castsi512_si256(v))),
				  _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(v, 1)), 1);
#else
	return _mm512_cvtepi32_ps(v);
#endif
}

/* Byte k of each dword, zero-extended: a scale in the low word, 0 in the high one. */
static inline __m512i dword_byte(__m512i v, const int k)
{
	return _mm512_and_si512(_mm512_srli_epi32(v, 8 * k), _mm512_set1_epi32(0xff));
}

/* Bit s of each byte of v moved to bit 4, the rest cleared (kernels_avx2.c's bit_to_4, 512 bits). */
static inline __attribute__((always_inline)) __m512i bit_to_4_512(__m512i v, const int s)
{
	const __m512i k10 = _mm512_set1_epi8(0x10);

	if (s < 4)
		return _mm512_and_si512(_mm512_slli_epi16(v, 4 - s), k10);
	if (s > 4)
		return _mm512_and_si512(_mm512_srli_epi16(v, s - 4), k10);
	return _mm512_and_si512(v, k10);
}

#endif
