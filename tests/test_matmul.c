/* ms_matmul_multi and ms_matmul_glu: the same bits as one ms_matmul per matrix and a loop after them. */
#include "config.h"

#include <errno.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"
#include "tap.h"
#include "trace.h"

#define COLS 2048     /* with 136 rows, one token is above the matmul's parallel threshold */
#define MAXT 70       /* more than one 64-token group of the x8 items */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (float)((rng * 0x2545f4914f6cdd1dull) >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* A random matrix of type t in layout lo: rows x COLS, rows of row_bytes. */
struct mat {
	uint32_t type;
	enum ms_layout layout;
	size_t rows, row_bytes;
	void *w;
};

static int make_mat(struct mat *m, uint32_t type, enum ms_layout lo, size_t rows)
{
	uint64_t rb;
	float row[COLS];
	void *plain;

	if (ms_ggml_row_bytes(type, COLS, &rb))
		return -1;
	m->type = type;
	m->layout = lo;
	m->rows = rows;
	m->row_bytes = (size_t)rb;
	m->w = malloc(rows * rb);
	plain = malloc(rows * rb);
	if (!m->w || !plain) {
		free(plain);
		return -1;
	}
	for (size_t r = 0; r < rows; r++) {
		for (size_t c = 0; c < COLS; c++)
			row[c] = frand();
		ms_quantize_row(type, row, (char *)plain + r * rb, COLS);
	}
	if (lo == MS_LAYOUT_X8)
		ms_repack_x8(type, plain, (size_t)rb, COLS, rows / 8, m->w);
	else
		memcpy(m->w, plain, rows * rb);
	free(plain);
	return 0;
}

static struct ms_matmul_op op_of(const struct mat *m, float *y, float *acc)
{
	return (struct ms_matmul_op){ .type = m->type, .layout = m->layout, .w = m->w, .row_bytes = m->row_bytes,
				      .rows = m->rows, .cols = COLS, .y = y, .acc = acc };
}

static size_t scratch_of(const struct ms_kernels *k, const struct mat *m, size_t n)
{
	size_t s = 0;

	for (size_t i = 0; i < n; i++) {
		size_t b = ms_matmul_scratch_bytes(k, m[i].type, m[i].layout, COLS, MAXT);

		s = b > s ? b : s;
	}
	return s + 1;
}

/*
 * Three matrices of one input, the last with a residual, against one
 * ms_matmul each; then the first two as gate and up against ms_silu of
 * the one times the other; on 1 and 2 threads, at 1, 3 and 70 tokens.
 */
