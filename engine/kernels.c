/* Kernel dispatch: CPU feature detection, ISA names, table lookup and the OpenMP-parallel matmul driver. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef HAVE_X86
#include <cpuid.h>
#endif

#include <omp.h>

#include "kernels.h"
#include "quant.h"
#include "silu.h"
#include "trace.h"

#ifdef HAVE_X86
/* XCR0 via xgetbv; inline asm so this file needs no -mxsave. Only valid once OSXSAVE is known set. */
static uint64_t read_xcr0(void)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((uint64_t)hi << 32) | lo;
}

static enum ms_isa detect_isa(void)
{
	unsigned int a, b, c, d;

	if (!__get_cpuid_count(1, 0, &a, &b, &c, &d))
		return MS_ISA_GENERIC;
	/* FMA (ECX 12), OSXSAVE (27), F16C (29) */
	if (!(c & (1u << 12)) || !(c & (1u << 27)) || !(c & (1u << 29)))
		return MS_ISA_GENERIC;
	/* The OS must save XMM (bit 1) and YMM (bit 2) state, or AVX faults. */
	if ((read_xcr0() & 6) != 6)
		return MS_ISA_GENERIC;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 5)))
		return MS_ISA_GENERIC;
	/*
	 * AVX-512 F (EBX 16), DQ (17), BW (30), VL (31), VNNI (ECX 11), and the
	 * OS saving the opmask and upper ZMM state (XCR0 bits 5-7): a kernel
	 * VM or an old kernel may show the flags without the state.
	 */
	if ((b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31)) && (c & (1u << 11)) &&
	    (read_xcr0() & 0xe0) == 0xe0)
		return MS_ISA_AVX512;
	return MS_ISA_AVX2;
}
#else
static enum ms_isa detect_isa(void)
{
	return MS_ISA_GENERIC;
}
#endif

/*
 * Detection is idempotent, so racing first callers just compute the same
 * value twice; the atomic only makes the cached store/load well defined.
 */
enum ms_isa ms_cpu_best_isa(void)
{
	static atomic_int cached = -1;
	int v = atomic_load_explicit(&cached, memory_order_relaxed);

	if (v < 0) {
		v = (int)detect_isa();
		atomic_store_explicit(&cached, v, memory_order_relaxed);
	}
	return (enum ms_isa)v;
}

const char *ms_isa_name(enum ms_isa isa)
{
	switch (isa) {
	case MS_ISA_GENERIC:
		return "generic";
	case MS_ISA_AVX2:
		return "avx2";
	case MS_ISA_AVX512:
		return "avx512";
	default:
		return "unknown";
	}
}

int ms_isa_parse(const char *s, enum ms_isa *out)
{
	if (!s || !out)
		return -EINVAL;
	if (!strcmp(s, "generic"))
		*out = MS_ISA_GENERIC;
	else if (!strcmp(s, "avx2"))
		*out = MS_ISA_AVX2;
	else if (!strcmp(s, "avx512"))
		*out = MS_ISA_AVX512;
	else if (!strcmp(s, "auto"))
		*out = ms_cpu_best_isa();
	else
		return -EINVAL;
	return 0;
}

int ms_kernels_overlay(struct ms_kernels *out, const struct ms_kernels *base, const struct ms_kernels *over)
{
	if (!out || !base || !over)
		return -EINVAL;
	*out = *base;
	out->isa = over->isa;
	out->name = over->name;
	for (size_t i = 0; i < MS_TYPE_SLOTS; i++) {
		const struct ms_type_kernels *o = &over->type[i];
		struct ms_type_kernels *t = &out->type[i];

		if (o->act_conv) {
			if (o->act_type != t->act_type && !o->dot)
				return -EINVAL;
			t->act_type = o->act_type;
			t->act_conv = o->act_conv;
		}
		if (o->dot)
			t->dot = o->dot;
		if (o->dot_x4)
			t->dot_x4 = o->dot_x4;
		if (o->gemm_x8)
			t->gemm_x8 = o->gemm_x8;
	}
	if (over->dot_f32)
		out->dot_f32 = over->dot_f32;
	if (over->axpy_f32)
		out->axpy_f32 = over->axpy_f32;
	if (over->sum_f32)
		out->sum_f32 = over->sum_f32;
	if (over->silu_mul)
		out->silu_mul = over->silu_mul;
	if (over->attn)
		out->attn = over->attn;
	return 0;
}

