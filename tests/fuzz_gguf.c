/* libFuzzer entry point for the GGUF reader: any input must parse or fail cleanly, never read out of bounds. */
/*
 * Not built by default. From the source tree:
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *         -Iengine tests/fuzz_gguf.c engine/gguf.c engine/quant.c engine/error.c \
 *         -lm -o fuzz_gguf
 *   mkdir -p corpus && cp tests/data/stories260K.gguf corpus/
 *   ./fuzz_gguf -max_len=65536 -max_total_time=120 corpus
 *
 * Crash inputs belong in tests/test_gguf.c as regression cases.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads everything the parser vouched for, so that ASan sees any bound it got wrong. */
static void touch(const struct gguf *g)
{
	volatile uint8_t sink = 0;
	uint64_t i, j;

	for (i = 0; i < g->n_kv; i++) {
		const struct gguf_kv *kv = &g->kv[i];

		sink ^= (uint8_t)kv->key.p[kv->key.n - 1];
		if (kv->val.type == GGUF_STRING && kv->val.v.s.n)
			sink ^= (uint8_t)kv->val.v.s.p[kv->val.v.s.n - 1];
		if (kv->val.type == GGUF_ARRAY && kv->val.v.a.type == GGUF_STRING) {
			const uint8_t *cur = kv->val.v.a.data;

			for (j = 0; j < kv->val.v.a.n; j++) {
				struct gguf_str s = ms_gguf_arr_str(&cur);

				if (s.n)
					sink ^= (uint8_t)s.p[s.n - 1];
			}
		} else if (kv->val.type == GGUF_ARRAY && kv->val.v.a.n) {
			size_t esz = ms_gguf_vtype_size(kv->val.v.a.type);

			sink ^= kv->val.v.a.data[kv->val.v.a.n * esz - 1];
		}
	}
	for (i = 0; i < g->n_tensors; i++) {
		const uint8_t *p = g->tensors[i].data;

		sink ^= p[0];
		sink ^= p[g->tensors[i].nbytes - 1];
		(void)ms_gguf_find_tensor(g, g->tensors[i].name);
	}
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gguf *g = NULL;
	ms_err err;
	uint32_t u;

	if (ms_gguf_open_mem(data, size, &g, &err) == 0) {
		touch(g);
		(void)ms_gguf_get_u32(g, "general.alignment", &u, &err);
		ms_gguf_close(g);
	} else if (!err.msg[0] || err.code >= 0) {
		__builtin_trap();	/* every failure must say why */
	}
	return 0;
}
