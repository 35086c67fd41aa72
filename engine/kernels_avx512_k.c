/*
 * AVX-512 K-quant GEMMs (Q4_K, Q5_K, Q6_K) on 16 rows at once: two x8
 * groups per zmm, one row's 4-byte piece per dword lane, as the Q4_0/Q8_0
 * tiles of kernels_avx512.c. A file of its own so that its SIMDe build (a
 * slow compile: SIMDe's portable intrinsics inline into pages of code)
 * runs beside kernels_avx512.c's under make -j2 rather than after it.
 * Built twice like that file: natively, and with MS_SIMDE for the tests.
 * Its table is laid over kernels_avx512.c's part (ms_kernels_get), whose
 * 8-row tiles still take a last odd group.
 *
 * Each lane ends a sub-block with the row's exact integer sum and scales
 * it with one vpmulld, where the 8-row tiles keep two lanes a row and
 * scale int16 partial sums with vpdpwssd every two or four pieces: per
 * token and block, 16 rows cost 64 vpdpbusd and 8 (Q4_K, Q5_K) or 16
 * (Q6_K) vpmulld here against 2 x (32 + 16, 32 + 32, 64 + 64) there. The
 * float steps are the 8-row tiles' on 16 lanes, on the same exact
 * integers, so the bits are the generic twins'.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef MS_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define MS_AVX512_PART ms_kernels_avx512_simde_part
#define MS_AVX512_K_PART ms_kernels_avx512_simde_k_part
#define MS_AVX512_NAME "avx512-simde"
#else
#include <immintrin.h>
#define MS_AVX512_PART ms_kernels_avx512_part
#define MS_AVX512_K_PART ms_kernels_avx512_k_part
#define MS_AVX512_NAME "avx512"
#endif

#include "kernels.h"
#include "quant.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

/*
 * Tokens per tile. Each holds per token two sub-block sums, the block sum
 * and the float accumulator: 16 zmm at 4 tokens, 24 at 6. Q4_K/Q5_K decode
 * their codes once per pair of sub-blocks, Q6_K once per sub-block
 * (more work per code, so more tokens share it).
 */
#define K16_NT 4
#define K6_NT 6

/* 16 rows' 6-bit scales and mins: k45x8_sm's four vectors, rows 8..15 in the upper halves. */
struct k45x16_sm {
	__m512i sclo, mlo, schi, mhi;
};

static inline __attribute__((always_inline)) struct k45x16_sm k45x16_scales(const uint8_t *s, size_t gs)
{
	const __m512i m4 = _mm512_set1_epi8(15), k3f = _mm512_set1_epi8(0x3f), k03 = _mm512_set1_epi8(3);
	const __m512i w0 = rows16(s, gs), w1 = rows16(s + 32, gs), w2 = rows16(s + 64, gs);
	struct k45x16_sm r;

	r.sclo = _mm512_and_si512(w0, k3f);
	r.mlo = _mm512_and_si512(w1, k3f);
	r.schi = _mm512_or_si512(_mm512_and_si512(w2, m4),
				 _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(w0, 6), k03), 4));
	r.mhi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(w2, 4), m4),
				_mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(w1, 6), k03), 4));
	return r;
}

/* Dword k of v in every lane of a zmm (k < 8). */
static inline __m512i dword_bcast(__m256i v, const int k)
{
	return _mm512_permutexvar_epi32(_mm512_set1_epi32(k), _mm512_castsi256_si512(v));
}

/*
 * k45x8_msum for 16 rows: mp[k] the (m_2k, m_2k+1) pairs of each row
 * (token-independent), against the token's broadcast pairs of 32-sums.
 */
static inline __attribute__((always_inline)) __m512i k45x16_msum(const __m512i mp[4], const int16_t *bsums)
{
	const __m256i s32 = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)bsums),
					      _mm256_set1_epi16(1));
	const __m256i s16 = _mm256_packs_epi32(s32, s32);
	/* vpdpwssd: vpmaddwd and the add in one (and SIMDe 0.7 aliases _mm512_madd_epi16 to its masked form) */
	__m512i msum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), mp[0], dword_bcast(s16, 0));

	msum = _mm512_dpwssd_epi32(msum, mp[1], dword_bcast(s16, 1));
	msum = _mm512_dpwssd_epi32(msum, mp[2], dword_bcast(s16, 4));
	return _mm512_dpwssd_epi32(msum, mp[3], dword_bcast(s16, 5));
}