#ifdef HAVE_X86
/* 1 and the family (cpuid 1, with the extended family) on an AMD CPU, 0 on another vendor's, -1 when cpuid fails. */
static int cpu_amd(unsigned int *family)
{
	unsigned int a, b, c, d;

	if (!__get_cpuid(0, &a, &b, &c, &d))
		return -1;
	/* "AuthenticAMD": EBX "Auth", EDX "enti", ECX "cAMD" */
	if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u)
		return 0;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return -1;
	*family = (a >> 8) & 0xf;
	if (*family == 0xf)
		*family += (a >> 20) & 0xff;
	return 1;
}

int ms_cpu_full_zmm(void)
{
	unsigned int family = 0;
	const int amd = cpu_amd(&family);

	return amd < 0 ? 0 : !amd || family != 0x19;
}

const struct ms_kernels *ms_kernels_avx512_wide(void)
{
	return &ms_kernels_avx512_wide_part;
}

/* The AVX-512 state itself is checked by detect_isa(); this is the one extra instruction group. */
int ms_cpu_avx512_bf16(void)
{
	unsigned int a, b, c, d;

	/* leaf 7 subleaf 0's EAX: the highest subleaf */
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || a < 1)
		return 0;
	return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
}

int ms_cpu_use_bf16dp(void)
{
	unsigned int family = 0;

	return ms_cpu_avx512_bf16() && cpu_amd(&family) == 1;
}

const struct ms_kernels *ms_kernels_avx512_bf16(void)
{
	return &ms_kernels_avx512_bf16_part;
}

static struct ms_kernels avx512_table;
static pthread_once_t avx512_once = PTHREAD_ONCE_INIT;

static void avx512_build(void)
{
	/* the operands are this program's own constant tables: cannot fail */
	(void)ms_kernels_overlay(&avx512_table, &ms_kernels_avx2, &ms_kernels_avx512_part);
	(void)ms_kernels_overlay(&avx512_table, &avx512_table, &ms_kernels_avx512_k_part);
	if (ms_cpu_full_zmm())
		(void)ms_kernels_overlay(&avx512_table, &avx512_table, &ms_kernels_avx512_wide_part);
	/*
	 * vdpbf16ps does twice the float tile's multiply-adds per instruction:
	 * 2.0x its prefill speed on Zen 5 (BENCHMARKS.md); on a CPU that
	 * splits zmm operations (Zen 4) it still does 32 a zmm against the
	 * AVX2 tile's 8 a ymm FMA (not measured there). Not on Intel's
	 * (ms_cpu_use_bf16dp).
	 */
	if (ms_cpu_use_bf16dp())
		(void)ms_kernels_overlay(&avx512_table, &avx512_table, &ms_kernels_avx512_bf16_part);
}
#else
int ms_cpu_full_zmm(void)
{
	return 0;
}

const struct ms_kernels *ms_kernels_avx512_wide(void)
{
	return NULL;
}

int ms_cpu_avx512_bf16(void)
{
	return 0;
}

int ms_cpu_use_bf16dp(void)
{
	return 0;
}

const struct ms_kernels *ms_kernels_avx512_bf16(void)
{
	return NULL;
}
#endif

const struct ms_kernels *ms_kernels_get(enum ms_isa isa)
{
	switch (isa) {
	case MS_ISA_GENERIC:
		return &ms_kernels_generic;
	case MS_ISA_AVX2:
#ifdef HAVE_X86
		if (ms_cpu_best_isa() >= MS_ISA_AVX2)
			return &ms_kernels_avx2;
#endif
		return NULL;
	case MS_ISA_AVX512:
#ifdef HAVE_X86
		if (ms_cpu_best_isa() >= MS_ISA_AVX512 && !pthread_once(&avx512_once, avx512_build))
			return &avx512_table;
#endif
		return NULL;
	default:
		return NULL;
	}
}

