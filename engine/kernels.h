/* Compute kernels behind a run-time dispatch table: generic C twins and ISA-specific versions. */
#ifndef MS_KERNELS_H
#define MS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

struct ms_attn_kernels;

#define MS_TYPE_SLOTS 32   /* table indexed by ggml type id (all ids we know are < 32) */

/*
 * Dot product of one weight row w (n elements, in the weight type's block
 * layout) with one activation row x (n elements, in that type's activation
 * format, see act_type). n is a multiple of the type's block size.
 */
typedef float (*ms_vec_dot_fn)(size_t n, const void *w, const void *x);

/* Converts n floats into an activation format (n a multiple of its block size). */
typedef void (*ms_act_from_f32_fn)(size_t n, const float *x, void *out);

/*
 * Batched dot for prefill: out[t * out_stride] = dot(n, w, x + t * x_stride)
 * for t < MS_DOT_TOKS, bit-identical to the type's dot for each t, so a
 * result never depends on how tokens were grouped. The weight row's
 * decoding is done once for all the tokens.
 */
#define MS_DOT_TOKS 4
typedef void (*ms_vec_dot_x4_fn)(size_t n, const void *w, const void *x, size_t x_stride,
				 float *out, size_t out_stride);

/*
 * Integer activation formats. GGML_TYPE_Q8_0 (for Q8_0 and Q4_0 weights):
 * ggml's quantize_row_q8_0_ref. GGML_TYPE_Q8_K (for the K-quants): per 256
 * elements iscale = 127/amax, q = round-half-even(x*iscale), d = 1/iscale,
 * bsums[k] = sum of q[16k..16k+15]; a block with a non-finite value has
 * d = NaN (so the NaN reaches the output) and one with amax below
 * MS_Q8K_MIN_AMAX is all zero. Every ISA's act_conv for a format writes
 * the same bytes, so any dot can be fed any table's conversion.
 */
#define MS_Q8K_MIN_AMAX 1e-30f

/*
 * Interleaved weight layout (MS_LAYOUT_X8), made at load time for the
 * matrices of the types below whose row count is a multiple of 8: rows are
 * taken eight at a time, and for each block index the eight rows' blocks
 * are stored together: each f16 field (d, and dmin for Q4_K and Q5_K) of rows 0..7
 * in turn, and the rest of the block (the codes, and the scales of the
 * K-quants) interleaved four bytes at a time: 32-byte chunk c holds bytes
 * 4c..4c+3 of that rest for rows 0..7 in turn. The parts keep the plain
 * block's order (Q5_K: scales, qh, qs; Q6_K: codes and scales first, d
 * last). The bytes are those of the
 * plain blocks, reordered: a group is exactly 8 blocks long. One 32-byte
 * load then feeds eight rows' dot products at once, lane r for row r: the
 * eight results come out of the vector as they are, with no horizontal
 * sums, and the activation bytes each chunk needs are one 4-byte
 * broadcast shared by the eight rows.
 *
 * F16 and BF16 fit the same description as one-element blocks that are
 * all header: element k of rows 0..7 is 16 bytes, one widening load for
 * eight rows, and each token's activation is a float broadcast.
 */
#define MS_X8 8

enum ms_layout {
	MS_LAYOUT_ROWS = 0,   /* plain ggml rows */
	MS_LAYOUT_X8 = 1,     /* groups of 8 rows, see above */
};

struct block_q4_0x8 {
	uint16_t d[MS_X8];          /* f16 scale of rows 0..7 */
	uint8_t qs[MS_X8 * QK4_0 / 2];
};
_Static_assert(sizeof(struct block_q4_0x8) == 8 * sizeof(struct block_q4_0), "q4_0x8 is 8 blocks");

struct block_q8_0x8 {
	uint16_t d[MS_X8];
	int8_t qs[MS_X8 * QK8_0];
};
_Static_assert(sizeof(struct block_q8_0x8) == 8 * sizeof(struct block_q8_0), "q8_0x8 is 8 blocks");

