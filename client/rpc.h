/* mistralctl's side of the msgpack-rpc connection: connect, send, read replies, pack requests. */
#ifndef MCTL_RPC_H
#define MCTL_RPC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "proto.h"

#define DEFAULT_SOCKET   "/run/mistrald/mistrald.sock"

/* Set by the command line; read by every connection. */
extern const char *opt_socket;         /* NULL: $MISTRALD_SOCKET, else DEFAULT_SOCKET */
extern int opt_timeout_ms;             /* -1: wait as long as it takes */
/* Set by the SIGINT handler: a wait returns -EINTR so the caller can cancel. */
extern volatile sig_atomic_t got_sigint;

/* ---- connection ---- */

struct conn {
	int fd;
	uint8_t *buf;
	size_t cap, start, end;      /* unconsumed input is buf[start..end) */
	struct mf_scanner sc;
	msgpack_unpacked up;         /* the last message; valid until the next one is read */
	uint32_t next_id;
	char why[200];               /* detail for -EPROTO */
};

void conn_init(struct conn *c);
/* Connects (non-blocking socket); returns 0 or XS_CONNECT after saying why. */
int conn_open(struct conn *c);
void conn_close(struct conn *c);   /* may be opened again */
void conn_free(struct conn *c);
/* True when the daemon has closed the connection since the last request (idle_timeout). */
bool conn_stale(struct conn *c);

/* ---- requests and replies ---- */

struct reply {
	const msgpack_object *result;   /* on success */
	const msgpack_object *error;    /* on a daemon error */
	bool answered;                  /* something for this request arrived */
};

/* Called for each generate.chunk params map of the request; < 0 aborts the wait. */
typedef int (*chunk_fn)(void *ctx, const msgpack_object *chunk);

/*
 * Waits for the response to msgid `id`, passing its chunks to fn. Returns
 * 0 (rep->result), 1 (rep->error) or a negative errno: -EINTR (Ctrl-C),
 * -ETIMEDOUT, -ECONNRESET, -EPROTO (detail in c->why).
 */
int rpc_wait(struct conn *c, uint32_t id, chunk_fn fn, void *ctx, struct reply *rep);
/* Prints "mistralctl: code: message" for a daemon error. */
void print_daemon_error(const msgpack_object *e);
/* True when the daemon error's code is `code`. */
bool error_is(const msgpack_object *e, const char *code);
/* Maps a failed wait or send to an exit status after saying why. */
int fail_status(struct conn *c, int r);

enum pkind { PK_INT, PK_UINT, PK_FLOAT, PK_BOOL, PK_STR };

struct param {
	const char *key;
	enum pkind kind;
	int64_t i;
	uint64_t u;
	double f;
	bool b;
	const char *s;
	size_t len;
};

#define MAX_PARAMS 32

/* The named parameters of one request, in the order given; a repeated option replaces the earlier. */
struct req {
	struct param p[MAX_PARAMS];
	unsigned n;
	const char **stop;
	unsigned n_stop;
	uint32_t *tokens;
	size_t n_tokens, tokens_cap;
	bool has_tokens;
};

/* Sets a parameter (replacing one of the same key) and returns it for the caller to fill. */
struct param *req_set(struct req *r, const char *key, enum pkind kind);
void req_bool(struct req *r, const char *key, bool v);
void req_str(struct req *r, const char *key, const char *s, size_t len);
const struct param *req_get(const struct req *r, const char *key);
void req_free(struct req *r);   /* the stop and tokens arrays */

struct proto_kv;
/* Sends one request whose params come from r, plus one more entry, extra (NULL: none). */
int send_req(struct conn *c, uint32_t id, const char *method, const struct req *r,
	     const struct proto_kv *extra);
/*
 * Sends a request and waits for its answer. Returns 0 with rep->result
 * set, or an exit status after printing why (the daemon's error: 1).
 */
int call(struct conn *c, const char *method, const struct req *r, chunk_fn fn, void *ctx,
	 struct reply *rep);

#endif
