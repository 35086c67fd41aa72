/*
 * AVX-512 kernels (F+BW+VL+DQ+VNNI): the interleaved (x8) GEMMs with
 * 512-bit vectors and vpdpbusd. Built twice: natively with the AVX-512
 * flags (the program's table), and with MS_SIMDE against SIMDe's portable
 * AVX-512 (tests only), so the same source is checked against the generic
 * twins on a machine without AVX-512. Reached only through run-time
 * dispatch; entries left NULL here are the AVX2 table's (ms_kernels_get).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef MS_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define MS_AVX512_PART ms_kernels_avx512_simde_part
#define MS_AVX512_WIDE_PART ms_kernels_avx512_simde_wide_part
#define MS_AVX512_NAME "avx512-simde"
#define MS_ATTN_AVX512 ms_attn_avx512_simde
#else
#include <immintrin.h>
#define MS_AVX512_PART ms_kernels_avx512_part
#define MS_AVX512_WIDE_PART ms_kernels_avx512_wide_part
#define MS_AVX512_NAME "avx512"
#define MS_ATTN_AVX512 ms_attn_avx512
#endif

#include "attention.h"
#include "kernels.h"
#include "quant.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

/*
 * The integer tiles below read the x8 layout 64 bytes (two 32-byte
 * chunks: rows 0..7's 4-byte pieces c, then c + 1) at a time and turn it,
 * with one permute shared by every token of the tile, into row order:
 * dword lanes 2r and 2r + 1 hold row r's pieces c and c + 1. The eight
 * activation bytes those two pieces meet are then one 64-bit broadcast
 * straight from memory (lane 2r gets bytes 0..3, lane 2r + 1 bytes 4..7),
 * no shuffle per token, and a vpdpbusd does 64 multiply-adds. A block's
 * two lanes per row are added once at its end (srli, add, vpmovqd), which
 * leaves the eight exact integer block sums in the order the AVX2 and
 * generic float steps use, so every result is bit-identical to theirs.
 */
static inline __m512i pair_rows(const void *p)
{
	const __m512i idx = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);

	return _mm512_permutexvar_epi32(idx, _mm512_loadu_si512(p));
}

static inline __m512i bcast8(const int8_t *p)
{
	int64_t v;

	memcpy(&v, p, sizeof(v));
	return _mm512_set1_epi64(v);
}

/* Row r's two lanes added: the eight block sums, row order. */
static inline __m256i pair_sum(__m512i v)
{
	return _mm512_cvtepi64_epi32(_mm512_add_epi32(v, _mm512_srli_epi64(v, 32)));
}

/*
 * Tokens per integer tile: each holds one zmm block sum and one ymm float
 * accumulator beside the four decoded weight vectors, so 8 tokens use 20
 * of the 32 registers and the weight decoding (two loads, two permutes,
 * four logic ops per Q4_0 block) is paid once per 8 tokens.
 */
#define X8_NT 8

/*
 * Q4_0 (u - 8 codes) and Q8_0 (signed codes; vpdpbusd wants the weight
 * side unsigned, so w ^ 0x80 = w + 128 as u8) share one tile: both are
 * sum (w' * y) - off * (sum of y), the offset (8 or 128) split over a
 * row's two lanes as the sums' starting value. The activation carries
 * sum y (struct ms_block_q8s), so that costs one broadcast per token.
 */
static inline __attribute__((always_inline)) void q0x8_tile(size_t nb, const void *w, const int q8, const void *x,
							    size_t xs, const int nt, float *out, size_t os)
{
	const size_t bb = q8 ? sizeof(struct block_q8_0x8) : sizeof(struct block_q4_0x8);
	const int half_off = q8 ? 64 : 4;
	const __m512i m4 = _mm512_set1_epi8(15), k80 = _mm512_set1_epi8((char)0x80);
	X8_TILE_BEGIN(struct ms_block_q8s, X8_NT)
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *g = (const uint8_t *)w + i * bb;
		/* d of rows 0..7 first in both layouts, then the codes */
		const __m256 dw = f16x8(g);
		const uint8_t *qs = g + 2 * MS_X8;
		__m512i v[4], s[X8_NT];

		prefetch_block(w, i, bb);
		if (q8) {
			_Pragma("GCC unroll 4")
			for (int p = 0; p < 4; p++)
				v[p] = _mm512_xor_si512(pair_rows(qs + 64 * p), k80);
		} else {
			const __m512i c01 = pair_rows(qs), c23 = pair_rows(qs + 64);

			/* elements 0..7, 8..15 (low nibbles), 16..23, 24..31 (high) */
			v[0] = _mm512_and_si512(c01, m4);
			v[1] = _mm512_and_si512(c23, m4);
			v[2] = _mm512_and_si512(_mm512_srli_epi16(c01, 4), m4);
			v[3] = _mm512_and_si512(_mm512_srli_epi16(c23, 4), m4);
		}
		/*
		 * Pieces outer, tokens inner: consecutive vpdpbusd are independent,
		 * where a token's four in a row made one 4 x 5-cycle chain that
		 * the scheduler could not overlap with enough other tokens (the
		 * tile ran at the AVX2 one's speed).
		 */
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			s[t] = _mm512_set1_epi32(-half_off * a[t][i].s);
		_Pragma("GCC unroll 4")
		for (int p = 0; p < 4; p++)
			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++)
				s[t] = _mm512_dpbusd_epi32(s[t], v[p], bcast8(a[t][i].qs + 8 * p));
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)),
						 _mm256_cvtepi32_ps(pair_sum(s[t])), acc[t]);
	}
	x8_tile_store(acc, nt, out, os);
}

_Static_assert(offsetof(struct block_q4_0x8, qs) == 2 * MS_X8 && offsetof(struct block_q8_0x8, qs) == 2 * MS_X8,
	       "q0x8_tile's offsets");

/*
 * The 0..7 tokens a run of full tiles leaves, in tiles of 4, 2 and 1:
 * results do not depend on the grouping, so a tail needs no tile of its
 * own size (each size is one more inlined copy of the tile).
 */
#define TAIL_TILES(TILE, t, n_tok, arg)				\
	do {								\
		if ((n_tok) - (t) >= 4) {				\
			TILE(t, 4, arg);				\
			(t) += 4;					\
		}							\
		if ((n_tok) - (t) >= 2) {				\
			TILE(t, 2, arg);				\
			(t) += 2;					\
		}							\
		if ((n_tok) - (t) >= 1)					\
			TILE(t, 1, arg);				\
	} while (0)