struct block_q4_Kx8 {
	uint16_t d[MS_X8];
	uint16_t dmin[MS_X8];
	uint8_t scales[MS_X8 * K_SCALE_SIZE];
	uint8_t qs[MS_X8 * QK_K / 2];
};
_Static_assert(sizeof(struct block_q4_Kx8) == 8 * sizeof(struct block_q4_K), "q4_Kx8 is 8 blocks");

struct block_q5_Kx8 {
	uint16_t d[MS_X8];
	uint16_t dmin[MS_X8];
	uint8_t scales[MS_X8 * K_SCALE_SIZE];
	uint8_t qh[MS_X8 * QK_K / 8];
	uint8_t qs[MS_X8 * QK_K / 2];
};
_Static_assert(sizeof(struct block_q5_Kx8) == 8 * sizeof(struct block_q5_K), "q5_Kx8 is 8 blocks");

struct block_q6_Kx8 {
	uint8_t ql[MS_X8 * QK_K / 2];
	uint8_t qh[MS_X8 * QK_K / 4];
	int8_t scales[MS_X8 * QK_K / 16];
	uint16_t d[MS_X8];
};
_Static_assert(sizeof(struct block_q6_Kx8) == 8 * sizeof(struct block_q6_K), "q6_Kx8 is 8 blocks");

/*
 * Activations of the interleaved Q4_0 and Q8_0 kernels: Q8_0's rounding (the same codes
 * and the same f16-rounded scale, kept here as the float it represents)
 * plus the sum of the codes, which Q4_0's -8 offset needs once per block
 * instead of once per row.
 */
struct ms_block_q8s {
	float d;
	int32_t s;
	int8_t qs[QK8_0];
};

/*
 * Groups of 8 interleaved rows (rows a multiple of 8, the groups one after
 * another, n elements a row, n a multiple of the block) against n_tok
 * activation rows (struct ms_block_q8s for Q4_0 and Q8_0, the Q8_K blocks
 * of the plain kernels for the K-quants, floats for F16 and BF16;
 * x_stride bytes apart): out[t * out_stride + r] = dot(row r, token t)
 * for r < rows. Per row and token the sum is sequential over blocks,
 * acc = fma(dw * dx, isum, acc) with isum the exact integer block dot
 * product (Q4_K then acc = fma(-(dmin * dx), msum, acc) with msum its
 * exact min term, Q5_K likewise; F16 and BF16 acc = fma(w, x, acc) element by element,
 * or for BF16 with BF16 activations the pair steps of ms_kernels_avx512_bf16_part),
 * so every ISA, every token count and every row count gives the same bits.
 */
typedef void (*ms_gemm_x8_fn)(size_t n, const void *w, size_t rows, const void *x, size_t x_stride,
			      size_t n_tok, float *out, size_t out_stride);

struct ms_type_kernels {
	uint32_t act_type;           /* format activations are converted to once per matmul:
	                                GGML_TYPE_F32 means "use the floats as they are" */
	ms_act_from_f32_fn act_conv; /* NULL when act_type is F32 */
	ms_vec_dot_fn dot;           /* NULL: type not supported by this table */
	ms_vec_dot_x4_fn dot_x4;     /* optional (NULL: ms_matmul calls dot per token) */
	ms_gemm_x8_fn gemm_x8;       /* MS_LAYOUT_X8 weights (NULL: no such layout for the type) */
};

enum ms_isa {
	MS_ISA_GENERIC = 0,
	MS_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
	MS_ISA_AVX512 = 2, /* AVX2's set + AVX-512 F, BW, VL, DQ and VNNI (+ BF16 where present) */
	MS_ISA_COUNT
};

