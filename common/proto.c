/* The mistrald wire protocol: bounded msgpack message scanning, msgpack-rpc message classification, typed params lookups and packing helpers. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kvmap.h"
#include "proto.h"

#define PROTO_METHOD_MAX 64

/* ---- message boundaries ---------------------------------------------------- */

void mf_init(struct mf_scanner *s, size_t max_bytes, unsigned max_depth)
{
	memset(s, 0, sizeof(*s));
	s->max_bytes = max_bytes;
	/* deeper than msgpack-c's fixed unpack stack would scan fine and then fail to unpack */
	s->max_depth = max_depth > MF_UNPACK_DEPTH_LIMIT ? MF_UNPACK_DEPTH_LIMIT : max_depth;
	mf_reset(s);
}

void mf_reset(struct mf_scanner *s)
{
	s->off = 0;
	s->depth = 0;
	s->left[0] = 1;
	s->pending = 1;
}

static uint64_t be_read(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	unsigned i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Decodes a type byte: *hdr is the header size (type byte, length field,
 * ext type byte), *lenb the size of a big-endian length or count field that
 * follows the type byte (0: *payload is already known), *payload the data
 * bytes after the header or, for containers, the count, which *elem_mul
 * turns into objects (2 per map entry). Returns 0, or -EBADMSG for 0xc1.
 */
static int mf_type(uint8_t b, unsigned *hdr, unsigned *lenb, uint64_t *payload,
		   unsigned *elem_mul, bool *container)
{
	*lenb = 0;
	*payload = 0;
	*elem_mul = 0;
	*container = false;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		*hdr = 1;
		return 0;
	}
	if (b <= 0x9f) {	/* fixmap 0x80-0x8f, fixarray 0x90-0x9f */
		*hdr = 1;
		*container = true;
		*elem_mul = b <= 0x8f ? 2 : 1;
		*payload = b & 0x0f;
		return 0;
	}
	if (b <= 0xbf) {
		*hdr = 1;
		*payload = b & 0x1f;
		return 0;
	}
	switch (b) {
	case 0xc4: *lenb = 1; *hdr = 2; return 0;	/* bin8 */
	case 0xc5: *lenb = 2; *hdr = 3; return 0;
	case 0xc6: *lenb = 4; *hdr = 5; return 0;
	case 0xc7: *lenb = 1; *hdr = 3; return 0;	/* ext8: length, then type */
	case 0xc8: *lenb = 2; *hdr = 4; return 0;
	case 0xc9: *lenb = 4; *hdr = 6; return 0;
	case 0xca: *hdr = 5; return 0;			/* float32 */
	case 0xcb: *hdr = 9; return 0;
	case 0xcc: case 0xd0: *hdr = 2; return 0;	/* (u)int8 */
	case 0xcd: case 0xd1: *hdr = 3; return 0;
	case 0xce: case 0xd2: *hdr = 5; return 0;
	case 0xcf: case 0xd3: *hdr = 9; return 0;
	case 0xd4: *hdr = 2; *payload = 1; return 0;	/* fixext1: type byte, data */
	case 0xd5: *hdr = 2; *payload = 2; return 0;
	case 0xd6: *hdr = 2; *payload = 4; return 0;
	case 0xd7: *hdr = 2; *payload = 8; return 0;
	case 0xd8: *hdr = 2; *payload = 16; return 0;
	case 0xd9: *lenb = 1; *hdr = 2; return 0;	/* str8 */
	case 0xda: *lenb = 2; *hdr = 3; return 0;
	case 0xdb: *lenb = 4; *hdr = 5; return 0;
	case 0xdc: *lenb = 2; *hdr = 3; *container = true; *elem_mul = 1; return 0;
	case 0xdd: *lenb = 4; *hdr = 5; *container = true; *elem_mul = 1; return 0;
	case 0xde: *lenb = 2; *hdr = 3; *container = true; *elem_mul = 2; return 0;
	case 0xdf: *lenb = 4; *hdr = 5; *container = true; *elem_mul = 2; return 0;
	default: return -EBADMSG;			/* 0xc1 */
	}
}