/* Kernel entry for wtype, or NULL when the table lacks it. */
static const struct ms_type_kernels *type_kernels(const struct ms_kernels *k, uint32_t wtype)
{
	if (!k || wtype >= MS_TYPE_SLOTS || !k->type[wtype].dot)
		return NULL;
	return &k->type[wtype];
}

/* Weights that widen to floats: one-element blocks, float activations, their own tiles. */
static int x8_wide(uint32_t wtype)
{
	return wtype == GGML_TYPE_F16 || wtype == GGML_TYPE_BF16;
}

int ms_x8_type(uint32_t wtype)
{
	return wtype == GGML_TYPE_Q4_0 || wtype == GGML_TYPE_Q8_0 || wtype == GGML_TYPE_Q4_K ||
	       wtype == GGML_TYPE_Q5_K || wtype == GGML_TYPE_Q6_K || x8_wide(wtype);
}

/* Q4_0 and Q8_0 groups take the Q8_0 codes with their sum; the K-quants keep their Q8_K activations. */
static int x8_uses_q8s(uint32_t wtype)
{
	return wtype == GGML_TYPE_Q4_0 || wtype == GGML_TYPE_Q8_0;
}

/*
 * Each block is a run of f16 header fields and a body, in the plain
 * block's order: d first for Q4_0/Q8_0, d and dmin first for Q4_K and
 * Q5_K, the body first and d last for Q6_K; an F16/BF16 element is one
 * field and no body. Fields are gathered row by row, the body goes in
 * 4-byte pieces (kernels.h).
 */
int ms_repack_x8(uint32_t wtype, const void *src, size_t row_bytes, size_t cols, size_t n_groups, void *dst)
{
	const struct ggml_type_info *ti = ms_ggml_type_get(wtype);
	const size_t nf = wtype == GGML_TYPE_Q4_K || wtype == GGML_TYPE_Q5_K ? 2 : 1;
	const int fields_last = wtype == GGML_TYPE_Q6_K;
	size_t body, body_off, nb;
	uint8_t *o = dst;

	if (!ms_x8_type(wtype) || !ti || cols % ti->blck)
		return -EINVAL;
	if (x8_wide(wtype)) {
		/* the loop below, written for 2-byte elements: 4.7 GB/s against its 2.4 */
		uint16_t *o16 = dst;

		for (size_t g = 0; g < n_groups; g++) {
			const uint8_t *rows = (const uint8_t *)src + g * MS_X8 * row_bytes;

			for (size_t k = 0; k < cols; k++)
				for (size_t r = 0; r < MS_X8; r++, o16++)
					memcpy(o16, rows + r * row_bytes + 2 * k, 2);
		}
		return 0;
	}
	body = ti->bytes - 2 * nf;
	body_off = fields_last ? 0 : 2 * nf;
	nb = cols / ti->blck;
	for (size_t g = 0; g < n_groups; g++) {
		const uint8_t *rows = (const uint8_t *)src + g * MS_X8 * row_bytes;

		for (size_t i = 0; i < nb; i++) {
			const uint8_t *blk = rows + i * ti->bytes;

			for (int part = 0; part < 2; part++) {
				if (part == fields_last) {
					for (size_t f = 0; f < nf; f++)
						for (size_t r = 0; r < MS_X8; r++, o += 2)
							memcpy(o, blk + r * row_bytes + (fields_last ? body : 0) + 2 * f, 2);
				} else {
					for (size_t c = 0; c < body / 4; c++)
						for (size_t r = 0; r < MS_X8; r++, o += 4)
							memcpy(o, blk + r * row_bytes + body_off + 4 * c, 4);
				}
			}
		}
	}
	return 0;
}

/* Bytes of one converted activation row; 0 when no conversion happens (or on error). */
static size_t act_row_bytes(const struct ms_type_kernels *tk, int q8s, size_t cols)
{
	uint64_t bytes;

	if (q8s)
		return cols / QK8_0 * sizeof(struct ms_block_q8s);
	if (!tk || !tk->act_conv)
		return 0;
	if (ms_ggml_row_bytes(tk->act_type, cols, &bytes) || bytes > SIZE_MAX)
		return 0;
	return (size_t)bytes;
}

