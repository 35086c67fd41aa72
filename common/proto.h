/* The mistrald wire protocol: msgpack-rpc framing with limits, request parsing, typed params, packing helpers. */
#ifndef MS_PROTO_H
#define MS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <msgpack.h>

#include "utf8.h"   /* utf8_valid: the strings of the protocol are UTF-8 */

/* ---- message boundaries, checked before msgpack-c allocates anything ---- */

#define MF_MAX_DEPTH_LIMIT 64   /* hard ceiling for max_depth */
/*
 * msgpack-c's C unpacker fails (MSGPACK_UNPACK_NOMEM_ERROR) on containers
 * nested deeper than its fixed stack: mf_init() clamps max_depth to this so
 * that whatever the scanner accepts also unpacks (tests/test_proto checks
 * the library's limit).
 */
#define MF_UNPACK_DEPTH_LIMIT 32   /* MSGPACK_EMBED_STACK_SIZE, compiled into libmsgpackc */

/*
 * Resumable scanner that finds where one msgpack object ends without
 * allocating: every declared count and length is checked against the size
 * cap as soon as its header is read, so a 5-byte header claiming 4 GiB is
 * rejected at once instead of being buffered for.
 */
struct mf_scanner {
	size_t max_bytes;      /* a message may not be longer than this */
	unsigned max_depth;    /* nesting of arrays/maps allowed (1 = a flat array; at most MF_UNPACK_DEPTH_LIMIT) */
	size_t off;            /* bytes of the current message already scanned */
	unsigned depth;        /* open containers */
	uint64_t pending;      /* objects still expected, all levels (0: complete) */
	uint64_t left[MF_MAX_DEPTH_LIMIT + 1];   /* objects still expected per open container */
};

void mf_init(struct mf_scanner *s, size_t max_bytes, unsigned max_depth);
/* Forget the current message (call after consuming a complete one). */
void mf_reset(struct mf_scanner *s);
/*
 * buf[0..len) holds the unconsumed input, starting at the current message's
 * first byte; calls for one message pass growing prefixes of the same bytes.
 * Returns the message length (> 0) when complete, 0 when more bytes are
 * needed, -EMSGSIZE when the message is or would be longer than max_bytes,
 * -ELOOP when nested deeper than max_depth, -EBADMSG for the reserved byte 0xc1.
 */
ssize_t mf_scan(struct mf_scanner *s, const uint8_t *buf, size_t len);

/* ---- errors ---- */

enum proto_err {
	PE_OK = 0,
	PE_INVALID_REQUEST,
	PE_INVALID_PARAMS,
	PE_UNKNOWN_METHOD,
	PE_CONTEXT_OVERFLOW,
	PE_BUSY,
	PE_CANCELLED,
	PE_SHUTTING_DOWN,
	PE_LOADING,
	PE_TOO_LARGE,
	PE_INTERNAL,
	PE_COUNT
};

/* "invalid_request", ... */
const char *proto_err_name(enum proto_err e);
/* Inverse, for clients; PE_INTERNAL for an unknown name. */
enum proto_err proto_err_from_name(const char *s, size_t n);

/* ---- parsing ---- */

enum { MSG_REQUEST = 0, MSG_RESPONSE = 1, MSG_NOTIFICATION = 2 };

struct proto_msg {
	int type;                        /* MSG_* */
	bool has_msgid;
	uint32_t msgid;                  /* requests and responses */
	const char *method;              /* requests and notifications; not NUL-terminated */
	size_t method_len;
	const msgpack_object *params;    /* request/notification params array */
	const msgpack_object *error;     /* response: nil or the error object */
	const msgpack_object *result;    /* response */
};

/*
 * Classifies a decoded message. Returns PE_OK, or PE_INVALID_REQUEST with a
 * reason in msg; has_msgid tells whether an error response can be
 * addressed. For requests, params must be an array of at most one element,
 * a map (or nil); proto_params() returns that map or NULL (always NULL for
 * responses and notifications: use m->params for a notification's array).
 * Responses may carry a nil msgid (has_msgid false). Method names must be
 * valid UTF-8 of at most 64 bytes.
 */
enum proto_err proto_parse(const msgpack_object *o, struct proto_msg *m, char *msg, size_t msglen);
const msgpack_object *proto_params(const struct proto_msg *m);

/* True when the method name equals s. */
bool proto_method_is(const struct proto_msg *m, const char *s);

/*
 * Typed lookups in a params map (NULL map: every key absent). Each returns
 * 0 when the key is absent (out untouched), 1 when present and valid, -1
 * when present but of the wrong type or out of range, with "field 'key':
 * reason" in msg. Strings must be valid UTF-8. Floats accept any msgpack
 * number and reject NaN and infinities; ints accept only integers.
 */
const msgpack_object *proto_find(const msgpack_object *map, const char *key);
int proto_get_bool(const msgpack_object *map, const char *key, bool *out, char *msg, size_t msglen);
int proto_get_uint(const msgpack_object *map, const char *key, uint64_t max, uint64_t *out,
		   char *msg, size_t msglen);
int proto_get_int(const msgpack_object *map, const char *key, int64_t min, int64_t max,
		  int64_t *out, char *msg, size_t msglen);
int proto_get_float(const msgpack_object *map, const char *key, double min, double max,
		    double *out, char *msg, size_t msglen);
int proto_get_str(const msgpack_object *map, const char *key, size_t max_len,
		  const char **p, size_t *len, char *msg, size_t msglen);
int proto_get_array(const msgpack_object *map, const char *key, size_t max_n,
		    const msgpack_object_array **out, char *msg, size_t msglen);

/* ---- the sampling parameters of generate and chat ---- */

enum proto_sampling {
	PS_MAX_TOKENS, PS_TEMPERATURE, PS_TOP_K, PS_TOP_P, PS_MIN_P, PS_SEED,
	PS_REPETITION_PENALTY, PS_FREQUENCY_PENALTY, PS_PRESENCE_PENALTY, PS_LOGPROBS,
	PS_COUNT
};

struct proto_sampling_param {
	const char *key;      /* in the params map: "top_k" */
	bool is_float;        /* a number; otherwise an integer */
};

/* Indexed by enum proto_sampling: the keys spelled once, for the client that sends them and the daemon that reads them. */
extern const struct proto_sampling_param proto_sampling[PS_COUNT];

/* ---- packing (msgpack_packer writes into an msgpack_sbuffer or a callback) ---- */

void proto_pack_str(msgpack_packer *pk, const char *s, size_t n);
void proto_pack_cstr(msgpack_packer *pk, const char *s);
/* [0, msgid, method, [<caller packs one params map>]] : packs up to the params map. */
void proto_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method);
/* [1, msgid, nil, <caller packs the result>] : packs up to the result. */
void proto_pack_result_head(msgpack_packer *pk, uint32_t msgid);
/* A whole error response; msgid nil when !has_msgid. */
void proto_pack_error(msgpack_packer *pk, bool has_msgid, uint32_t msgid, enum proto_err e,
		      const char *message);
/* A map entry: the key, then the value. */
void proto_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void proto_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void proto_pack_kv_f64(msgpack_packer *pk, const char *key, double value);
void proto_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);
/* [2, method, [<caller packs the params elements>]] with n params: packs up to them. */
void proto_pack_notification_head(msgpack_packer *pk, const char *method, uint32_t n_params);

#endif