/* One tile call of GEMM_X8 below, at token t. */
#define X8_AT(t_, nt_, tile) tile(nb, b, (const char *)x + (t_) * xs, xs, nt_, o + (t_) * os, os)

/*
 * Group by group: full tiles of ntile tokens, then the tail. Each tile
 * takes (blocks per row, the group's bytes, activations, their stride,
 * tokens, outputs, their stride).
 */
#define GEMM_X8(name, tile, bbytes, blck, ntile)						\
static void name(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,	\
		 float *out, size_t os)								\
{												\
	const size_t nb = n / (blck);								\
												\
	for (size_t g = 0; g < rows / MS_X8; g++) {						\
		const uint8_t *b = (const uint8_t *)w + g * nb * (bbytes);			\
		float *o = out + g * MS_X8;							\
		size_t t = 0;									\
												\
		for (; t + (ntile) <= n_tok; t += (ntile))					\
			X8_AT(t, ntile, tile);							\
		TAIL_TILES(X8_AT, t, n_tok, tile);						\
	}											\
}

/*
 * Two groups (16 rows) at once. A zmm whose dword lane l is 4-byte piece
 * c of row l (rows 0..7 of the first group, then 8..15 of the second) is
 * two 32-byte loads and an insert, shared by every token of the tile; the
 * activation bytes it meets are one 4-byte broadcast from memory, folded
 * into the vpdpbusd. Each lane then holds a row's whole block sum, so
 * where the 8-row tile adds lane pairs (pair_sum) and does its float step
 * on eight lanes, this one converts, scales and accumulates 16 rows in one
 * zmm op each: per token and block 8 vpdpbusd and 4 other vector ops for
 * 16 rows, against 4 and 8 for 8 rows. The sums are the same exact
 * integers and each row's float step is the same, so the bits are too.
 * (rows16, f16x16, dpbusd_b4, prefetch_pair and cvt_i32x16 are in
 * simd_avx512.h, shared with kernels_avx512_k.c.)
 */

/*
 * Tokens per 16-row tile: eight decoded weight vectors, and per token a
 * block sum and a float accumulator: 26 of the 32 registers at 8.
 */
#define X16_NT 8

/*
 * Q4_0 piece c holds elements 4c.. (low nibbles) and 16 + 4c.. (high):
 * v[c] and v[c + 4]; Q8_0's eight pieces are v[0..7]. Either way v[p]
 * meets activation bytes 4p..4p+3.
 */
static inline __attribute__((always_inline)) void q0x16_tile(size_t nb, const uint8_t *w, size_t gs, const int q8,
							     const void *x, size_t xs, const int nt, float *out,
							     size_t os)
{
	const size_t bb = q8 ? sizeof(struct block_q8_0x8) : sizeof(struct block_q4_0x8);
	const int off = q8 ? 128 : 8;
	const __m512i m4 = _mm512_set1_epi8(15), k80 = _mm512_set1_epi8((char)0x80);
	const struct ms_block_q8s *a[X16_NT];
	__m512 acc[X16_NT];

	_Pragma("GCC unroll 8")
	for (int t = 0; t < nt; t++) {
		a[t] = (const struct ms_block_q8s *)(const void *)((const char *)x + (size_t)t * xs);
		acc[t] = _mm512_setzero_ps();
	}
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *g = w + i * bb;
		const __m512 dw = f16x16(g, gs);
		const uint8_t *qs = g + 2 * MS_X8;
		__m512i v[8], s[X16_NT];

		prefetch_pair(w, i, bb, nb, gs);
		if (q8) {
			_Pragma("GCC unroll 8")
			for (int p = 0; p < 8; p++)
				v[p] = _mm512_xor_si512(rows16(qs + 32 * p, gs), k80);
		} else {
			_Pragma("GCC unroll 4")
			for (int c = 0; c < 4; c++) {
				const __m512i r = rows16(qs + 32 * c, gs);

				v[c] = _mm512_and_si512(r, m4);
				v[c + 4] = _mm512_and_si512(_mm512_srli_epi16(r, 4), m4);
			}
		}
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			s[t] = _mm512_set1_epi32(-off * a[t][i].s);
		_Pragma("GCC unroll 8")
		for (int p = 0; p < 8; p++)
			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++)
				s[t] = dpbusd_b4(s[t], v[p], a[t][i].qs + 4 * p);
		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a[t][i].d)), cvt_i32x16(s[t]),
						 acc[t]);
	}
	_Pragma("GCC unroll 8")
	for (int t = 0; t < nt; t++)
		_mm512_storeu_ps(out + (size_t)t * os, acc[t]);
}

static inline __attribute__((always_inline)) void q4_0x8_tile(size_t nb, const uint8_t *b, const void *x,
							      size_t xs, const int nt, float *out, size_t os)
{
	q0x8_tile(nb, b, 0, x, xs, nt, out, os);
}

static inline __attribute__((always_inline)) void q8_0x8_tile(size_t nb, const uint8_t *b, const void *x,
							      size_t xs, const int nt, float *out, size_t os)
{
	q0x8_tile(nb, b, 1, x, xs, nt, out, os);
}

/*
 * n_tok - t tokens (1..X16_NT - 1) in one tile of exactly that size: a
 * 16-row tile's weight decoding costs as much as two or three tokens' dot
 * products, so a tail of 3 is not split into 2 + 1 here.
 */
#define EXACT_TAIL(TILE, t, n_tok, arg)						\
	do {									\
		switch ((n_tok) - (t)) {					\
		case 7: TILE(t, 7, arg); break;					\
		case 6: TILE(t, 6, arg); break;					\
		case 5: TILE(t, 5, arg); break;					\
		case 4: TILE(t, 4, arg); break;					\
		case 3: TILE(t, 3, arg); break;					\
		case 2: TILE(t, 2, arg); break;					\
		case 1: TILE(t, 1, arg); break;					\
		default: break;							\
		}								\
	} while (0)

/*
 * Groups a one-token (decode) tile reads at once, each its own stream gs
 * bytes from the next, and how far ahead of its reads each stream is
 * prefetched, one prefetch per 64 bytes. With two streams a thread (the
 * 16-row tile) a 7B Q4_0 decode read ~50 GB/s where the machine's probe
 * reads 71-80: the core waited on each stream instead of computing while
 * its lines came (the prefetch distance hardly mattered). Eight streams,
 * each 3 kB ahead, read ~40% more Q4_0 and ~10% more Q8_0 a CPU second
 * over DRAM-resident 14336 x 4096 matrices (BENCHMARKS.md); four gave
 * about half of that gain, sixteen less than eight.
 */