size_t ms_matmul_scratch_bytes(const struct ms_kernels *k, uint32_t wtype, enum ms_layout layout,
			       size_t cols, size_t n_tok)
{
	size_t row = act_row_bytes(type_kernels(k, wtype), layout == MS_LAYOUT_X8 && x8_uses_q8s(wtype), cols);

	if (row && n_tok > SIZE_MAX / row)
		return 0;
	return row * n_tok;
}

/*
 * Output rows per work item. Small enough that a 4096-row matrix splits
 * evenly over any sane team, large enough that the loop overhead is nil.
 */
#define MM_CHUNK 16
/*
 * Interleaved items of several tokens are twice that: the F16/BF16 tiles
 * and the AVX-512 Q4_0/Q8_0 one run four groups of 8 rows at once (the
 * other types' tiles take two pairs of groups an item).
 */
#define MM_CHUNK_X8 32
/*
 * One-token items of every x8 type are four times MM_CHUNK, so that each
 * type's AVX-512 decode tile keeps its streams running through an item
 * instead of starting them cold every 16 rows. Per type (the tiles'
 * comments give the figures):
 *   Q4_0: one tile of eight groups (eight streams) an item
 *         (kernels_avx512.c, DEC_GROUPS);
 *   Q8_0: two tiles of four groups (DEC_GROUPS_Q8); items of 32, 128 or
 *         256 rows, guided or static, read it no faster;
 *   Q4_K/Q5_K/Q6_K: four tiles of two groups whose prefetch runs on from
 *         one pair into the next (kernels_avx512_k.c, KDEC_GROUPS);
 *         items of 32 or 128 rows were no better;
 *   F16, BF16: two tiles of four groups (WIDE_DEC_GROUPS in
 *         kernels_avx512.c; DP_DEC_GROUPS, vdpbf16ps, in
 *         kernels_avx512_bf16.c); 32- and 128-row items measured within
 *         noise of 64 (/work/notes/kb/fdec-mm.c, BENCHMARKS.md).
 * The smallest 7B matrix (1024 rows) still makes 16 items.
 */
#define MM_CHUNK_DEC 64
/*
 * Elements of one activation row per conversion work item: a multiple of
 * every activation block (32, 256), small enough that a single decode
 * token's conversion is shared by the team instead of done by one thread
 * while the others wait at the barrier.
 */
#define ACT_PART 1024
/*
 * Elements of a gate product (silu_pieces) per work item of its static
 * loop: long enough for the vector loop, short enough that both threads
 * of a four-token 14336-row product get equal shares.
 */
#define SILU_PART 2048
/*
 * Below this many multiply-adds (tens of microseconds of work) a parallel
 * region costs more than it saves: waking the team takes microseconds on
 * idle cores and milliseconds when the cores are shared with other work,
 * so the caller's thread does it alone. Every matmul of a 7B model is
 * far above it (the smallest is 4096 x 1024).
 */
#define MM_PAR_MIN ((uint64_t)1 << 18)
/*
 * Tokens per work item of an interleaved matmul. The item's 16 weight rows
 * (18-64 kB in Q4_0) are read from memory once and then from L1/L2 for
 * each further tile of 2-4 tokens, while the item's activations (64 x
 * 4096 x 40 / 32 = 320 kB) stay in L2 across the items a thread claims in
 * a row. F16/BF16 items (32 rows, 256-900 kB, 6-token tiles) mostly read
 * both from L2 and L3: their tiles do 12 FMAs per 8 loads, so the FMA
 * units still set the pace (89% of their peak).
 */
#define X8_TOKS 64

/*
 * Q8_0 codes (the table's own conversion, so every ISA agrees) widened
 * with the float scale and the code sum.
 */
static void act_q8s(const struct ms_kernels *k, size_t n, const float *x, struct ms_block_q8s *out)
{
	struct block_q8_0 tmp[ACT_PART / QK8_0];

	k->type[GGML_TYPE_Q8_0].act_conv(n, x, tmp);
	for (size_t i = 0; i < n / QK8_0; i++) {
		int32_t s = 0;

		for (int j = 0; j < QK8_0; j++)
			s += tmp[i].qs[j];
		out[i].d = ms_f16_to_f32(tmp[i].d);
		out[i].s = s;
		memcpy(out[i].qs, tmp[i].qs, QK8_0);
	}
}