static void check_set(const struct ms_kernels *k, const char *label, const uint32_t type[3], enum ms_layout lo)
{
	static const size_t rows[3] = { 136, 24, 136 };
	static const size_t ntoks[] = { 1, 3, MAXT };
	struct mat m[3];
	float *x = malloc(MAXT * COLS * sizeof(float)), *ref[3], *y[3], *acc0 = malloc(MAXT * 136 * sizeof(float));
	float *acc = malloc(MAXT * 136 * sizeof(float)), *g = malloc(MAXT * 136 * sizeof(float));
	void *scratch;
	int ready = x && acc0 && acc && g;

	for (int i = 0; i < 3; i++) {
		ref[i] = malloc(MAXT * rows[i] * sizeof(float));
		y[i] = malloc(MAXT * rows[i] * sizeof(float));
		ready = ready && ref[i] && y[i] && !make_mat(&m[i], type[i], lo, rows[i]);
	}
	scratch = malloc(scratch_of(k, m, 3));
	if (!ok(ready && scratch, "%s %s: test data", k->name, label))
		return;
	for (size_t i = 0; i < MAXT * COLS; i++)
		x[i] = frand();
	for (size_t i = 0; i < MAXT * 136; i++)
		acc0[i] = frand();
	for (size_t ti = 0; ti < sizeof(ntoks) / sizeof(ntoks[0]); ti++) {
		const size_t nt = ntoks[ti];
		int r = 0;

		omp_set_num_threads(2);
		for (int i = 0; i < 3; i++)
			r |= ms_matmul(k, m[i].type, m[i].layout, m[i].w, m[i].row_bytes, m[i].rows, COLS, x, nt, ref[i],
				       scratch);
		for (int th = 1; th <= 2; th++) {
			struct ms_matmul_op ops[3] = { op_of(&m[0], y[0], NULL), op_of(&m[1], y[1], NULL),
						       op_of(&m[2], y[2], acc) };
			int same = 1, sum = 1, glu = 1;

			omp_set_num_threads(th);
			for (int i = 0; i < 3; i++)
				memset(y[i], 0xff, nt * rows[i] * sizeof(float));
			memcpy(acc, acc0, nt * 136 * sizeof(float));
			r |= ms_matmul_multi(k, ops, 3, x, nt, scratch);
			for (int i = 0; i < 3; i++)
				same = same && !memcmp(y[i], ref[i], nt * rows[i] * sizeof(float));
			for (size_t e = 0; e < nt * 136; e++)
				sum = sum && acc[e] == acc0[e] + ref[2][e];
			ok(!r && same && sum, "%s %s: multi, 3 matrices and a residual, %zu tokens, %d threads: same bits",
			   k->name, label, nt, th);

			/* m[0] and m[2] have the same rows: the gate and the up projection */
			ops[2].acc = NULL;
			memset(g, 0xff, nt * 136 * sizeof(float));
			ops[0].y = g;
			r = ms_matmul_glu(k, &ops[0], &ops[2], x, nt, scratch);
			if (r == -EINVAL && type[0] != type[2]) {
				skip("%s %s: glu of two types that split apart", k->name, label);
				continue;
			}
			for (size_t e = 0; e < nt * 136; e++)
				glu = glu && g[e] == ms_silu(ref[0][e]) * ref[2][e] && y[2][e] == ref[2][e];
			ok(!r && glu, "%s %s: glu, %zu tokens, %d threads: same bits", k->name, label, nt, th);
		}
	}
	{
		struct ms_matmul_op gate = op_of(&m[0], g, NULL), up = op_of(&m[1], y[1], NULL);
		struct ms_matmul_op many[MS_MATMUL_MAX_OPS + 1];

		ok(ms_matmul_glu(k, &gate, &up, x, 1, scratch) == -EINVAL, "%s %s: glu of 136 and 24 rows: -EINVAL",
		   k->name, label);
		up = op_of(&m[2], y[2], acc);
		ok(ms_matmul_glu(k, &gate, &up, x, 1, scratch) == -EINVAL, "%s %s: glu with a residual: -EINVAL",
		   k->name, label);
		for (size_t i = 0; i < MS_MATMUL_MAX_OPS + 1; i++)
			many[i] = gate;
		ok(ms_matmul_multi(k, many, MS_MATMUL_MAX_OPS + 1, x, 1, scratch) == -EINVAL,
		   "%s %s: multi of too many matrices: -EINVAL", k->name, label);
		many[1].type = 99;
		ok(ms_matmul_multi(k, many, 2, x, 1, scratch) == -EINVAL,
		   "%s %s: multi with a bad matrix: -EINVAL", k->name, label);
	}
	free(scratch);
	for (int i = 0; i < 3; i++) {
		free(ref[i]);
		free(y[i]);
		free(m[i].w);
	}
	free(x);
	free(acc0);
	free(acc);
	free(g);
}

/*
 * One token over 392 rows (not a multiple of the 64-row items): every row
 * must have the bits of each 64-row slice through ms_matmul alone, in one
 * matrix, two in one region and through glu, on 1 and 2 threads (a
 * schedule that cuts items elsewhere must keep them). With a trace on:
 * the same bits, and one record of the region with each team member's
 * times.
 */
