/*
 * msgpack maps packed from a table of pairs. A map's header carries its
 * count before the pairs, so a count written by hand goes stale the first
 * time a field is added or made optional; here the count is the table's.
 */
#ifndef MD_KVMAP_H
#define MD_KVMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

enum md_kv_kind {
	MD_KVK_SKIP,    /* not packed and not counted: an optional field that is absent */
	MD_KVK_STR,     /* NUL-terminated; NULL packs as "" */
	MD_KVK_STRN,
	MD_KVK_U64,
	MD_KVK_F64,
	MD_KVK_F32,     /* float32 on the wire */
	MD_KVK_BOOL,
	MD_KVK_IDS,     /* token ids: an array of uints */
	MD_KVK_MAP,     /* a nested table */
	MD_KVK_FN,      /* anything else: fn packs exactly one value */
};

typedef void (*md_kv_pack_fn)(msgpack_packer *pk, const void *arg);

struct md_kv {
	const char *key;
	enum md_kv_kind kind;
	union {
		const char *s;
		struct { const char *p; size_t n; } str;
		uint64_t u;
		double f64;
		float f32;
		bool b;
		struct { const int32_t *p; size_t n; } ids;
		struct { const struct md_kv *p; size_t n; } map;
		struct { md_kv_pack_fn fn; const void *arg; } fn;
	} v;
};

/* Entries of a table declared as an array; a pointer instead of an array does not compile. */
#define MD_KV_LEN(a) (sizeof(a) / sizeof((a)[0]) + \
	0 * sizeof(char[1 - 2 * __builtin_types_compatible_p(__typeof__(a), __typeof__(&(a)[0]))]))

#define MD_KV_STR(k, x)      ((struct md_kv){ .key = (k), .kind = MD_KVK_STR, .v.s = (x) })
#define MD_KV_STRN(k, x, n)  ((struct md_kv){ .key = (k), .kind = MD_KVK_STRN, .v.str = { (x), (n) } })
#define MD_KV_U64(k, x)      ((struct md_kv){ .key = (k), .kind = MD_KVK_U64, .v.u = (x) })
#define MD_KV_F64(k, x)      ((struct md_kv){ .key = (k), .kind = MD_KVK_F64, .v.f64 = (x) })
#define MD_KV_F32(k, x)      ((struct md_kv){ .key = (k), .kind = MD_KVK_F32, .v.f32 = (x) })
#define MD_KV_BOOL(k, x)     ((struct md_kv){ .key = (k), .kind = MD_KVK_BOOL, .v.b = (x) })
#define MD_KV_IDS(k, x, n)   ((struct md_kv){ .key = (k), .kind = MD_KVK_IDS, .v.ids = { (x), (n) } })
#define MD_KV_MAP_N(k, t, n) ((struct md_kv){ .key = (k), .kind = MD_KVK_MAP, .v.map = { (t), (n) } })
#define MD_KV_MAP(k, t)      MD_KV_MAP_N(k, t, MD_KV_LEN(t))
#define MD_KV_FN(k, f, a)    ((struct md_kv){ .key = (k), .kind = MD_KVK_FN, .v.fn = { (f), (a) } })
#define MD_KV_SKIP           ((struct md_kv){ .key = NULL, .kind = MD_KVK_SKIP })

/* Packs the n entries of kv as one map, its count being the entries that are not MD_KVK_SKIP. */
void md_pack_map(msgpack_packer *pk, const struct md_kv *kv, size_t n);

#endif