/* One matrix of a matmul call, checked: its kernels and its work items. */
struct mm_job {
	const struct ms_matmul_op *op;
	const struct ms_type_kernels *tk;
	size_t chunk, nchunk;
	size_t end;              /* work items of this job and the ones before it */
	int x8;
};

/*
 * Checks op (the errors ms_matmul documents) and fills j; *arow, *q8s and
 * *ai describe the activation conversion op needs (*ai NULL: none, the
 * kernels read x itself).
 */
static int mm_check(const struct ms_kernels *k, const struct ms_matmul_op *op, size_t n_tok, void *scratch,
		    struct mm_job *j, size_t *arow, int *q8s_out, const struct ggml_type_info **ai_out)
{
	const uint32_t wtype = op->type;
	const struct ms_type_kernels *tk = type_kernels(k, wtype);
	const struct ggml_type_info *ti = ms_ggml_type_get(wtype);
	const struct ggml_type_info *ai = NULL;
	const int x8 = op->layout == MS_LAYOUT_X8;
	const int q8s = x8 && x8_uses_q8s(wtype);
	const size_t chunk = !x8 ? MM_CHUNK : n_tok == 1 ? MM_CHUNK_DEC : MM_CHUNK_X8;
	uint64_t wbytes;

	if (!tk || !ti || !ti->blck || op->cols % ti->blck)
		return -EINVAL;
	if (ms_ggml_row_bytes(wtype, op->cols, &wbytes) || wbytes > op->row_bytes)
		return -EINVAL;
	if (x8) {
		/* the q8s conversion below borrows the table's Q8_0 one */
		if (!tk->gemm_x8 || op->rows % MS_X8 || wbytes != op->row_bytes ||
		    (q8s && !k->type[GGML_TYPE_Q8_0].act_conv))
			return -EINVAL;
	} else if (op->layout != MS_LAYOUT_ROWS) {
		return -EINVAL;
	}
	*arow = act_row_bytes(tk, q8s, op->cols);
	if (q8s || tk->act_conv) {
		ai = ms_ggml_type_get(q8s ? GGML_TYPE_Q8_0 : tk->act_type);
		if (!*arow || !scratch || !ai || ACT_PART % ai->blck)
			return -EINVAL;
	}
	j->op = op;
	j->tk = tk;
	j->chunk = chunk;
	j->nchunk = (op->rows + chunk - 1) / chunk;
	j->x8 = x8;
	*q8s_out = q8s;
	*ai_out = ai;
	return 0;
}

/* Whether b's activations are a's: same columns, same conversion. */
static int mm_same_act(const struct mm_job *a, const struct mm_job *b, int q8s_a, int q8s_b)
{
	if (a->op->cols != b->op->cols || q8s_a != q8s_b)
		return 0;
	if (q8s_a)
		return 1;
	return a->tk->act_conv == b->tk->act_conv && (!a->tk->act_conv || a->tk->act_type == b->tk->act_type);
}

/* Work item jt of job j: its output rows [r0, r1) of tokens [t0, t0 + nt). */
static void mm_item(const struct mm_job *j, size_t jt, const void *act, size_t arow, size_t cols, size_t n_tok,
		    size_t *r0_out, size_t *r1_out, size_t *t0_out, size_t *nt_out)
{
	const struct ms_matmul_op *op = j->op;
	const struct ms_type_kernels *tk = j->tk;
	const size_t rows = op->rows, row_bytes = op->row_bytes, nchunk = j->nchunk;
	size_t c = jt % nchunk, t0 = j->x8 ? jt / nchunk * X8_TOKS : 0;
	size_t r0 = c * j->chunk;
	size_t r1 = r0 + j->chunk < rows ? r0 + j->chunk : rows;
	size_t nt = n_tok - t0;
	float *y = op->y;

	if (j->x8) {
		nt = nt < X8_TOKS ? nt : X8_TOKS;
		tk->gemm_x8(cols, (const char *)op->w + r0 * row_bytes, r1 - r0, (const char *)act + t0 * arow, arow,
			    nt, y + t0 * rows + r0, rows);
	} else {
		for (size_t r = r0; r < r1; r++) {
			const void *wr = (const char *)op->w + r * row_bytes;
			size_t t = 0;

			/* the weight row stays in L1 across the token loop */
			if (tk->dot_x4)
				for (; t + MS_DOT_TOKS <= n_tok; t += MS_DOT_TOKS)
					tk->dot_x4(cols, wr, (const char *)act + t * arow, arow, y + t * rows + r, rows);
			for (; t < n_tok; t++)
				y[t * rows + r] = tk->dot(cols, wr, (const char *)act + t * arow);
		}
	}
	*r0_out = r0;
	*r1_out = r1;
	*t0_out = t0;
	*nt_out = nt;
}

