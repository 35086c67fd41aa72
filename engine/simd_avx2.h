/* Inline AVX2/F16C helpers shared by the AVX2 kernel files (include only from files built with -mavx2 -mfma -mf16c). */
#ifndef MS_SIMD_AVX2_H
#define MS_SIMD_AVX2_H

#include <stddef.h>
#include <stdint.h>

#include <immintrin.h>

/* Sum of the 8 lanes. */
static inline float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Eight f16 values from p (any alignment) as floats. */
static inline __m256 f16x8(const void *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* bf16 is the high half of an f32: zero-extend to 32 bits and shift left 16. */
static inline __m256 bf16x8(const uint16_t *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));

	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* Byte shuffle: dword r of each 128-bit half gets bytes (4r + b0, 0, 4r + b1, 0). */
static inline __m256i dword_pick(int b0, int b1)
{
	return _mm256_add_epi32(_mm256_set1_epi32((int)(0x80008000u | (uint32_t)b0 | (uint32_t)b1 << 16)),
				_mm256_setr_epi32(0, 0x40004, 0x80008, 0xc000c, 0, 0x40004, 0x80008, 0xc000c));
}

/*
 * The 6-bit scales and mins of an interleaved Q4_K/Q5_K block's eight
 * rows (its 96 scale bytes at s): dword r of sclo / mlo / schi / mhi holds
 * sc0..3 / m0..3 / sc4..7 / m4..7 of row r, one byte each, so the
 * unpacking is done for the eight rows at once.
 */
struct k45x8_sm {
	__m256i sclo, mlo, schi, mhi;
};

static inline __attribute__((always_inline)) struct k45x8_sm k45x8_scales(const uint8_t *s)
{
	const __m256i m4 = _mm256_set1_epi8(15), k3f = _mm256_set1_epi8(0x3f), k03 = _mm256_set1_epi8(3);
	const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)s);
	const __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 32));
	const __m256i w2 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 64));
	struct k45x8_sm r;

	r.sclo = _mm256_and_si256(w0, k3f);
	r.mlo = _mm256_and_si256(w1, k3f);
	r.schi = _mm256_or_si256(_mm256_and_si256(w2, m4),
				 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(w0, 6), k03), 4));
	r.mhi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w2, 4), m4),
				_mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(w1, 6), k03), 4));
	return r;
}

/*
 * One token's min term for the eight rows: sum_j m_j * (its 32-element
 * activation sum), from the Q8_K block's 16-sums, as 8 int32 lanes: the
 * (m_2k, m_2k+1) int16 pairs of each row against the broadcast pair of
 * 32-sums, one madd per pair of sub-blocks.
 */
static inline __attribute__((always_inline)) __m256i k45x8_msum(const struct k45x8_sm *sm, const int16_t *bsums)
{
	const __m256i mp0 = _mm256_shuffle_epi8(sm->mlo, dword_pick(0, 1));
	const __m256i mp1 = _mm256_shuffle_epi8(sm->mlo, dword_pick(2, 3));
	const __m256i mp2 = _mm256_shuffle_epi8(sm->mhi, dword_pick(0, 1));
	const __m256i mp3 = _mm256_shuffle_epi8(sm->mhi, dword_pick(2, 3));
	const __m256i s32 = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)bsums),
					      _mm256_set1_epi16(1));
	const __m256i s16 = _mm256_packs_epi32(s32, s32);
	__m256i msum = _mm256_madd_epi16(mp0, _mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(0)));

	msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mp1, _mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(1))));
	msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mp2, _mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(4))));
	return _mm256_add_epi32(msum, _mm256_madd_epi16(mp3, _mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(5))));
}

/* Like dword_pick, bytes into the high halves: dword r gets (0, 4r + b0, 0, 4r + b1). */
static inline __m256i dword_pick_hi(int b0, int b1)
{
	return _mm256_add_epi32(_mm256_set1_epi32((int)(0x00800080u | (uint32_t)b0 << 8 | (uint32_t)b1 << 24)),
				_mm256_setr_epi32(0, 0x4000400, 0x8000800, 0xc000c00, 0, 0x4000400, 0x8000800, 0xc000c00));
}