/*
 * Invariant between calls: off + pending <= max_bytes, since every object
 * still expected needs at least one byte. Each check below keeps it, so a
 * declared length or count is rejected the moment its header is readable.
 * off only advances over whole items (a container header, or a scalar with
 * its payload), so a partly arrived item is re-decoded from its type byte on
 * the next call: O(1) per call, O(total) for any way of trickling the input.
 */
ssize_t mf_scan(struct mf_scanner *s, const uint8_t *buf, size_t len)
{
	while (s->pending) {
		unsigned hdr, lenb, mul;
		uint64_t payload, elems = 0, room;
		bool container;
		size_t avail;
		int rc;

		/* room for this item: everything still expected after it needs >= 1 byte */
		if ((uint64_t)s->off + s->pending > s->max_bytes)
			return -EMSGSIZE;
		room = (uint64_t)s->max_bytes - s->off - (s->pending - 1);
		if (s->off >= len)
			goto more;
		rc = mf_type(buf[s->off], &hdr, &lenb, &payload, &mul, &container);
		if (rc < 0)
			return rc;
		if (hdr > room)
			return -EMSGSIZE;
		avail = len - s->off;
		/* the length is checked as soon as it arrives (ext: before its type byte) */
		if (lenb) {
			if (avail < 1 + lenb)
				goto more;
			payload = be_read(buf + s->off + 1, lenb);
		}
		if (container) {
			elems = payload * mul;
			payload = 0;
			if (elems > room - hdr)
				return -EMSGSIZE;
			/* empty containers count too: the nesting is in the bytes */
			if (s->depth + 1 > s->max_depth || s->depth >= MF_MAX_DEPTH_LIMIT)
				return -ELOOP;
		} else if (payload > room - hdr) {
			return -EMSGSIZE;
		}
		if (avail < hdr || avail - hdr < payload)
			goto more;

		s->off += hdr + (size_t)payload;
		s->left[s->depth]--;
		s->pending = s->pending - 1 + elems;
		if (elems)
			s->left[++s->depth] = elems;
		while (s->depth && !s->left[s->depth])
			s->depth--;
	}
	return (ssize_t)s->off;
more:
	if (len >= s->max_bytes)
		return -EMSGSIZE;
	return 0;
}

/* ---- errors ------------------------------------------------------------------ */

static const char *const err_names[PE_COUNT] = {
	[PE_OK] = "ok",
	[PE_INVALID_REQUEST] = "invalid_request",
	[PE_INVALID_PARAMS] = "invalid_params",
	[PE_UNKNOWN_METHOD] = "unknown_method",
	[PE_CONTEXT_OVERFLOW] = "context_overflow",
	[PE_BUSY] = "busy",
	[PE_CANCELLED] = "cancelled",
	[PE_SHUTTING_DOWN] = "shutting_down",
	[PE_LOADING] = "loading",
	[PE_TOO_LARGE] = "too_large",
	[PE_INTERNAL] = "internal",
};

const char *proto_err_name(enum proto_err e)
{
	if ((unsigned)e >= PE_COUNT)
		return err_names[PE_INTERNAL];
	return err_names[e];
}

enum proto_err proto_err_from_name(const char *s, size_t n)
{
	unsigned i;

	if (!s)
		return PE_INTERNAL;
	for (i = 0; i < PE_COUNT; i++)
		if (strlen(err_names[i]) == n && !memcmp(err_names[i], s, n))
			return (enum proto_err)i;
	return PE_INTERNAL;
}

/* ---- parsing ------------------------------------------------------------------ */

__attribute__((format(printf, 3, 4)))
static void say(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	if (!msg || !msglen)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
}

static bool get_msgid(const msgpack_object *o, uint32_t *id)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX)
		return false;
	*id = (uint32_t)o->via.u64;
	return true;
}

static enum proto_err get_method(const msgpack_object *o, struct proto_msg *m, char *msg,
				 size_t msglen)
{
	if (o->type != MSGPACK_OBJECT_STR) {
		say(msg, msglen, "method must be a string");
		return PE_INVALID_REQUEST;
	}
	if (o->via.str.size > PROTO_METHOD_MAX) {
		say(msg, msglen, "method name longer than %d bytes", PROTO_METHOD_MAX);
		return PE_INVALID_REQUEST;
	}
	if (!utf8_valid(o->via.str.ptr, o->via.str.size)) {
		say(msg, msglen, "method name is not valid UTF-8");
		return PE_INVALID_REQUEST;
	}
	m->method = o->via.str.ptr;
	m->method_len = o->via.str.size;
	return PE_OK;
}