static void check_tail(const struct ms_kernels *k, uint32_t type)
{
	enum { R = 392 };
	const char *tn = ms_ggml_type_name(type);
	struct mat m[2];
	float *x = malloc(COLS * sizeof(float)), *ref = malloc(R * sizeof(float)), *ref2 = malloc(R * sizeof(float));
	float *y = malloc(R * sizeof(float)), *y2 = malloc(R * sizeof(float));
	struct ms_trace_rec recs[8];
	struct ms_trace tr = { .rec = recs, .cap = 8 };
	void *scratch;
	int r = 0;

	scratch = NULL;
	if (!ok(x && ref && ref2 && y && y2 && !make_mat(&m[0], type, MS_LAYOUT_X8, R) &&
		!make_mat(&m[1], type, MS_LAYOUT_X8, R) && (scratch = malloc(scratch_of(k, m, 2))),
		"%s %s: tail test data", k->name, tn))
		return;
	for (size_t i = 0; i < COLS; i++)
		x[i] = frand();
	omp_set_num_threads(2);
	for (size_t r0 = 0; r0 < R; r0 += 64) {
		const size_t n = R - r0 < 64 ? R - r0 : 64;

		r |= ms_matmul(k, type, MS_LAYOUT_X8, (const char *)m[0].w + r0 * m[0].row_bytes, m[0].row_bytes, n, COLS,
			       x, 1, ref + r0, scratch);
		r |= ms_matmul(k, type, MS_LAYOUT_X8, (const char *)m[1].w + r0 * m[1].row_bytes, m[1].row_bytes, n, COLS,
			       x, 1, ref2 + r0, scratch);
	}
	for (int th = 1; th <= 2; th++) {
		struct ms_matmul_op ops[2] = { op_of(&m[0], y, NULL), op_of(&m[1], y2, NULL) };
		int same1, same2, glu = 1, rec = 1;
		uint64_t items = 0;

		omp_set_num_threads(th);
		memset(y, 0xff, R * sizeof(float));
		r |= ms_matmul(k, type, MS_LAYOUT_X8, m[0].w, m[0].row_bytes, R, COLS, x, 1, y, scratch);
		same1 = !memcmp(y, ref, R * sizeof(float));
		memset(y, 0xff, R * sizeof(float));
		memset(y2, 0xff, R * sizeof(float));
		tr.n = 0;
		ms_trace_set(&tr);
		r |= ms_matmul_multi(k, ops, 2, x, 1, scratch);
		ms_trace_set(NULL);
		same2 = !memcmp(y, ref, R * sizeof(float)) && !memcmp(y2, ref2, R * sizeof(float));
		if (tr.n != 1 || recs[0].what != MS_TR_MM || recs[0].a != 2 * R || recs[0].b != COLS ||
		    recs[0].n_thr != (uint32_t)th || recs[0].t1 < recs[0].t0)
			rec = 0;
		for (uint32_t i = 0; rec && i < recs[0].n_thr; i++) {
			items += recs[0].items[i];
			rec = recs[0].in[i] >= recs[0].t0 && recs[0].conv[i] >= recs[0].in[i] &&
			      recs[0].done[i] >= recs[0].conv[i] && recs[0].done[i] <= recs[0].t1;
		}
		/* items of at most 64 rows within one matrix (7 each at least), at least 16 rows each */
		rec = rec && items >= 14 && items <= 50;
		ops[0].y = y2;
		ops[1].y = y;
		memset(y, 0xff, R * sizeof(float));
		memset(y2, 0xff, R * sizeof(float));
		r |= ms_matmul_glu(k, &ops[0], &ops[1], x, 1, scratch);
		for (size_t e = 0; e < R; e++)
			glu = glu && y2[e] == ms_silu(ref[e]) * ref2[e] && y[e] == ref2[e];
		ok(!r && same1 && same2 && glu, "%s %s: one token, 392 rows: the 64-row slices' bits, %d threads",
		   k->name, tn, th);
		ok(rec, "%s %s: trace of a two-matrix region: one record, %d timed threads, every item claimed", k->name,
		   tn, th);
	}
	free(scratch);
	free(m[0].w);
	free(m[1].w);
	free(x);
	free(ref);
	free(ref2);
	free(y);
	free(y2);
}

