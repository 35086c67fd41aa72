/* Tests for quant.c (type table, half/bfloat16 conversion, Q8_0/Q4_0, K-quants), the GGUF writer and mistral-mkmodel's output. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "../tests/tap.h"

/*
 * Only mistral-mkmodel links the writer, so the test compiles it in to call
 * it directly (its functions are exported and the engine does not define them).
 */
#include "gguf_writer.h"

/* ------------------------------------------------------------------------ */
/* Independent references                                                   */
/* ------------------------------------------------------------------------ */

/* The value of a half, from the IEEE formula in double (no bit tricks). */
static double half_ref(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v;

	if (e == 31)
		v = m ? NAN : INFINITY;
	else if (e)
		v = ldexp(1024 + m, e - 25);
	else
		v = ldexp(m, -24);
	return s ? -v : v;
}

/* The value of a bfloat16: 8 exponent bits, 7 mantissa bits, bias 127. */
static double bf16_ref(uint16_t h)
{
	int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
	double v;

	if (e == 255)
		v = m ? NAN : INFINITY;
	else if (e)
		v = ldexp(128 + m, e - 134);
	else
		v = ldexp(m, -133);
	return s ? -v : v;
}

static bool same_value(double a, double b)
{
	if (isnan(a) || isnan(b))
		return isnan(a) && isnan(b);
	return a == b && !signbit(a) == !signbit(b);
}

static uint32_t fbits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static float bitsf(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/* xorshift64*: the test's own generator, unrelated to mkmodel's. */
static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static float rnd_uniform(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(rnd() >> 11) * 0x1p-53);
}

/* ------------------------------------------------------------------------ */
/* Type table and row sizes                                                 */
/* ------------------------------------------------------------------------ */

static void test_type_table(void)
{
	static const struct { uint32_t id; const char *name; uint32_t blck, bytes; bool sup; } want[] = {
		{ 0, "F32", 1, 4, true }, { 1, "F16", 1, 2, true },
		{ 2, "Q4_0", 32, 18, true }, { 3, "Q4_1", 32, 20, false },
		{ 6, "Q5_0", 32, 22, false }, { 7, "Q5_1", 32, 24, false },
		{ 8, "Q8_0", 32, 34, true }, { 9, "Q8_1", 32, 36, false },
		{ 10, "Q2_K", 256, 84, false }, { 11, "Q3_K", 256, 110, false },
		{ 12, "Q4_K", 256, 144, true }, { 13, "Q5_K", 256, 176, true },
		{ 14, "Q6_K", 256, 210, true }, { 15, "Q8_K", 256, 292, false },
		{ 30, "BF16", 1, 2, true },
	};
	static const uint32_t unknown[] = { 4, 5, 16, 17, 29, 31, 39, 1000, UINT32_MAX };
	int bad = 0;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const struct ggml_type_info *ti = ms_ggml_type_get(want[i].id);

		if (!ti || strcmp(ti->name, want[i].name) || ti->blck != want[i].blck ||
		    ti->bytes != want[i].bytes || ti->supported != want[i].sup ||
		    strcmp(ms_ggml_type_name(want[i].id), want[i].name)) {
			diag("type %u (%s) wrong in the table", want[i].id, want[i].name);
			bad++;
		}
	}
	ok(bad == 0, "type table: name, block size, bytes, supported for all 15 ggml types");
	bad = 0;
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		if (ms_ggml_type_get(unknown[i]) || !ms_ggml_type_name(unknown[i]))
			bad++;
	ok(bad == 0, "unknown type ids: ms_ggml_type_get NULL, ms_ggml_type_name not NULL");
	ok(sizeof(struct block_q8_0) == 34 && sizeof(struct block_q4_0) == 18,
	   "block struct sizes 34 and 18");
	ok(sizeof(struct block_q4_K) == 144 && sizeof(struct block_q5_K) == 176 &&
	   sizeof(struct block_q6_K) == 210 && sizeof(struct block_q8_K) == 292 && QK_K == 256 &&
	   offsetof(struct block_q4_K, qs) == 16 && offsetof(struct block_q5_K, qh) == 16 &&
	   offsetof(struct block_q5_K, qs) == 48 && offsetof(struct block_q6_K, qh) == 128 &&
	   offsetof(struct block_q6_K, scales) == 192 && offsetof(struct block_q6_K, d) == 208 &&
	   offsetof(struct block_q8_K, bsums) == 260,
	   "K-quant block structs: sizes 144, 176, 210, 292 and ggml's field offsets");
}

/* The KV cache type words the daemon config, mistral-run and mistral-bench all take. */
static void test_kv_type_parse(void)
{
	uint32_t t = UINT32_MAX;

	ok(ms_kv_type_parse("f16", &t) == 0 && t == GGML_TYPE_F16, "kv type f16");
	ok(ms_kv_type_parse("F32", &t) == 0 && t == GGML_TYPE_F32, "kv type F32: any case");
	t = UINT32_MAX;
	ok(ms_kv_type_parse("bf16", &t) == -EINVAL && ms_kv_type_parse("f16 ", &t) == -EINVAL &&
	   ms_kv_type_parse("", &t) == -EINVAL && t == UINT32_MAX,
	   "kv type: other words refused, *type untouched");
	ok(ms_kv_type_parse(NULL, &t) == -EINVAL && ms_kv_type_parse("f16", NULL) == -EINVAL,
	   "kv type: NULL refused");
}

static void test_row_bytes(void)
{
	uint64_t out = 12345;

	ok(ms_ggml_row_bytes(GGML_TYPE_F32, 3, &out) == 0 && out == 12, "F32 row of 3: 12 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_F16, 4096, &out) == 0 && out == 8192, "F16 row of 4096: 8192 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_BF16, 1, &out) == 0 && out == 2, "BF16 row of 1: 2 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q8_0, 64, &out) == 0 && out == 68, "Q8_0 row of 64: 68 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q4_0, 4096, &out) == 0 && out == 128 * 18,
	   "Q4_0 row of 4096: 2304 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q6_K, 512, &out) == 0 && out == 420, "Q6_K row of 512: 420 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_F32, 0, &out) == 0 && out == 0, "row of 0 elements: 0 bytes");
	out = 777;
	ok(ms_ggml_row_bytes(GGML_TYPE_Q8_0, 33, &out) == -EINVAL && out == 777,
	   "Q8_0 row of 33: -EINVAL, output untouched");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q4_0, 31, &out) == -EINVAL, "Q4_0 row of 31: -EINVAL");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q4_K, 128, &out) == -EINVAL, "Q4_K row of 128: -EINVAL");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q4_K, 4096, &out) == 0 && out == 16 * 144 &&
	   ms_ggml_row_bytes(GGML_TYPE_Q5_K, 14336, &out) == 0 && out == 56 * 176 &&
	   ms_ggml_row_bytes(GGML_TYPE_Q6_K, 4096, &out) == 0 && out == 16 * 210 &&
	   ms_ggml_row_bytes(GGML_TYPE_Q8_K, 256, &out) == 0 && out == 292,
	   "K rows: Q4_K 4096 -> 2304, Q5_K 14336 -> 9856, Q6_K 4096 -> 3360, Q8_K 256 -> 292 bytes");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q5_K, 4096 + 32, &out) == -EINVAL &&
	   ms_ggml_row_bytes(GGML_TYPE_Q6_K, 255, &out) == -EINVAL &&
	   ms_ggml_row_bytes(GGML_TYPE_Q8_K, 512 + 128, &out) == -EINVAL,
	   "K rows not a multiple of 256: -EINVAL");
	ok(ms_ggml_row_bytes(4, 32, &out) == -EINVAL, "removed type 4: -EINVAL");
	ok(ms_ggml_row_bytes(UINT32_MAX, 32, &out) == -EINVAL, "type 2^32-1: -EINVAL");
	ok(ms_ggml_row_bytes(GGML_TYPE_F32, UINT64_MAX / 4, &out) == 0 &&
	   out == UINT64_MAX / 4 * 4, "F32 row of (2^64-1)/4: fits");
	ok(ms_ggml_row_bytes(GGML_TYPE_F32, UINT64_MAX / 4 + 1, &out) == -EOVERFLOW,
	   "F32 row of 2^62: -EOVERFLOW");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q8_0, (UINT64_MAX / 34 + 1) * 32, &out) == -EOVERFLOW,
	   "Q8_0 row one block past 2^64 bytes: -EOVERFLOW");
	ok(ms_ggml_row_bytes(GGML_TYPE_Q8_0, UINT64_MAX / 34 * 32, &out) == 0 &&
	   out == UINT64_MAX / 34 * 34, "Q8_0 row of the most blocks that fit: ok");
	ok(ms_ggml_row_bytes(GGML_TYPE_F16, UINT64_MAX, &out) == -EOVERFLOW,
	   "F16 row of 2^64-1: -EOVERFLOW");
}

/* ------------------------------------------------------------------------ */
/* Half precision                                                           */
/* ------------------------------------------------------------------------ */

static void test_f16_exhaustive(void)
{
	int bad_val = 0, bad_trip = 0, bad_nan = 0;

	for (uint32_t h = 0; h < 65536; h++) {
		float f = ms_f16_to_f32((uint16_t)h);
		double ref = half_ref((uint16_t)h);
		uint16_t back = ms_f32_to_f16(f);

		if (!same_value(f, ref)) {
			if (bad_val++ < 5)
				diag("f16 0x%04x -> %a, want %a", h, (double)f, ref);
		}
		if (isnan(ref)) {
			/* payload and sign kept too */
			if (!isnan(f) || (fbits(f) >> 31) != (h >> 15) ||
			    ((fbits(f) >> 13) & 0x3ff) != (h & 0x3ff))
				bad_nan++;
			if (!isnan(half_ref(back)))
				bad_nan++;
		}
		if (back != h && bad_trip++ < 5)
			diag("f16 0x%04x -> %a -> 0x%04x", h, (double)f, back);
	}
	ok(bad_val == 0, "f16 -> f32 matches the IEEE formula for all 65536 halves (%d bad)", bad_val);
	ok(bad_trip == 0, "f16 -> f32 -> f16 is the identity for all 65536 halves, NaNs included (%d bad)",
	   bad_trip);
	ok(bad_nan == 0, "every f16 NaN stays NaN with its sign and payload (%d bad)", bad_nan);
}

static void test_f16_known(void)
{
	static const struct { float f; uint16_t h; const char *what; } k[] = {
		{ 1.0f, 0x3c00, "1.0" },
		{ -2.0f, 0xc000, "-2.0" },
		{ 0.5f, 0x3800, "0.5" },
		{ 65504.0f, 0x7bff, "65504 (largest half)" },
		{ 65519.99f, 0x7bff, "65519.99 rounds down to 65504" },
		{ 65520.0f, 0x7c00, "65520 (tie) rounds to inf" },
		{ 1e6f, 0x7c00, "1e6 overflows to inf" },
		{ -1e6f, 0xfc00, "-1e6 overflows to -inf" },
		{ 0x1p-24f, 0x0001, "2^-24 (smallest subnormal)" },
		{ 0x1p-14f, 0x0400, "2^-14 (smallest normal)" },
		{ 0x3ffp-24f, 0x03ff, "largest subnormal" },
		{ 0x3ff.8p-24f, 0x0400, "largest subnormal + half ulp (tie, odd) rounds up to normal" },
		{ 0x1p-25f, 0x0000, "2^-25 (tie with 0) rounds to even 0" },
		{ 0x1.000002p-25f, 0x0001, "just above 2^-25 rounds to 2^-24" },
		{ 0x3p-25f, 0x0002, "1.5 * 2^-24 (tie) rounds to even 2" },
		{ 0x5p-25f, 0x0002, "2.5 * 2^-24 (tie) rounds to even 2" },
		{ 1.0f + 0x1p-11f, 0x3c00, "1 + half ulp (tie) rounds to even 1.0" },
		{ 1.0f + 0x3p-11f, 0x3c02, "1 + 1.5 ulp (tie) rounds to even" },
		{ 1.0f + 0x1p-11f + 0x1p-23f, 0x3c01, "just above the tie rounds up" },
		{ 0x1p-30f, 0x0000, "2^-30 underflows to 0" },
		{ -0x1p-30f, 0x8000, "-2^-30 underflows to -0" },
		{ 0.0f, 0x0000, "+0" },
		{ -0.0f, 0x8000, "-0" },
		{ 0.1f, 0x2e66, "0.1" },
		{ 3.14159265f, 0x4248, "pi" },
	};
	int bad = 0;

	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		uint16_t h = ms_f32_to_f16(k[i].f);

		if (h != k[i].h) {
			diag("f32 %a (%s) -> 0x%04x, want 0x%04x", (double)k[i].f, k[i].what, h, k[i].h);
			bad++;
		}
	}
	ok(bad == 0, "f32 -> f16 known values and ties (%zu cases)", sizeof(k) / sizeof(k[0]));
	ok(ms_f16_to_f32(0x3c00) == 1.0f && ms_f16_to_f32(0x7bff) == 65504.0f &&
	   ms_f16_to_f32(0x0001) == 0x1p-24f && isinf(ms_f16_to_f32(0x7c00)) &&
	   isinf(ms_f16_to_f32(0xfc00)) && ms_f16_to_f32(0xfc00) < 0,
	   "f16 -> f32 known values (1, 65504, 2^-24, +-inf)");
	ok(ms_f32_to_f16(INFINITY) == 0x7c00 && ms_f32_to_f16(-INFINITY) == 0xfc00,
	   "f32 +-inf -> f16 +-inf");
	/* NaNs whose payload lives only in the low 13 bits must not become inf */
	ok(isnan(half_ref(ms_f32_to_f16(NAN))) &&
	   isnan(half_ref(ms_f32_to_f16(bitsf(0x7f800001)))) &&
	   isnan(half_ref(ms_f32_to_f16(bitsf(0xff800001)))) &&
	   (ms_f32_to_f16(bitsf(0xff800001)) & 0x8000) &&
	   isnan(half_ref(ms_f32_to_f16(bitsf(0x7fc00000)))),
	   "f32 NaNs (quiet, signalling, low payload only, negative) -> f16 NaN");
}