enum proto_err proto_parse(const msgpack_object *o, struct proto_msg *m, char *msg, size_t msglen)
{
	const msgpack_object *a, *p;
	uint32_t n;
	enum proto_err e;

	memset(m, 0, sizeof(*m));
	m->type = -1;
	say(msg, msglen, "ok");
	if (!o || o->type != MSGPACK_OBJECT_ARRAY) {
		say(msg, msglen, "message is not an array");
		return PE_INVALID_REQUEST;
	}
	a = o->via.array.ptr;
	n = o->via.array.size;
	/* an error for a malformed message can still be addressed when its id reads */
	if (n >= 2 && get_msgid(&a[1], &m->msgid))
		m->has_msgid = true;
	if (n == 0 || a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > MSG_NOTIFICATION) {
		say(msg, msglen, "message type must be 0, 1 or 2");
		return PE_INVALID_REQUEST;
	}
	m->type = (int)a[0].via.u64;

	switch (m->type) {
	case MSG_REQUEST:
		if (n != 4) {
			say(msg, msglen, "a request is an array of 4 elements, not %" PRIu32, n);
			return PE_INVALID_REQUEST;
		}
		if (!m->has_msgid) {
			say(msg, msglen, "msgid must be an unsigned integer below 2^32");
			return PE_INVALID_REQUEST;
		}
		e = get_method(&a[2], m, msg, msglen);
		if (e != PE_OK)
			return e;
		p = &a[3];
		if (p->type != MSGPACK_OBJECT_ARRAY) {
			say(msg, msglen, "params must be an array");
			return PE_INVALID_REQUEST;
		}
		if (p->via.array.size > 1) {
			say(msg, msglen, "params must hold at most one element, not %" PRIu32,
			    p->via.array.size);
			return PE_INVALID_REQUEST;
		}
		if (p->via.array.size == 1 && p->via.array.ptr[0].type != MSGPACK_OBJECT_MAP &&
		    p->via.array.ptr[0].type != MSGPACK_OBJECT_NIL) {
			say(msg, msglen, "params element must be a map");
			return PE_INVALID_REQUEST;
		}
		m->params = p;
		break;
	case MSG_RESPONSE:
		if (n != 4) {
			say(msg, msglen, "a response is an array of 4 elements, not %" PRIu32, n);
			return PE_INVALID_REQUEST;
		}
		/* nil msgid: the peer could not tell which request failed */
		if (!m->has_msgid && a[1].type != MSGPACK_OBJECT_NIL) {
			say(msg, msglen, "msgid must be an unsigned integer below 2^32 or nil");
			return PE_INVALID_REQUEST;
		}
		m->error = &a[2];
		m->result = &a[3];
		break;
	default:
		m->has_msgid = false;	/* notifications get no response */
		if (n != 3) {
			say(msg, msglen, "a notification is an array of 3 elements, not %" PRIu32, n);
			return PE_INVALID_REQUEST;
		}
		e = get_method(&a[1], m, msg, msglen);
		if (e != PE_OK)
			return e;
		if (a[2].type != MSGPACK_OBJECT_ARRAY) {
			say(msg, msglen, "params must be an array");
			return PE_INVALID_REQUEST;
		}
		m->params = &a[2];
		break;
	}
	return PE_OK;
}

const msgpack_object *proto_params(const struct proto_msg *m)
{
	const msgpack_object *p;

	if (!m || m->type != MSG_REQUEST || !m->params || m->params->type != MSGPACK_OBJECT_ARRAY ||
	    m->params->via.array.size < 1)
		return NULL;
	p = &m->params->via.array.ptr[0];
	return p->type == MSGPACK_OBJECT_MAP ? p : NULL;
}

bool proto_method_is(const struct proto_msg *m, const char *s)
{
	size_t n = strlen(s);

	return m->method && m->method_len == n && !memcmp(m->method, s, n);
}

/* ---- typed params --------------------------------------------------------------- */