/*
 * The one-token tile's prefetch (k_dec_tile), run from inside the block
 * step: each call issues the lines of the next share of a block step
 * (chunk bytes of each stream), so a step's prefetches spread over its
 * sub-steps instead of leaving in one burst at its start. The
 * multi-token tiles prefetch the same way (K16_PF_BYTES); NULL: nothing.
 */
struct kdec_pf {
	const uint8_t *w;       /* the tile's first stream */
	size_t gs, at, lim, chunk;
	int ng;
};

#ifndef KDEC_PF_HINT
#define KDEC_PF_HINT _MM_HINT_T0
#endif

static inline __attribute__((always_inline)) void kdec_pf_run(struct kdec_pf *pf)
{
	if (!pf)
		return;
	pf->lim += pf->chunk;
	for (; pf->at < pf->lim; pf->at += 64) {
		const uintptr_t at = (uintptr_t)pf->w + pf->at + (pf->at >= pf->gs ? (size_t)(pf->ng - 1) * pf->gs : 0);

		_Pragma("GCC unroll 8")
		for (int k = 0; k < pf->ng; k++)
			_mm_prefetch((const char *)(at + (size_t)k * pf->gs), KDEC_PF_HINT);
	}
}

/* Prefetch installments per block step (1..32, a power of two), at the block steps' 32 pieces. */
#ifndef KDEC_PF_SPREAD
#define KDEC_PF_SPREAD 8
#endif

/*
 * The prefetch of a tile of ng groups (pairs through the block step, bb
 * bytes a group's block) dist bytes ahead: each pair's step issues
 * KDEC_PF_SPREAD installments, so a block step's share is bb per stream.
 */
static inline __attribute__((always_inline)) struct kdec_pf kdec_pf_start(const uint8_t *w, size_t gs, size_t bb,
									  size_t dist, const int ng)
{
	return (struct kdec_pf){ w, gs, dist / 64 * 64, dist, bb / (size_t)(KDEC_PF_SPREAD * (ng / 2)), ng };
}

/*
 * The multi-token tiles' prefetch: the pair's two streams K16_PF_BYTES
 * ahead, in the one-token tile's installments, running on into the next
 * pair. They issued it as prefetch_pair's burst (36 lines of Q4_K, 52 of
 * Q6_K at each block's start, 7 kB ahead) until 2026-12-07: on an Intel
 * Xeon with AVX-512 (2 vCPUs; BENCHMARKS.md) a four-token 14336 x 4096
 * matmul from DRAM then took 1.64-1.70 ms (Q4_K) and 2.73-3.05 (Q6_K)
 * where one token takes 1.40 and 1.97: the burst stalled the block step,
 * so the arithmetic and the reads added up instead of overlapping. In
 * installments 5 kB ahead: 1.38-1.44 and 1.98-2.13 (Q4_K 1.35-1.43 at
 * 3 kB, Q6_K 2.17-2.37), the same alternated runs.
 */
#define K16_PF_BYTES 5000

/*
 * Q4_K and Q5_K. Piece c = 8h + q of a row's codes holds elements
 * 64h + 4q.. (low nibbles, sub-block 2h) and 64h + 32 + 4q.. (high, 2h + 1);
 * Q5_K's fifth bits of both are in qh's piece q, bits 2h and 2h + 1.
 */
/*
 * Block i of 16 rows (g its first group's block, the second gs further)
 * for nt tokens, added to acc: the multi-token tile's step and the
 * one-token decode tile's (k_dec_tile), so the two give the same bits.
 */