/*
 * For each pair of neighbouring halves a < b, the float exactly halfway
 * between them must round to the one with an even mantissa, and the floats
 * just below and above it to a and b: this covers every rounding case of
 * every binade, subnormals and the overflow boundary included.
 */
static void test_f16_midpoints(void)
{
	int bad = 0, n = 0;

	for (uint32_t h = 0; h < 0x7c00; h++) {
		for (int sign = 0; sign < 2; sign++) {
			uint16_t a = (uint16_t)(h | (sign ? 0x8000 : 0));
			uint16_t b = (uint16_t)(a + 1);
			double va = half_ref(a);
			/* above 65504 the next "half" is 2^16, which rounds to inf */
			double vb = h == 0x7bff ? (sign ? -65536.0 : 65536.0) : half_ref(b);
			float mid = (float)((va + vb) / 2);
			float lo = nextafterf(mid, (float)va), hi = nextafterf(mid, (float)vb);
			uint16_t even = (a & 1) ? b : a;

			n++;
			if ((double)mid != (va + vb) / 2) {
				bad++;
				continue;
			}
			if (ms_f32_to_f16(mid) != even || ms_f32_to_f16(lo) != a ||
			    ms_f32_to_f16(hi) != b) {
				if (bad < 5)
					diag("around 0x%04x: mid %a -> 0x%04x, below -> 0x%04x, above -> 0x%04x",
					     a, (double)mid, ms_f32_to_f16(mid), ms_f32_to_f16(lo),
					     ms_f32_to_f16(hi));
				bad++;
			}
		}
	}
	ok(bad == 0, "f32 -> f16 rounds to nearest even at all %d midpoints between halves (%d bad)",
	   n, bad);
}

/* Random floats of every magnitude: the result is a nearest half. */
static void test_f16_random(void)
{
	int bad = 0;

	for (int i = 0; i < 1000000; i++) {
		float f = bitsf((uint32_t)rnd());
		uint16_t h = ms_f32_to_f16(f);
		double v = half_ref(h), err, lo_gap, hi_gap;

		if (isnan(f)) {
			bad += !isnan(v);
			continue;
		}
		if (fabsf(f) >= 65520.0f) {
			bad += !(isinf(v) && !signbit(v) == !signbit(f));
			continue;
		}
		/* no half is closer: compare with both neighbours */
		err = fabs(v - (double)f);
		lo_gap = fabs(half_ref((uint16_t)(h - 1)) - (double)f);
		hi_gap = (h & 0x7fff) == 0x7bff ? (double)INFINITY : fabs(half_ref((uint16_t)(h + 1)) - (double)f);
		if ((h & 0x7fff) == 0)
			lo_gap = INFINITY;	/* h - 1 wraps to a NaN or to -0 */
		if (!(err <= lo_gap) || !(err <= hi_gap) || !signbit(v) != !signbit(f)) {
			if (bad < 5)
				diag("f32 %a -> 0x%04x (%a) is not a nearest half", (double)f, h, v);
			bad++;
		}
	}
	ok(bad == 0, "f32 -> f16 gives a nearest half for 10^6 random bit patterns (%d bad)", bad);
}

/* ------------------------------------------------------------------------ */
/* bfloat16                                                                 */
/* ------------------------------------------------------------------------ */

static void test_bf16(void)
{
	int bad_val = 0, bad_trip = 0, bad_mid = 0, n_mid = 0, bad = 0;
	static const struct { uint32_t f; uint16_t h; const char *what; } k[] = {
		{ 0x3f800000, 0x3f80, "1.0" },
		{ 0xc0000000, 0xc000, "-2.0" },
		{ 0x3f808000, 0x3f80, "1 + half ulp (tie) rounds to even 1.0" },
		{ 0x3f818000, 0x3f82, "1 + 1.5 ulp (tie) rounds to even" },
		{ 0x3f808001, 0x3f81, "just above the tie rounds up" },
		{ 0x3f807fff, 0x3f80, "just below the tie rounds down" },
		{ 0x7f7f7fff, 0x7f7f, "just below max + half ulp stays finite" },
		{ 0x7f7f8000, 0x7f80, "max + half ulp (tie) rounds to inf" },
		{ 0x7f7fffff, 0x7f80, "FLT_MAX rounds to inf" },
		{ 0x7f800000, 0x7f80, "inf" },
		{ 0xff800000, 0xff80, "-inf" },
		{ 0x00000001, 0x0000, "smallest float subnormal rounds to 0" },
		{ 0x00010000, 0x0001, "smallest bf16 subnormal is kept" },
		{ 0x00018000, 0x0002, "subnormal tie rounds to even" },
		{ 0x80010000, 0x8001, "negative subnormal is kept" },
		{ 0x80000000, 0x8000, "-0" },
		{ 0x3dcccccd, 0x3dcd, "0.1" },
	};

	for (uint32_t h = 0; h < 65536; h++) {
		float f = ms_bf16_to_f32((uint16_t)h);
		double ref = bf16_ref((uint16_t)h);

		if (!same_value(f, ref) || fbits(f) != h << 16)
			bad_val++;
		if (ms_f32_to_bf16(f) != h)
			bad_trip++;
		/* midpoint to the next value up in magnitude (max finite -> inf) */
		if ((h & 0x7fff) < 0x7f80) {
			uint16_t b = (uint16_t)(h + 1);
			double vb = (h & 0x7fff) == 0x7f7f ? copysign(ldexp(1, 128), ref) : bf16_ref(b);
			double m = (ref + vb) / 2;
			float mid = (float)m;
			float lo = nextafterf(mid, (float)ref), hi = nextafterf(mid, f * 2 + (float)copysign(1e30, ref));

			n_mid++;
			if ((double)mid != m || ms_f32_to_bf16(mid) != ((h & 1) ? b : h) ||
			    ms_f32_to_bf16(lo) != h || ms_f32_to_bf16(hi) != b) {
				if (bad_mid < 5)
					diag("bf16 around 0x%04x: mid %a -> 0x%04x", h, m, ms_f32_to_bf16(mid));
				bad_mid++;
			}
		}
	}
	ok(bad_val == 0, "bf16 -> f32 matches the formula and is bits << 16 for all 65536 (%d bad)",
	   bad_val);
	ok(bad_trip == 0, "bf16 -> f32 -> bf16 is the identity for all 65536, NaNs included (%d bad)",
	   bad_trip);
	ok(bad_mid == 0, "f32 -> bf16 rounds to nearest even at all %d midpoints (%d bad)",
	   n_mid, bad_mid);
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		if (ms_f32_to_bf16(bitsf(k[i].f)) != k[i].h) {
			diag("f32 0x%08x (%s) -> 0x%04x, want 0x%04x", k[i].f, k[i].what,
			     ms_f32_to_bf16(bitsf(k[i].f)), k[i].h);
			bad++;
		}
	}
	ok(bad == 0, "f32 -> bf16 known values, ties, overflow, subnormals (%zu cases)",
	   sizeof(k) / sizeof(k[0]));
	ok(isnan(bf16_ref(ms_f32_to_bf16(bitsf(0x7f800001)))) &&
	   isnan(bf16_ref(ms_f32_to_bf16(bitsf(0xff800001)))) &&
	   (ms_f32_to_bf16(bitsf(0xff800001)) & 0x8000) &&
	   isnan(bf16_ref(ms_f32_to_bf16(NAN))) &&
	   ms_f32_to_bf16(bitsf(0x7fc12345)) == 0x7fc1,
	   "f32 NaNs -> bf16 NaN (low-payload NaNs do not become inf; payload kept)");
}

/* ------------------------------------------------------------------------ */
/* Q8_0 and Q4_0                                                            */
/* ------------------------------------------------------------------------ */

static void test_q8_0_dequant(void)
{
	static const uint16_t scales[] = { 0x3800, 0x2e66, 0x0001, 0xbc00, 0x0000, 0x7bff };
	uint8_t row[6 * 34];
	float out[6 * 32];
	int bad = 0;

	/* hand-built blocks: qs cover -128..127 over the row */
	for (int b = 0; b < 6; b++) {
		row[b * 34] = (uint8_t)(scales[b] & 0xff);	/* little-endian f16 */
		row[b * 34 + 1] = (uint8_t)(scales[b] >> 8);
		for (int j = 0; j < 32; j++)
			row[b * 34 + 2 + j] = (uint8_t)(b * 32 + j * 7 + 128);
	}
	ok(ms_dequantize_row(GGML_TYPE_Q8_0, row, out, 6 * 32) == 0, "Q8_0: dequantize 6 blocks");
	for (int b = 0; b < 6; b++) {
		for (int j = 0; j < 32; j++) {
			int q = (int8_t)row[b * 34 + 2 + j];
			double want = (double)q * half_ref(scales[b]);

			if ((double)out[b * 32 + j] != (double)(float)want) {
				if (bad < 5)
					diag("Q8_0 block %d elem %d: %g, want %g", b, j,
					     (double)out[b * 32 + j], want);
				bad++;
			}
		}
	}
	ok(bad == 0, "Q8_0: every element is qs[j] * d (d from the f16 formula)");
	ok(out[0] == (float)(int8_t)128 * 0.5f && (int8_t)row[2] == -128,
	   "Q8_0: qs -128 with d 0.5 gives -64");
	ok(ms_dequantize_row(GGML_TYPE_Q8_0, row, out, 33) == -EINVAL, "Q8_0: n = 33 is -EINVAL");
}

static void test_q4_0_dequant(void)
{
	static const uint16_t scales[] = { 0x4000, 0x2e66, 0xb800, 0x0003 };
	uint8_t row[4 * 18 + 1];
	float out[4 * 32];
	int bad = 0;

	/* an odd start address: the format promises no alignment of blocks */
	uint8_t *blk = row + 1;

	for (int b = 0; b < 4; b++) {
		blk[b * 18] = (uint8_t)(scales[b] & 0xff);
		blk[b * 18 + 1] = (uint8_t)(scales[b] >> 8);
		for (int j = 0; j < 16; j++)
			blk[b * 18 + 2 + j] = (uint8_t)(j * 17 + b * 5 + 3);
	}
	ok(ms_dequantize_row(GGML_TYPE_Q4_0, blk, out, 4 * 32) == 0, "Q4_0: dequantize 4 blocks");
	for (int b = 0; b < 4; b++) {
		for (int e = 0; e < 32; e++) {
			/* element e < 16 is the low nibble of byte e, else the high nibble of e-16 */
			int byte = blk[b * 18 + 2 + (e % 16)];
			int q = e < 16 ? byte % 16 : byte / 16;
			double want = (double)(q - 8) * half_ref(scales[b]);

			if ((double)out[b * 32 + e] != (double)(float)want) {
				if (bad < 5)
					diag("Q4_0 block %d elem %d: %g, want %g", b, e,
					     (double)out[b * 32 + e], want);
				bad++;
			}
		}
	}
	ok(bad == 0, "Q4_0: element j = (qs[j]&15)-8, j+16 = (qs[j]>>4)-8, times d");
	ok(out[0] == (float)((3 & 15) - 8) * 2.0f && out[16] == (float)((3 >> 4) - 8) * 2.0f,
	   "Q4_0: first block, elements 0 and 16 by hand (-10, -16)");
	ok(ms_dequantize_row(GGML_TYPE_Q4_0, blk, out, 16) == -EINVAL, "Q4_0: n = 16 is -EINVAL");
}

