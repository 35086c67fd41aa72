/* msgpack maps packed from a table of pairs, the header's count taken from the table. */
#include "kvmap.h"
#include "proto.h"

static void pack_ids(msgpack_packer *pk, const int32_t *ids, size_t n)
{
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_uint32(pk, (uint32_t)ids[i]);
}

void proto_pack_map(msgpack_packer *pk, const struct proto_kv *kv, size_t n)
{
	uint32_t count = 0;

	for (size_t i = 0; i < n; i++)
		count += kv[i].kind != PROTO_KVK_SKIP;
	msgpack_pack_map(pk, count);
	for (size_t i = 0; i < n; i++) {
		const struct proto_kv *e = &kv[i];

		if (e->kind == PROTO_KVK_SKIP)
			continue;
		proto_pack_cstr(pk, e->key);
		switch (e->kind) {
		case PROTO_KVK_STR:
			proto_pack_cstr(pk, e->v.s);
			break;
		case PROTO_KVK_STRN:
			proto_pack_str(pk, e->v.str.p, e->v.str.n);
			break;
		case PROTO_KVK_U64:
			msgpack_pack_uint64(pk, e->v.u);
			break;
		case PROTO_KVK_I64:
			msgpack_pack_int64(pk, e->v.i);
			break;
		case PROTO_KVK_F64:
			msgpack_pack_double(pk, e->v.f64);
			break;
		case PROTO_KVK_F32:
			msgpack_pack_float(pk, e->v.f32);
			break;
		case PROTO_KVK_BOOL:
			if (e->v.b)
				msgpack_pack_true(pk);
			else
				msgpack_pack_false(pk);
			break;
		case PROTO_KVK_IDS:
			pack_ids(pk, e->v.ids.p, e->v.ids.n);
			break;
		case PROTO_KVK_MAP:
			proto_pack_map(pk, e->v.map.p, e->v.map.n);
			break;
		case PROTO_KVK_FN:
			e->v.fn.fn(pk, e->v.fn.arg);
			break;
		case PROTO_KVK_SKIP:
			break;
		}
	}
}