static inline __attribute__((always_inline)) void k45x16_block(const uint8_t *g, size_t gs, const int q5,
							       const struct block_q8_K *const *a, size_t i,
							       const int nt, __m512 *acc, struct kdec_pf *pf)
{
	const __m512i m4 = _mm512_set1_epi8(15);
	/* field offsets, as in struct block_q4_Kx8 / block_q5_Kx8 */
	const size_t o_dmin = 2 * MS_X8, o_sc = 4 * MS_X8, o_qh = o_sc + MS_X8 * K_SCALE_SIZE;
	const size_t o_qs = o_qh + (q5 ? MS_X8 * QK_K / 8 : 0);

	{
		const struct k45x16_sm sm = k45x16_scales(g + o_sc, gs);
		__m512i isum[K16_NT];

		_Pragma("GCC unroll 4")
		for (int t = 0; t < nt; t++)
			isum[t] = _mm512_setzero_si512();
		_Pragma("GCC unroll 4")
		for (int h = 0; h < 4; h++) {
			__m512i plo[K16_NT], phi[K16_NT];

			_Pragma("GCC unroll 8")
			for (int q = 0; q < 8; q++) {
				const __m512i v = rows16(g + o_qs + 32 * (8 * h + q), gs);

				if ((8 * h + q) % (32 / KDEC_PF_SPREAD) == 0)
					kdec_pf_run(pf);
				__m512i lo = _mm512_and_si512(v, m4);
				__m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);

				if (q5) {
					const __m512i qh = rows16(g + o_qh + 32 * q, gs);

					lo = _mm512_or_si512(lo, bit_to_4_512(qh, 2 * h));
					hi = _mm512_or_si512(hi, bit_to_4_512(qh, 2 * h + 1));
				}
				_Pragma("GCC unroll 4")
				for (int t = 0; t < nt; t++) {
					const int8_t *y = a[t][i].qs + 64 * h + 4 * q;

					plo[t] = dpbusd_b4(q ? plo[t] : _mm512_setzero_si512(), lo, y);
					phi[t] = dpbusd_b4(q ? phi[t] : _mm512_setzero_si512(), hi, y + 32);
				}
			}
			{
				const __m512i sc0 = dword_byte(h < 2 ? sm.sclo : sm.schi, 2 * h % 4);
				const __m512i sc1 = dword_byte(h < 2 ? sm.sclo : sm.schi, 2 * h % 4 + 1);

				_Pragma("GCC unroll 4")
				for (int t = 0; t < nt; t++)
					isum[t] = _mm512_add_epi32(isum[t],
								   _mm512_add_epi32(_mm512_mullo_epi32(plo[t], sc0),
										    _mm512_mullo_epi32(phi[t], sc1)));
			}
		}
		{
			const __m512 dw = f16x16(g, gs), dm = f16x16(g + o_dmin, gs);
			const __m512i p01 = _mm512_broadcast_i64x4(dword_pick(0, 1));
			const __m512i p23 = _mm512_broadcast_i64x4(dword_pick(2, 3));
			const __m512i mp[4] = { _mm512_shuffle_epi8(sm.mlo, p01), _mm512_shuffle_epi8(sm.mlo, p23),
						_mm512_shuffle_epi8(sm.mhi, p01), _mm512_shuffle_epi8(sm.mhi, p23) };

			_Pragma("GCC unroll 4")
			for (int t = 0; t < nt; t++) {
				const __m512i msum = k45x16_msum(mp, a[t][i].bsums);

				acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a[t][i].d)), cvt_i32x16(isum[t]),
							 acc[t]);
				acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dm, _mm512_set1_ps(a[t][i].d)), cvt_i32x16(msum),
							  acc[t]);
			}
		}
	}
}

static inline __attribute__((always_inline)) void k45x16_tile(size_t nb, const uint8_t *w, size_t gs,
							      const size_t bb, const int q5, const void *x,
							      size_t xs, const int nt, float *out, size_t os)
{
	const struct block_q8_K *a[K16_NT];
	__m512 acc[K16_NT];
	struct kdec_pf pf = kdec_pf_start(w, gs, bb, K16_PF_BYTES, 2);

	_Pragma("GCC unroll 4")
	for (int t = 0; t < nt; t++) {
		a[t] = (const struct block_q8_K *)(const void *)((const char *)x + (size_t)t * xs);
		acc[t] = _mm512_setzero_ps();
	}
	for (size_t i = 0; i < nb; i++)
		k45x16_block(w + i * bb, gs, q5, a, i, nt, acc, &pf);
	_Pragma("GCC unroll 4")
	for (int t = 0; t < nt; t++)
		_mm512_storeu_ps(out + (size_t)t * os, acc[t]);
}

_Static_assert(offsetof(struct block_q4_Kx8, scales) == 4 * MS_X8 && offsetof(struct block_q4_Kx8, qs) ==
	       4 * MS_X8 + MS_X8 * K_SCALE_SIZE, "k45x16_tile's Q4_K offsets");