/*
 * Error bound of one quantized block, from the format: Q8_0 rounds x/d to
 * the nearest integer (|err| <= d/2); Q4_0 does too except that x/d in
 * [7.5, 8] is clamped to 7 (|err| <= d). Storing d as a half adds
 * |q| * |d - d16|. A little slack covers x * (1/d) != x / d.
 */
static int check_block(uint32_t type, const float *x, const uint8_t *blk, const float *y,
		       int *max_hit)
{
	float amax = 0, max = 0, d;
	double d16 = half_ref((uint16_t)(blk[0] | blk[1] << 8)), qmax;
	int bad = 0, hit = 0;

	for (int j = 0; j < 32; j++) {
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	}
	d = type == GGML_TYPE_Q8_0 ? amax / 127.0f : max / -8.0f;
	qmax = type == GGML_TYPE_Q8_0 ? 127 : 8;
	if (ms_f32_to_f16(d) != (uint16_t)(blk[0] | blk[1] << 8))
		bad++;	/* the scale is the reference one */
	for (int j = 0; j < 32; j++) {
		double t = d != 0 ? (double)x[j] / (double)d : 0;
		double k = type == GGML_TYPE_Q4_0 && t > 7.49 ? 1.0 : 0.5;
		double bound = k * fabs((double)d) * (1 + 1e-5) + qmax * fabs((double)d - d16) +
			       1e-6 * (double)amax;

		if (fabs((double)y[j] - (double)x[j]) > bound)
			bad++;
		/* the element of largest magnitude is represented at full scale */
		if (fabsf(x[j]) == amax && amax > 0) {
			double want = type == GGML_TYPE_Q8_0 ? copysign(127 * d16, (double)x[j])
							     : -8 * d16;

			if ((double)y[j] == (double)(float)want)
				hit = 1;
		}
	}
	*max_hit += hit;
	return bad;
}

static void test_quantize_roundtrip(uint32_t type)
{
	const char *tn = ms_ggml_type_name(type);
	const size_t n = 32 * 64, bsz = type == GGML_TYPE_Q8_0 ? 34 : 18;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	uint8_t *q = malloc(n / 32 * bsz);
	int bad = 0, max_hit = 0, blocks = 0, nonzero = 0, zero_ok = 1;

	if (!x || !y || !q)
		abort();
	for (int round = 0; round < 40; round++) {
		/* scales from 1e-7 (scale d underflows to a subnormal or 0) to 1e4 */
		float scale = powf(10.0f, (float)(round % 12) - 7.0f);

		for (size_t i = 0; i < n; i++)
			x[i] = rnd_uniform(-scale, scale);
		if (round == 1)
			for (size_t i = 0; i < 32; i++)
				x[i] = 0;	/* an all-zero block */
		if (round == 2)
			x[5] = -3 * scale;	/* a negative outlier */
		if (round == 3)
			x[40] = 5 * scale;	/* a positive outlier */
		if (ms_quantize_row(type, x, q, n) || ms_dequantize_row(type, q, y, n)) {
			bad++;
			continue;
		}
		for (size_t b = 0; b < n / 32; b++, blocks++) {
			bad += check_block(type, x + 32 * b, q + bsz * b, y + 32 * b, &max_hit);
			nonzero += round != 1 || b != 0;
		}
		if (round == 1)
			for (size_t i = 0; i < 32; i++)
				zero_ok &= y[i] == 0.0f && half_ref((uint16_t)(q[0] | q[1] << 8)) == 0;
	}
	ok(bad == 0, "%s: quantize -> dequantize within the format's bound on %d random blocks, "
	   "scales 1e-7..1e4 (%d bad)", tn, blocks, bad);
	ok(max_hit == nonzero,
	   "%s: the largest element of a block is exact to the stored scale (%d of %d blocks)",
	   tn, max_hit, nonzero);
	ok(zero_ok, "%s: an all-zero block has d = +-0 and dequantizes to zeros", tn);
	free(x);
	free(y);
	free(q);
}

/*
 * ggml's quantize_row_q8_0_ref and quantize_row_q4_0_ref transcribed as they
 * are (roundf, the int8_t cast, MIN), to check that quant.c's faster loops
 * give the same bytes on finite data.
 */
static void ggml_ref_q8_0(const float *x, uint8_t *y, size_t nb)
{
	for (size_t i = 0; i < nb; i++, x += 32, y += 34) {
		float amax = 0.0f;

		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		const float d = amax / ((1 << 7) - 1);
		const float id = d ? 1.0f / d : 0.0f;
		const uint16_t dh = ms_f32_to_f16(d);

		memcpy(y, &dh, 2);
		for (int j = 0; j < 32; j++)
			y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
	}
}

static void ggml_ref_q4_0(const float *x, uint8_t *y, size_t nb)
{
	for (size_t i = 0; i < nb; i++, x += 32, y += 18) {
		float amax = 0.0f, max = 0.0f;

		for (int j = 0; j < 32; j++) {
			if (amax < fabsf(x[j])) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		}
		const float d = max / -8;
		const float id = d ? 1.0f / d : 0.0f;
		const uint16_t dh = ms_f32_to_f16(d);

		memcpy(y, &dh, 2);
		for (int j = 0; j < 16; j++) {
			const uint8_t xi0 = (uint8_t)(int8_t)fminf(15, (float)(int8_t)(x[j] * id + 8.5f));
			const uint8_t xi1 = (uint8_t)(int8_t)fminf(15, (float)(int8_t)(x[16 + j] * id + 8.5f));

			y[2 + j] = (uint8_t)(xi0 | xi1 << 4);
		}
	}
}

static void test_quantize_matches_ggml(void)
{
	enum { N = 32 * 256 };
	static float x[N];
	static uint8_t a[N / 32 * 34], b[N / 32 * 34];
	int bad8 = 0, bad4 = 0;

	for (int round = 0; round < 50; round++) {
		float scale = powf(10.0f, (float)(round % 10) - 5.0f);

		for (int i = 0; i < N; i++) {
			x[i] = rnd_uniform(-scale, scale);
			/* exact ties of x/d and repeated maxima, where rounding rules differ */
			if (round % 5 == 4)
				x[i] = (float)((int)(rnd() % 33) - 16) * scale / 16.0f;
		}
		ms_quantize_row(GGML_TYPE_Q8_0, x, a, N);
		ggml_ref_q8_0(x, b, N / 32);
		bad8 += memcmp(a, b, N / 32 * 34) != 0;
		ms_quantize_row(GGML_TYPE_Q4_0, x, a, N);
		ggml_ref_q4_0(x, b, N / 32);
		bad4 += memcmp(a, b, N / 32 * 18) != 0;
	}
	ok(bad8 == 0, "Q8_0: same bytes as ggml's reference quantizer on 12800 random blocks, ties included");
	ok(bad4 == 0, "Q4_0: same bytes as ggml's reference quantizer on 12800 random blocks, ties included");
}

/* Hand examples with independently computed codes. */
static void test_quantize_known(void)
{
	float x[32];
	uint8_t q[34];
	int bad = 0;

	/* Q4_0, x = j - 16: max = -16, d = 2, q = min(15, floor(x/2 + 8.5)) */
	for (int j = 0; j < 32; j++)
		x[j] = (float)(j - 16);
	ms_quantize_row(GGML_TYPE_Q4_0, x, q, 32);
	bad += q[0] != 0x00 || q[1] != 0x40;	/* f16 2.0 */
	for (int j = 0; j < 16; j++) {
		int lo = (int)fmin(15, floor((j - 16) / 2.0 + 8.5));
		int hi = (int)fmin(15, floor((j + 16 - 16) / 2.0 + 8.5));

		bad += q[2 + j] != (lo | hi << 4);
	}
	ok(bad == 0, "Q4_0: x = j-16 gives d = 2 and the reference codes");

	/* Q8_0, x = (j - 16) * 0.25 with x[31] = 4.5: amax 4.5, d = 4.5/127 */
	bad = 0;
	for (int j = 0; j < 32; j++)
		x[j] = (float)(j - 16) * 0.25f;
	x[31] = 4.5f;
	ms_quantize_row(GGML_TYPE_Q8_0, x, q, 32);
	bad += (q[0] | q[1] << 8) != ms_f32_to_f16(4.5f / 127.0f);
	for (int j = 0; j < 32; j++)
		bad += (int8_t)q[2 + j] != (int)lround((double)x[j] * 127.0 / 4.5);
	ok(bad == 0, "Q8_0: codes are round(x * 127 / amax)");

	/* non-finite input gives defined codes (no UB), and the row size is checked */
	x[3] = NAN;
	ok(ms_quantize_row(GGML_TYPE_Q8_0, x, q, 32) == 0 && ms_quantize_row(GGML_TYPE_Q4_0, x, q, 32) == 0,
	   "quantize: NaN input is handled without undefined behaviour");
	ok(ms_quantize_row(GGML_TYPE_Q8_0, x, q, 31) == -EINVAL &&
	   ms_quantize_row(GGML_TYPE_Q4_0, x, q, 48) == -EINVAL,
	   "quantize: n not a multiple of 32 is -EINVAL");
	ok(ms_quantize_row(GGML_TYPE_Q2_K, x, q, 256) == -EINVAL &&
	   ms_dequantize_row(GGML_TYPE_Q3_K, q, x, 256) == -EINVAL &&
	   ms_quantize_row(99, x, q, 32) == -EINVAL && ms_dequantize_row(99, q, x, 32) == -EINVAL,
	   "unsupported or unknown types are -EINVAL");
}

static void test_float_rows(void)
{
	float x[100], y[100];
	uint16_t h[100];
	int bad = 0;

	for (int i = 0; i < 100; i++)
		x[i] = rnd_uniform(-100, 100);
	bad += ms_quantize_row(GGML_TYPE_F16, x, h, 100) != 0;
	bad += ms_dequantize_row(GGML_TYPE_F16, h, y, 100) != 0;
	for (int i = 0; i < 100; i++)
		bad += h[i] != ms_f32_to_f16(x[i]) || y[i] != ms_f16_to_f32(h[i]);
	ok(bad == 0, "F16 rows convert element by element");
	bad = 0;
	bad += ms_quantize_row(GGML_TYPE_BF16, x, h, 100) != 0;
	bad += ms_dequantize_row(GGML_TYPE_BF16, h, y, 100) != 0;
	for (int i = 0; i < 100; i++)
		bad += h[i] != ms_f32_to_bf16(x[i]) || y[i] != ms_bf16_to_f32(h[i]);
	ok(bad == 0, "BF16 rows convert element by element");
	bad = ms_quantize_row(GGML_TYPE_F32, x, y, 100) != 0 || memcmp(x, y, sizeof(x));
	memset(y, 0, sizeof(y));
	bad |= ms_dequantize_row(GGML_TYPE_F32, x, y, 100) != 0 || memcmp(x, y, sizeof(x));
	ok(!bad, "F32 rows are copied");
}