#define DEC_GROUPS 8
#define DEC_PF_BYTES 3000
/*
 * Q8_0 reads best with half the streams, closer ahead: four groups, each
 * 1.5 kB ahead, read 0.85-0.95 of the probe's rate over DRAM-resident
 * 14336 x 4096 matrices where eight at 3 kB read 0.69-0.82 (alternated in
 * one process, /work/notes/kb/q8dec-mm.c, BENCHMARKS.md). Q4_0 goes the
 * other way (four groups: 0.75-0.78 against eight's 0.81-0.86). Both
 * optima touch about 1.1 kB a block step (8 x 144 bytes, 4 x 272): two,
 * six and sixteen Q8_0 groups (0.5, 1.6, 4.4 kB) read less than four, and
 * so do four and sixteen Q4_0 ones than eight. Which part of the memory
 * system sets that size is not established (no counters on this machine);
 * the prefetch hint (T0, T1, NTA) and a 1-3 kB distance moved it by
 * less than the noise, two blocks a loop step likewise.
 */
#define DEC_GROUPS_Q8 4
#define DEC_PF_BYTES_Q8 1500

/*
 * q0x16_tile at one token over ng groups (pairs through the same 16-row
 * step, so each row's sum and float step are the same and so are its
 * bits). Past their ends the streams go on where the next tile's start:
 * (ng - 1) * gs further. The pair and piece loops stay rolled: fully
 * unrolled, the same instructions read 46-54 GB/s of Q4_0 where these
 * read 55-66 (same benchmark, alternated), though unrolled they compute
 * faster from L2 (11.4 against 13-16 cycles a 16-row block); why is not
 * established, so the unroll pragmas keep what was measured.
 */
static inline __attribute__((always_inline)) void q0_dec_tile(size_t nb, const uint8_t *w, size_t gs, const int ng,
							      const int q8, const struct ms_block_q8s *a, float *out)
{
	const size_t bb = q8 ? sizeof(struct block_q8_0x8) : sizeof(struct block_q4_0x8);
	const size_t ahead = q8 ? DEC_PF_BYTES_Q8 : DEC_PF_BYTES;
	const int off = q8 ? 128 : 8;
	const __m512i m4 = _mm512_set1_epi8(15), k80 = _mm512_set1_epi8((char)0x80);
	__m512 acc[DEC_GROUPS / 2];
	size_t pf = ahead / 64 * 64;

	_Pragma("GCC unroll 4")
	for (int h = 0; h < ng / 2; h++)
		acc[h] = _mm512_setzero_ps();
	for (size_t i = 0; i < nb; i++) {
		const __m512i s0 = _mm512_set1_epi32(-off * a[i].s);
		const __m512 da = _mm512_set1_ps(a[i].d);

		for (; pf < (i + 1) * bb + ahead; pf += 64)
			prefetch_streams(w, pf, gs, ng);
		_Pragma("GCC unroll 1")
		for (int h = 0; h < ng / 2; h++) {
			const uint8_t *g = w + (size_t)(2 * h) * gs + i * bb;
			const uint8_t *qs = g + 2 * MS_X8;
			const __m512 dw = f16x16(g, gs);
			__m512i s = s0;

			if (q8) {
				_Pragma("GCC unroll 1")
				for (int p = 0; p < 8; p++)
					s = dpbusd_b4(s, _mm512_xor_si512(rows16(qs + 32 * p, gs), k80), a[i].qs + 4 * p);
			} else {
				_Pragma("GCC unroll 1")
				for (int c = 0; c < 4; c++) {
					const __m512i r = rows16(qs + 32 * c, gs);

					s = dpbusd_b4(s, _mm512_and_si512(r, m4), a[i].qs + 4 * c);
					s = dpbusd_b4(s, _mm512_and_si512(_mm512_srli_epi16(r, 4), m4),
						      a[i].qs + 16 + 4 * c);
				}
			}
			acc[h] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), cvt_i32x16(s), acc[h]);
		}
	}
	_Pragma("GCC unroll 4")
	for (int h = 0; h < ng / 2; h++)
		_mm512_storeu_ps(out + 16 * h, acc[h]);
}

/*
 * One token: DEC_GROUPS (Q8_0: DEC_GROUPS_Q8) groups at a time, then a
 * last pair, then a last odd group through the 8-row tile. Returns the
 * groups done.
 */
static inline __attribute__((always_inline)) size_t q0_dec(size_t nb, const uint8_t *w, size_t gs, size_t ng,
							   const int q8, const void *x, float *out)
{
	const struct ms_block_q8s *a = x;
	const int dg = q8 ? DEC_GROUPS_Q8 : DEC_GROUPS;
	size_t g = 0;

	_Static_assert(DEC_GROUPS_Q8 <= DEC_GROUPS && DEC_GROUPS_Q8 % 2 == 0, "q0_dec_tile's accumulators");
	for (; g + (size_t)dg <= ng; g += (size_t)dg)
		q0_dec_tile(nb, w + g * gs, gs, dg, q8, a, out + g * MS_X8);
	for (; g + 2 <= ng; g += 2)
		q0_dec_tile(nb, w + g * gs, gs, 2, q8, a, out + g * MS_X8);
	return g;
}

/*
 * Four groups (32 rows, two 16-row halves 2 * gs apart) at up to X32_NT
 * tokens: what the several-token Q4_0/Q8_0 steps use. The 16-row tile
 * is bound by loads, not by its arithmetic: every vpdpbusd takes its 4
 * activation bytes as a broadcast from memory, and with the weight,
 * scale and prefetch accesses that is ~56 loads a 16-row block at four
 * tokens, which this core issues at about two a cycle (a 4-byte
 * broadcast costs a 512-bit op's load slot: 32 vpdpbusd run in 4.6 ns
 * alone and 5.3 with four more 32-byte loads beside them, asm loop,
 * /work/notes/kb/tile-pipes.c). Here one vpbroadcastd serves both
 * halves, so a 32-row block is ~63 loads where two 16-row ones are ~112,
 * and the tile runs at its vpdpbusd/FMA pipes' rate: 5.9 ns a 16-row
 * block at four tokens from L1 against the 16-row tile's 6.9-7.0
 * (/work/notes/kb/tile32-bench.c, alternated). 4 tokens keep 2 x 4 block sums, 2 x 4
 * float accumulators, four decoded weight vectors and the scales in the
 * 32 registers; at 8 the 16-row tile's layout would spill. Each row's
 * integer sum is the same exact integer and its float step the same, so
 * the bits are those of every other tile.
 */
