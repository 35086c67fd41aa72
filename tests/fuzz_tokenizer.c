/*
 * libFuzzer target for the tokenizer: arbitrary bytes through ms_tokenize
 * (the llama SPM vocabulary), every id in range, detokenized output valid
 * UTF-8 chunk by chunk, and a round trip for valid UTF-8 without specials.
 * Not built by make. From the source tree:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Iengine \
 *     tests/fuzz_tokenizer.c engine/tokenizer.c engine/gguf.c engine/quant.c \
 *     engine/error.c -lm -o fuzz_tokenizer
 *   ./fuzz_tokenizer -max_total_time=120 fuzz-corpus/
 *
 * FUZZ_VOCAB overrides the vocabulary (default tests/data/ggml-vocab-llama-spm.gguf).
 * The first input byte picks the options: bit 0 parse_special, bit 1 add_bos,
 * bit 2 strip_leading_space.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ms_tokenizer *tok;

static void fail(const char *why)
{
	fprintf(stderr, "fuzz_tokenizer: %s\n", why);
	abort();
}

static int valid_utf8(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i], lo = 0x80, hi = 0xBF;
		size_t need, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			need = 2;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 3;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 4;
		else
			return 0;
		if (c == 0xE0)
			lo = 0xA0;
		if (c == 0xED)
			hi = 0x9F;
		if (c == 0xF0)
			lo = 0x90;
		if (c == 0xF4)
			hi = 0x8F;
		if (i + need > n || p[i + 1] < lo || p[i + 1] > hi)
			return 0;
		for (k = 2; k < need; k++)
			if ((p[i + k] & 0xC0) != 0x80)
				return 0;
		i += need;
	}
	return 1;
}

static void load(void)
{
	const char *path = getenv("FUZZ_VOCAB");
	struct gguf *g = NULL;
	ms_err e = { 0, "" };

	if (!path)
		path = "tests/data/ggml-vocab-llama-spm.gguf";
	if (ms_gguf_open(path, &g, &e) || ms_tokenizer_load(g, &tok, &e)) {
		fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, e.msg);
		exit(1);
	}
	ms_gguf_close(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_detok d;
	char chunk[MS_DETOK_MAX_OUT];
	int32_t *ids = NULL;
	size_t n = 0, i, total = 0;
	char *text = NULL;
	size_t len = 0;
	bool special, bos, strip;
	ms_err e = { 0, "" };

	if (!tok)
		load();
	if (!size)
		return 0;
	special = data[0] & 1;
	bos = data[0] & 2;
	strip = data[0] & 4;
	data++;
	size--;
	if (ms_tokenize(tok, (const char *)data, size, bos, special, &ids, &n, &e))
		fail(e.msg);
	ms_detok_init(&d, tok, strip);
	for (i = 0; i <= n; i++) {
		int w;

		if (i < n && (ids[i] < 0 || (uint32_t)ids[i] >= ms_tok_n_vocab(tok)))
			fail("id out of range");
		w = i < n ? ms_detok_push(&d, ids[i], chunk, sizeof(chunk))
			  : ms_detok_flush(&d, chunk, sizeof(chunk));
		if (w < 0 || (size_t)w > sizeof(chunk))
			fail("detok push/flush failed");
		if (!valid_utf8(chunk, (size_t)w))
			fail("detok chunk is not valid UTF-8");
		total += (size_t)w;
	}
	if (ms_detokenize(tok, ids, n, &text, &len, &e))
		fail(e.msg);
	if (!valid_utf8(text, len) || text[len] != '\0')
		fail("ms_detokenize output is not valid UTF-8");
	if (!strip && total != len)
		fail("streamed and whole-sequence detokenization differ in length");
	/*
	 * Valid UTF-8 comes back exactly after the space prefix, unless it holds
	 * U+2581 itself (which decodes as a space, as in SentencePiece).
	 */
	if (!special && !bos && size && valid_utf8((const char *)data, size) &&
	    !memmem(data, size, "\xe2\x96\x81", 3) &&
	    (len != size + 1 || text[0] != ' ' || memcmp(text + 1, data, size) != 0))
		fail("round trip differs");
	free(text);
	free(ids);
	return 0;
}