/*
 * g = silu(g) * u over n elements in SILU_PART pieces, shared out by the
 * team of the enclosing parallel region (a caller outside one does them
 * all); every team member must call it, as with any worksharing loop.
 */
static void silu_pieces(const struct ms_kernels *k, size_t n, float *g, const float *u)
{
	const size_t pieces = (n + SILU_PART - 1) / SILU_PART;

#pragma omp for schedule(static)
	for (size_t p = 0; p < pieces; p++) {
		const size_t e0 = p * SILU_PART;

		k->silu_mul(n - e0 < SILU_PART ? n - e0 : SILU_PART, g + e0, u + e0);
	}
}

void ms_glu_product(const struct ms_kernels *k, size_t n, float *g, const float *u, unsigned n_threads)
{
#pragma omp parallel num_threads(n_threads) if (n > 8 * SILU_PART)
	silu_pieces(k, n, g, u);
}

/*
 * How mm_run computes a gated feed-forward's product (jobs[0] the gate,
 * jobs[1] the up projection). MM_GLU_ITEM: one item takes both matrices'
 * same rows and multiplies them while in L1 (one token: the product
 * costs no pass of its own). MM_GLU_AFTER: the gate's items, then the
 * up's, one list as ms_matmul_multi makes it, and the product in a
 * static loop after the list's barrier, in the same region. Several
 * tokens take the second: with the 16-row items of the time,
 * alternating between the two matrices every item started every up
 * item's reads cold (the tiles prefetch into the next rows of the same
 * matrix): four concurrent 7B Q4_0 streams ran at 40-41 tok/s against
 * 46-48 for the separate matrices (BENCHMARKS.md, glu4).
 */
enum mm_glu { MM_GLU_NONE, MM_GLU_ITEM, MM_GLU_AFTER };

/*
 * The matrices of jobs[0..n) (sharing x, its conversion and its column
 * count) in one parallel region: activations are converted once (split
 * into pieces of every token's row), the implicit barrier of that loop
 * publishes them, then the work items of all the matrices, one list
 * matrix after matrix, are claimed in guided chunks: the first claims are
 * large contiguous ranges (long streams for the hardware prefetchers, few
 * atomic claims), the last ones small, so a thread that lost its core for
 * a while (the machine may be shared) leaves its share to the others
 * instead of holding up the barrier. One list for several matrices pays
 * the region start, the conversion and the final wait once, and a
 * thread's stream runs on from one matrix into the next instead of
 * draining at a barrier. Each output has exactly one writer and its value
 * does not depend on the thread count or the schedule (nor on which
 * matrices share the call: every item is the one a lone call makes).
 */