/* ------------------------------------------------------------------------ */
/* K-quants                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * An independent decoder, written from the format description
 * (shared/docs/numerics.md section 6) element by element rather than with
 * the library's loop structure, in double.
 */

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K scales[12]. */
static void ref_scale_min(int j, const uint8_t *s, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

/* Its inverse: 8 scales and 8 mins (each < 64) into 12 bytes. */
static void ref_pack_scales(const int *sc, const int *m, uint8_t *s)
{
	for (int j = 0; j < 4; j++) {
		/* bytes 0-3: scale j and the top bits of scale j+4; 4-7 the same for mins */
		s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
		s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
		/* bytes 8-11: low 4 bits of scale j+4 and min j+4 */
		s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
	}
}

static double ref_half(const uint8_t *p)
{
	return half_ref((uint16_t)(p[0] | p[1] << 8));
}

/*
 * Element e of a Q4_K (q5 false) or Q5_K block: sub-block j = e / 32, and
 * the 4 low bits sit in byte 32 * (j / 2) + e % 32 of qs, low nibble for
 * even j, high for odd; Q5_K's fifth bit is bit j of qh[e % 32].
 */
static double ref_k45(const uint8_t *blk, int e, bool q5)
{
	const uint8_t *qs = blk + (q5 ? 48 : 16), *qh = blk + 16;
	int j = e / 32, l = e % 32, sc, m, byte, q;

	ref_scale_min(j, blk + 4, &sc, &m);
	byte = qs[32 * (j / 2) + l];
	q = j % 2 ? byte >> 4 : byte & 15;
	if (q5)
		q += 16 * ((qh[l] >> j) & 1);
	return ref_half(blk) * sc * q - ref_half(blk + 2) * m;
}

/*
 * Element e of a Q6_K block: half h = e / 128; within it r = e % 128 is
 * quarter k = r / 32, position l = r % 32. The low 4 bits are the low
 * nibble (k = 0, 1) or high nibble (k = 2, 3) of ql[64h + l + 32 (k odd)];
 * the high 2 bits are bits 2k, 2k+1 of qh[32h + l]; the scale is that of
 * the element's 16-element sub-block, scales[e / 16].
 */
static double ref_q6_K(const uint8_t *blk, int e)
{
	const uint8_t *ql = blk, *qh = blk + 128;
	const int8_t *sc = (const int8_t *)(blk + 192);
	int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
	int lowbyte = ql[64 * h + l + (k % 2 ? 32 : 0)];
	int q = (k < 2 ? lowbyte & 15 : lowbyte >> 4) | ((qh[32 * h + l] >> (2 * k)) & 3) << 4;

	return ref_half(blk + 208) * sc[e / 16] * (q - 32);
}

static double ref_q8_K(const uint8_t *blk, int e)
{
	float d;

	memcpy(&d, blk, 4);
	return (double)d * (int8_t)blk[4 + e];
}

static double ref_k(uint32_t type, const uint8_t *blk, int e)
{
	switch (type) {
	case GGML_TYPE_Q4_K: return ref_k45(blk, e, false);
	case GGML_TYPE_Q5_K: return ref_k45(blk, e, true);
	case GGML_TYPE_Q6_K: return ref_q6_K(blk, e);
	default:             return ref_q8_K(blk, e);
	}
}

static size_t k_bytes(uint32_t type)
{
	return type == GGML_TYPE_Q4_K ? 144 : type == GGML_TYPE_Q5_K ? 176 :
	       type == GGML_TYPE_Q6_K ? 210 : 292;
}

/*
 * Compares ms_dequantize_row with the reference on nb blocks; the library
 * computes in float, so allow an error of a few float ulps of the terms.
 */
static int check_k_dequant(uint32_t type, const uint8_t *row, size_t nb, const float *y)
{
	int bad = 0;

	for (size_t b = 0; b < nb; b++) {
		const uint8_t *blk = row + b * k_bytes(type);

		for (int e = 0; e < 256; e++) {
			double want = ref_k(type, blk, e), got = (double)y[b * 256 + e];
			double tol = 1e-6 * fabs(want) + 1e-30;

			if (type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q5_K) {
				int sc, m;

				/* the subtraction can cancel: bound by the size of both terms */
				ref_scale_min(e / 32, blk + 4, &sc, &m);
				tol = 1e-6 * (fabs(ref_half(blk)) * sc * 31 + fabs(ref_half(blk + 2)) * m) +
				      1e-30;
			}
			if (!(fabs(got - want) <= tol)) {
				if (bad < 5)
					diag("%s block %zu elem %d: %.9g, want %.9g", ms_ggml_type_name(type),
					     b, e, got, want);
				bad++;
			}
		}
	}
	return bad;
}

static void put_half(uint8_t *p, uint16_t h)
{
	p[0] = (uint8_t)(h & 0xff);
	p[1] = (uint8_t)(h >> 8);
}

/* A finite half of magnitude 2^-14 .. 2^3, either sign. */
static uint16_t rnd_half(void)
{
	return (uint16_t)((rnd() & 0x8000) | (1 + rnd() % 17) << 10 | (rnd() & 0x3ff));
}

static void test_k_scale_packing(void)
{
	int bad = 0, bad_pack = 0;

	/* every byte pattern the unpacker can meet: random scales[12] */
	for (int it = 0; it < 20000; it++) {
		uint8_t s[12];

		for (int i = 0; i < 12; i++)
			s[i] = (uint8_t)rnd();
		for (int j = 0; j < 8; j++) {
			int sc, m;
			uint8_t sc2 = 99, m2 = 99;

			ref_scale_min(j, s, &sc, &m);
			ms_get_scale_min_k4(j, s, &sc2, &m2);
			bad += sc != sc2 || m != m2;
		}
	}
	ok(bad == 0, "ms_get_scale_min_k4 matches the format's unpacking on 20000 random scale arrays");
	/* and it inverts the packing: every 6-bit value in every position */
	for (int it = 0; it < 64 * 8; it++) {
		int sc[8], m[8];
		uint8_t s[12];

		for (int j = 0; j < 8; j++) {
			sc[j] = (int)(rnd() % 64);
			m[j] = (int)(rnd() % 64);
		}
		sc[it % 8] = it / 8;		/* 0..63 at position it % 8 */
		m[(it + 3) % 8] = 63 - it / 8;
		ref_pack_scales(sc, m, s);
		for (int j = 0; j < 8; j++) {
			uint8_t a, b;

			ms_get_scale_min_k4(j, s, &a, &b);
			bad_pack += a != sc[j] || b != m[j];
		}
	}
	ok(bad_pack == 0, "scale packing round trip: pack 8 scales and 8 mins, unpack the same");
}

static void test_k_dequant(void)
{
	static const uint32_t types[] = { GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_K };
	const size_t nb = 64;
	uint8_t *row = malloc(nb * 292 + 1);
	float *y = malloc(nb * 256 * sizeof(float));

	if (!row || !y)
		abort();
	for (size_t t = 0; t < 4; t++) {
		const uint32_t type = types[t];
		uint8_t *r = row + 1;	/* blocks carry no alignment promise */
		int bad;

		/* random bytes everywhere, then finite scales */
		for (size_t i = 0; i < nb * k_bytes(type); i++)
			r[i] = (uint8_t)rnd();
		for (size_t b = 0; b < nb; b++) {
			uint8_t *blk = r + b * k_bytes(type);

			if (type == GGML_TYPE_Q6_K) {
				put_half(blk + 208, rnd_half());
			} else if (type == GGML_TYPE_Q8_K) {
				float d = rnd_uniform(-2, 2);

				memcpy(blk, &d, 4);
			} else {
				put_half(blk, rnd_half());
				put_half(blk + 2, rnd_half());
			}
		}
		ok(ms_dequantize_row(type, r, y, nb * 256) == 0, "%s: dequantize %zu random blocks",
		   ms_ggml_type_name(type), nb);
		bad = check_k_dequant(type, r, nb, y);
		ok(bad == 0, "%s: every element matches the independent decoder (%d differ)",
		   ms_ggml_type_name(type), bad);
		ok(ms_dequantize_row(type, r, y, 128) == -EINVAL && ms_dequantize_row(type, r, y, 257) == -EINVAL,
		   "%s: n not a multiple of 256 is -EINVAL", ms_ggml_type_name(type));
	}

	/*
	 * Hand-built blocks with exactly representable values: d = 0.5,
	 * dmin = 0.25; sub-block j has scale 2j+1 (or 60+j) and min j (or
	 * 63-j); element e has code e % 16 (Q5_K: e % 32, fifth bit from the
	 * code). Value: d * sc * q - dmin * m.
	 */
	for (int five = 0; five < 2; five++) {
		uint8_t blk[176] = { 0 };
		int sc[8], m[8], bad = 0, nmax = five ? 31 : 15;
		uint8_t *qs = blk + (five ? 48 : 16), *qh = blk + 16;
		float out[256];

		put_half(blk, 0x3800);		/* 0.5 */
		put_half(blk + 2, 0x3400);	/* 0.25 */
		for (int j = 0; j < 8; j++) {
			sc[j] = j < 4 ? 2 * j + 1 : 60 + j - 4;
			m[j] = j < 4 ? j : 63 - j;
		}
		ref_pack_scales(sc, m, blk + 4);
		for (int e = 0; e < 256; e++) {
			int j = e / 32, l = e % 32, q = (e * 7 + j) % (nmax + 1);

			qs[32 * (j / 2) + l] |= (uint8_t)((q & 15) << (j % 2 ? 4 : 0));
			if (five && q >= 16)
				qh[l] |= (uint8_t)(1 << j);
		}
		ms_dequantize_row(five ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K, blk, out, 256);
		for (int e = 0; e < 256; e++) {
			int j = e / 32, q = (e * 7 + j) % (nmax + 1);
			double want = 0.5 * sc[j] * q - 0.25 * m[j];

			if ((double)out[e] != want) {
				if (bad < 5)
					diag("%s hand block elem %d: %g, want %g", five ? "Q5_K" : "Q4_K",
					     e, (double)out[e], want);
				bad++;
			}
		}
		ok(bad == 0, "%s: hand-built block (known scales, mins, codes) decodes exactly",
		   five ? "Q5_K" : "Q4_K");
		ok(out[0] == 0.0f && out[33] == (float)(0.5 * 3 * ((33 * 7 + 1) % (nmax + 1)) - 0.25 * 1) &&
		   out[255] == (float)(0.5 * 63 * ((255 * 7 + 7) % (nmax + 1)) - 0.25 * 56),
		   "%s: elements 0, 33, 255 by hand", five ? "Q5_K" : "Q4_K");
	}
	{
		/* Q6_K: d = 0.125, scales[i] = i - 8, element e has code (5e + 3) % 64 */
		uint8_t blk[210] = { 0 };
		float out[256];
		int bad = 0;

		for (int i = 0; i < 16; i++)
			blk[192 + i] = (uint8_t)(int8_t)(i - 8);
		put_half(blk + 208, 0x3000);	/* 0.125 */
		for (int e = 0; e < 256; e++) {
			int h = e / 128, k = (e % 128) / 32, l = e % 32, q = (5 * e + 3) % 64;

			blk[64 * h + l + (k % 2 ? 32 : 0)] |= (uint8_t)((q & 15) << (k < 2 ? 0 : 4));
			blk[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
		}
		ms_dequantize_row(GGML_TYPE_Q6_K, blk, out, 256);
		for (int e = 0; e < 256; e++)
			bad += (double)out[e] != 0.125 * (e / 16 - 8) * ((5 * e + 3) % 64 - 32);
		ok(bad == 0, "Q6_K: hand-built block (known scales and codes) decodes exactly");
		ok(out[0] == 0.125f * -8 * (3 - 32) && out[200] == 0.125f * 4 * ((1003 % 64) - 32),
		   "Q6_K: elements 0 and 200 by hand");
	}
	free(row);
	free(y);
}

/* Relative rms error bound of a K type on random data (see test_k_roundtrip). */
static double k_bound(uint32_t type)
{
	return type == GGML_TYPE_Q4_K ? 0.10 : type == GGML_TYPE_Q5_K ? 0.05 : 0.025;
}

/* Gaussian by Box-Muller, for data with tails. */
static float rnd_gauss(void)
{
	double u1 = ((double)(rnd() >> 11) + 1) * 0x1p-53, u2 = (double)(rnd() >> 11) * 0x1p-53;

	return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

/*
 * Quantize -> dequantize on random rows. The bounds follow from the code
 * spacing: a sub-block of 32 (Q4_K, Q5_K) spans its range with 16 or 32
 * codes, so rounding leaves an rms error of about range/(nmax*sqrt(12)):
 * 6.7% (Q4_K) and 3.2% (Q5_K) of the rms of uniform data, 7.9% and 3.8%
 * for Gaussian data (range about 4.1 sigma). Q6_K's 16-element groups use
 * 64 codes over [-amax, amax]: 1.6% (uniform), 1.8% (Gaussian). The least
 * squares fit does a little better; 6-bit and 8-bit scales a little worse.
 * So the bounds: 10%, 5%, 2.5%.
 */
static void test_k_roundtrip(uint32_t type)
{
	const char *tn = ms_ggml_type_name(type);
	const size_t n = 256 * 32;
	const double bound = k_bound(type);
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	uint8_t *q = malloc(n / 256 * 210 + n);
	double worst = 0;
	int bad_rms = 0, bad_dec = 0, bad_top = 0, zero_ok = 1;

	if (!x || !y || !q)
		abort();
	for (int round = 0; round < 24; round++) {
		/*
		 * Uniform, Gaussian, and all-positive (norm-like) data; scales
		 * 1e-2..1e4. Much smaller data underflows the f16 super-block
		 * scales (Q6_K's d is amax/4096): a limit of the format, not
		 * of the quantizer.
		 */
		float scale = powf(10.0f, (float)(round % 7) - 2.0f);
		double se = 0, sx = 0, rel;

		for (size_t i = 0; i < n; i++) {
			switch (round % 3) {
			case 0: x[i] = rnd_uniform(-scale, scale); break;
			case 1: x[i] = scale * rnd_gauss(); break;
			default: x[i] = scale * rnd_uniform(0.5f, 1.5f); break;
			}
		}
		if (round == 1)
			for (size_t i = 0; i < 256; i++)
				x[i] = 0;	/* an all-zero block */
		if (round == 2)
			x[300] = -50 * scale;	/* an outlier */
		if (ms_quantize_row(type, x, q, n) || ms_dequantize_row(type, q, y, n)) {
			bad_rms++;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			/* the outlier's block is judged by the outlier alone, below */
			if (round == 2 && i / 256 == 300 / 256)
				continue;
			se += ((double)y[i] - (double)x[i]) * ((double)y[i] - (double)x[i]);
			sx += (double)x[i] * (double)x[i];
		}
		/* it sets its sub-block's step: range/nmax, so within 5% */
		if (round == 2 && !(fabs((double)y[300] - (double)x[300]) <= 0.05 * fabs((double)x[300]))) {
			diag("%s: outlier %g quantized to %g", tn, (double)x[300], (double)y[300]);
			bad_rms++;
		}
		rel = sqrt(se / sx);
		worst = fmax(worst, rel);
		if (!(rel < bound)) {
			diag("%s round %d: relative rms error %.4f", tn, round, rel);
			bad_rms++;
		}
		/* what the quantizer wrote decodes by the format */
		bad_dec += check_k_dequant(type, q, n / 256, y);
		/* ggml's reference scales: the largest scale gets the top code */
		for (size_t b = 0; b < n / 256; b++) {
			const uint8_t *blk = q + b * k_bytes(type);
			int top = 0;

			if (round == 1 && b == 0)
				continue;
			if (type == GGML_TYPE_Q6_K) {
				for (int i = 0; i < 16; i++)
					top |= (int8_t)blk[192 + i] == -128;
			} else {
				for (int j = 0; j < 8; j++) {
					int sc, m;

					ref_scale_min(j, blk + 4, &sc, &m);
					top |= sc == 63;
				}
			}
			bad_top += !top;
		}
		if (round == 1)
			for (size_t i = 0; i < 256; i++)
				zero_ok &= y[i] == 0.0f;
	}
	ok(bad_rms == 0, "%s: quantize -> dequantize relative rms error below %.1f%% on uniform, "
	   "Gaussian and positive data, scales 1e-2..1e4 (worst %.2f%%); an outlier within 5%%",
	   tn, 100 * bound, 100 * worst);
	ok(bad_dec == 0, "%s: the quantizer's blocks decode by the format description", tn);
	ok(bad_top == 0, "%s: the largest sub-block scale is stored as the top code (%s)", tn,
	   type == GGML_TYPE_Q6_K ? "-128" : "63");
	ok(zero_ok, "%s: an all-zero block dequantizes to zeros", tn);
	/* non-finite input: defined bytes, no undefined behaviour (the sanitizer build checks) */
	x[7] = NAN;
	x[300] = INFINITY;
	x[600] = -INFINITY;
	ok(ms_quantize_row(type, x, q, n) == 0 && ms_quantize_row(type, x, q, 255) == -EINVAL,
	   "%s: NaN and infinite input handled; n not a multiple of 256 is -EINVAL", tn);
	free(x);
	free(y);
	free(q);
}

static void test_q8_K(void)
{
	const size_t n = 256 * 16;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	uint8_t *q = malloc(n / 256 * 292);
	int bad_sum = 0, bad_q = 0, bad_d = 0, zero_ok = 1;

	if (!x || !y || !q)
		abort();
	for (int round = 0; round < 8; round++) {
		float scale = powf(10.0f, (float)round - 3.0f);

		for (size_t i = 0; i < n; i++)
			x[i] = rnd_uniform(-scale, scale);
		if (round == 0)
			for (size_t i = 0; i < 256; i++)
				x[i] = 0;
		if (round == 1)
			x[5] = 3 * scale;	/* largest is positive: it maps to -127 * d with d < 0 */
		ms_quantize_row(GGML_TYPE_Q8_K, x, q, n);
		ms_dequantize_row(GGML_TYPE_Q8_K, q, y, n);
		for (size_t b = 0; b < n / 256; b++) {
			const uint8_t *blk = q + b * 292;
			const int8_t *qs = (const int8_t *)(blk + 4);
			const float *xb = x + 256 * b;
			float d, amax = 0, max = 0;
			int16_t bs[16];

			memcpy(&d, blk, 4);
			memcpy(bs, blk + 4 + 256, sizeof(bs));
			for (int i = 0; i < 16; i++) {
				int s = 0;

				for (int l = 0; l < 16; l++)
					s += qs[16 * i + l];
				bad_sum += s != bs[i];
			}
			for (int e = 0; e < 256; e++) {
				if (fabsf(xb[e]) > amax) {
					amax = fabsf(xb[e]);
					max = xb[e];
				}
				bad_q += y[256 * b + e] != d * (float)qs[e];
			}
			if (amax == 0) {
				zero_ok &= d == 0;
				for (int e = 0; e < 256; e++)
					zero_ok &= qs[e] == 0;
				continue;
			}
			/* d = max / -127: the largest element's code is -127 */
			bad_d += fabs((double)d - (double)max / -127.0) > 1e-6 * fabs((double)d);
			for (int e = 0; e < 256; e++) {
				double t = (double)xb[e] / (double)d;

				bad_q += fabs(t - qs[e]) > 0.5 + 1e-4;
				bad_q += xb[e] == max && qs[e] != -127;
			}
		}
	}
	ok(bad_sum == 0, "Q8_K: bsums[i] is the sum of qs[16i..16i+15]");
	ok(bad_d == 0 && bad_q == 0, "Q8_K: d = max/-127, codes round(x/d), dequantized d*q (%d, %d bad)",
	   bad_d, bad_q);
	ok(zero_ok, "Q8_K: an all-zero block has d = 0 and zero codes");
	free(x);
	free(y);
	free(q);
}

/* ------------------------------------------------------------------------ */
/* GGUF writer, read back by the engine's reader                            */
/* ------------------------------------------------------------------------ */

static const char *tmp_dir(void)
{
	static char dir[4096];
	const char *base = getenv("TEST_TMPDIR");

	if (dir[0])
		return dir;
	snprintf(dir, sizeof(dir), "%s/test_quant.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(dir)) {
		diag("mkdtemp %s: %s", dir, strerror(errno));
		abort();
	}
	return dir;
}

static bool str_is(struct gguf_str s, const char *want)
{
	return s.n == strlen(want) && !memcmp(s.p, want, s.n);
}

static const char *const w_strs[] = { "", "a", "h\xc3\xa9llo", "<0x0A>" };
static const int32_t w_i32s[] = { -1, 0, 2147483647 };
static const float w_f32s[] = { 0.5f, -1e-30f };
static float w_fa[64 * 3], w_fb[5];
static uint8_t w_qc[4 * 34];

/* 17 keys of every type, three tensors (2-D F32, 1-D F32, 3-D Q8_0). */
static int writer_fill(struct gguf_writer *w)
{
	const uint64_t ne_a[2] = { 64, 3 }, ne_b[1] = { 5 }, ne_c[3] = { 32, 2, 2 };

	return gguf_writer_add_u8(w, "t.u8", 200) || gguf_writer_add_i8(w, "t.i8", -100) ||
	       gguf_writer_add_u16(w, "t.u16", 60000) || gguf_writer_add_i16(w, "t.i16", -30000) ||
	       gguf_writer_add_u32(w, "t.u32", 4000000000u) || gguf_writer_add_i32(w, "t.i32", -5) ||
	       gguf_writer_add_u64(w, "t.u64", UINT64_MAX) ||
	       gguf_writer_add_i64(w, "t.i64", INT64_MIN) ||
	       gguf_writer_add_f32(w, "t.f32", 0.25f) || gguf_writer_add_f64(w, "t.f64", -2.5) ||
	       gguf_writer_add_bool(w, "t.bool", true) || gguf_writer_add_str(w, "t.str", "hello") ||
	       gguf_writer_add_strn(w, "t.empty", "", 0) ||
	       gguf_writer_add_str_arr(w, "t.strs", w_strs, 4) ||
	       gguf_writer_add_arr(w, "t.i32s", GGUF_I32, w_i32s, 3) ||
	       gguf_writer_add_arr(w, "t.f32s", GGUF_F32, w_f32s, 2) ||
	       gguf_writer_add_arr(w, "t.none", GGUF_U8, NULL, 0) ||
	       gguf_writer_add_tensor(w, "a", 2, ne_a, GGML_TYPE_F32) ||
	       gguf_writer_add_tensor(w, "b", 1, ne_b, GGML_TYPE_F32) ||
	       gguf_writer_add_tensor(w, "c", 3, ne_c, GGML_TYPE_Q8_0);
}

/* Data in odd-sized pieces, so the writer must split and pad across tensors. */
static int writer_data(struct gguf_writer *w, bool all)
{
	return gguf_writer_write(w, w_fa, 100) ||
	       gguf_writer_write(w, (uint8_t *)w_fa + 100, sizeof(w_fa) - 100) ||
	       gguf_writer_write(w, w_fb, sizeof(w_fb)) ||
	       (all && (gguf_writer_write(w, w_qc, 7) ||
			gguf_writer_write(w, w_qc + 7, sizeof(w_qc) - 7)));
}

static void test_writer_errors(void)
{
	const uint64_t big[3] = { 1u << 31, 1u << 31, 1u << 31 }, five[5] = { 1, 1, 1, 1, 1 };
	const uint64_t n33 = 33, n5 = 5;
	struct gguf_writer *w;

	w = gguf_writer_new(0);
	ok(w && !gguf_writer_add_u32(w, "k", 1) && gguf_writer_add_str(w, "k", "x") == -EEXIST,
	   "writer: duplicate key is -EEXIST");
	ok(w && gguf_writer_add_u32(w, "other", 1) == -EINVAL,
	   "writer: after an error every call fails");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && gguf_writer_add_u32(w, "", 1) == -EINVAL, "writer: empty key is -EINVAL");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && gguf_writer_add_tensor(w, "x", 1, &n33, GGML_TYPE_Q8_0) == -EINVAL,
	   "writer: Q8_0 tensor with ne[0] = 33 is -EINVAL (%s)", w ? gguf_writer_errmsg(w) : "");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && gguf_writer_add_tensor(w, "x", 3, big, GGML_TYPE_F32) == -EOVERFLOW,
	   "writer: tensor of 2^95 bytes is -EOVERFLOW (%s)", w ? gguf_writer_errmsg(w) : "");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && gguf_writer_add_tensor(w, "x", 5, five, GGML_TYPE_F32) == -EINVAL,
	   "writer: 5 dimensions is -EINVAL");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && gguf_writer_add_tensor(w, "x", 1, &n5, 99) == -EINVAL,
	   "writer: unknown tensor type is -EINVAL");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && gguf_writer_add_tensor(w,
		"a_tensor_name_that_is_longer_than_sixty_four_bytes_in_total_size_", 1, &n5,
		GGML_TYPE_F32) == -EINVAL, "writer: 65-byte tensor name is -EINVAL");
	gguf_writer_free(w);
	w = gguf_writer_new(0);
	ok(w && !gguf_writer_add_tensor(w, "x", 1, &n5, GGML_TYPE_F32) &&
	   gguf_writer_add_tensor(w, "x", 1, &n5, GGML_TYPE_F32) == -EEXIST,
	   "writer: duplicate tensor name is -EEXIST");
	gguf_writer_free(w);
	ok(gguf_writer_new(48) == NULL && gguf_writer_new(1u << 17) == NULL,
	   "writer: alignment 48 or 2^17 is refused");
	w = gguf_writer_new(0);
	ok(w && gguf_writer_write(w, "x", 1) == -EINVAL, "writer: data before begin is -EINVAL");
	gguf_writer_free(w);
}