#define X32_NT 4

/*
 * The tile's four streams, one prefetch a 64 bytes of block, as far
 * ahead as the decode's (DEC_PF_BYTES, DEC_PF_BYTES_Q8); past their ends
 * the next quad's. PF_BYTES (7 kB, the 16-row tile's) was much worse
 * here: four streams that far ahead are 28 kB of lines waiting in the
 * 48 kB L1 beside four tokens' activations. Over DRAM-resident 7B
 * matrices at four tokens (/work/notes/kb/mm-sw.c, variants alternated
 * call by call, BENCHMARKS.md) Q4_0 took 0.92-1.16x a one-token matmul's
 * time at 3 kB, where 7 kB took 1.16-1.23x and the 16-row tile
 * 1.10-1.33x; Q8_0 1.0x at 1.5 kB, 1.15x at 3 kB, 1.12x through the
 * 16-row tile.
 */
static inline __attribute__((always_inline)) void prefetch_quad(const uint8_t *w, size_t i, size_t bb, size_t gs,
								const size_t ahead)
{
	const size_t pf = (i + ahead / bb + 1) * bb;

	for (size_t off = 0; off < bb; off += 64)
		prefetch_streams(w, pf + off, gs, 4);
}

static inline __attribute__((always_inline)) void q0x32_tile(size_t nb, const uint8_t *w, size_t gs, const int q8,
							     const void *x, size_t xs, const int nt, float *out,
							     size_t os)
{
	const size_t bb = q8 ? sizeof(struct block_q8_0x8) : sizeof(struct block_q4_0x8);
	const int off = q8 ? 128 : 8;
	const __m512i m4 = _mm512_set1_epi8(15), k80 = _mm512_set1_epi8((char)0x80);
	const struct ms_block_q8s *a[X32_NT];
	__m512 acc[2][X32_NT];

	_Pragma("GCC unroll 4")
	for (int t = 0; t < nt; t++) {
		a[t] = (const struct ms_block_q8s *)(const void *)((const char *)x + (size_t)t * xs);
		acc[0][t] = acc[1][t] = _mm512_setzero_ps();
	}
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *g = w + i * bb;
		const uint8_t *qs = g + 2 * MS_X8;
		__m512i s[2][X32_NT];

		prefetch_quad(w, i, bb, gs, q8 ? DEC_PF_BYTES_Q8 : DEC_PF_BYTES);
		_Pragma("GCC unroll 4")
		for (int t = 0; t < nt; t++)
			s[0][t] = s[1][t] = _mm512_set1_epi32(-off * a[t][i].s);
		if (q8) {
			_Pragma("GCC unroll 8")
			for (int p = 0; p < 8; p++) {
				const __m512i va = _mm512_xor_si512(rows16(qs + 32 * p, gs), k80);
				const __m512i vb = _mm512_xor_si512(rows16(qs + 2 * gs + 32 * p, gs), k80);

				_Pragma("GCC unroll 4")
				for (int t = 0; t < nt; t++) {
					const int32_t y = act4(a[t][i].qs + 4 * p);

					s[0][t] = dpbusd_r(s[0][t], va, y);
					s[1][t] = dpbusd_r(s[1][t], vb, y);
				}
			}
		} else {
			_Pragma("GCC unroll 4")
			for (int c = 0; c < 4; c++) {
				const __m512i ra = rows16(qs + 32 * c, gs), rb = rows16(qs + 2 * gs + 32 * c, gs);
				const __m512i alo = _mm512_and_si512(ra, m4), blo = _mm512_and_si512(rb, m4);
				const __m512i ahi = _mm512_and_si512(_mm512_srli_epi16(ra, 4), m4);
				const __m512i bhi = _mm512_and_si512(_mm512_srli_epi16(rb, 4), m4);

				_Pragma("GCC unroll 4")
				for (int t = 0; t < nt; t++) {
					const int32_t lo = act4(a[t][i].qs + 4 * c), hi = act4(a[t][i].qs + 16 + 4 * c);

					s[0][t] = dpbusd_r(s[0][t], alo, lo);
					s[1][t] = dpbusd_r(s[1][t], blo, lo);
					s[0][t] = dpbusd_r(s[0][t], ahi, hi);
					s[1][t] = dpbusd_r(s[1][t], bhi, hi);
				}
			}
		}
		const __m512 dwa = f16x16(g, gs), dwb = f16x16(g + 2 * gs, gs);

		_Pragma("GCC unroll 4")
		for (int t = 0; t < nt; t++) {
			const __m512 da = _mm512_set1_ps(a[t][i].d);

			acc[0][t] = _mm512_fmadd_ps(_mm512_mul_ps(dwa, da), cvt_i32x16(s[0][t]), acc[0][t]);
			acc[1][t] = _mm512_fmadd_ps(_mm512_mul_ps(dwb, da), cvt_i32x16(s[1][t]), acc[1][t]);
		}
	}
	_Pragma("GCC unroll 4")
	for (int t = 0; t < nt; t++) {
		_mm512_storeu_ps(out + (size_t)t * os, acc[0][t]);
		_mm512_storeu_ps(out + (size_t)t * os + 16, acc[1][t]);
	}
}

/*
 * One token through q0_dec; several through quads of groups in the
 * 32-row tile (tokens X32_NT at a time, then a tail of 1-3 in one tile
 * of that size), then pairs through the 16-row tile (tile16(blocks, first
 * group, bytes to the second, ...)), a last odd group through the 8-row
 * one.
 */
#define GEMM_X16(name, tile16, tile8, bbytes, blck, q8)						\
static void name(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,	\
		 float *out, size_t os)								\
{												\
	const size_t nb = n / (blck), gs = nb * (bbytes), ng = rows / MS_X8;			\
	size_t g = n_tok == 1 ? q0_dec(nb, w, gs, ng, q8, x, out) : 0;				\
												\
	for (; n_tok > 1 && g + 4 <= ng; g += 4) {						\
		const uint8_t *b = (const uint8_t *)w + g * gs;					\
		float *o = out + g * MS_X8;							\
		size_t t = 0;									\
												\
		for (; t + X32_NT <= n_tok; t += X32_NT)					\
			X32_AT(t, X32_NT, q8);							\
		switch (n_tok - t) {								\
		case 3: X32_AT(t, 3, q8); break;						\
		case 2: X32_AT(t, 2, q8); break;						\
		case 1: X32_AT(t, 1, q8); break;						\
		default: break;									\
		}										\
	}											\
	for (; g + 2 <= ng; g += 2) {								\
		const uint8_t *b = (const uint8_t *)w + g * gs;					\
		float *o = out + g * MS_X8;							\
		size_t t = 0;									\
												\
		for (; t + X16_NT <= n_tok; t += X16_NT)					\
			X16_AT(t, X16_NT, tile16);						\
		EXACT_TAIL(X16_AT, t, n_tok, tile16);						\
	}											\
	if (g < ng)										\
		tile8##_gemm(n, (const uint8_t *)w + g * gs, MS_X8, x, xs, n_tok, out + g * MS_X8, os); \
}

