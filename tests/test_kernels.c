/* Unit tests for the compute kernels: every ISA table against a double-precision reference, ISA twins, matmul driver. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "kernels.h"
#include "quant.h"
#include "../tests/tap.h"

static const uint32_t types[] = {
	GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

static const size_t sizes_any[] = { 1, 7, 9, 31, 32, 33, 64, 96, 1000, 4096 + 32 };
static const size_t sizes_blk[] = { 32, 64, 96, 4096 + 32 };

#define MAX_N (4096 + 32)

/* xorshift64*: deterministic and independent of libc's rand. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_u64(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* Uniform in [-1, 1). */
static float rng_f(void)
{
	return (float)((double)(rng_u64() >> 11) * 0x1.0p-52 - 1.0);
}

static void fill_f(float *v, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		v[i] = scale * rng_f();
}

static int is_block_type(uint32_t t)
{
	return t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0;
}

static size_t row_bytes(uint32_t t, size_t n)
{
	uint64_t b = 0;

	if (ggml_row_bytes(t, n, &b))
		return 0;
	return (size_t)b;
}

/*
 * Fills a weight row of n elements of type t. raw=0: random floats through
 * quantize_row (the realistic path); raw=1 for block types: random bytes
 * and a random signed f16 scale, which also reaches q = -128 and every
 * nibble.
 */
static int make_weights(uint32_t t, size_t n, void *dst, int raw)
{
	float tmp[MAX_N];

	if (raw && is_block_type(t)) {
		size_t bs = t == GGML_TYPE_Q8_0 ? sizeof(struct block_q8_0) : sizeof(struct block_q4_0);
		uint8_t *p = dst;

		for (size_t b = 0; b < n / 32; b++, p += bs) {
			uint16_t d = ms_f32_to_f16(0.001f + 0.05f * fabsf(rng_f()));

			if (rng_u64() & 1)
				d |= 0x8000;
			memcpy(p, &d, 2);
			for (size_t j = 2; j < bs; j++)
				p[j] = (uint8_t)rng_u64();
		}
		return 0;
	}
	fill_f(tmp, n, 2.0f);
	return quantize_row(t, tmp, dst, n);
}

/* Double-precision reference from dequantize_row: sum w*x and sum |w*x|. */
static int ref_dot(uint32_t t, size_t n, const void *w, const float *x, double *dot, double *mag)
{
	float wf[MAX_N];
	double s = 0.0, m = 0.0;

	if (dequantize_row(t, w, wf, n))
		return -1;
	for (size_t i = 0; i < n; i++) {
		double p = (double)wf[i] * (double)x[i];

		s += p;
		m += fabs(p);
	}
	*dot = s;
	*mag = m;
	return 0;
}

/* |a - b| within rel of the magnitude (plus a denormal-sized floor). */
static int close_to(double a, double b, double mag, double rel)
{
	return fabs(a - b) <= rel * mag + 1e-30;
}

static void test_dot_type(const struct ms_kernels *k, const struct ms_kernels *gen, uint32_t t)
{
	static unsigned char w[MAX_N * 4];
	static float x[MAX_N];
	const size_t *sizes = is_block_type(t) ? sizes_blk : sizes_any;
	size_t nsizes = is_block_type(t) ? sizeof(sizes_blk) / sizeof(sizes_blk[0])
					 : sizeof(sizes_any) / sizeof(sizes_any[0]);
	const char *tn = ggml_type_name(t);

	if (!ok(k->type[t].dot != NULL, "%s: %s dot present", k->name, tn))
		return;
	ok(k->type[t].act_type == GGML_TYPE_F32 && !k->type[t].act_conv,
	   "%s: %s activations are F32", k->name, tn);

	for (int raw = 0; raw <= (is_block_type(t) ? 1 : 0); raw++) {
		for (size_t si = 0; si < nsizes; si++) {
			size_t n = sizes[si];
			double ref, mag;
			float got, twin;
			int good = 1, r;

			r = make_weights(t, n, w, raw);
			fill_f(x, n, 1.0f);
			if (r || ref_dot(t, n, w, x, &ref, &mag)) {
				ok(0, "%s: %s n=%zu: quantize/dequantize failed", k->name, tn, n);
				continue;
			}
			got = k->type[t].dot(n, w, x);
			if (!close_to((double)got, ref, mag, 1e-5)) {
				good = 0;
				diag("got %.9g ref %.9g mag %.9g", (double)got, ref, mag);
			}
			ok(good, "%s: %s dot n=%zu%s matches double reference", k->name, tn, n,
			   raw ? " (raw blocks)" : "");
			if (k != gen) {
				twin = gen->type[t].dot(n, w, x);
				ok(close_to((double)got, (double)twin, mag, 2e-5),
				   "%s: %s dot n=%zu%s matches generic twin (%.9g vs %.9g)", k->name, tn, n,
				   raw ? " (raw blocks)" : "", (double)got, (double)twin);
			}
		}
	}
}

