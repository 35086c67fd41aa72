/*
 * UTF-8 validation, the one copy for the protocol, the client and the
 * tokenizer. Inline because the tokenizer calls it for every character of
 * a prompt; header-only so the engine takes nothing from common/ but this.
 */
#ifndef MS_UTF8_H
#define MS_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * What the byte c says as the first of a sequence: the sequence's length
 * (1: ASCII, 0: c starts none) and the range [*lo, *hi] its second byte
 * must fall in, narrower than 80-BF where the shortest form, the
 * surrogates or U+10FFFF draw the line (later bytes are always 80-BF).
 * Apart from utf8_seq so that a decoder fed a byte at a time (the
 * tokenizer's detokenizer) checks each byte as it comes by the same table.
 */
static inline size_t utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
	*lo = 0x80;
	*hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c < 0xc2)
		return 0;
	if (c < 0xe0)
		return 2;
	if (c < 0xf0) {
		if (c == 0xe0)
			*lo = 0xa0;	/* overlong */
		else if (c == 0xed)
			*hi = 0x9f;	/* surrogates */
		return 3;
	}
	if (c < 0xf5) {
		if (c == 0xf0)
			*lo = 0x90;	/* overlong */
		else if (c == 0xf4)
			*hi = 0x8f;	/* beyond U+10FFFF */
		return 4;
	}
	return 0;
}

/*
 * Length of the valid UTF-8 sequence starting at s[0] (n > 0 bytes
 * available), or 0 when it is invalid or truncated: no overlong forms, no
 * surrogates, nothing above U+10FFFF.
 */
static inline size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char lo, hi;
	size_t k = utf8_lead(s[0], &lo, &hi), i;

	if (k <= 1)
		return k;
	if (n < k)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < k; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return k;
}

/* True when s[0..n) is all valid UTF-8 (n may be 0). */
static inline bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k;

	while (i < n) {
		/* ASCII runs dominate prompts */
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8_seq(p + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

#endif