struct ms_kernels {
	enum ms_isa isa;
	const char *name;                          /* "generic", "avx2", "avx512" */
	struct ms_type_kernels type[MS_TYPE_SLOTS];
	/* sum_i a[i]*b[i] */
	float (*dot_f32)(size_t n, const float *a, const float *b);
	/* y[i] += a * x[i] */
	void (*axpy_f32)(size_t n, float a, const float *x, float *y);
	/*
	 * sum_i x[i], reading x as 1, 2 or MS_SUM_STREAMS equal runs side by
	 * side (streams rounded down to one of those, 0 read as 1), the last
	 * run taking the remainder: mistral-bench's read-bandwidth probe, so
	 * it is the fastest plain read this level has. The order of the additions is the kernel's own: twins agree to
	 * rounding, not bits.
	 */
	float (*sum_f32)(size_t n, const float *x, unsigned streams);
	/*
	 * g[i] = silu(g[i]) * u[i]: the gated feed-forward's product. Every
	 * level's result is ms_silu(g[i]) * u[i] bit for bit (engine/silu.h).
	 */
	void (*silu_mul)(size_t n, float *g, const float *u);
	/*
	 * This level's attention kernels (engine/attention.h), so a table and
	 * the attention it runs with travel together: the SIMDe test table
	 * carries the SIMDe attention build, which a lookup by ISA could not.
	 */
	const struct ms_attn_kernels *attn;
};

/*
 * Most concurrent read streams of sum_f32 per thread. Which count reads
 * fastest depends on the machine (here, Zen 4 under KVM: 4 streams were
 * the fastest over 256 MiB and the slowest over 2 GiB), so the probe
 * tries each.
 */
#define MS_SUM_STREAMS 4

/* The generic table: always available, the reference every ISA table is tested against. */
extern const struct ms_kernels ms_kernels_generic;
/* Defined only in x86 builds (engine/kernels_avx2.c); reached through ms_kernels_get(). */
extern const struct ms_kernels ms_kernels_avx2;

/*
 * Defined only in x86 builds (engine/kernels_avx512.c): the kernels the
 * AVX-512 level replaces, every other entry NULL; ms_kernels_get() lays
 * it over the AVX2 table. The _simde twin is the same source compiled
 * against SIMDe's portable AVX-512 (linked into tests only), so it runs
 * on any CPU with AVX2.
 */
extern const struct ms_kernels ms_kernels_avx512_part;
extern const struct ms_kernels ms_kernels_avx512_simde_part;
/*
 * The F16/BF16 tiles of that level, laid on top only where the CPU runs
 * 512-bit FMAs at full width (ms_cpu_full_zmm()).
 */
extern const struct ms_kernels ms_kernels_avx512_wide_part;
extern const struct ms_kernels ms_kernels_avx512_simde_wide_part;
/*
 * The K-quants' 16-row GEMMs (engine/kernels_avx512_k.c), laid over
 * ms_kernels_avx512_part; they call its 8-row tiles for a last odd group.
 */
extern const struct ms_kernels ms_kernels_avx512_k_part;
extern const struct ms_kernels ms_kernels_avx512_simde_k_part;

/*
 * Whether this CPU executes a 512-bit FMA as one operation rather than two
 * 256-bit halves. There is no cpuid bit for it: AMD family 19h (Zen 3
 * without AVX-512, Zen 4 with it split in two) says no, every other
 * AVX-512 CPU yes. Only a speed choice: both answers give the same bits.
 */
int ms_cpu_full_zmm(void);
/* ms_kernels_avx512_wide_part where the build has it (x86), else NULL: for tests and tools. */
const struct ms_kernels *ms_kernels_avx512_wide(void);

/*
 * BF16 weights through vdpbf16ps (engine/kernels_avx512_bf16.c, built with
 * -mavx512bf16): activations in GGML_TYPE_BF16 (rounded to nearest even,
 * denormals to signed zero, NaN quieted: vcvtneps2bf16's rule), each row
 * one f32 sum over element pairs (2j, 2j + 1), each pair added as the
 * instruction does: acc = fma(w[2j+1], x[2j+1], acc), then fma(w[2j],
 * x[2j], acc), BF16 inputs denormal-as-zero, each result flushed to zero
 * when denormal; an odd last element pairs with a zero. The x8 GEMM sums
 * every pair of a row in order; the plain-row dot sums in 16 lanes (lane l
 * the pairs at 32s + 2l) added as a tree (l + (l + 8), + 4, + 2, + 1).
 * Laid over the avx512 table where ms_cpu_use_bf16dp() says so; the _simde
 * twin (tests only) is the same source against SIMDe, and
 * ms_kernels_bf16dp_generic_part the generic twin. Results differ from
 * the float activations' path by the activations' rounding: about 2^-9
 * of each activation.
 */