#define X16_AT(t_, nt_, tile) tile(nb, b, gs, (const char *)x + (t_) * xs, xs, nt_, o + (t_) * os, os)
#define X32_AT(t_, nt_, q8) q0x32_tile(nb, b, gs, q8, (const char *)x + (t_) * xs, xs, nt_, o + (t_) * os, os)

static inline __attribute__((always_inline)) void q4_0x16_tile(size_t nb, const uint8_t *b, size_t gs,
							       const void *x, size_t xs, const int nt, float *out,
							       size_t os)
{
	q0x16_tile(nb, b, gs, 0, x, xs, nt, out, os);
}

static inline __attribute__((always_inline)) void q8_0x16_tile(size_t nb, const uint8_t *b, size_t gs,
							       const void *x, size_t xs, const int nt, float *out,
							       size_t os)
{
	q0x16_tile(nb, b, gs, 1, x, xs, nt, out, os);
}

GEMM_X8(q4_0x8_gemm, q4_0x8_tile, sizeof(struct block_q4_0x8), QK4_0, X8_NT)
GEMM_X8(q8_0x8_gemm, q8_0x8_tile, sizeof(struct block_q8_0x8), QK8_0, X8_NT)
GEMM_X16(gemm_q4_0x8_avx512, q4_0x16_tile, q4_0x8, sizeof(struct block_q4_0x8), QK4_0, 0)
GEMM_X16(gemm_q8_0x8_avx512, q8_0x16_tile, q8_0x8, sizeof(struct block_q8_0x8), QK8_0, 1)

/*
 * Q4_K and Q5_K. Per 64-byte pair of code chunks, low nibbles are eight
 * elements of sub-block 2h and high nibbles the same eight of 2h + 1
 * (Q5_K: a fifth bit each from qh, whose pair of chunks covers the same
 * elements for every h); their vpdpbusd sums per sub-block are scaled by
 * a vpdpwssd with the row's 6-bit scale in the low word of both of its
 * lanes. That needs the sums within int16: four pairs of Q4_K codes
 * (4 * 4 * 15 * 127 = 30480), two of Q5_K's (2 * 4 * 31 * 127 = 31496).
 * Scales, mins and the min term are the AVX2 tile's (simd_avx2.h), on
 * the eight rows in ymm lanes, so every step matches it exactly.
 */
#define K_NT 4

/* dword lanes 2r and 2r + 1 <- dword r of v */
static inline __m512i rows_twice(__m256i v)
{
	const __m512i idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);

	return _mm512_permutexvar_epi32(idx, _mm512_castsi256_si512(v));
}

static inline __attribute__((always_inline)) void k45x8_tile(size_t nb, const uint8_t *b, const size_t bb,
							     const int q5, const void *x, size_t xs, const int nt,
							     float *out, size_t os)
{
	const __m512i m4 = _mm512_set1_epi8(15);
	/* field offsets, as in struct block_q4_Kx8 / block_q5_Kx8 */
	const size_t o_dmin = 2 * MS_X8, o_sc = 4 * MS_X8, o_qh = o_sc + MS_X8 * K_SCALE_SIZE;
	const size_t o_qs = o_qh + (q5 ? MS_X8 * QK_K / 8 : 0);
	const int flush = q5 ? 2 : 4;
	X8_TILE_BEGIN(struct block_q8_K, K_NT)
	for (size_t i = 0; i < nb; i++) {
		const uint8_t *g = b + i * bb;
		const struct k45x8_sm sm = k45x8_scales(g + o_sc);
		const __m512i sc03 = rows_twice(sm.sclo), sc47 = rows_twice(sm.schi);
		__m512i isum[K_NT], qh[4];

		prefetch_block(b, i, bb);
		if (q5)
			_Pragma("GCC unroll 4")
			for (int p = 0; p < 4; p++)
				qh[p] = pair_rows(g + o_qh + 64 * p);
		_Pragma("GCC unroll 4")
		for (int t = 0; t < nt; t++)
			isum[t] = _mm512_setzero_si512();
		_Pragma("GCC unroll 4")
		for (int h = 0; h < 4; h++) {
			const __m512i sc0 = dword_byte(h < 2 ? sc03 : sc47, 2 * h % 4);
			const __m512i sc1 = dword_byte(h < 2 ? sc03 : sc47, 2 * h % 4 + 1);
			__m512i plo[K_NT], phi[K_NT];

			_Pragma("GCC unroll 4")
			for (int p = 0; p < 4; p++) {
				const __m512i v = pair_rows(g + o_qs + 64 * (4 * h + p));
				__m512i lo = _mm512_and_si512(v, m4);
				__m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);

				if (q5) {
					lo = _mm512_or_si512(lo, bit_to_4_512(qh[p], 2 * h));
					hi = _mm512_or_si512(hi, bit_to_4_512(qh[p], 2 * h + 1));
				}
				_Pragma("GCC unroll 4")
				for (int t = 0; t < nt; t++) {
					const int8_t *y = a[t][i].qs + 64 * h + 8 * p;

					if (p % flush == 0) {
						plo[t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, bcast8(y));
						phi[t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, bcast8(y + 32));
					} else {
						plo[t] = _mm512_dpbusd_epi32(plo[t], lo, bcast8(y));
						phi[t] = _mm512_dpbusd_epi32(phi[t], hi, bcast8(y + 32));
					}
					if ((p + 1) % flush == 0) {
						isum[t] = _mm512_dpwssd_epi32(isum[t], plo[t], sc0);
						isum[t] = _mm512_dpwssd_epi32(isum[t], phi[t], sc1);
					}
				}
			}
		}
		{
			const __m256 dw = f16x8(g);
			const __m256 dm = f16x8(g + o_dmin);

			_Pragma("GCC unroll 4")
			for (int t = 0; t < nt; t++) {
				const __m256i msum = k45x8_msum(&sm, a[t][i].bsums);

				acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)),
							 _mm256_cvtepi32_ps(pair_sum(isum[t])), acc[t]);
				acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dm, _mm256_set1_ps(a[t][i].d)),
							  _mm256_cvtepi32_ps(msum), acc[t]);
			}
		}
	}
	x8_tile_store(acc, nt, out, os);
}