const msgpack_object *proto_find(const msgpack_object *map, const char *key)
{
	size_t n;
	uint32_t i;

	if (!map || map->type != MSGPACK_OBJECT_MAP || !key)
		return NULL;
	n = strlen(key);
	/* linear: params maps are small and a client gains nothing from a big one */
	for (i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
		    (!n || !memcmp(k->via.str.ptr, key, n)))
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

int proto_get_bool(const msgpack_object *map, const char *key, bool *out, char *msg, size_t msglen)
{
	const msgpack_object *v = proto_find(map, key);

	if (!v)
		return 0;
	if (v->type != MSGPACK_OBJECT_BOOLEAN) {
		say(msg, msglen, "field '%s': must be a boolean", key);
		return -1;
	}
	*out = v->via.boolean;
	return 1;
}

int proto_get_uint(const msgpack_object *map, const char *key, uint64_t max, uint64_t *out,
		   char *msg, size_t msglen)
{
	const msgpack_object *v = proto_find(map, key);

	if (!v)
		return 0;
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		say(msg, msglen, "field '%s': must not be negative", key);
		return -1;
	}
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		say(msg, msglen, "field '%s': must be an unsigned integer", key);
		return -1;
	}
	if (v->via.u64 > max) {
		say(msg, msglen, "field '%s': %" PRIu64 " is out of range (at most %" PRIu64 ")", key,
		    v->via.u64, max);
		return -1;
	}
	*out = v->via.u64;
	return 1;
}

int proto_get_int(const msgpack_object *map, const char *key, int64_t min, int64_t max,
		  int64_t *out, char *msg, size_t msglen)
{
	const msgpack_object *v = proto_find(map, key);
	int64_t x;

	if (!v)
		return 0;
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (v->via.u64 > (uint64_t)INT64_MAX || (int64_t)v->via.u64 > max) {
			say(msg, msglen, "field '%s': %" PRIu64 " is out of range [%" PRId64 ", %" PRId64 "]",
			    key, v->via.u64, min, max);
			return -1;
		}
		x = (int64_t)v->via.u64;
	} else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		x = v->via.i64;
	} else {
		say(msg, msglen, "field '%s': must be an integer", key);
		return -1;
	}
	if (x < min || x > max) {
		say(msg, msglen, "field '%s': %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
		    key, x, min, max);
		return -1;
	}
	*out = x;
	return 1;
}

int proto_get_float(const msgpack_object *map, const char *key, double min, double max,
		    double *out, char *msg, size_t msglen)
{
	const msgpack_object *v = proto_find(map, key);
	double x;

	if (!v)
		return 0;
	switch (v->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		x = (double)v->via.u64;
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		x = (double)v->via.i64;
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		x = v->via.f64;
		break;
	default:
		say(msg, msglen, "field '%s': must be a number", key);
		return -1;
	}
	if (!isfinite(x)) {
		say(msg, msglen, "field '%s': must be finite", key);
		return -1;
	}
	if (x < min || x > max) {
		say(msg, msglen, "field '%s': %g is out of range [%g, %g]", key, x, min, max);
		return -1;
	}
	*out = x;
	return 1;
}

int proto_get_str(const msgpack_object *map, const char *key, size_t max_len,
		  const char **p, size_t *len, char *msg, size_t msglen)
{
	const msgpack_object *v = proto_find(map, key);

	if (!v)
		return 0;
	if (v->type != MSGPACK_OBJECT_STR) {
		say(msg, msglen, "field '%s': must be a string", key);
		return -1;
	}
	if (v->via.str.size > max_len) {
		say(msg, msglen, "field '%s': longer than %zu bytes", key, max_len);
		return -1;
	}
	if (!utf8_valid(v->via.str.ptr, v->via.str.size)) {
		say(msg, msglen, "field '%s': not valid UTF-8", key);
		return -1;
	}
	*p = v->via.str.ptr;
	*len = v->via.str.size;
	return 1;
}

int proto_get_array(const msgpack_object *map, const char *key, size_t max_n,
		    const msgpack_object_array **out, char *msg, size_t msglen)
{
	const msgpack_object *v = proto_find(map, key);

	if (!v)
		return 0;
	if (v->type != MSGPACK_OBJECT_ARRAY) {
		say(msg, msglen, "field '%s': must be an array", key);
		return -1;
	}
	if (v->via.array.size > max_n) {
		say(msg, msglen, "field '%s': more than %zu elements", key, max_n);
		return -1;
	}
	*out = &v->via.array;
	return 1;
}