static void test_writer(void)
{
	char path[4200];
	struct gguf_writer *w;
	struct gguf *g = NULL;
	ms_err err = { 0 };
	struct gguf_str s;
	struct gguf_arr a;
	struct stat st;
	uint32_t u32 = 0;
	float f = 0;
	bool bv = false;
	int fd, rc, bad = 0;

	test_writer_errors();
	snprintf(path, sizeof(path), "%s/writer.gguf", tmp_dir());
	for (int i = 0; i < 64 * 3; i++)
		w_fa[i] = (float)i / 7.0f;
	for (int i = 0; i < 5; i++)
		w_fb[i] = (float)-i;
	ms_quantize_row(GGML_TYPE_Q8_0, w_fa, w_qc, 128);

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	w = gguf_writer_new(64);
	rc = !w || fd < 0 || writer_fill(w) || gguf_writer_begin(w, fd) || writer_data(w, true);
	ok(!rc && gguf_writer_write(w, w_qc, 1) == -EINVAL,
	   "writer: writing past the last tensor is -EINVAL");
	gguf_writer_free(w);
	w = gguf_writer_new(64);
	rc = !w || ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) || writer_fill(w) ||
	     gguf_writer_add_u32(w, "general.alignment", 64) != -EEXIST;
	ok(!rc, "writer: general.alignment is stored by gguf_writer_new for alignment 64");
	gguf_writer_free(w);
	w = gguf_writer_new(64);
	rc = !w || writer_fill(w) || gguf_writer_begin(w, fd) || writer_data(w, false);
	ok(!rc && gguf_writer_end(w) == -EINVAL, "writer: ending with a tensor missing is -EINVAL (%s)",
	   w ? gguf_writer_errmsg(w) : "");
	gguf_writer_free(w);

	w = gguf_writer_new(64);
	rc = !w || ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) || writer_fill(w) ||
	     gguf_writer_begin(w, fd) || writer_data(w, true) || gguf_writer_end(w);
	ok(!rc, "writer: 17 keys and 3 tensors written with alignment 64 (%s)",
	   w ? gguf_writer_errmsg(w) : "");
	ok(w && !fstat(fd, &st) && (uint64_t)st.st_size == gguf_writer_file_size(w),
	   "writer: file size is what gguf_writer_file_size said (%llu)",
	   w ? (unsigned long long)gguf_writer_file_size(w) : 0ull);
	ok(w && gguf_writer_add_u32(w, "late", 1) == -EINVAL, "writer: adding a key after begin is -EINVAL");
	gguf_writer_free(w);
	if (fd >= 0)
		close(fd);

	rc = ms_gguf_open(path, &g, &err);
	ok(rc == 0, "writer: ms_gguf_open accepts the file (%s)", err.msg);
	if (rc) {
		skip("writer read-back: no file");
		unlink(path);
		return;
	}
	ok(g->version == 3 && g->alignment == 64 && g->n_kv == 18 && g->n_tensors == 3,
	   "read back: v3, alignment 64, 18 keys (general.alignment added), 3 tensors");
	bad += ms_gguf_get_u32(g, "t.u32", &u32, NULL) || u32 != 4000000000u;
	bad += ms_gguf_get_u32(g, "general.alignment", &u32, NULL) || u32 != 64;
	bad += ms_gguf_get_f32(g, "t.f32", &f, NULL) || f != 0.25f;
	bad += ms_gguf_get_f32(g, "t.f64", &f, NULL) || f != -2.5f;
	bad += ms_gguf_get_bool(g, "t.bool", &bv, NULL) || !bv;
	bad += ms_gguf_get_str(g, "t.str", &s, NULL) || !str_is(s, "hello");
	bad += ms_gguf_get_str(g, "t.empty", &s, NULL) || s.n != 0;
	{
		static const struct { const char *k; uint32_t t; int64_t i; uint64_t u; } sc[] = {
			{ "t.u8", GGUF_U8, 0, 200 }, { "t.i8", GGUF_I8, -100, 0 },
			{ "t.u16", GGUF_U16, 0, 60000 }, { "t.i16", GGUF_I16, -30000, 0 },
			{ "t.i32", GGUF_I32, -5, 0 }, { "t.u64", GGUF_U64, 0, UINT64_MAX },
			{ "t.i64", GGUF_I64, INT64_MIN, 0 },
		};

		for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
			const struct gguf_kv *kv = ms_gguf_find_kv(g, sc[i].k);
			bool is_signed = sc[i].t == GGUF_I8 || sc[i].t == GGUF_I16 ||
					 sc[i].t == GGUF_I32 || sc[i].t == GGUF_I64;

			bad += !kv || kv->val.type != sc[i].t ||
			       (is_signed ? kv->val.v.i != sc[i].i : kv->val.v.u != sc[i].u);
		}
	}
	ok(bad == 0, "read back: every scalar type has its value");
	bad = 0;
	if (ms_gguf_get_arr(g, "t.strs", GGUF_STRING, &a, NULL) || a.n != 4) {
		bad++;
	} else {
		const uint8_t *cur = a.data;

		for (int i = 0; i < 4; i++)
			bad += !str_is(ms_gguf_arr_str(&cur), w_strs[i]);
	}
	bad += ms_gguf_get_arr(g, "t.i32s", GGUF_I32, &a, NULL) || a.n != 3 ||
	       ms_gguf_arr_i32(&a, 0) != -1 || ms_gguf_arr_i32(&a, 2) != 2147483647;
	bad += ms_gguf_get_arr(g, "t.f32s", GGUF_F32, &a, NULL) || a.n != 2 ||
	       ms_gguf_arr_f32(&a, 1) != -1e-30f;
	bad += ms_gguf_get_arr(g, "t.none", GGUF_U8, &a, NULL) || a.n != 0;
	ok(bad == 0, "read back: string, i32, f32 and empty arrays");
	{
		const struct gguf_tensor *ta = ms_gguf_find_tensor(g, "a");
		const struct gguf_tensor *tb = ms_gguf_find_tensor(g, "b");
		const struct gguf_tensor *tc = ms_gguf_find_tensor(g, "c");

		ok(ta && tb && tc && ta->n_dims == 2 && ta->ne[0] == 64 && ta->ne[1] == 3 &&
		   tb->n_dims == 1 && tb->ne[0] == 5 && tc->n_dims == 3 && tc->ne[2] == 2 &&
		   tc->type == GGML_TYPE_Q8_0 && ta->offset == 0 && tb->offset == 768 &&
		   tc->offset == 832 && g->data_offset % 64 == 0,
		   "read back: tensor shapes, types, 64-aligned offsets");
		ok(ta && tb && tc && !memcmp(ta->data, w_fa, sizeof(w_fa)) &&
		   !memcmp(tb->data, w_fb, sizeof(w_fb)) && !memcmp(tc->data, w_qc, sizeof(w_qc)),
		   "read back: tensor bytes as written");
	}
	ms_gguf_close(g);
	unlink(path);
}