static void mm_run(const struct ms_kernels *k, const struct mm_job *jobs, size_t n, enum mm_glu glu, const float *x,
		   size_t n_tok, void *scratch, size_t arow, int q8s, const struct ggml_type_info *ai)
{
	const struct ms_type_kernels *tk0 = jobs[0].tk;
	const size_t cols = jobs[0].op->cols;
	const size_t parts = ai ? (cols + ACT_PART - 1) / ACT_PART : 0;
	const size_t nitems = glu == MM_GLU_ITEM ? jobs[0].end : jobs[n - 1].end;
	const void *act = parts ? (const void *)scratch : (const void *)x;
	struct ms_trace *tr = ms_trace_get();
	struct ms_trace_rec rec = { .what = glu ? MS_TR_GLU : MS_TR_MM, .b = cols };
	uint64_t macs = 0;
	int par;

	if (!parts)
		arow = cols * sizeof(float);
	for (size_t i = 0; i < n; i++) {
		macs += (uint64_t)jobs[i].op->rows * n_tok * cols;
		rec.a += i && glu ? 0 : jobs[i].op->rows;
	}
	par = nitems > 1 && macs >= MM_PAR_MIN;
	if (tr)
		rec.t0 = ms_trace_now();

#pragma omp parallel if (par)
	{
		const int me = tr ? omp_get_thread_num() : 0, tm = tr && me < MS_TRACE_THREADS;

		if (tm) {
			rec.in[me] = ms_trace_now();
			if (!me)
				rec.n_thr = (uint32_t)omp_get_num_threads();
		}
		if (parts) {
#pragma omp for schedule(static)
			for (size_t u = 0; u < n_tok * parts; u++) {
				size_t t = u / parts, e0 = (u % parts) * ACT_PART;
				size_t m = cols - e0 < ACT_PART ? cols - e0 : ACT_PART;
				const float *xs = x + t * cols + e0;

				if (q8s)
					act_q8s(k, m, xs, (struct ms_block_q8s *)((char *)scratch + t * arow) + e0 / QK8_0);
				else
					tk0->act_conv(m, xs, (char *)scratch + t * arow + e0 / ai->blck * ai->bytes);
			}
		}
		if (tm)
			rec.conv[me] = rec.done[me] = ms_trace_now();
		/*
		 * Tried at one token (branch tokov, 923459a): claims of guided
		 * shares counted in 16-row units, items of up to 64 rows, no
		 * loop barrier. Traced, the regions' tails fell from 4-14 to
		 * 1.4-4.3 us and their costs from 3.1-3.3% to 1.9-2.0% of an
		 * 8-layer Q4_0 token, but quiet whole-model Q4_0 decode was
		 * lower in 10 of 12 alternated pairs (ratio median 0.77-0.81
		 * against 0.80-0.82, BENCHMARKS.md); not kept until that is
		 * understood.
		 */
#pragma omp for schedule(guided)
		for (size_t it = 0; it < nitems; it++) {
			size_t ji = 0, r0, r1, t0, nt;

			while (it >= jobs[ji].end)
				ji++;

			const struct mm_job *j = &jobs[ji];
			const size_t jt = it - (ji ? jobs[ji - 1].end : 0), rows = j->op->rows;

			mm_item(j, jt, act, arow, cols, n_tok, &r0, &r1, &t0, &nt);
			if (glu == MM_GLU_ITEM) {
				/* the up projection's same rows, then the product while both are in L1 */
				const float *u = jobs[1].op->y;
				float *g = j->op->y;

				mm_item(&jobs[1], jt, act, arow, cols, n_tok, &r0, &r1, &t0, &nt);
				for (size_t t = t0; t < t0 + nt; t++)
					k->silu_mul(r1 - r0, g + t * rows + r0, u + t * rows + r0);
			}
			/* the item's own outputs, still in L1: a residual add without a serial pass */
			if (j->op->acc)
				for (size_t t = t0; t < t0 + nt; t++)
					for (size_t r = r0; r < r1; r++)
						j->op->acc[t * rows + r] += j->op->y[t * rows + r];
			if (tm) {
				rec.done[me] = ms_trace_now();
				rec.items[me]++;
			}
		}
		/* the loop's barrier has published both outputs; rows of every token are contiguous */
		if (glu == MM_GLU_AFTER)
			silu_pieces(k, n_tok * jobs[0].op->rows, jobs[0].op->y, jobs[1].op->y);
	}
	if (tr) {
		struct ms_trace_rec *slot = ms_trace_slot(tr);

		rec.t1 = ms_trace_now();
		if (slot)
			*slot = rec;
	}
}

