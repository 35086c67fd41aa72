/* Attention-side kernels: every ISA's KV row conversions against the generic twin and exact expectations. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "quant.h"
#include "tap.h"

static uint64_t rng = 88172645463325252ull;

static uint32_t next_u32(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* Random floats over many magnitudes, with the awkward values mixed in. */
static float random_float(size_t i)
{
	static const float special[] = { 0.0f, -0.0f, 65504.0f, 65520.0f, 1e-8f, -6.1e-5f, 1e6f, -1e6f };
	uint32_t r = next_u32();

	if (r % 17 == 0)
		return special[i % (sizeof(special) / sizeof(special[0]))];
	return ((float)(r % 2000001) / 1e6f - 1.0f) * powf(2.0f, (float)((int)(next_u32() % 40) - 20));
}

static void test_isa(const struct ms_attn_kernels *k)
{
	static const size_t sizes[] = { 0, 1, 7, 8, 9, 15, 16, 17, 64, 127, 128, 1000 };

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si];
		float *x = malloc((n + 1) * sizeof(float)), *y = malloc((n + 1) * sizeof(float));
		uint16_t *h = malloc((n + 1) * sizeof(uint16_t)), *hg = malloc((n + 1) * sizeof(uint16_t));
		int same_h = 1, same_f = 1, exact = 1;

		for (size_t i = 0; i < n; i++)
			x[i] = random_float(i);
		h[n] = hg[n] = 0xBEEF;   /* guards: nothing written past n */
		y[n] = 1234.5f;
		k->f32_to_f16(n, x, h);
		ms_attn_generic.f32_to_f16(n, x, hg);
		for (size_t i = 0; i < n; i++) {
			same_h &= h[i] == hg[i];
			exact &= h[i] == ms_f32_to_f16(x[i]);
		}
		ok(same_h && exact && h[n] == 0xBEEF,
		   "[%s] f32_to_f16, n = %zu: equals the generic twin and the scalar rounding, no overrun", k->name, n);
		k->f16_to_f32(n, h, y);
		for (size_t i = 0; i < n; i++)
			same_f &= memcmp(&y[i], &(float){ ms_f16_to_f32(h[i]) }, sizeof(float)) == 0;
		ok(same_f && y[n] == 1234.5f, "[%s] f16_to_f32, n = %zu: bit-exact, no overrun", k->name, n);
		free(x);
		free(y);
		free(h);
		free(hg);
	}
	{
		/* Every half value, both ways. */
		uint16_t *all = malloc(65536 * sizeof(uint16_t)), *back = malloc(65536 * sizeof(uint16_t));
		float *f = malloc(65536 * sizeof(float));
		int good = all && back && f;

		for (uint32_t i = 0; good && i < 65536; i++)
			all[i] = (uint16_t)i;
		if (good) {
			k->f16_to_f32(65536, all, f);
			k->f32_to_f16(65536, f, back);
		}
		for (uint32_t i = 0; good && i < 65536; i++) {
			int nan = ((i >> 10) & 31) == 31 && (i & 1023);

			good = nan ? isnan(f[i]) && (back[i] & 0x7c00) == 0x7c00 && (back[i] & 1023)
				   : back[i] == i;
		}
		ok(good, "[%s] all 65536 halves survive f16 -> f32 -> f16 (NaN stays NaN)", k->name);
		free(all);
		free(back);
		free(f);
	}
}

int main(void)
{
	for (int isa = 0; isa < MS_ISA_COUNT; isa++) {
		const struct ms_attn_kernels *k = ms_attn_kernels_get((enum ms_isa)isa);

		if (!k) {
			skip("%s attention kernels: not supported by this CPU or build", ms_isa_name((enum ms_isa)isa));
			continue;
		}
		test_isa(k);
	}
	return done_testing();
}