_Static_assert(offsetof(struct block_q5_Kx8, qh) == 4 * MS_X8 + MS_X8 * K_SCALE_SIZE &&
	       offsetof(struct block_q5_Kx8, qs) == 4 * MS_X8 + MS_X8 * K_SCALE_SIZE + MS_X8 * QK_K / 8,
	       "k45x16_tile's Q5_K offsets");

/*
 * Q6_K: piece k of ql's first or second 32 bytes of half h (pieces 16h + k,
 * 16h + 8 + k) and piece 8h + k of qh give the codes of elements
 * 128h + 4k.. + 32q for q = 0..3 (as the 8-row tile's pairs of pieces).
 * Pieces k = 0..3 and 4..7 are the two 16-element sub-blocks of each q:
 * four pieces' vpdpbusd sum (up to 16 * 63 * 128, past int16) goes whole
 * into a vpmulld by the sign-extended scale. The -32 offset is the 8-row
 * tile's, on 16 rows, taken off the exact sum at the block's end.
 */
static inline __attribute__((always_inline)) __m512i q6x16_offset(const uint8_t *sc, size_t gs, const int16_t *bsums)
{
	const __m256i bs = _mm256_loadu_si256((const __m256i *)(const void *)bsums);
	__m512i off = _mm512_setzero_si512();

	_Pragma("GCC unroll 8")
	for (int m = 0; m < 8; m++) {
		const __m512i scp = _mm512_srai_epi16(
			_mm512_shuffle_epi8(rows16(sc + 32 * (m / 2), gs),
					    _mm512_broadcast_i64x4(dword_pick_hi(2 * (m % 2), 2 * (m % 2) + 1))), 8);

		off = _mm512_dpwssd_epi32(off, scp, dword_bcast(bs, m));
	}
	return _mm512_slli_epi32(off, 5);
}

/* Scale j of each row, sign-extended (SIMDe has no 512-bit 32-bit arithmetic shift). */
static inline __m512i q6x16_scale(const int8_t *scales, size_t gs, const int j)
{
	const __m512i k80 = _mm512_set1_epi32(0x80);

	return _mm512_sub_epi32(_mm512_xor_si512(dword_byte(rows16((const uint8_t *)scales + 32 * (j / 4), gs), j % 4),
						 k80), k80);
}

/* Block i of 16 rows for nt tokens, added to acc (as k45x16_block). */
static inline __attribute__((always_inline)) void q6x16_block(const uint8_t *gp, size_t gs,
							      const struct block_q8_K *const *a, size_t i,
							      const int nt, __m512 *acc, struct kdec_pf *pf)
{
	const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);

	{
		const struct block_q6_Kx8 *g = (const struct block_q6_Kx8 *)(const void *)gp;
		__m512i isum[K6_NT];

		_Pragma("GCC unroll 8")
		for (int t = 0; t < nt; t++)
			isum[t] = _mm512_setzero_si512();
		_Pragma("GCC unroll 2")
		for (int h = 0; h < 2; h++)
			_Pragma("GCC unroll 2")
			for (int half = 0; half < 2; half++)
				_Pragma("GCC unroll 2")
				for (int qp = 0; qp < 2; qp++) {
					__m512i p0[K6_NT], p1[K6_NT];

					_Pragma("GCC unroll 8")
					for (int kk = 0; kk < 4; kk++) {
						const int k = 4 * half + kk;

						if ((16 * h + 8 * half + 4 * qp + kk) % (32 / KDEC_PF_SPREAD) == 0)
							kdec_pf_run(pf);
						const __m512i l = rows16(g->ql + 32 * (16 * h + 8 * qp + k), gs);
						const __m512i hq = rows16(g->qh + 32 * (8 * h + k), gs);
						/* q = qp: the low nibbles, qh bits 2qp..; q = qp + 2: the high ones, bits 2qp + 4.. */
						const __m512i e0 = _mm512_or_si512(
							_mm512_and_si512(l, m4),
							_mm512_and_si512(qp ? _mm512_slli_epi16(hq, 2) : _mm512_slli_epi16(hq, 4), m30));
						const __m512i e1 = _mm512_or_si512(
							_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
							_mm512_and_si512(qp ? _mm512_srli_epi16(hq, 2) : hq, m30));

						_Pragma("GCC unroll 8")
						for (int t = 0; t < nt; t++) {
							const int8_t *y = a[t][i].qs + 128 * h + 4 * k + 32 * qp;

							p0[t] = dpbusd_b4(kk ? p0[t] : _mm512_setzero_si512(), e0, y);
							p1[t] = dpbusd_b4(kk ? p1[t] : _mm512_setzero_si512(), e1, y + 64);
						}
					}
					{
						const __m512i sc0 = q6x16_scale(g->scales, gs, 8 * h + 2 * qp + half);
						const __m512i sc1 = q6x16_scale(g->scales, gs, 8 * h + 2 * (qp + 2) + half);

						_Pragma("GCC unroll 8")
						for (int t = 0; t < nt; t++)
							isum[t] = _mm512_add_epi32(isum[t],
										   _mm512_add_epi32(_mm512_mullo_epi32(p0[t], sc0),
												    _mm512_mullo_epi32(p1[t], sc1)));
					}
				}
		{
			const __m512 dw = f16x16((const uint8_t *)g->d, gs);

			_Pragma("GCC unroll 8")
			for (int t = 0; t < nt; t++) {
				const __m512i s = _mm512_sub_epi32(
					isum[t], q6x16_offset((const uint8_t *)g->scales, gs, a[t][i].bsums));

				acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a[t][i].d)), cvt_i32x16(s),
							 acc[t]);
			}
		}
	}
}

