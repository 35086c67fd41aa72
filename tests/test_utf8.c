/* Tests for common/utf8.h: the UTF-8 validator the protocol, the client and the tokenizer share. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "tap.h"
#include "utf8.h"

/* ---- deterministic PRNG (xorshift64*) ------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* ---- utf8_valid ------------------------------------------------------------------ */

/* Reference: decode by the book, then check minimal length and range. */
static bool utf8_ref(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t c = s[i], min;
		size_t k;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 2, c &= 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 3, c &= 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 4, c &= 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (i + k > n)
			return false;
		for (size_t j = 1; j < k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			c = c << 6 | (s[i + j] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return false;
		i += k;
	}
	return true;
}

static void test_utf8(void)
{
	static const struct {
		const char *s;
		size_t n;
		bool valid;
		const char *name;
	} cases[] = {
		{ "", 0, true, "empty" },
		{ "hello", 5, true, "ASCII" },
		{ "a\0b", 3, true, "embedded NUL" },
		{ "\xc3\xa9", 2, true, "U+00E9" },
		{ "\xe2\x82\xac", 3, true, "U+20AC" },
		{ "\xef\xbf\xbf", 3, true, "U+FFFF" },
		{ "\xee\x80\x80", 3, true, "U+E000" },
		{ "\xed\x9f\xbf", 3, true, "U+D7FF" },
		{ "\xf0\x9f\x98\x80", 4, true, "U+1F600" },
		{ "\xf4\x8f\xbf\xbf", 4, true, "U+10FFFF" },
		{ "\xc0\x80", 2, false, "overlong NUL" },
		{ "\xc1\xbf", 2, false, "overlong 2-byte" },
		{ "\xe0\x80\x80", 3, false, "overlong 3-byte" },
		{ "\xe0\x9f\xbf", 3, false, "overlong U+07FF" },
		{ "\xf0\x80\x80\x80", 4, false, "overlong 4-byte" },
		{ "\xf0\x8f\xbf\xbf", 4, false, "overlong U+FFFF" },
		{ "\xed\xa0\x80", 3, false, "surrogate U+D800" },
		{ "\xed\xbf\xbf", 3, false, "surrogate U+DFFF" },
		{ "\xf4\x90\x80\x80", 4, false, "U+110000" },
		{ "\xf5\x80\x80\x80", 4, false, "0xf5 lead" },
		{ "\xff", 1, false, "0xff" },
		{ "\x80", 1, false, "lone continuation" },
		{ "\xe2\x82", 2, false, "truncated 3-byte" },
		{ "\xf0\x9f\x98", 3, false, "truncated 4-byte" },
		{ "\xc3", 1, false, "truncated 2-byte" },
		{ "\xc3(", 2, false, "bad continuation" },
		{ "\xe2(\xa1", 3, false, "bad second of 3" },
		{ "\xe2\x82(", 3, false, "bad third of 3" },
	};
	unsigned bad = 0;
	uint8_t b[4];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(utf8_valid(cases[i].s, cases[i].n) == cases[i].valid, "utf8 %s: %s", cases[i].name,
		   cases[i].valid ? "valid" : "invalid");
	/* exhaustive over 1-3 byte strings, sampled for 4 bytes */
	for (uint32_t v = 0; v < (1u << 24); v++) {
		size_t n = v < 0x100 ? 1 : v < 0x10000 ? 2 : 3;

		for (size_t j = 0; j < n; j++)
			b[j] = (uint8_t)(v >> (8 * (n - 1 - j)));
		if (utf8_valid((const char *)b, n) != utf8_ref(b, n))
			bad++;
	}
	ok(!bad, "utf8_valid agrees with a reference decoder on every 1-3 byte string (%u differ)", bad);
	bad = 0;
	for (unsigned t = 0; t < 2000000; t++) {
		uint32_t v = (uint32_t)rnd();

		if (t & 1)	/* bias towards lead bytes f0..f4 and continuation bytes */
			v = (0xf0u + (uint32_t)rnd_below(6)) << 24 | (v & 0x3f3f3fu) | 0x808080u;
		for (size_t j = 0; j < 4; j++)
			b[j] = (uint8_t)(v >> (8 * (3 - j)));
		if (utf8_valid((const char *)b, 4) != utf8_ref(b, 4))
			bad++;
	}
	ok(!bad, "utf8_valid agrees with the reference on 2M 4-byte strings (%u differ)", bad);
}

/* ---- utf8_seq: one sequence at a position, the rest of the buffer ignored ---------------------- */

static void test_seq(void)
{
	static const struct {
		const char *s;
		size_t n, want;
		const char *name;
	} cases[] = {
		{ "a\xc3\xa9", 3, 1, "ASCII, then more" },
		{ "\x7f", 1, 1, "U+007F" },
		{ "\xc2\x80", 2, 2, "U+0080, the first 2-byte" },
		{ "\xdf\xbf", 2, 2, "U+07FF, the last 2-byte" },
		{ "\xc3\xa9\xc3\xa9", 4, 2, "2-byte, then more" },
		{ "\xe0\xa0\x80", 3, 3, "U+0800, the first 3-byte" },
		{ "\xe2\x82\xac!", 4, 3, "3-byte, then more" },
		{ "\xf0\x90\x80\x80", 4, 4, "U+10000, the first 4-byte" },
		{ "\xf4\x8f\xbf\xbf\x80", 5, 4, "U+10FFFF, then a stray byte" },
		{ "\xc0\x80", 2, 0, "overlong 2-byte" },
		{ "\xe0\x9f\xbf", 3, 0, "overlong 3-byte" },
		{ "\xf0\x8f\xbf\xbf", 4, 0, "overlong 4-byte" },
		{ "\xed\xa0\x80", 3, 0, "surrogate U+D800" },
		{ "\xed\xbf\xbf", 3, 0, "surrogate U+DFFF" },
		{ "\xf4\x90\x80\x80", 4, 0, "U+110000" },
		{ "\xf7\xbf\xbf\xbf", 4, 0, "U+1FFFFF" },
		{ "\xc3\xa9", 1, 0, "2-byte cut by n" },
		{ "\xe2\x82\xac", 2, 0, "3-byte cut by n" },
		{ "\xf0\x9f\x98\x80", 3, 0, "4-byte cut by n" },
		{ "\x80", 1, 0, "lone continuation" },
		{ "\xf0\x9f(\x80", 4, 0, "bad third of 4" },
		{ "\xf0\x9f\x98(", 4, 0, "bad fourth of 4" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(utf8_seq((const unsigned char *)cases[i].s, cases[i].n) == cases[i].want,
		   "utf8_seq %s: %zu", cases[i].name, cases[i].want);
}

/* utf8_lead, the detokenizer's byte-at-a-time view, says what the reference says of every first two bytes. */
static void test_lead(void)
{
	unsigned bad = 0;

	for (unsigned c = 0; c < 256; c++) {
		for (unsigned b = 0; b < 256; b++) {
			const uint8_t s[4] = { (uint8_t)c, (uint8_t)b, 0x80, 0x80 };
			unsigned char lo, hi;
			size_t k = utf8_lead((unsigned char)c, &lo, &hi);
			bool good = k == 1 || (k > 1 && b >= lo && b <= hi);
			size_t ref = 0;   /* the shortest prefix the reference takes as valid */

			for (size_t n = 1; n <= 4 && !ref; n++)
				ref = utf8_ref(s, n) ? n : 0;
			if (ref != (good ? k : 0))
				bad++;
		}
	}
	ok(!bad, "utf8_lead: length and second-byte range agree with the reference for all 65536 pairs (%u differ)",
	   bad);
}

int main(void)
{
	diag("random seed %#" PRIx64, rng_state);
	test_utf8();
	test_seq();
	test_lead();
	return done_testing();
}