static void test_f32_helpers(const struct ms_kernels *k, const struct ms_kernels *gen)
{
	static float a[MAX_N], b[MAX_N], y0[MAX_N + 1], y1[MAX_N + 1];

	for (size_t si = 0; si < sizeof(sizes_any) / sizeof(sizes_any[0]); si++) {
		size_t n = sizes_any[si];
		double ref = 0.0, mag = 0.0;
		float got;
		int good = 1;

		fill_f(a, n, 3.0f);
		fill_f(b, n, 1.0f);
		for (size_t i = 0; i < n; i++) {
			ref += (double)a[i] * (double)b[i];
			mag += fabs((double)a[i] * (double)b[i]);
		}
		got = k->dot_f32(n, a, b);
		ok(close_to((double)got, ref, mag, 1e-5), "%s: dot_f32 n=%zu (%.9g vs %.9g)",
		   k->name, n, (double)got, ref);
		if (k != gen)
			ok(close_to((double)got, (double)gen->dot_f32(n, a, b), mag, 2e-5),
			   "%s: dot_f32 n=%zu matches generic twin", k->name, n);

		/* axpy: y0 via the table, y1 by hand in double; guard element past n untouched */
		fill_f(y0, n + 1, 1.0f);
		memcpy(y1, y0, (n + 1) * sizeof(float));
		k->axpy_f32(n, 0.75f, a, y0);
		for (size_t i = 0; i < n; i++) {
			double e = (double)y1[i] + 0.75 * (double)a[i];
			double m = fabs((double)y1[i]) + fabs(0.75 * (double)a[i]);

			if (!close_to((double)y0[i], e, m, 1.2e-7)) {
				good = 0;
				diag("axpy i=%zu: %.9g vs %.9g", i, (double)y0[i], e);
				break;
			}
		}
		ok(good && y0[n] == y1[n], "%s: axpy_f32 n=%zu", k->name, n);
		if (k != gen) {
			memcpy(y0, y1, (n + 1) * sizeof(float));
			k->axpy_f32(n, -1.5f, a, y0);
			gen->axpy_f32(n, -1.5f, a, y1);
			good = 1;
			for (size_t i = 0; i < n; i++)
				if (fabsf(y0[i] - y1[i]) > 2.4e-7f * (fabsf(y1[i]) + fabsf(1.5f * a[i])))
					good = 0;
			ok(good, "%s: axpy_f32 n=%zu matches generic twin", k->name, n);
		}
	}
}

/*
 * ms_matmul against a naive loop over the same table's dot: the driver must
 * give bit-identical results (same kernel per output), for 1 and 2 threads.
 */
static void test_matmul(const struct ms_kernels *k, uint32_t t)
{
	static const size_t rows_list[] = { 5, 37, 75 };
	static const size_t cols_list[] = { 32, 1024 };
	static const size_t ntok_list[] = { 1, 3, 17 };
	const char *tn = ggml_type_name(t);

	for (size_t ci = 0; ci < 2; ci++) {
		size_t cols = cols_list[ci], rb = row_bytes(t, cols);

		for (size_t ri = 0; ri < 3; ri++) {
			size_t rows = rows_list[ri];
			/* pad each row by 16 bytes: row_bytes larger than the data is allowed */
			size_t stride = rb + 16;
			unsigned char *w = calloc(rows, stride);
			float *x = malloc(17 * cols * sizeof(float));
			float *ref = malloc(17 * rows * sizeof(float));
			float *y1 = malloc(17 * rows * sizeof(float));
			float *y2 = malloc(17 * rows * sizeof(float));

			if (!w || !x || !ref || !y1 || !y2) {
				ok(0, "out of memory");
				goto next;
			}
			for (size_t r = 0; r < rows; r++)
				make_weights(t, cols, w + r * stride, 0);
			fill_f(x, 17 * cols, 1.0f);
			for (size_t ti = 0; ti < 3; ti++) {
				size_t nt = ntok_list[ti];
				size_t sb = ms_matmul_scratch_bytes(k, t, cols, nt);
				void *scratch = sb ? malloc(sb) : NULL;
				int r1, r2;

				for (size_t tok = 0; tok < nt; tok++)
					for (size_t r = 0; r < rows; r++)
						ref[tok * rows + r] = k->type[t].dot(cols, w + r * stride, x + tok * cols);
				memset(y1, 0xff, nt * rows * sizeof(float));
				memset(y2, 0xff, nt * rows * sizeof(float));
				omp_set_num_threads(1);
				r1 = ms_matmul(k, t, w, stride, rows, cols, x, nt, y1, scratch);
				omp_set_num_threads(2);
				r2 = ms_matmul(k, t, w, stride, rows, cols, x, nt, y2, scratch);
				ok(r1 == 0 && r2 == 0 &&
				   !memcmp(y1, ref, nt * rows * sizeof(float)) &&
				   !memcmp(y2, ref, nt * rows * sizeof(float)),
				   "%s: %s matmul rows=%zu cols=%zu n_tok=%zu, 1 and 2 threads",
				   k->name, tn, rows, cols, nt);
				free(scratch);
			}
next:
			free(w);
			free(x);
			free(ref);
			free(y1);
			free(y2);
		}
	}
}