int ms_matmul_multi(const struct ms_kernels *k, const struct ms_matmul_op *ops, size_t n_ops, const float *x,
		    size_t n_tok, void *scratch)
{
	struct mm_job jobs[MS_MATMUL_MAX_OPS];
	size_t arow[MS_MATMUL_MAX_OPS], items = 0;
	int q8s[MS_MATMUL_MAX_OPS];
	const struct ggml_type_info *ai[MS_MATMUL_MAX_OPS];
	int r;

	if (!ops || n_ops > MS_MATMUL_MAX_OPS)
		return -EINVAL;
	for (size_t i = 0; i < n_ops; i++)
		if ((r = mm_check(k, &ops[i], n_tok, scratch, &jobs[i], &arow[i], &q8s[i], &ai[i])) < 0)
			return r;
	if (!n_tok)
		return 0;
	/* runs of matrices that share the conversion go together; the rest alone */
	for (size_t i0 = 0, i1; i0 < n_ops; i0 = i1) {
		size_t n = 0;

		for (i1 = i0; i1 < n_ops && mm_same_act(&jobs[i0], &jobs[i1], q8s[i0], q8s[i1]); i1++) {
			size_t nitems = jobs[i1].x8 ? jobs[i1].nchunk * ((n_tok + X8_TOKS - 1) / X8_TOKS) : jobs[i1].nchunk;

			if (!nitems)
				continue;
			items += nitems;
			jobs[i0 + n] = jobs[i1];
			jobs[i0 + n++].end = items;
		}
		if (n)
			mm_run(k, jobs + i0, n, MM_GLU_NONE, x, n_tok, scratch, arow[i0], q8s[i0], ai[i0]);
		items = 0;
	}
	return 0;
}

float ms_silu(float x)
{
	return silu_scalar(x);
}

int ms_matmul_glu(const struct ms_kernels *k, const struct ms_matmul_op *gate, const struct ms_matmul_op *up,
		  const float *x, size_t n_tok, void *scratch)
{
	struct mm_job jobs[2];
	size_t arow[2];
	int q8s[2], r;
	const struct ggml_type_info *ai[2];

	if (!gate || !up || gate->acc || up->acc)
		return -EINVAL;
	if ((r = mm_check(k, gate, n_tok, scratch, &jobs[0], &arow[0], &q8s[0], &ai[0])) < 0 ||
	    (r = mm_check(k, up, n_tok, scratch, &jobs[1], &arow[1], &q8s[1], &ai[1])) < 0)
		return r;
	/* one item takes both matrices' same rows: they must split alike */
	if (!mm_same_act(&jobs[0], &jobs[1], q8s[0], q8s[1]) || gate->rows != up->rows ||
	    jobs[0].chunk != jobs[1].chunk || jobs[0].x8 != jobs[1].x8)
		return -EINVAL;
	if (!n_tok || !gate->rows)
		return 0;
	jobs[0].end = jobs[0].x8 ? jobs[0].nchunk * ((n_tok + X8_TOKS - 1) / X8_TOKS) : jobs[0].nchunk;
	jobs[1].end = 2 * jobs[0].end;
	mm_run(k, jobs, 2, n_tok == 1 ? MM_GLU_ITEM : MM_GLU_AFTER, x, n_tok, scratch, arow[0], q8s[0], ai[0]);
	return 0;
}

int ms_matmul(const struct ms_kernels *k, uint32_t wtype, enum ms_layout layout, const void *w,
	      size_t row_bytes, size_t rows, size_t cols, const float *x, size_t n_tok, float *y,
	      void *scratch)
{
	const struct ms_matmul_op op = {
		.type = wtype, .layout = layout, .w = w, .row_bytes = row_bytes, .rows = rows, .cols = cols, .y = y,
	};

	return ms_matmul_multi(k, &op, 1, x, n_tok, scratch);
}

int ms_kernels_choose(const char *spec, const struct ms_kernels **out, enum ms_isa *want)
{
	enum ms_isa best = ms_cpu_best_isa(), w = best;

	if (!out || (spec && ms_isa_parse(spec, &w) < 0))
		return -EINVAL;
	if (want)
		*want = w;
	*out = ms_kernels_get(w < best ? w : best);
	return *out ? 0 : -ENOENT;
}