extern const struct ms_kernels ms_kernels_avx512_bf16_part;
extern const struct ms_kernels ms_kernels_avx512_bf16_simde_part;
extern const struct ms_kernels ms_kernels_bf16dp_generic_part;
/* Whether the CPU has AVX512_BF16 (cpuid leaf 7 subleaf 1, EAX bit 5). */
int ms_cpu_avx512_bf16(void);
/*
 * Whether the avx512 table takes the vdpbf16ps kernels: the CPU has
 * AVX512_BF16 and is AMD's (as before on Zen 4, where it is not
 * measured). No cpuid bit gives the instruction's rate: on Zen 5 it
 * doubled BF16 prefill, while the Intel Xeon measured (BENCHMARKS.md)
 * issues a zmm vdpbf16ps every two cycles beside two FMAs a cycle (half
 * the float tiles' multiply-adds a second), and its BF16 prefill ran
 * 44 tok/s through it against 58-60 through the float tiles; so Intel
 * CPUs keep those. A speed choice that changes results (the BF16
 * activations above).
 */
int ms_cpu_use_bf16dp(void);
/* ms_kernels_avx512_bf16_part where the build has it (x86), else NULL: for tests and tools. */
const struct ms_kernels *ms_kernels_avx512_bf16(void);

/*
 * out = base with every non-NULL kernel of over in its place (per field:
 * dot, dot_x4, gemm_x8, act_conv with its act_type, dot_f32, axpy_f32,
 * sum_f32, silu_mul, attn), and over's isa and name. -EINVAL when over replaces a conversion with
 * one of another activation format while keeping base's dots.
 */
int ms_kernels_overlay(struct ms_kernels *out, const struct ms_kernels *base, const struct ms_kernels *over);

/* Best ISA this CPU (and OS, for AVX state) supports, from cpuid; detected once. */
enum ms_isa ms_cpu_best_isa(void);
const char *ms_isa_name(enum ms_isa isa);
/* Parses "generic" / "avx2" / "avx512" / "auto"(= best); -EINVAL otherwise. */
int ms_isa_parse(const char *s, enum ms_isa *out);

/*
 * Table for isa, or NULL when this build or this CPU lacks it;
 * ms_kernels_choose() below falls back to what the CPU has. MISTRAL_ISA in
 * the environment is read by the tools/daemon, not here.
 */
const struct ms_kernels *ms_kernels_get(enum ms_isa isa);

/*
 * The table for a requested kernel set (spec NULL or "auto": the best this
 * CPU runs); a set the CPU lacks falls back to the best it has. *want (may
 * be NULL) gets the set asked for, so a caller can warn when (*out)->isa is
 * lower: the engine does no logging. -EINVAL for an unknown name.
 */
int ms_kernels_choose(const char *spec, const struct ms_kernels **out, enum ms_isa *want);

/* Whether load-time interleaving exists for wtype (every table then has its gemm_x8). */
int ms_x8_type(uint32_t wtype);

/*
 * Rewrites n_groups groups of 8 plain rows (src, row_bytes apart, cols
 * elements each) into the interleaved layout at dst (n_groups * 8 *
 * row bytes, not overlapping src). -EINVAL for a type without the layout
 * or cols not a multiple of its block.
 */
int ms_repack_x8(uint32_t wtype, const void *src, size_t row_bytes, size_t cols, size_t n_groups, void *dst);