_Static_assert(offsetof(struct block_q4_Kx8, scales) == 4 * MS_X8 && offsetof(struct block_q4_Kx8, qs) ==
	       4 * MS_X8 + MS_X8 * K_SCALE_SIZE, "k45x8_tile's Q4_K offsets");
_Static_assert(offsetof(struct block_q5_Kx8, qh) == 4 * MS_X8 + MS_X8 * K_SCALE_SIZE &&
	       offsetof(struct block_q5_Kx8, qs) == 4 * MS_X8 + MS_X8 * K_SCALE_SIZE + MS_X8 * QK_K / 8,
	       "k45x8_tile's Q5_K offsets");

static inline __attribute__((always_inline)) void q4_Kx8_tile(size_t nb, const uint8_t *b, const void *x,
							      size_t xs, const int nt, float *out, size_t os)
{
	k45x8_tile(nb, b, sizeof(struct block_q4_Kx8), 0, x, xs, nt, out, os);
}

static inline __attribute__((always_inline)) void q5_Kx8_tile(size_t nb, const uint8_t *b, const void *x,
							      size_t xs, const int nt, float *out, size_t os)
{
	k45x8_tile(nb, b, sizeof(struct block_q5_Kx8), 1, x, xs, nt, out, os);
}

GEMM_X8(gemm_q4_Kx8_avx512, q4_Kx8_tile, sizeof(struct block_q4_Kx8), QK_K, K_NT)
GEMM_X8(gemm_q5_Kx8_avx512, q5_Kx8_tile, sizeof(struct block_q5_Kx8), QK_K, K_NT)

/*
 * Q6_K. A 64-byte pair of chunks of ql (elements l..l+7 and, in the high
 * nibbles, l+64..), of ql at l + 32 and of qh gives the 6-bit codes of
 * elements l..l+7 + 32q (q = 0..3) for the eight rows, as in the AVX2
 * tile. Codes reach 63, so one pair's vpdpbusd sums (4 * 63 * 127 =
 * 32004) just fit the int16 that vpdpwssd multiplies by the signed scale
 * of their 16-element sub-block; the -32 offset is the AVX2 tile's
 * (q6x8_offset), taken off the exact integer sum at the block's end.
 */
#define K6_NT 4

static inline __attribute__((always_inline)) void q6_Kx8_tile(size_t nb, const uint8_t *b6,
							      const void *x, size_t xs, const int nt,
							      float *out, size_t os)
{
	const struct block_q6_Kx8 *b = (const struct block_q6_Kx8 *)(const void *)b6;
	const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30), lo16 = _mm512_set1_epi32(0xffff);
	X8_TILE_BEGIN(struct block_q8_K, K6_NT)
	for (size_t i = 0; i < nb; i++) {
		const struct block_q6_Kx8 *g = b + i;
		__m512i isum[K6_NT], sc4[4];

		prefetch_block(b, i, sizeof(*b));
		/* dword lanes 2r, 2r + 1: the signed scales 4m..4m+3 of row r */
		_Pragma("GCC unroll 4")
		for (int m = 0; m < 4; m++)
			sc4[m] = rows_twice(_mm256_loadu_si256((const __m256i *)(const void *)(g->scales + 32 * m)));
		_Pragma("GCC unroll 4")
		for (int t = 0; t < nt; t++)
			isum[t] = _mm512_setzero_si512();
		_Pragma("GCC unroll 2")
		for (int h = 0; h < 2; h++) {
			_Pragma("GCC unroll 4")
			for (int k = 0; k < 8; k += 2) {
				const __m512i lq = pair_rows(g->ql + 32 * (16 * h + k));
				const __m512i lq2 = pair_rows(g->ql + 32 * (16 * h + 8 + k));
				const __m512i hq = pair_rows(g->qh + 32 * (8 * h + k));

				_Pragma("GCC unroll 4")
				for (int q = 0; q < 4; q++) {
					const int j = 8 * h + 2 * q + k / 4;
					/*
					 * Scale j sign-extended into the low word, the high word 0:
					 * its byte moved to bits 8..15, then a 16-bit arithmetic
					 * shift (SIMDe has no 32-bit one).
					 */
					const __m512i at8 = j % 4 == 0 ? _mm512_slli_epi32(sc4[j / 4], 8) :
							    j % 4 == 1 ? sc4[j / 4] :
							    _mm512_srli_epi32(sc4[j / 4], 8 * (j % 4 - 1));
					const __m512i sc = _mm512_and_si512(_mm512_srai_epi16(at8, 8), lo16);
					const __m512i l = (q & 1) ? lq2 : lq;
					const __m512i nib = q < 2 ? l : _mm512_srli_epi16(l, 4);
					const __m512i top = q == 0 ? _mm512_slli_epi16(hq, 4) :
							    q == 1 ? _mm512_slli_epi16(hq, 2) :
							    q == 2 ? hq : _mm512_srli_epi16(hq, 2);
					const __m512i e = _mm512_or_si512(_mm512_and_si512(nib, m4), _mm512_and_si512(top, m30));

					_Pragma("GCC unroll 4")
					for (int t = 0; t < nt; t++) {
						const __m512i p = _mm512_dpbusd_epi32(
							_mm512_setzero_si512(), e, bcast8(a[t][i].qs + 128 * h + 4 * k + 32 * q));

						isum[t] = _mm512_dpwssd_epi32(isum[t], p, sc);
					}
				}
			}
		}
		{
			const __m256 dw = f16x8(g->d);

			_Pragma("GCC unroll 4")
			for (int t = 0; t < nt; t++) {
				const __m256i s = _mm256_sub_epi32(pair_sum(isum[t]), q6x8_offset(g->scales, a[t][i].bsums));

				acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][i].d)),
							 _mm256_cvtepi32_ps(s), acc[t]);
			}
		}
	}
	x8_tile_store(acc, nt, out, os);
}

GEMM_X8(gemm_q6_Kx8_avx512, q6_Kx8_tile, sizeof(struct block_q6_Kx8), QK_K, K6_NT)
#undef GEMM_X8
#undef GEMM_X16
#undef X16_AT
#undef X8_AT

