/* Unit tests for the table-packed msgpack maps of common/: counts from the table, bytes as hand-packed ones. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <msgpack.h>

#include "kvmap.h"
#include "proto.h"
#include "tap.h"

struct buf {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static void buf_init(struct buf *b)
{
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static bool buf_eq(const struct buf *a, const struct buf *b)
{
	return a->sb.size == b->sb.size && !memcmp(a->sb.data, b->sb.data, a->sb.size);
}

static void pack_two(msgpack_packer *pk, const void *arg)
{
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, *(const uint32_t *)arg);
	msgpack_pack_nil(pk);
}

/* Every kind of pair against the same map packed the way the daemon used to, count and all. */
static void test_every_kind(void)
{
	static const int32_t ids[] = { 1, 15043, 0 };
	const uint32_t seven = 7;
	const struct proto_kv inner[] = { PROTO_KV_U64("a", 1), PROTO_KV_BOOL("b", false) };
	const struct proto_kv kv[] = {
		PROTO_KV_STR("name", "stories"),
		PROTO_KV_STR("null", NULL),
		PROTO_KV_STRN("text", "Hi\0there", 8),
		PROTO_KV_U64("small", 5),
		PROTO_KV_U64("big", 1ull << 40),
		PROTO_KV_F64("ms", 1.5),
		PROTO_KV_F32("eps", 1e-5f),
		PROTO_KV_BOOL("locked", true),
		PROTO_KV_IDS("tokens", ids, 3),
		PROTO_KV_MAP("inner", inner),
		PROTO_KV_FN("fn", pack_two, &seven),
	};
	struct buf got, want;

	buf_init(&got);
	proto_pack_map(&got.pk, kv, PROTO_KV_LEN(kv));
	buf_init(&want);
	msgpack_pack_map(&want.pk, 11);
	proto_pack_kv_str(&want.pk, "name", "stories");
	proto_pack_kv_str(&want.pk, "null", NULL);
	proto_pack_cstr(&want.pk, "text");
	proto_pack_str(&want.pk, "Hi\0there", 8);
	proto_pack_kv_u64(&want.pk, "small", 5);
	proto_pack_kv_u64(&want.pk, "big", 1ull << 40);
	proto_pack_kv_f64(&want.pk, "ms", 1.5);
	proto_pack_cstr(&want.pk, "eps");
	msgpack_pack_float(&want.pk, 1e-5f);
	proto_pack_kv_bool(&want.pk, "locked", true);
	proto_pack_cstr(&want.pk, "tokens");
	msgpack_pack_array(&want.pk, 3);
	msgpack_pack_uint32(&want.pk, 1);
	msgpack_pack_uint32(&want.pk, 15043);
	msgpack_pack_uint32(&want.pk, 0);
	proto_pack_cstr(&want.pk, "inner");
	msgpack_pack_map(&want.pk, 2);
	proto_pack_kv_u64(&want.pk, "a", 1);
	proto_pack_kv_bool(&want.pk, "b", false);
	proto_pack_cstr(&want.pk, "fn");
	msgpack_pack_array(&want.pk, 2);
	msgpack_pack_uint32(&want.pk, 7);
	msgpack_pack_nil(&want.pk);
	ok(buf_eq(&got, &want), "a table of every kind packs byte for byte as the hand-counted map (%zu bytes)",
	   got.sb.size);
	msgpack_sbuffer_destroy(&got.sb);
	msgpack_sbuffer_destroy(&want.sb);
}

/* Skipped pairs are neither packed nor counted, wherever they sit. */
static void test_skip(void)
{
	for (int mask = 0; mask < 8; mask++) {
		const struct proto_kv kv[] = {
			mask & 1 ? PROTO_KV_U64("a", 1) : PROTO_KV_SKIP,
			PROTO_KV_U64("b", 2),
			mask & 2 ? PROTO_KV_U64("c", 3) : PROTO_KV_SKIP,
			mask & 4 ? PROTO_KV_U64("d", 4) : PROTO_KV_SKIP,
		};
		struct buf got, want;
		uint32_t n = 1 + !!(mask & 1) + !!(mask & 2) + !!(mask & 4);

		buf_init(&got);
		proto_pack_map(&got.pk, kv, PROTO_KV_LEN(kv));
		buf_init(&want);
		msgpack_pack_map(&want.pk, n);
		if (mask & 1)
			proto_pack_kv_u64(&want.pk, "a", 1);
		proto_pack_kv_u64(&want.pk, "b", 2);
		if (mask & 2)
			proto_pack_kv_u64(&want.pk, "c", 3);
		if (mask & 4)
			proto_pack_kv_u64(&want.pk, "d", 4);
		ok(buf_eq(&got, &want), "skip mask %d: a map of %u pairs", mask, n);
		msgpack_sbuffer_destroy(&got.sb);
		msgpack_sbuffer_destroy(&want.sb);
	}
}

/* The header's width follows the count: fixmap up to 15 pairs, map16 from 16 (info has 18). */
static void test_widths(void)
{
	struct proto_kv kv[18];
	struct buf b;

	for (size_t i = 0; i < 18; i++)
		kv[i] = PROTO_KV_BOOL("k", true);
	buf_init(&b);
	proto_pack_map(&b.pk, kv, 15);
	ok(b.sb.size == 1 + 15 * 3 && (unsigned char)b.sb.data[0] == 0x8f, "15 pairs: fixmap header 0x8f");
	msgpack_sbuffer_destroy(&b.sb);
	buf_init(&b);
	proto_pack_map(&b.pk, kv, 18);
	ok(b.sb.size == 3 + 18 * 3 && (unsigned char)b.sb.data[0] == 0xde && b.sb.data[1] == 0 && b.sb.data[2] == 18,
	   "18 pairs: map16 header de 00 12");
	msgpack_sbuffer_destroy(&b.sb);
	buf_init(&b);
	proto_pack_map(&b.pk, kv, 0);
	ok(b.sb.size == 1 && (unsigned char)b.sb.data[0] == 0x80, "an empty table: an empty map");
	msgpack_sbuffer_destroy(&b.sb);
}

/* Signed ints take msgpack's smallest form, as msgpack_pack_int64 does (the client's int options). */
static void test_i64(void)
{
	static const int64_t vals[] = { 0, 5, -1, -33, 200, -40000, INT64_MIN, INT64_MAX };

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		const struct proto_kv kv[] = { PROTO_KV_I64("seed", vals[i]) };
		struct buf got, want;

		buf_init(&got);
		proto_pack_map(&got.pk, kv, PROTO_KV_LEN(kv));
		buf_init(&want);
		msgpack_pack_map(&want.pk, 1);
		proto_pack_cstr(&want.pk, "seed");
		msgpack_pack_int64(&want.pk, vals[i]);
		ok(buf_eq(&got, &want), "int %lld packs as msgpack_pack_int64 does", (long long)vals[i]);
		msgpack_sbuffer_destroy(&got.sb);
		msgpack_sbuffer_destroy(&want.sb);
	}
}

int main(void)
{
	test_every_kind();
	test_skip();
	test_widths();
	test_i64();
	return done_testing();
}