/*
 * y[t*rows + r] = dot(W row r, x row t) for t < n_tok, r < rows.
 * W: rows x cols of type wtype, rows contiguous with row_bytes each.
 * x: n_tok x cols floats. scratch: ms_matmul_scratch_bytes() bytes for the
 * activation conversion (may be NULL when that is 0). Activations are
 * converted once, then output rows are split over the OpenMP team; each
 * weight row is read once for all n_tok tokens (batched prefill).
 * Returns 0, or -EINVAL when the table has no kernel for wtype.
 */
size_t ms_matmul_scratch_bytes(const struct ms_kernels *k, uint32_t wtype, enum ms_layout layout,
			       size_t cols, size_t n_tok);
/*
 * layout MS_LAYOUT_X8: w is rows / 8 groups of 8 * row_bytes bytes made
 * by ms_repack_x8 (rows a multiple of 8); -EINVAL otherwise.
 */
int ms_matmul(const struct ms_kernels *k, uint32_t wtype, enum ms_layout layout, const void *w,
	      size_t row_bytes, size_t rows, size_t cols, const float *x, size_t n_tok, float *y,
	      void *scratch);

/* One matrix of ms_matmul_multi: ms_matmul's arguments for it. */
struct ms_matmul_op {
	uint32_t type;
	enum ms_layout layout;
	const void *w;
	size_t row_bytes, rows, cols;
	float *y;                    /* n_tok x rows */
	float *acc;                  /* NULL, or n_tok x rows floats that then get acc += y, element
	                              * by element (a residual add); not overlapping y or x */
};

#define MS_MATMUL_MAX_OPS 4

/*
 * ms_matmul for up to MS_MATMUL_MAX_OPS matrices that take the same input
 * x (the query, key and value projections; the gate and the up
 * projection), with the same results bit for bit, plus the optional
 * residual adds: the matrices whose activations convert alike share the
 * conversion and one parallel region whose work list spans all their
 * rows, so a decode step pays one region start, one conversion and one
 * wait for the slowest thread where it paid one per matrix. scratch: the
 * largest ms_matmul_scratch_bytes() of the matrices. The outputs must not
 * overlap each other or x. Returns 0, or ms_matmul's -EINVAL for the
 * first matrix it rejects (nothing is computed then), or for n_ops above
 * MS_MATMUL_MAX_OPS.
 */
int ms_matmul_multi(const struct ms_kernels *k, const struct ms_matmul_op *ops, size_t n_ops, const float *x,
		    size_t n_tok, void *scratch);

/*
 * x / (1 + e^-x): the activation of the feed-forward gate, by the fixed
 * steps of engine/silu.h (what every table's silu_mul computes per element).
 */
float ms_silu(float x);

/*
 * g[i] = silu(g[i]) * u[i] for n elements by k->silu_mul, on up to
 * n_threads threads once n is large enough to pay for a parallel region:
 * the product of a gate and an up projection that ms_matmul_glu could not
 * compute itself (its -EINVAL case below).
 */
void ms_glu_product(const struct ms_kernels *k, size_t n, float *g, const float *u, unsigned n_threads);

/*
 * The gated feed-forward's two projections of x: up->y = up x, then
 * gate->y = silu(gate x) * up->y, element by element, bit for bit what
 * ms_matmul_multi and k->silu_mul after it give, in one parallel region.
 * At one token a work item computes both matrices' rows of a chunk and
 * their product while they are in L1, so the product needs no pass of
 * its own (with scalar expf, a separate region cost 35 us per 7B layer);
 * several tokens read each matrix's rows in turn and multiply after them
 * (kernels.c, enum mm_glu, says why). -EINVAL where ms_matmul would reject either, where either has
 * acc, or where the two do not split into the same items (different
 * row counts, layouts or activation conversions): the caller then uses
 * ms_matmul_multi and its own loop.
 */
int ms_matmul_glu(const struct ms_kernels *k, const struct ms_matmul_op *gate, const struct ms_matmul_op *up,
		  const float *x, size_t n_tok, void *scratch);

#endif