/* ------------------------------------------------------------------------ */
/* Interleaved F16 / BF16: a float GEMM, 16 rows to a register               */
/* ------------------------------------------------------------------------ */

/*
 * Lanes are rows, so each row's sum stays one fma chain in element order
 * (the generic twin's bits): a zmm holds element k of two groups (16
 * rows), made from two 16-byte loads. A lone last group is loaded twice
 * and half stored. Prefill tiles are 2 x 12 (32 rows, 12 tokens): 24
 * accumulators, 2 weights and a broadcast in the 32 registers, 24 FMAs
 * per 2 weight conversions and 12 broadcasts, so the FMA units set the
 * pace at twice the AVX2 tile's width.
 */
#define WIDE_ZG 2
#define WIDE_NT 12

static inline __attribute__((always_inline)) __m512 wide_load2(const uint16_t *p0, const uint16_t *p1, int bf16)
{
	return _mm512_insertf32x8(_mm512_castps256_ps512(bf16 ? bf16x8(p0) : f16x8(p0)), bf16 ? bf16x8(p1) : f16x8(p1),
				  1);
}

/*
 * zg units of 16 rows (the last may be a lone group: lone set) x nt tokens;
 * w points at the first group, each group 8 * n elements.
 */
static inline __attribute__((always_inline)) void wide_tile(size_t n, const uint16_t *w, const float *x, size_t xs,
							    const int zg, const int lone, const int nt, const int bf16,
							    float *out, size_t os)
{
	const float *a[WIDE_NT];
	__m512 acc[WIDE_ZG][WIDE_NT];
	const size_t gs = (size_t)MS_X8 * n;

	_Pragma("GCC unroll 12")
	for (int t = 0; t < nt; t++)
		a[t] = (const float *)(const void *)((const char *)x + (size_t)t * xs);
	_Pragma("GCC unroll 2")
	for (int z = 0; z < zg; z++)
		_Pragma("GCC unroll 12")
		for (int t = 0; t < nt; t++)
			acc[z][t] = _mm512_setzero_ps();
	for (size_t k = 0; k < n; k++) {
		__m512 v[WIDE_ZG];

		/* one 64-byte line of each group per 4 elements */
		if (k % 4 == 0)
			_Pragma("GCC unroll 4")
			for (int g = 0; g < 2 * zg - lone; g++)
				_mm_prefetch((const char *)((uintptr_t)(w + g * gs + MS_X8 * k) + PF_BYTES),
					     _MM_HINT_T0);
		_Pragma("GCC unroll 2")
		for (int z = 0; z < zg; z++) {
			const uint16_t *p0 = w + 2 * z * gs + MS_X8 * k;

			v[z] = wide_load2(p0, lone && z == zg - 1 ? p0 : p0 + gs, bf16);
		}
		_Pragma("GCC unroll 12")
		for (int t = 0; t < nt; t++) {
			const __m512 xb = _mm512_set1_ps(a[t][k]);

			_Pragma("GCC unroll 2")
			for (int z = 0; z < zg; z++)
				acc[z][t] = _mm512_fmadd_ps(v[z], xb, acc[z][t]);
		}
	}
	zmm_tile_store(&acc[0][0], WIDE_NT, zg, lone, nt, out, os);
}

/*
 * One token (decode): WIDE_DEC_GROUPS groups as as many streams, each
 * prefetched WIDE_DEC_PF_BYTES ahead (one line a stream every 4 elements,
 * past a stream's end into the next tile's, prefetch_streams), the same
 * per-element step and fma chain per row as wide_tile's 2 x 1 (its bits).
 * Over DRAM-resident 14336 x 4096 F16 matrices (a ring of three, 2
 * threads, CPU time against the probe's, alternated in one process;
 * /work/notes/kb/fdec-mm.c, BENCHMARKS.md) four groups 1.5 kB ahead read
 * 0.93-0.98 of the probe where the same step 7 kB ahead (PF_BYTES) read
 * 0.88-0.93 and the library's 2 x 1 tile 0.78-0.88; two groups read
 * 0.63-0.79 and eight 0.63-0.85 in every tile shape tried (these 16-byte
 * loads; whole 64-byte lines joined by vpermt2w or vshufi32x4, within
 * noise of these at four groups); 1, 3 and 6 kB ahead, and T1, T2, NTA
 * or no prefetch (at 3 kB), read less than 1.5 kB T0. Against the old
 * library, process by process: 0.91-0.99 against 0.78-0.81; 8-layer F16
 * decode 4.46 / 5.11 / 5.21 tok/s against 4.30 / 3.89 / 4.86 (loaded,
 * alternated). An eight-group tile at 3 kB (2.62 cycles per 64 bytes
 * from L2) was taken out in c3930bf for reading DRAM slower in
 * whole-model decode.
 */
#define WIDE_DEC_GROUPS 4
#define WIDE_DEC_PF_BYTES 1536

static inline __attribute__((always_inline)) void wide_dec_tile(size_t n, const uint16_t *w, const float *x,
								const int bf16, float *out)
{
	const size_t gs = (size_t)MS_X8 * n, gb = gs * sizeof(uint16_t);
	__m512 acc[WIDE_DEC_GROUPS / 2];
	size_t k = 0;

	_Pragma("GCC unroll 4")
	for (int z = 0; z < WIDE_DEC_GROUPS / 2; z++)
		acc[z] = _mm512_setzero_ps();
	for (; k + 4 <= n; k += 4) {
		prefetch_streams(w, 2 * MS_X8 * k + WIDE_DEC_PF_BYTES / 64 * 64, gb, WIDE_DEC_GROUPS);
		_Pragma("GCC unroll 4")
		for (int e = 0; e < 4; e++) {
			const __m512 xb = _mm512_set1_ps(x[k + e]);

			_Pragma("GCC unroll 4")
			for (int z = 0; z < WIDE_DEC_GROUPS / 2; z++) {
				const uint16_t *p0 = w + 2 * z * gs + MS_X8 * (k + e);

				acc[z] = _mm512_fmadd_ps(wide_load2(p0, p0 + gs, bf16), xb, acc[z]);
			}
		}
	}
	for (; k < n; k++)
		_Pragma("GCC unroll 4")
		for (int z = 0; z < WIDE_DEC_GROUPS / 2; z++) {
			const uint16_t *p0 = w + 2 * z * gs + MS_X8 * k;

			acc[z] = _mm512_fmadd_ps(wide_load2(p0, p0 + gs, bf16), _mm512_set1_ps(x[k]), acc[z]);
		}
	_Pragma("GCC unroll 4")
	for (int z = 0; z < WIDE_DEC_GROUPS / 2; z++)
		_mm512_storeu_ps(out + 16 * z, acc[z]);
}

