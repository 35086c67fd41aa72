/*
 * msgpack maps packed from a table of pairs. A map's header carries its
 * count before the pairs, so a count written by hand goes stale the first
 * time a field is added or made optional; here the count is the table's.
 * In common/ so that the daemon's replies, the client's requests and the
 * protocol's own error objects share it.
 */
#ifndef MS_KVMAP_H
#define MS_KVMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

enum proto_kv_kind {
	PROTO_KVK_SKIP,    /* not packed and not counted: an optional field that is absent */
	PROTO_KVK_STR,     /* NUL-terminated; NULL packs as "" */
	PROTO_KVK_STRN,
	PROTO_KVK_U64,
	PROTO_KVK_I64,     /* msgpack's smallest int form: a value >= 0 packs as a uint would */
	PROTO_KVK_F64,
	PROTO_KVK_F32,     /* float32 on the wire */
	PROTO_KVK_BOOL,
	PROTO_KVK_IDS,     /* token ids: an array of uints */
	PROTO_KVK_MAP,     /* a nested table */
	PROTO_KVK_FN,      /* anything else: fn packs exactly one value */
};

typedef void (*proto_kv_pack_fn)(msgpack_packer *pk, const void *arg);

struct proto_kv {
	const char *key;
	enum proto_kv_kind kind;
	union {
		const char *s;
		struct { const char *p; size_t n; } str;
		uint64_t u;
		int64_t i;
		double f64;
		float f32;
		bool b;
		struct { const int32_t *p; size_t n; } ids;
		struct { const struct proto_kv *p; size_t n; } map;
		struct { proto_kv_pack_fn fn; const void *arg; } fn;
	} v;
};

/* Entries of a table declared as an array; a pointer instead of an array does not compile. */
#define PROTO_KV_LEN(a) (sizeof(a) / sizeof((a)[0]) + \
	0 * sizeof(char[1 - 2 * __builtin_types_compatible_p(__typeof__(a), __typeof__(&(a)[0]))]))

#define PROTO_KV_STR(k, x)      ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_STR, .v.s = (x) })
#define PROTO_KV_STRN(k, x, n)  ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_STRN, .v.str = { (x), (n) } })
#define PROTO_KV_U64(k, x)      ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_U64, .v.u = (x) })
#define PROTO_KV_I64(k, x)      ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_I64, .v.i = (x) })
#define PROTO_KV_F64(k, x)      ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_F64, .v.f64 = (x) })
#define PROTO_KV_F32(k, x)      ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_F32, .v.f32 = (x) })
#define PROTO_KV_BOOL(k, x)     ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_BOOL, .v.b = (x) })
#define PROTO_KV_IDS(k, x, n)   ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_IDS, .v.ids = { (x), (n) } })
#define PROTO_KV_MAP_N(k, t, n) ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_MAP, .v.map = { (t), (n) } })
#define PROTO_KV_MAP(k, t)      PROTO_KV_MAP_N(k, t, PROTO_KV_LEN(t))
#define PROTO_KV_FN(k, f, a)    ((struct proto_kv){ .key = (k), .kind = PROTO_KVK_FN, .v.fn = { (f), (a) } })
#define PROTO_KV_SKIP           ((struct proto_kv){ .key = NULL, .kind = PROTO_KVK_SKIP })

/* Packs the n entries of kv as one map, its count being the entries that are not PROTO_KVK_SKIP. */
void proto_pack_map(msgpack_packer *pk, const struct proto_kv *kv, size_t n);

#endif