/* ------------------------------------------------------------------------ */
/* mistral-mkmodel                                                          */
/* ------------------------------------------------------------------------ */

static const char *mkmodel_path(void)
{
	const char *p = getenv("MKMODEL");

	if (p && *p)
		return p;
	return access("./mistral-mkmodel", X_OK) == 0 ? "./mistral-mkmodel" : NULL;
}

/* Runs argv quietly (stderr kept with verbose=true); the exit status, or -1. */
static int run_quiet(char *const argv[], bool show_stderr)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		if (nul >= 0) {
			dup2(nul, 1);
			if (!show_stderr)
				dup2(nul, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* Runs mistral-mkmodel with the required options plus up to three more; its exit status. */
static int mkmodel_q(bool show_stderr, const char *out, const char *type, const char *vocab,
		     const char *extra1, const char *extra2, const char *extra3)
{
	char *argv[16];
	int n = 0;

	argv[n++] = (char *)mkmodel_path();
	argv[n++] = (char *)"--out";
	argv[n++] = (char *)out;
	argv[n++] = (char *)"--type";
	argv[n++] = (char *)type;
	argv[n++] = (char *)"--vocab-from";
	argv[n++] = (char *)vocab;
	if (extra1)
		argv[n++] = (char *)extra1;
	if (extra2)
		argv[n++] = (char *)extra2;
	if (extra3)
		argv[n++] = (char *)extra3;
	argv[n] = NULL;
	return run_quiet(argv, show_stderr);
}

static int mkmodel(const char *out, const char *type, const char *vocab, const char *extra1,
		   const char *extra2, const char *extra3)
{
	return mkmodel_q(true, out, type, vocab, extra1, extra2, extra3);
}

static uint32_t kv_u32(const struct gguf *g, const char *key)
{
	uint32_t v = 0xdeadbeef;

	ms_gguf_get_u32(g, key, &v, NULL);
	return v;
}

/* Same keys and identical value bytes for every tokenizer.* key of src. */
static int compare_tokenizer(const struct gguf *src, const struct gguf *dst)
{
	int bad = 0, n = 0;

	for (uint64_t i = 0; i < src->n_kv; i++) {
		const struct gguf_kv *a = &src->kv[i], *b;
		char key[256];

		if (a->key.n < 10 || memcmp(a->key.p, "tokenizer.", 10) || a->key.n >= sizeof(key))
			continue;
		memcpy(key, a->key.p, a->key.n);
		key[a->key.n] = 0;
		b = ms_gguf_find_kv(dst, key);
		n++;
		if (!b || a->val.type != b->val.type) {
			bad++;
			continue;
		}
		switch (a->val.type) {
		case GGUF_STRING:
			bad += a->val.v.s.n != b->val.v.s.n ||
			       memcmp(a->val.v.s.p, b->val.v.s.p, a->val.v.s.n);
			break;
		case GGUF_ARRAY: {
			const uint8_t *ca = a->val.v.a.data, *cb = b->val.v.a.data;
			size_t bytes;

			if (a->val.v.a.type != b->val.v.a.type || a->val.v.a.n != b->val.v.a.n) {
				bad++;
				break;
			}
			if (a->val.v.a.type == GGUF_STRING) {
				for (uint64_t k = 0; k < a->val.v.a.n; k++)
					ms_gguf_arr_str(&ca);
				bytes = (size_t)(ca - a->val.v.a.data);
				ca = a->val.v.a.data;
			} else {
				bytes = (size_t)a->val.v.a.n * ms_gguf_vtype_size(a->val.v.a.type);
			}
			bad += memcmp(ca, cb, bytes) != 0;
			break;
		}
		case GGUF_F32: case GGUF_F64:
			bad += a->val.v.f != b->val.v.f;
			break;
		default:
			bad += a->val.v.u != b->val.v.u;
			break;
		}
	}
	return n == 0 ? -1 : bad;
}

struct shape { const char *name; uint64_t ne0, ne1; uint32_t n_dims; bool norm; };

static int check_shapes(const struct gguf *g, uint32_t type, uint64_t vocab, bool output)
{
	char nm[8][64];
	int bad = 0;
	struct shape want[] = {
		{ "token_embd.weight", 64, vocab, 2, false },
		{ "output_norm.weight", 64, 1, 1, true },
		{ "output.weight", 64, vocab, 2, false },
		{ nm[0], 64, 1, 1, true }, { nm[1], 64, 64, 2, false },
		{ nm[2], 64, 32, 2, false }, { nm[3], 64, 32, 2, false },
		{ nm[4], 64, 64, 2, false }, { nm[5], 64, 1, 1, true },
		{ nm[6], 64, 128, 2, false }, { nm[7], 128, 64, 2, false },
	};
	static const char *const per_layer[] = {
		"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
		"ffn_gate", "ffn_up", "ffn_down",
	};

	bad += g->n_tensors != (output ? 21u : 20u);
	for (int l = 0; l < 2; l++) {
		for (int k = 0; k < 8; k++)
			snprintf(nm[k], sizeof(nm[k]), "blk.%d.%s.weight", l,
				 per_layer[k == 7 ? 8 : k]);
		/* nm[7] is ffn_down; ffn_up shares ffn_gate's shape */
		for (size_t i = l ? 3 : 0; i < sizeof(want) / sizeof(want[0]); i++) {
			const struct gguf_tensor *t;

			if (i == 2 && !output) {
				bad += ms_gguf_find_tensor(g, "output.weight") != NULL;
				continue;
			}
			t = ms_gguf_find_tensor(g, want[i].name);
			if (!t || t->n_dims != want[i].n_dims || t->ne[0] != want[i].ne0 ||
			    (t->n_dims > 1 && t->ne[1] != want[i].ne1) ||
			    t->type != (want[i].norm ? (uint32_t)GGML_TYPE_F32 : type)) {
				diag("tensor %s wrong or missing", want[i].name);
				bad++;
			}
		}
		snprintf(nm[0], sizeof(nm[0]), "blk.%d.ffn_up.weight", l);
		{
			const struct gguf_tensor *t = ms_gguf_find_tensor(g, nm[0]);

			bad += !t || t->ne[0] != 64 || t->ne[1] != 128 || t->type != type;
		}
	}
	return bad;
}

/* Compares every tensor of a model with the F32 model of the same seed. */
static int compare_to_f32(const struct gguf *q, const struct gguf *f, double *worst)
{
	int bad = 0, max_hit = 0;
	float *x = NULL, *y = NULL;
	uint8_t *requant = NULL;

	*worst = 0;
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		const struct gguf_tensor *tf = &f->tensors[i];
		const struct gguf_tensor *tq = ms_gguf_find_tensor(q, tf->name);
		size_t ne0 = (size_t)tf->ne[0];
		uint64_t rows = tf->nbytes / (ne0 * 4), rb;
		double se = 0, sx = 0;

		if (!tq || tq->ne[0] != tf->ne[0] || tq->nbytes == 0) {
			bad++;
			continue;
		}
		ms_ggml_row_bytes(tq->type, ne0, &rb);
		x = realloc(x, ne0 * 4);
		y = realloc(y, ne0 * 4);
		requant = realloc(requant, (size_t)rb);
		if (!x || !y || !requant)
			abort();
		for (uint64_t r = 0; r < rows; r++) {
			const uint8_t *qrow = (const uint8_t *)tq->data + r * rb;

			memcpy(x, (const float *)tf->data + r * ne0, ne0 * 4);
			if (ms_dequantize_row(tq->type, qrow, y, ne0)) {
				bad++;
				break;
			}
			/* the quantized file holds exactly the F32 file's weights, quantized */
			ms_quantize_row(tq->type, x, requant, ne0);
			if (memcmp(requant, qrow, (size_t)rb)) {
				bad++;
				continue;
			}
			for (size_t j = 0; j < ne0; j++) {
				double e = fabs((double)y[j] - (double)x[j]), rel = e / fabs((double)x[j]);
				double bound;

				switch (tq->type) {
				case GGML_TYPE_F32: bound = 0; break;
				case GGML_TYPE_F16: bound = fabs((double)x[j]) * 0x1p-11 + 0x1p-25; break;
				case GGML_TYPE_BF16: bound = fabs((double)x[j]) * 0x1p-8; break;
				default: bound = INFINITY; break;
				}
				if (e > bound)
					bad++;
				se += e * e;
				sx += (double)x[j] * (double)x[j];
				/* relative error means little for F16 subnormals (below 2^-14) */
				if ((tq->type == GGML_TYPE_F16 && fabs((double)x[j]) >= 0x1p-14) ||
				    tq->type == GGML_TYPE_BF16)
					*worst = fmax(*worst, rel);
			}
			if (tq->type == GGML_TYPE_Q8_0 || tq->type == GGML_TYPE_Q4_0) {
				for (size_t b = 0; b < ne0 / 32; b++) {
					bad += check_block(tq->type, x + 32 * b, qrow + b * (rb / (ne0 / 32)),
							   y + 32 * b, &max_hit);
					for (size_t j = 32 * b; j < 32 * b + 32; j++)
						*worst = fmax(*worst, fabs((double)y[j] - (double)x[j]));
				}
			}
		}
		/* K types: relative rms error of the tensor, bounded as in test_k_roundtrip */
		if (tq->type == GGML_TYPE_Q4_K || tq->type == GGML_TYPE_Q5_K || tq->type == GGML_TYPE_Q6_K) {
			double rel = sqrt(se / sx);

			if (!(rel < k_bound(tq->type))) {
				diag("%s (%s): relative rms error %.4f", tf->name, ms_ggml_type_name(tq->type), rel);
				bad++;
			}
			*worst = fmax(*worst, rel);
		}
	}
	free(x);
	free(y);
	free(requant);
	return bad;
}

/* Range and spread of the F32 weights: they follow the stated scales. */
static int check_f32_stats(const struct gguf *g)
{
	int bad = 0;

	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct gguf_tensor *t = &g->tensors[i];
		const float *v = t->data;
		uint64_t n = t->nbytes / 4;
		bool norm = strstr(t->name, "norm") != NULL;
		bool embd = !strcmp(t->name, "token_embd.weight");
		double a = embd ? 1 : norm ? 0.1 : sqrt(3.0 / (double)t->ne[0]);
		double c = norm ? 1 : 0, sum = 0, sq = 0;

		for (uint64_t k = 0; k < n; k++) {
			double d = (double)v[k] - c;

			if (fabs(d) > a * (1 + 1e-6)) {
				bad++;
				break;
			}
			sum += d;
			sq += d * d;
		}
		/* uniform(-a, a): mean 0, variance a^2/3; loose for the small tensors */
		if (n >= 4096 && (fabs(sum / (double)n) > 0.05 * a ||
				  fabs(sq / (double)n / (a * a / 3) - 1) > 0.1)) {
			diag("%s: mean %g var %g, want 0 and %g", t->name, sum / (double)n,
			     sq / (double)n, a * a / 3);
			bad++;
		}
	}
	return bad;
}

