/*
 * libFuzzer target for the wire protocol: arbitrary bytes through mf_scan
 * (whole and in chunks, which must agree), and each complete message
 * through msgpack-c, proto_parse and every params getter, as the daemon
 * does. Scanner and msgpack-c must agree on every message boundary.
 * Not built by make. From the source tree:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE \
 *     -I/usr/include -Icommon tests/fuzz_proto.c common/proto.c -lmsgpackc -o fuzz_proto
 *   ./fuzz_proto -max_total_time=120 fuzz-corpus/
 *
 * The first input byte picks the limits: bits 0-4 max_depth (0..31), bits
 * 5-7 max_bytes (16 << (2 * n) bytes: 16 .. 256 KiB); the rest is the stream.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why, size_t at)
{
	fprintf(stderr, "fuzz_proto: %s (message at offset %zu)\n", why, at);
	abort();
}

/* The same stream fed in chunks of varying size gives the same result. */
static ssize_t scan_chunked(const uint8_t *b, size_t n, size_t max_bytes, unsigned max_depth,
			    unsigned seed)
{
	struct mf_scanner s;
	size_t len = 0;
	ssize_t r;

	mf_init(&s, max_bytes, max_depth);
	do {
		seed = seed * 1103515245u + 12345u;
		len += 1 + ((seed >> 16) & 7);
		if (len > n)
			len = n;
		r = mf_scan(&s, b, len);
		if (r)
			return r;
	} while (len < n);
	return 0;
}

static void exercise_getters(const msgpack_object *map)
{
	static const char *const keys[] = {
		"prompt", "tokens", "raw", "system", "stream", "max_tokens", "temperature", "top_k",
		"top_p", "seed", "stop", "logprobs", "messages", "text", "id", "",
	};
	char why[128];
	bool b;
	uint64_t u;
	int64_t i;
	double d;
	const char *s;
	size_t n;
	const msgpack_object_array *a;

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		const char *key = keys[k];

		proto_get_bool(map, key, &b, why, sizeof(why));
		proto_get_uint(map, key, 4096, &u, why, sizeof(why));
		proto_get_int(map, key, -2, 40, &i, why, sizeof(why));
		if (proto_get_float(map, key, 0, 100, &d, why, sizeof(why)) == 1 && !(d >= 0 && d <= 100))
			fail("float out of its range accepted", 0);
		if (proto_get_str(map, key, 256, &s, &n, why, sizeof(why)) == 1 && !utf8_valid(s, n))
			fail("invalid UTF-8 str accepted", 0);
		if (proto_get_array(map, key, 16, &a, why, sizeof(why)) == 1) {
			for (uint32_t j = 0; j < a->size; j++)
				if (a->ptr[j].type == MSGPACK_OBJECT_MAP)
					exercise_getters(&a->ptr[j]);
		}
	}
}

static void handle(const uint8_t *b, size_t n, size_t at)
{
	msgpack_unpacked up;
	struct proto_msg m;
	size_t off = 0;
	char why[128];
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, (const char *)b, n, &off) != MSGPACK_UNPACK_SUCCESS || off != n)
		fail("scanner and msgpack-c disagree on a complete message", at);
	why[0] = '\0';
	if (proto_parse(&up.data, &m, why, sizeof(why)) == PE_OK) {
		exercise_getters(proto_params(&m));
		if (m.type == MSG_REQUEST && !utf8_valid(m.method, m.method_len))
			fail("invalid UTF-8 method accepted", at);
	} else if (!why[0] || !utf8_valid(why, strnlen(why, sizeof(why)))) {
		fail("no reason for a rejected message", at);
	}
	/* the daemon answers with the reason; whatever it says must pack as valid UTF-8 */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_error(&pk, m.has_msgid, m.msgid, PE_INVALID_REQUEST, (const char *)b);
	msgpack_sbuffer_destroy(&sb);
	msgpack_unpacked_destroy(&up);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mf_scanner s;
	size_t max_bytes, at = 0;
	unsigned max_depth;
	ssize_t r, rc;
	uint8_t *copy;

	if (size < 1)
		return 0;
	max_depth = data[0] & 31;
	max_bytes = (size_t)16 << (2 * (data[0] >> 5));
	data++;
	size--;
	/* a private NUL-terminated copy: handle() also packs the bytes as an error message */
	copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = 0;

	mf_init(&s, max_bytes, max_depth);
	while (at < size) {
		r = mf_scan(&s, copy + at, size - at);
		rc = scan_chunked(copy + at, size - at, max_bytes, max_depth, (unsigned)at);
		if (r != rc)
			fail("chunked scan differs from whole scan", at);
		if (r == 0) {
			/* needs more: msgpack-c must not see a whole object either */
			msgpack_unpacked up;
			size_t off = 0;

			if (size - at >= max_bytes)
				fail("incomplete message at max_bytes not rejected", at);
			msgpack_unpacked_init(&up);
			if (msgpack_unpack_next(&up, (const char *)copy + at, size - at, &off) !=
			    MSGPACK_UNPACK_CONTINUE)
				fail("scanner wants more, msgpack-c does not", at);
			msgpack_unpacked_destroy(&up);
			break;
		}
		if (r < 0) {
			if (r != -EMSGSIZE && r != -ELOOP && r != -EBADMSG)
				fail("unexpected error code", at);
			/* bytes up to the 0xc1 were fine, so msgpack-c must fail too */
			if (r == -EBADMSG) {
				msgpack_unpacked up;
				size_t off = 0;

				msgpack_unpacked_init(&up);
				if (msgpack_unpack_next(&up, (const char *)copy + at, size - at, &off) !=
				    MSGPACK_UNPACK_PARSE_ERROR)
					fail("scanner says 0xc1, msgpack-c does not", at);
				msgpack_unpacked_destroy(&up);
			}
			break;
		}
		if ((size_t)r > max_bytes || (size_t)r > size - at)
			fail("message length beyond the limit or the input", at);
		handle(copy + at, (size_t)r, at);
		at += (size_t)r;
		mf_reset(&s);
	}
	free(copy);
	return 0;
}