static inline __attribute__((always_inline)) void wide_tokens(size_t n, const uint16_t *w, const float *x,
							      size_t xs, size_t n_tok, const int zg, const int lone,
							      const int bf16, float *out, size_t os)
{
#define WIDE_AT(t, nt, unused) wide_tile(n, w, (const float *)(const void *)((const char *)x + (t) * xs), xs, zg, lone, \
				 nt, bf16, out + (t) * os, os)
	size_t t = 0;

	for (; t + WIDE_NT <= n_tok; t += WIDE_NT)
		WIDE_AT(t, WIDE_NT, );
	if (n_tok - t >= 8) {
		WIDE_AT(t, 8, );
		t += 8;
	}
	TAIL_TILES(WIDE_AT, t, n_tok, );
#undef WIDE_AT
}

static inline __attribute__((always_inline)) void wide_gemm(size_t n, const void *w, size_t rows, const void *x,
							    size_t xs, size_t n_tok, const int bf16, float *out,
							    size_t os)
{
	const uint16_t *h = w;
	const size_t ng = rows / MS_X8, gs = MS_X8 * n;
	size_t g = 0;

	if (n_tok == 1)
		for (; g + WIDE_DEC_GROUPS <= ng; g += WIDE_DEC_GROUPS)
			wide_dec_tile(n, h + g * gs, x, bf16, out + MS_X8 * g);
	for (; g + 2 * WIDE_ZG <= ng; g += 2 * WIDE_ZG)
		wide_tokens(n, h + g * gs, x, xs, n_tok, WIDE_ZG, 0, bf16, out + MS_X8 * g, os);
	/* 1..3 groups left: a pair and/or a lone one */
	if (ng - g >= 2) {
		wide_tokens(n, h + g * gs, x, xs, n_tok, 1, 0, bf16, out + MS_X8 * g, os);
		g += 2;
	}
	if (g < ng)
		wide_tokens(n, h + g * gs, x, xs, n_tok, 1, 1, bf16, out + MS_X8 * g, os);
}

static void gemm_f16x8_avx512(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
			      float *out, size_t os)
{
	wide_gemm(n, w, rows, x, xs, n_tok, 0, out, os);
}

static void gemm_bf16x8_avx512(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,
			       float *out, size_t os)
{
	wide_gemm(n, w, rows, x, xs, n_tok, 1, out, os);
}

/* sum_f32_avx2 with 64-byte loads: one line per stream per step. */
static inline __attribute__((always_inline)) float sum_streams_avx512(size_t n, const float *x, const int ns)
{
	const size_t len = n / (size_t)ns;
	const float *p[MS_SUM_STREAMS];
	__m512 acc[2 * MS_SUM_STREAMS];
	float total;
	size_t i = 0;

	for (int s = 0; s < ns; s++) {
		p[s] = x + s * len;
		acc[2 * s] = acc[2 * s + 1] = _mm512_setzero_ps();
	}
	for (; i + 32 <= len; i += 32)
		for (int s = 0; s < ns; s++) {
			acc[2 * s] = _mm512_add_ps(acc[2 * s], _mm512_loadu_ps(p[s] + i));
			acc[2 * s + 1] = _mm512_add_ps(acc[2 * s + 1], _mm512_loadu_ps(p[s] + i + 16));
		}
	for (int s = 1; s < 2 * ns; s++)
		acc[0] = _mm512_add_ps(acc[0], acc[s]);
	total = hsum256(_mm256_add_ps(_mm512_castps512_ps256(acc[0]),
				      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[0]), 1))));
	for (; i < len; i++)
		for (int s = 0; s < ns; s++)
			total += p[s][i];
	for (i = (size_t)ns * len; i < n; i++)
		total += x[i];
	return total;
}

/* One inlined copy per stream count: with a constant count the accumulators stay in registers. */
static float sum_f32_avx512(size_t n, const float *x, unsigned streams)
{
	switch (streams) {
	case 0:
	case 1:
		return sum_streams_avx512(n, x, 1);
	case 2:
	case 3:
		return sum_streams_avx512(n, x, 2);
	default:
		return sum_streams_avx512(n, x, MS_SUM_STREAMS);
	}
}

/*
 * Only what this level does better; ms_kernels_get() fills every other
 * entry (the plain-row dots and the activation conversions) from the
 * AVX2 table, which runs on every AVX-512 CPU.
 */
const struct ms_kernels MS_AVX512_PART = {
	.isa = MS_ISA_AVX512,
	.name = MS_AVX512_NAME,
	.type = {
		[GGML_TYPE_Q8_0] = { .act_type = GGML_TYPE_Q8_0, .gemm_x8 = gemm_q8_0x8_avx512 },
		[GGML_TYPE_Q4_0] = { .act_type = GGML_TYPE_Q8_0, .gemm_x8 = gemm_q4_0x8_avx512 },
		[GGML_TYPE_Q4_K] = { .act_type = GGML_TYPE_Q8_K, .gemm_x8 = gemm_q4_Kx8_avx512 },
		[GGML_TYPE_Q5_K] = { .act_type = GGML_TYPE_Q8_K, .gemm_x8 = gemm_q5_Kx8_avx512 },
		[GGML_TYPE_Q6_K] = { .act_type = GGML_TYPE_Q8_K, .gemm_x8 = gemm_q6_Kx8_avx512 },
	},
	.sum_f32 = sum_f32_avx512,
	.attn = &MS_ATTN_AVX512,
};

/*
 * The float tiles gain only where a 512-bit FMA runs at full width; the
 * AVX2 tile already keeps two 256-bit FMA pipes 94% busy, so on a CPU
 * that splits a zmm FMA in two (AMD Zen 4) this one measured 0.86x of it
 * in prefill. Laid on top of the part above where ms_kernels_get() finds
 * full-width units.
 */
const struct ms_kernels MS_AVX512_WIDE_PART = {
	.isa = MS_ISA_AVX512,
	.name = MS_AVX512_NAME,
	.type = {
		[GGML_TYPE_F16] = { .act_type = GGML_TYPE_F32, .gemm_x8 = gemm_f16x8_avx512 },
		[GGML_TYPE_BF16] = { .act_type = GGML_TYPE_F32, .gemm_x8 = gemm_bf16x8_avx512 },
	},
};