/* ---- sampling parameters ---------------------------------------------------------- */

const struct proto_sampling_param proto_sampling[PS_COUNT] = {
	[PS_MAX_TOKENS] = { "max_tokens", false },
	[PS_TEMPERATURE] = { "temperature", true },
	[PS_TOP_K] = { "top_k", false },
	[PS_TOP_P] = { "top_p", true },
	[PS_MIN_P] = { "min_p", true },
	[PS_SEED] = { "seed", false },
	[PS_REPETITION_PENALTY] = { "repetition_penalty", true },
	[PS_FREQUENCY_PENALTY] = { "frequency_penalty", true },
	[PS_PRESENCE_PENALTY] = { "presence_penalty", true },
	[PS_LOGPROBS] = { "logprobs", false },
};

/* ---- packing ---------------------------------------------------------------------- */

void proto_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	if (n)
		msgpack_pack_str_body(pk, s, n);
}

void proto_pack_cstr(msgpack_packer *pk, const char *s)
{
	proto_pack_str(pk, s ? s : "", s ? strlen(s) : 0);
}

/*
 * Packs s with every invalid byte replaced by U+FFFD, in pieces and without
 * a copy: error messages may quote client input, and every str the daemon
 * sends must be valid UTF-8.
 */
static void pack_str_lossy(msgpack_packer *pk, const char *s, size_t n)
{
	static const char fffd[3] = { '\xef', '\xbf', '\xbd' };
	const unsigned char *p = (const unsigned char *)s;
	size_t i, k, out = 0, run;

	for (i = 0; i < n; i += k) {
		k = utf8_seq(p + i, n - i);
		out += k ? k : sizeof(fffd);
		if (!k)
			k = 1;
	}
	msgpack_pack_str(pk, out);
	for (i = 0; i < n;) {
		for (run = i; run < n && (k = utf8_seq(p + run, n - run)); run += k)
			;
		if (run > i)
			msgpack_pack_str_body(pk, s + i, run - i);
		if (run < n) {
			msgpack_pack_str_body(pk, fffd, sizeof(fffd));
			run++;
		}
		i = run;
	}
}

void proto_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint32(pk, MSG_REQUEST);
	msgpack_pack_uint32(pk, msgid);
	proto_pack_cstr(pk, method);
	msgpack_pack_array(pk, 1);
}

void proto_pack_result_head(msgpack_packer *pk, uint32_t msgid)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint32(pk, MSG_RESPONSE);
	msgpack_pack_uint32(pk, msgid);
	msgpack_pack_nil(pk);
}

static void pack_message(msgpack_packer *pk, const void *message)
{
	pack_str_lossy(pk, message, strlen(message));
}

void proto_pack_error(msgpack_packer *pk, bool has_msgid, uint32_t msgid, enum proto_err e,
		      const char *message)
{
	const struct proto_kv err[] = {
		PROTO_KV_STR("code", proto_err_name(e)),
		PROTO_KV_FN("message", pack_message, message ? message : proto_err_name(e)),
	};

	msgpack_pack_array(pk, 4);
	msgpack_pack_uint32(pk, MSG_RESPONSE);
	if (has_msgid)
		msgpack_pack_uint32(pk, msgid);
	else
		msgpack_pack_nil(pk);
	proto_pack_map(pk, err, PROTO_KV_LEN(err));
	msgpack_pack_nil(pk);
}

void proto_pack_notification_head(msgpack_packer *pk, const char *method, uint32_t n_params)
{
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint32(pk, MSG_NOTIFICATION);
	proto_pack_cstr(pk, method);
	msgpack_pack_array(pk, n_params);
}

void proto_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
	proto_pack_cstr(pk, key);
	proto_pack_cstr(pk, value);
}

void proto_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value)
{
	proto_pack_cstr(pk, key);
	msgpack_pack_uint64(pk, value);
}

void proto_pack_kv_f64(msgpack_packer *pk, const char *key, double value)
{
	proto_pack_cstr(pk, key);
	msgpack_pack_double(pk, value);
}

void proto_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
	proto_pack_cstr(pk, key);
	if (value)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}