static void test_api(void)
{
	enum ms_isa isa = MS_ISA_COUNT;
	const struct ms_kernels *g = ms_kernels_get(MS_ISA_GENERIC);
	float x[32] = { 0 }, y[4];
	unsigned char w[4 * 144] = { 0 };

	ok(ms_isa_parse("generic", &isa) == 0 && isa == MS_ISA_GENERIC, "parse generic");
	ok(ms_isa_parse("avx2", &isa) == 0 && isa == MS_ISA_AVX2, "parse avx2");
	ok(ms_isa_parse("auto", &isa) == 0 && isa == ms_cpu_best_isa(), "parse auto = best (%s)",
	   ms_isa_name(isa));
	ok(ms_isa_parse("sse9", &isa) == -EINVAL, "parse rejects unknown");
	ok(ms_isa_parse("", &isa) == -EINVAL, "parse rejects empty");
	ok(ms_isa_parse(NULL, &isa) == -EINVAL, "parse rejects NULL");
	ok(!strcmp(ms_isa_name(MS_ISA_GENERIC), "generic") && !strcmp(ms_isa_name(MS_ISA_AVX2), "avx2"),
	   "isa names");
	ok(ms_isa_name(MS_ISA_COUNT) != NULL, "name of unknown isa is not NULL");
	ok(ms_cpu_best_isa() == ms_cpu_best_isa() && ms_cpu_best_isa() < MS_ISA_COUNT,
	   "best isa stable and in range");
	ok(g != NULL && g->isa == MS_ISA_GENERIC && !strcmp(g->name, "generic"),
	   "generic table present");
	ok(ms_kernels_get(MS_ISA_COUNT) == NULL, "no table for unknown isa");
	if (ms_cpu_best_isa() >= MS_ISA_AVX2) {
		const struct ms_kernels *a = ms_kernels_get(MS_ISA_AVX2);

		ok(a != NULL && a->isa == MS_ISA_AVX2 && !strcmp(a->name, "avx2"), "avx2 table present");
	} else {
		ok(ms_kernels_get(MS_ISA_AVX2) == NULL, "no avx2 table on this CPU/build");
	}
	if (!g)
		return;

	ok(g->type[GGML_TYPE_Q4_K].dot == NULL, "generic has no Q4_K dot (yet)");
	ok(ms_matmul(g, GGML_TYPE_Q4_K, w, 144, 1, 256, x, 1, y, NULL) == -EINVAL,
	   "matmul with unsupported type: -EINVAL");
	ok(ms_matmul(g, 99, w, 144, 1, 32, x, 1, y, NULL) == -EINVAL,
	   "matmul with out-of-range type: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, w, 34, 1, 48, x, 1, y, NULL) == -EINVAL,
	   "matmul with cols not a block multiple: -EINVAL");
	ok(ms_matmul(g, GGML_TYPE_Q8_0, w, 33, 1, 32, x, 1, y, NULL) == -EINVAL,
	   "matmul with row_bytes too small: -EINVAL");
	ok(ms_matmul_scratch_bytes(g, GGML_TYPE_Q8_0, 4096, 8) == 0, "F32 activations need no scratch");
}

int main(void)
{
	const struct ms_kernels *gen = ms_kernels_get(MS_ISA_GENERIC);
	const struct ms_kernels *tables[MS_ISA_COUNT];

	test_api();
	if (!gen)
		return done_testing();
	diag("best isa: %s", ms_isa_name(ms_cpu_best_isa()));
	for (int i = 0; i < MS_ISA_COUNT; i++)
		tables[i] = ms_kernels_get((enum ms_isa)i);

	for (int i = 0; i < MS_ISA_COUNT; i++) {
		const struct ms_kernels *k = tables[i];

		if (!k) {
			skip("%s kernels: not supported by this CPU or build", ms_isa_name((enum ms_isa)i));
			continue;
		}
		for (size_t ti = 0; ti < N_TYPES; ti++)
			test_dot_type(k, gen, types[ti]);
		test_f32_helpers(k, gen);
		for (size_t ti = 0; ti < N_TYPES; ti++)
			test_matmul(k, types[ti]);
	}
	return done_testing();
}