/*
 * An interleaved Q6_K block's -32 code offset for one token and its eight
 * rows: 32 * sum_j sc_j * bsums[j] (sc the signed scales at s, bsums the
 * Q8_K block's 16-sums), sub-blocks in pairs: dword r (sc_2m, sc_2m+1)
 * against (bs_2m, bs_2m+1), one madd each.
 */
static inline __attribute__((always_inline)) __m256i q6x8_offset(const int8_t *s, const int16_t *bsums)
{
	const __m256i bs = _mm256_loadu_si256((const __m256i *)(const void *)bsums);
	__m256i off = _mm256_setzero_si256();

	_Pragma("GCC unroll 8")
	for (int m = 0; m < 8; m++) {
		const __m256i scp = _mm256_srai_epi16(
			_mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(s + 32 * (m / 2))),
					    dword_pick_hi(2 * (m % 2), 2 * (m % 2) + 1)), 8);

		off = _mm256_add_epi32(off, _mm256_madd_epi16(scp, _mm256_permutevar8x32_epi32(bs, _mm256_set1_epi32(m))));
	}
	return _mm256_slli_epi32(off, 5);
}

/*
 * Software prefetch, about 7 kB ahead of the block being read. Decode
 * streams each group once from DRAM; the hardware prefetchers alone left
 * the 7B Q4_0 decode at 0.65-0.83 of the measured bandwidth, with this
 * 0.72-0.81 (six runs each, a noisy machine). In prefill the lines are
 * already in cache after the first token tile and the hint costs a load
 * slot per 64 bytes.
 */
#define PF_BYTES 7000

/*
 * Past the last block of a group too: the next group follows in memory
 * and is usually the next one read (a prefetch never faults, and the
 * address is formed as an integer, not as a pointer past the array).
 */
static inline void prefetch_block(const void *blocks, size_t i, size_t bytes)
{
	const uintptr_t at = (uintptr_t)blocks + (i + PF_BYTES / bytes + 1) * bytes;

	for (size_t off = 0; off < bytes; off += 64)
		_mm_prefetch((const char *)(at + off), _MM_HINT_T0);
}

/*
 * Every x8 integer tile's start: its nt (at most ntmax) activation rows,
 * xs bytes apart, and a zeroed float accumulator each.
 */
#define X8_TILE_BEGIN(atype, ntmax)							\
	const atype *a[ntmax];								\
	__m256 acc[ntmax];								\
											\
	_Pragma("GCC unroll 8")								\
	for (int t = 0; t < nt; t++) {							\
		a[t] = (const atype *)(const void *)((const char *)x + (size_t)t * xs);	\
		acc[t] = _mm256_setzero_ps();						\
	}

/* ...and its end: each token's eight row results, out_stride apart. */
static inline __attribute__((always_inline)) void x8_tile_store(const __m256 *acc, int nt, float *out, size_t os)
{
	_Pragma("GCC unroll 8")
	for (int t = 0; t < nt; t++)
		_mm256_storeu_ps(out + (size_t)t * os, acc[t]);
}

/*
 * Rows this far ahead are requested explicitly, past the block's end too
 * (the next block continues the same stride). The cache keeps a KV head's
 * rows back to back (forward.h), yet the hardware prefetchers alone leave
 * the kernels about 20% slower at 4096 positions (9.6 against 8.0 ms for
 * 8 layers of a 7B, two threads): a block's rows are walked once per
 * 16-element piece in accum, which does not look like one stream. Both
 * attention levels (AVX2, AVX-512) use it.
 */
#define ATT_PF_ROWS 16

static inline void att_prefetch_row(const void *base, size_t t, size_t stride, size_t bytes)
{
	const uintptr_t at = (uintptr_t)base + (t + ATT_PF_ROWS) * stride;

	for (size_t off = 0; off < bytes; off += 64)
		_mm_prefetch((const char *)(at + off), _MM_HINT_T0);
}

#endif