static bool files_equal(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool eq = fa && fb;
	int ca, cb;

	while (eq) {
		ca = getc(fa);
		cb = getc(fb);
		if (ca != cb)
			eq = false;
		if (ca == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return eq;
}

/* A K-quant-capable shape: rows of 256 and 512, eight layers. */
static int mkmodel_k(const char *out, const char *type, const char *vocab, const char *extra)
{
	char *argv[24];
	int n = 0;

	argv[n++] = (char *)mkmodel_path();
	argv[n++] = (char *)"--out";
	argv[n++] = (char *)out;
	argv[n++] = (char *)"--type";
	argv[n++] = (char *)type;
	argv[n++] = (char *)"--vocab-from";
	argv[n++] = (char *)vocab;
	argv[n++] = (char *)"--dim=256";
	argv[n++] = (char *)"--ffn=512";
	argv[n++] = (char *)"--heads=2";
	argv[n++] = (char *)"--kv-heads=1";
	argv[n++] = (char *)"--layers=8";
	argv[n++] = (char *)"--seed=5";
	if (extra)
		argv[n++] = (char *)extra;
	argv[n] = NULL;
	return run_quiet(argv, true);
}

/*
 * Expected type of every tensor of an eight-layer model of a --type: with a
 * mix, llama.cpp's use_more_bits picks layers 0, 3, 6 and 7 of 8 (i < 1,
 * i >= 7, (i - 1) % 3 == 2) for the larger type of attn_v and ffn_down.
 */
static int check_k_types(const struct gguf *g, uint32_t base, uint32_t more, bool output)
{
	int bad = 0;

	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct gguf_tensor *t = &g->tensors[i];
		uint32_t want = base;
		int layer = -1;

		if (strstr(t->name, "norm"))
			want = GGML_TYPE_F32;
		else if (!strcmp(t->name, "output.weight") ||
			 (!output && !strcmp(t->name, "token_embd.weight")))
			want = more;
		else if (sscanf(t->name, "blk.%d.", &layer) == 1 &&
			 (strstr(t->name, "attn_v") || strstr(t->name, "ffn_down")) &&
			 (layer == 0 || layer == 3 || layer == 6 || layer == 7))
			want = more;
		if (t->type != want) {
			diag("%s is %s, want %s", t->name, ms_ggml_type_name(t->type), ms_ggml_type_name(want));
			bad++;
		}
	}
	bad += g->n_tensors != (output ? 75u : 74u);
	return bad;
}

static void test_mkmodel_k(void)
{
	static const struct { const char *name; uint32_t base, more, ftype; } kt[] = {
		{ "Q4_K_M", GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, 15 },
		{ "Q5_K_M", GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, 17 },
		{ "q4_k", GGML_TYPE_Q4_K, GGML_TYPE_Q4_K, 14 },
		{ "Q5_K", GGML_TYPE_Q5_K, GGML_TYPE_Q5_K, 16 },
		{ "Q6_K", GGML_TYPE_Q6_K, GGML_TYPE_Q6_K, 18 },
	};
	char vocab[4200], f32[4200], path[4200], gone[4200], tmp[4300];
	struct gguf *ref = NULL, *g = NULL;
	ms_err err = { 0 };
	int rc;

	if (!mkmodel_path()) {
		skip("mistral-mkmodel not built (set MKMODEL)");
		return;
	}
	snprintf(vocab, sizeof(vocab), "%s/stories260K.gguf", test_data_dir());
	snprintf(f32, sizeof(f32), "%s/k-F32.gguf", tmp_dir());
	snprintf(path, sizeof(path), "%s/k.gguf", tmp_dir());
	rc = mkmodel_k(f32, "F32", vocab, NULL);
	ok(rc == 0 && ms_gguf_open(f32, &ref, &err) == 0,
	   "mkmodel K: F32 model --dim 256 --ffn 512 --layers 8 (%s)", err.msg);
	for (size_t i = 0; i < sizeof(kt) / sizeof(kt[0]); i++) {
		double worst = 0;

		rc = mkmodel_k(path, kt[i].name, vocab, NULL);
		if (!ok(rc == 0 && ms_gguf_open(path, &g, &err) == 0, "mkmodel --type %s: written and readable (%s)",
			kt[i].name, err.msg))
			continue;
		ok(kv_u32(g, "general.file_type") == kt[i].ftype &&
		   kv_u32(g, "general.quantization_version") == 2,
		   "mkmodel %s: general.file_type %u, quantization_version 2", kt[i].name, kt[i].ftype);
		ok(check_k_types(g, kt[i].base, kt[i].more, true) == 0,
		   "mkmodel %s: %s matrices, %s for output and for attn_v/ffn_down of layers 0, 3, 6, 7; norms F32",
		   kt[i].name, ms_ggml_type_name(kt[i].base), ms_ggml_type_name(kt[i].more));
		if (ref) {
			rc = compare_to_f32(g, ref, &worst);
			ok(rc == 0, "mkmodel %s: the F32 model's weights, quantized; relative rms error per "
			   "tensor within the type's bound (worst %.2f%%)", kt[i].name, 100 * worst);
		} else {
			skip("mkmodel %s: no F32 model to compare with", kt[i].name);
		}
		ms_gguf_close(g);
		g = NULL;
	}
	/* without output.weight, token_embd is the output and takes its type */
	rc = mkmodel_k(path, "Q4_K_M", vocab, "--no-output");
	if (ok(rc == 0 && ms_gguf_open(path, &g, &err) == 0, "mkmodel Q4_K_M --no-output: written (%s)",
	       err.msg)) {
		ok(check_k_types(g, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, false) == 0,
		   "mkmodel Q4_K_M --no-output: token_embd is Q6_K, as llama.cpp makes it");
		ms_gguf_close(g);
		g = NULL;
	}
	/* K types need whole 256-element super-blocks per row */
	snprintf(gone, sizeof(gone), "%s/never-k.gguf", tmp_dir());
	snprintf(tmp, sizeof(tmp), "%s.tmp", gone);
	ok(mkmodel_q(false, gone, "Q4_K_M", vocab, NULL, NULL, NULL) == 2 &&
	   mkmodel_q(false, gone, "Q6_K", vocab, "--dim=256", "--ffn=384", NULL) == 2 &&
	   mkmodel_q(false, gone, "Q5_K", vocab, "--dim=128", "--ffn=512", NULL) == 2 &&
	   mkmodel_q(false, gone, "Q4_K_L", vocab, "--dim=256", "--ffn=512", NULL) == 2 &&
	   access(gone, F_OK) != 0 && access(tmp, F_OK) != 0,
	   "mkmodel: K types with dim or ffn not a multiple of 256, or an unknown mix, exit 2 and write nothing");
	ms_gguf_close(ref);
	unlink(f32);
	unlink(path);
}

static void test_mkmodel(void)
{
	static const char *const types[] = { "F32", "F16", "BF16", "Q8_0", "Q4_0" };
	static const uint32_t type_ids[] = {
		GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
	};
	char vocab[4200], vocab32k[4200], path[5][4200], other[4200], tmp[4300];
	struct gguf *src = NULL, *g[5] = { NULL }, *o = NULL;
	ms_err err = { 0 };
	struct gguf_str s;
	float f;
	int rc;

	if (!mkmodel_path()) {
		skip("mistral-mkmodel not built (set MKMODEL)");
		return;
	}
	snprintf(vocab, sizeof(vocab), "%s/stories260K.gguf", test_data_dir());
	snprintf(vocab32k, sizeof(vocab32k), "%s/ggml-vocab-llama-spm.gguf", test_data_dir());
	if (ms_gguf_open(vocab, &src, &err)) {
		ok(0, "mkmodel: open %s: %s", vocab, err.msg);
		return;
	}
	for (int i = 0; i < 5; i++) {
		snprintf(path[i], sizeof(path[i]), "%s/m-%s.gguf", tmp_dir(), types[i]);
		rc = mkmodel(path[i], types[i], vocab, "--seed=7", "--window=64", NULL);
		ok(rc == 0, "mkmodel: --type %s exits 0", types[i]);
		rc = ms_gguf_open(path[i], &g[i], &err);
		ok(rc == 0, "mkmodel %s: ms_gguf_open accepts it (%s)", types[i], rc ? err.msg : "");
		if (rc)
			continue;
		ok(ms_gguf_get_str(g[i], "general.architecture", &s, NULL) == 0 && str_is(s, "llama") &&
		   ms_gguf_get_str(g[i], "general.name", &s, NULL) == 0 && str_is(s, "mkmodel random"),
		   "mkmodel %s: architecture llama, default name", types[i]);
		ok(kv_u32(g[i], "llama.embedding_length") == 64 && kv_u32(g[i], "llama.block_count") == 2 &&
		   kv_u32(g[i], "llama.attention.head_count") == 4 &&
		   kv_u32(g[i], "llama.attention.head_count_kv") == 2 &&
		   kv_u32(g[i], "llama.feed_forward_length") == 128 &&
		   kv_u32(g[i], "llama.context_length") == 256 &&
		   kv_u32(g[i], "llama.rope.dimension_count") == 16 &&
		   kv_u32(g[i], "llama.vocab_size") == 512 &&
		   kv_u32(g[i], "llama.attention.sliding_window") == 64 &&
		   ms_gguf_get_f32(g[i], "llama.rope.freq_base", &f, NULL) == 0 && f == 10000.0f &&
		   ms_gguf_get_f32(g[i], "llama.attention.layer_norm_rms_epsilon", &f, NULL) == 0 &&
		   f == 1e-5f,
		   "mkmodel %s: default hyperparameters, window 64", types[i]);
		ok(compare_tokenizer(src, g[i]) == 0, "mkmodel %s: every tokenizer.* key copied verbatim",
		   types[i]);
		ok(check_shapes(g[i], type_ids[i], 512, true) == 0,
		   "mkmodel %s: 21 tensors with the llama shapes, norms F32", types[i]);
	}
	if (g[0]) {
		ok(check_f32_stats(g[0]) == 0,
		   "mkmodel F32: weights in [-a, a] with a = sqrt(3/fan_in), norms 1 +- 0.1, embeddings in [-1, 1]");
		for (int i = 1; i < 5; i++) {
			double worst = 0;

			if (!g[i]) {
				skip("mkmodel %s: not readable", types[i]);
				continue;
			}
			rc = compare_to_f32(g[i], g[0], &worst);
			ok(rc == 0,
			   "mkmodel %s: same weights as the F32 model of the seed, within the format's error "
			   "(worst %s %.3g)", types[i], type_ids[i] == GGML_TYPE_F16 ||
			   type_ids[i] == GGML_TYPE_BF16 ? "relative" : "absolute", worst);
		}
	} else {
		skip("mkmodel: no F32 model to compare with");
	}

	/* determinism and the seed */
	snprintf(other, sizeof(other), "%s/again.gguf", tmp_dir());
	ok(mkmodel(other, "q8_0", vocab, "--seed=7", "--window=64", NULL) == 0 &&
	   files_equal(other, path[3]), "mkmodel: same arguments give a byte-identical file");
	ok(mkmodel(other, "Q8_0", vocab, "--seed=8", "--window=64", NULL) == 0 &&
	   !files_equal(other, path[3]), "mkmodel: another seed gives other weights");

	/* shape options, --no-output, the 32000-token vocabulary */
	rc = mkmodel(other, "F16", vocab32k, "--no-output", "--name=tiny 32k", NULL);
	ok(rc == 0 && ms_gguf_open(other, &o, &err) == 0, "mkmodel: --no-output with the 32000-token vocabulary");
	if (o) {
		struct gguf *v32 = NULL;

		ok(check_shapes(o, GGML_TYPE_F16, 32000, false) == 0 &&
		   kv_u32(o, "llama.vocab_size") == 32000 &&
		   !ms_gguf_find_kv(o, "llama.attention.sliding_window") &&
		   ms_gguf_get_str(o, "general.name", &s, NULL) == 0 && str_is(s, "tiny 32k"),
		   "mkmodel: 20 tensors, vocab 32000, no window key without --window, --name");
		ok(ms_gguf_open(vocab32k, &v32, &err) == 0 && compare_tokenizer(v32, o) == 0,
		   "mkmodel: the 32000-token tokenizer copied verbatim");
		ms_gguf_close(v32);
		ms_gguf_close(o);
		o = NULL;
	}
	{
		char *argv[] = { (char *)mkmodel_path(), (char *)"--out", other, (char *)"--type",
				 (char *)"Q4_0", (char *)"--vocab-from", vocab, (char *)"--dim", (char *)"96",
				 (char *)"--heads", (char *)"6", (char *)"--kv-heads", (char *)"3",
				 (char *)"--ffn", (char *)"160", (char *)"--layers", (char *)"3",
				 (char *)"--context", (char *)"1000", (char *)"--rope-base", (char *)"1e6",
				 (char *)"--eps", (char *)"1e-6", NULL };

		rc = run_quiet(argv, true);
		ok(rc == 0 && ms_gguf_open(other, &o, &err) == 0 &&
		   kv_u32(o, "llama.embedding_length") == 96 && kv_u32(o, "llama.block_count") == 3 &&
		   kv_u32(o, "llama.attention.head_count") == 6 &&
		   kv_u32(o, "llama.attention.head_count_kv") == 3 &&
		   kv_u32(o, "llama.rope.dimension_count") == 16 &&
		   kv_u32(o, "llama.context_length") == 1000 &&
		   ms_gguf_get_f32(o, "llama.rope.freq_base", &f, NULL) == 0 && f == 1e6f &&
		   ms_gguf_get_f32(o, "llama.attention.layer_norm_rms_epsilon", &f, NULL) == 0 && f == 1e-6f &&
		   o->n_tensors == 30 && ms_gguf_find_tensor(o, "blk.2.attn_k.weight") &&
		   ms_gguf_find_tensor(o, "blk.2.attn_k.weight")->ne[1] == 48 &&
		   ms_gguf_find_tensor(o, "blk.2.ffn_down.weight")->ne[0] == 160,
		   "mkmodel: --dim 96 --heads 6 --kv-heads 3 --ffn 160 --layers 3 --context --rope-base --eps");
		ms_gguf_close(o);
		o = NULL;
	}

	/* bad usage: exit 2, no file, no FILE.tmp */
	{
		static const char *const bad[][4] = {
			{ "--heads=5", NULL },
			{ "--kv-heads=3", NULL },
			{ "--dim=48", "--heads=4", NULL },	/* not a multiple of 32 for Q4_0 */
			{ "--ffn=100", NULL },
			{ "--dim=-64", NULL },
			{ "--dim=0", NULL },
			{ "--dim=64x", NULL },
			{ "--dim=60", "--heads=5", "--kv-heads=5" },	/* head size 12, but 60 % 32 */
			{ "--eps=0", NULL },
			{ "--rope-base=nan", NULL },
			{ "--preset=mistral-8x7b", NULL },
			{ "--bogus", NULL },
			{ "--seed=-1", NULL },
			{ "--heads=64", "--kv-heads=64", NULL },	/* head size 1: odd */
		};
		int fails = 0;
		char gone[4200];

		snprintf(gone, sizeof(gone), "%s/never.gguf", tmp_dir());
		snprintf(tmp, sizeof(tmp), "%s.tmp", gone);
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *argv[16];
			int n = 0;

			argv[n++] = (char *)mkmodel_path();
			argv[n++] = (char *)"--out";
			argv[n++] = gone;
			argv[n++] = (char *)"--type";
			argv[n++] = (char *)"Q4_0";
			argv[n++] = (char *)"--vocab-from";
			argv[n++] = vocab;
			for (int k = 0; k < 3 && bad[i][k]; k++)
				argv[n++] = (char *)bad[i][k];
			argv[n] = NULL;
			rc = run_quiet(argv, false);
			if (rc != 2 || access(gone, F_OK) == 0 || access(tmp, F_OK) == 0) {
				diag("bad usage case %zu (%s ...) exited %d", i, bad[i][0], rc);
				fails++;
			}
		}
		ok(fails == 0, "mkmodel: %zu kinds of bad usage exit 2 and write nothing",
		   sizeof(bad) / sizeof(bad[0]));
		{
			char *no_out[] = { (char *)mkmodel_path(), (char *)"--type", (char *)"F32",
					   (char *)"--vocab-from", vocab, NULL };
			char *no_type[] = { (char *)mkmodel_path(), (char *)"--out", gone,
					    (char *)"--vocab-from", vocab, NULL };
			char *help[] = { (char *)mkmodel_path(), (char *)"--help", NULL };
			char *stray[] = { (char *)mkmodel_path(), (char *)"--out", gone, (char *)"--type",
					  (char *)"F32", (char *)"--vocab-from", vocab, (char *)"extra", NULL };

			ok(run_quiet(no_out, false) == 2 && run_quiet(no_type, false) == 2 &&
			   run_quiet(stray, false) == 2 && access(gone, F_OK) != 0,
			   "mkmodel: missing --out or --type, or a stray argument, exit 2");
			ok(run_quiet(help, false) == 0, "mkmodel: --help exits 0");
		}
		ok(mkmodel_q(false, gone, "F32", "/nonexistent/vocab.gguf", NULL, NULL, NULL) == 1 &&
		   access(gone, F_OK) != 0 && access(tmp, F_OK) != 0,
		   "mkmodel: unreadable vocabulary exits 1 and leaves no file or FILE.tmp");
		ok(mkmodel(gone, "F32", path[0], "--no-output", NULL, NULL) == 0,
		   "mkmodel: a model made by mkmodel serves as --vocab-from");
		unlink(gone);
	}

	for (int i = 0; i < 5; i++) {
		ms_gguf_close(g[i]);
		unlink(path[i]);
	}
	ms_gguf_close(src);
	unlink(other);
}

int main(void)
{
	test_type_table();
	test_row_bytes();
	test_kv_type_parse();
	test_f16_exhaustive();
	test_f16_known();
	test_f16_midpoints();
	test_f16_random();
	test_bf16();
	test_q8_0_dequant();
	test_q4_0_dequant();
	test_quantize_known();
	test_quantize_matches_ggml();
	test_quantize_roundtrip(GGML_TYPE_Q8_0);
	test_quantize_roundtrip(GGML_TYPE_Q4_0);
	test_float_rows();
	test_k_scale_packing();
	test_k_dequant();
	test_k_roundtrip(GGML_TYPE_Q4_K);
	test_k_roundtrip(GGML_TYPE_Q5_K);
	test_k_roundtrip(GGML_TYPE_Q6_K);
	test_q8_K();
	test_writer();
	test_mkmodel();
	test_mkmodel_k();
	rmdir(tmp_dir());
	return done_testing();
}