/*
 * ms_glu_product (the separate gate product of gate and up projections of
 * different types): ms_silu(g) * u bit for bit on 1 and 2 threads, below,
 * at and above the element count that opens a parallel region, nothing
 * written past n.
 */
static void check_glu_product(const struct ms_kernels *k)
{
	static const size_t sizes[] = { 0, 5, 16384, 16384 + 2048 + 13 };
	enum { NMAX = 16384 + 2048 + 13 };
	float *g = malloc((NMAX + 1) * sizeof(float)), *u = malloc(NMAX * sizeof(float));
	float *g0 = malloc(NMAX * sizeof(float));

	if (!ok(g && u && g0, "%s: gate product test data", k->name))
		goto out;
	for (size_t i = 0; i < NMAX; i++) {
		g0[i] = 16.0f * frand();
		u[i] = frand();
	}
	for (int th = 1; th <= 2; th++)
		for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
			const size_t n = sizes[si];
			int same = 1;

			memcpy(g, g0, n * sizeof(float));
			g[n] = 7.0f;
			ms_glu_product(k, n, g, u, (unsigned)th);
			for (size_t i = 0; i < n; i++)
				same = same && g[i] == ms_silu(g0[i]) * u[i];
			ok(same && g[n] == 7.0f, "%s: ms_glu_product of %zu elements on %d threads is ms_silu(g) * u",
			   k->name, n, th);
		}
out:
	free(g);
	free(u);
	free(g0);
}

int main(void)
{
	const struct ms_kernels *tables[2] = { ms_kernels_get(MS_ISA_GENERIC), ms_kernels_get(ms_cpu_best_isa()) };
	static const struct {
		const char *label;
		uint32_t type[3];
		enum ms_layout lo;
	} sets[] = {
		{ "Q4_0 x8", { GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_0 }, MS_LAYOUT_X8 },
		{ "Q8_0 x8", { GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, GGML_TYPE_Q8_0 }, MS_LAYOUT_X8 },
		{ "Q4_0 rows", { GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_0 }, MS_LAYOUT_ROWS },
		{ "F16 x8", { GGML_TYPE_F16, GGML_TYPE_F16, GGML_TYPE_F16 }, MS_LAYOUT_X8 },
		{ "F32 rows", { GGML_TYPE_F32, GGML_TYPE_F32, GGML_TYPE_F32 }, MS_LAYOUT_ROWS },
		/* Q4_K_M's mix: the value projection's Q6_K and a Q4_0 between: two conversions */
		{ "Q4_K/Q4_0/Q6_K x8", { GGML_TYPE_Q4_K, GGML_TYPE_Q4_0, GGML_TYPE_Q6_K }, MS_LAYOUT_X8 },
		{ "Q4_0/Q4_K/Q8_0 x8", { GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q8_0 }, MS_LAYOUT_X8 },
	};

	for (int ti = 0; ti < 2; ti++) {
		if (!tables[ti] || (ti == 1 && tables[1] == tables[0]))
			continue;
		for (size_t si = 0; si < sizeof(sets) / sizeof(sets[0]); si++)
			check_set(tables[ti], sets[si].label, sets[si].type, sets[si].lo);
		for (size_t i = 0; i < 6; i++) {
			static const uint32_t tt[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
						       GGML_TYPE_Q6_K, GGML_TYPE_F16, GGML_TYPE_BF16 };

			check_tail(tables[ti], tt[i]);
		}
		check_glu_product(tables[ti]);
	}
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}