static inline __attribute__((always_inline)) void q6x16_tile(size_t nb, const uint8_t *w, size_t gs,
							     const void *x, size_t xs, const int nt, float *out,
							     size_t os)
{
	const size_t bb = sizeof(struct block_q6_Kx8);
	const struct block_q8_K *a[K6_NT];
	__m512 acc[K6_NT];
	struct kdec_pf pf = kdec_pf_start(w, gs, bb, K16_PF_BYTES, 2);

	_Pragma("GCC unroll 8")
	for (int t = 0; t < nt; t++) {
		a[t] = (const struct block_q8_K *)(const void *)((const char *)x + (size_t)t * xs);
		acc[t] = _mm512_setzero_ps();
	}
	for (size_t i = 0; i < nb; i++)
		q6x16_block(w + i * bb, gs, a, i, nt, acc, &pf);
	_Pragma("GCC unroll 8")
	for (int t = 0; t < nt; t++)
		_mm512_storeu_ps(out + (size_t)t * os, acc[t]);
}

static inline __attribute__((always_inline)) void q4_Kx16_tile(size_t nb, const uint8_t *b, size_t gs,
							       const void *x, size_t xs, const int nt, float *out,
							       size_t os)
{
	k45x16_tile(nb, b, gs, sizeof(struct block_q4_Kx8), 0, x, xs, nt, out, os);
}

static inline __attribute__((always_inline)) void q5_Kx16_tile(size_t nb, const uint8_t *b, size_t gs,
							       const void *x, size_t xs, const int nt, float *out,
							       size_t os)
{
	k45x16_tile(nb, b, gs, sizeof(struct block_q5_Kx8), 1, x, xs, nt, out, os);
}

/*
 * One token (decode): KDEC_GROUPS groups at a time, each its own stream
 * gs bytes from the next, prefetched one line per 64 bytes KDEC_PF_BYTES
 * ahead of its reads; a work item of ms_matmul (MM_CHUNK_DEC rows, four
 * pairs) runs its streams on from one pair into the next instead of
 * starting them cold. The prefetch leaves in KDEC_PF_SPREAD installments
 * per block step (kdec_pf_run, from inside the step), not in one burst at
 * its start: a step is 1152 (Q4_K) or 1680 (Q6_K) bytes a group, so one
 * burst was 36 or 53 lines with two streams, 72-210 with four or eight,
 * where Q4_0's eight streams and Q8_0's four issue 17-18 a step. Those
 * bursts stall the step itself: from L2 (one thread, 64 rows, cycles per
 * 16-row step at 3.3 GHz, loaded machine) two streams took 90 (Q4_K) and
 * 157 (Q6_K) in one burst, 80 and 131 in 8 installments (9 and 7 lines
 * each); four streams 112-149 and 180 in one burst, 93 and 148 in 8. From
 * DRAM (/work/notes/kb/kq-bench.c: a ring of five 14336 x 4096 copies, 2
 * threads, 64-row items, CPU time against the plain 2-thread read of the
 * same bytes in the same round, median of 120-150 rounds, probe 15-21
 * GB/s: other helpers' load) two streams read Q4_K 0.96 of the plain read
 * in one burst, 1.03 in 8 (4: 1.04, 16: 1.02, 32: 1.02), Q6_K 0.96 and
 * 1.01; four streams 0.86 and 0.76 (one burst), 0.90 and 0.84 (8); eight
 * 0.93-0.97 (16-32 installments). So the bursts are the four- and
 * eight-stream steps' extra cost from L2 and a third (four streams) to
 * nearly all (eight, Q6_K) of their loss from DRAM; the assembly is not
 * (10 zmm stack accesses in the two-stream Q4_K step, 15 a pair at four).
 * Spread, two streams are still the fastest; why the rest is not
 * established. 1.5 and 6 kB ahead read 0.95 and 0.93 (Q4_K), 0.85 and
 * 0.94 (Q6_K) against 3 kB's 1.03 and 1.01; PREFETCHT1 0.96 / 0.86,
 * PREFETCHNTA 1.06 / 0.99 (T0's noise); 32- or 128-row items no better
 * than 64. Q6_K's one token went through the 8-row tile before the kdec
 * branch: slower in the 8-layer Q4_K_M decode (BENCHMARKS.md). Q5_K takes
 * the same tile and installments, not measured (no Q4_K_M file has it).
 * The -D overrides are for kq-bench.
 */
#ifndef KDEC_GROUPS
#define KDEC_GROUPS 2
#endif
#ifndef KDEC_PF_BYTES
#define KDEC_PF_BYTES 3000
#endif
/* Per type (Q5_K as Q4_K); the sweep's overrides. */
#ifndef KDEC_GROUPS_Q4K
#define KDEC_GROUPS_Q4K KDEC_GROUPS
#endif
#ifndef KDEC_GROUPS_Q6K
#define KDEC_GROUPS_Q6K KDEC_GROUPS
#endif
#ifndef KDEC_PF_BYTES_Q4K
#define KDEC_PF_BYTES_Q4K KDEC_PF_BYTES
#endif
#ifndef KDEC_PF_BYTES_Q6K
#define KDEC_PF_BYTES_Q6K KDEC_PF_BYTES
#endif
#define KDEC_GMAX (KDEC_GROUPS_Q4K > KDEC_GROUPS_Q6K ? KDEC_GROUPS_Q4K : KDEC_GROUPS_Q6K)

/* Types of k_dec_tile. */
enum { KDEC_Q4_K, KDEC_Q5_K, KDEC_Q6_K };

/*
 * ng groups, in pairs through the 16-row block step (the same step as the
 * multi-token tiles, so each row's sums and float steps are the same and
 * so are its bits). Past their ends the streams go on where the next
 * tile's start, (ng - 1) * gs further.
 */
static inline __attribute__((always_inline)) void k_dec_tile(size_t nb, const uint8_t *w, size_t gs, const int ng,
							     const int kt, const struct block_q8_K *a, float *out)
{
	const size_t bb = kt == KDEC_Q4_K ? sizeof(struct block_q4_Kx8) :
			  kt == KDEC_Q5_K ? sizeof(struct block_q5_Kx8) : sizeof(struct block_q6_Kx8);
	const size_t dist = kt == KDEC_Q6_K ? KDEC_PF_BYTES_Q6K : KDEC_PF_BYTES_Q4K;
	const struct block_q8_K *const ap[1] = { a };
	__m512 acc[KDEC_GMAX / 2];
	struct kdec_pf pf = kdec_pf_start(w, gs, bb, dist, ng);

	_Pragma("GCC unroll 4")
	for (int h = 0; h < ng / 2; h++)
		acc[h] = _mm512_setzero_ps();
	for (size_t i = 0; i < nb; i++) {
		_Pragma("GCC unroll 1")
		for (int h = 0; h < ng / 2; h++) {
			const uint8_t *g = w + (size_t)(2 * h) * gs + i * bb;

			if (kt == KDEC_Q6_K)
				q6x16_block(g, gs, ap, i, 1, &acc[h], &pf);
			else
				k45x16_block(g, gs, kt == KDEC_Q5_K, ap, i, 1, &acc[h], &pf);
		}
	}
	_Pragma("GCC unroll 4")
	for (int h = 0; h < ng / 2; h++)
		_mm512_storeu_ps(out + 16 * h, acc[h]);
}

/* One token: the type's groups at a time, then pairs. Returns the groups done (the rest: a last odd one). */
static inline __attribute__((always_inline)) size_t k_dec(size_t nb, const uint8_t *w, size_t gs, size_t ng,
							  const int kt, const void *x, float *out)
{
	const struct block_q8_K *a = x;
	const int kg = kt == KDEC_Q6_K ? KDEC_GROUPS_Q6K : KDEC_GROUPS_Q4K;
	size_t g = 0;

	for (; g + (size_t)kg <= ng; g += (size_t)kg)
		k_dec_tile(nb, w + g * gs, gs, kg, kt, a, out + g * MS_X8);
	for (; g + 2 <= ng; g += 2)
		k_dec_tile(nb, w + g * gs, gs, 2, kt, a, out + g * MS_X8);
	return g;
}

#define K16_AT(t_, nt_, tile) tile(nb, b, gs, (const char *)x + (t_) * xs, xs, nt_, o + (t_) * os, os)

/*
 * One token through k_dec; pairs of groups through the 16-row tile:
 * full tiles of ntile tokens, the rest in tiles of 4 (when ntile is
 * larger), 2 and 1 (each size is one more inlined copy of the tile, and
 * in the SIMDe build minutes more of compiling); a last odd group
 * through the 8-row tile of kernels_avx512.c (its table's entry for the
 * type).
 */
#define GEMM_K16(name, tile16, wtype, kt, bbytes, ntile)					\
static void name(size_t n, const void *w, size_t rows, const void *x, size_t xs, size_t n_tok,	\
		 float *out, size_t os)								\
{												\
	const size_t nb = n / QK_K, gs = nb * (bbytes), ng = rows / MS_X8;			\
	size_t g = n_tok == 1 ? k_dec(nb, w, gs, ng, kt, x, out) : 0;				\
												\
	for (; g + 2 <= ng; g += 2) {								\
		const uint8_t *b = (const uint8_t *)w + g * gs;					\
		float *o = out + g * MS_X8;							\
		size_t t = 0;									\
												\
		for (; t + (ntile) <= n_tok; t += (ntile))					\
			K16_AT(t, ntile, tile16);						\
		if ((ntile) > 4 && n_tok - t >= 4) {						\
			K16_AT(t, 4, tile16);							\
			t += 4;									\
		}										\
		if (n_tok - t >= 2) {								\
			K16_AT(t, 2, tile16);							\
			t += 2;									\
		}										\
		if (n_tok - t >= 1)								\
			K16_AT(t, 1, tile16);							\
	}											\
	if (g < ng)										\
		MS_AVX512_PART.type[wtype].gemm_x8(n, (const uint8_t *)w + g * gs, MS_X8, x, xs, n_tok, \
						   out + g * MS_X8, os);			\
}

GEMM_K16(gemm_q4_Kx16_avx512, q4_Kx16_tile, GGML_TYPE_Q4_K, KDEC_Q4_K, sizeof(struct block_q4_Kx8), K16_NT)
GEMM_K16(gemm_q5_Kx16_avx512, q5_Kx16_tile, GGML_TYPE_Q5_K, KDEC_Q5_K, sizeof(struct block_q5_Kx8), K16_NT)
GEMM_K16(gemm_q6_Kx16_avx512, q6x16_tile, GGML_TYPE_Q6_K, KDEC_Q6_K, sizeof(struct block_q6_Kx8), K6_NT)
#undef GEMM_K16
#undef K16_AT

/*
 * Laid over ms_kernels_avx512_part (ms_kernels_get): the K-quants' x8
 * GEMMs, activations as the AVX2 table converts them (Q8_K).
 */
const struct ms_kernels MS_AVX512_K_PART = {
	.isa = MS_ISA_AVX512,
	.name = MS_AVX512_NAME,
	.type = {
		[GGML_TYPE_Q4_K] = { .act_type = GGML_TYPE_Q8_K, .gemm_x8 = gemm_q4_Kx16_avx512 },
		[GGML_TYPE_Q5_K] = { .act_type = GGML_TYPE_Q8_K, .gemm_x8 = gemm_q5_Kx16_avx512 },
		[GGML_TYPE_Q6_K] = { .act_type = GGML_TYPE_Q8_K, .gemm_x8 = gemm_q6_Kx16_avx512 },
	},
};
