/* mistralctl's side of the msgpack-rpc connection: connect, send, read replies, pack requests. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "kvmap.h"
#include "mistralctl.h"
#include "output.h"
#include "proto.h"
#include "rpc.h"

/* A generate result with 4096 tokens and 20 logprobs each is a few MiB; 64 MiB is generous. */
#define MAX_REPLY_BYTES  ((size_t)64 << 20)
#define MAX_REPLY_DEPTH  32
#define READ_CHUNK       65536
/* How long a full listen backlog may keep us retrying connect() when no --timeout is given. */
#define CONNECT_RETRY_MS 30000

const char *opt_socket;
int opt_timeout_ms = -1;        /* -1: wait as long as it takes */
volatile sig_atomic_t got_sigint;

/* ------------------------------------------------------------ connection --- */

void conn_init(struct conn *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->next_id = 1;
	mf_init(&c->sc, MAX_REPLY_BYTES, MAX_REPLY_DEPTH);
	msgpack_unpacked_init(&c->up);
}

void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->start = c->end = 0;
	mf_reset(&c->sc);
}

void conn_free(struct conn *c)
{
	conn_close(c);
	msgpack_unpacked_destroy(&c->up);
	free(c->buf);
	c->buf = NULL;
}

static const char *socket_path(void)
{
	const char *p = opt_socket;

	if (!p || !*p)
		p = getenv("MISTRALD_SOCKET");
	if (!p || !*p)
		p = DEFAULT_SOCKET;
	return p;
}

/* Connects (non-blocking socket); returns 0 or XS_CONNECT after saying why. */
int conn_open(struct conn *c)
{
	const char *path = socket_path();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	int waited = 0, limit = opt_timeout_ms > 0 ? opt_timeout_ms : CONNECT_RETRY_MS;

	conn_close(c);
	if (n >= sizeof(sa.sun_path)) {
		errmsg("cannot connect to %s: socket path longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
		return XS_CONNECT;
	}
	memcpy(sa.sun_path, path, n + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		errmsg("socket: %s", strerror(errno));
		return XS_CONNECT;
	}
	for (;;) {
		int e;

		if (connect(c->fd, (const struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		e = errno;
		/* A Unix socket whose listen backlog is full answers EAGAIN: a busy, not a dead, daemon. */
		if ((e == EAGAIN || e == EINTR) && waited < limit && !got_sigint) {
			struct timespec ts = { 0, 10 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			waited += 10;
			continue;
		}
		if (e == ENOENT || e == ECONNREFUSED)
			errmsg("cannot connect to %s: %s (is mistrald running?)", path, strerror(e));
		else if (e == EACCES || e == EPERM)
			errmsg("cannot connect to %s: %s (access needs membership of the socket's group, "
			       "usually \"mistral\")", path, strerror(e));
		else if (e == EAGAIN)
			errmsg("cannot connect to %s: the daemon is not accepting connections", path);
		else
			errmsg("cannot connect to %s: %s", path, strerror(e));
		conn_close(c);
		return XS_CONNECT;
	}
}

/* Reads what is available into the buffer: >0 bytes read, 0 nothing yet, -ECONNRESET at EOF. */
static int conn_fill(struct conn *c)
{
	ssize_t r;

	if (c->start == c->end) {
		c->start = c->end = 0;
	} else if (c->end == c->cap && c->start > 0) {
		memmove(c->buf, c->buf + c->start, c->end - c->start);
		c->end -= c->start;
		c->start = 0;
	}
	if (c->end == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : READ_CHUNK;
		uint8_t *nb;

		/* mf_scan rejects a message over MAX_REPLY_BYTES before the buffer gets past this. */
		if (ncap > MAX_REPLY_BYTES + READ_CHUNK)
			ncap = MAX_REPLY_BYTES + READ_CHUNK;
		if (ncap <= c->cap) {
			snprintf(c->why, sizeof(c->why), "reply larger than %zu bytes", MAX_REPLY_BYTES);
			return -EPROTO;
		}
		nb = realloc(c->buf, ncap);
		if (!nb)
			return -ENOMEM;
		c->buf = nb;
		c->cap = ncap;
	}
	r = read(c->fd, c->buf + c->end, c->cap - c->end);
	if (r > 0) {
		c->end += (size_t)r;
		return (int)(r > INT_MAX ? INT_MAX : r);
	}
	if (r == 0)
		return -ECONNRESET;
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	return -errno;
}

/* Sends a whole request, reading (not processing) input meanwhile so neither side can stall the other. */
static int conn_send(struct conn *c, const char *data, size_t len)
{
	size_t off = 0;

	if (c->fd < 0)
		return -EPIPE;
	while (off < len) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT | POLLIN };
		ssize_t w = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
		int r;

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return errno == ECONNRESET ? -EPIPE : -errno;
		r = poll(&pfd, 1, opt_timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		if (pfd.revents & POLLIN) {
			r = conn_fill(c);
			if (r == -ECONNRESET)
				return -EPIPE;
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/*
 * Next complete message from the daemon into c->up.data. Returns 1, or -EINTR
 * (Ctrl-C), -ETIMEDOUT (--timeout without a byte), -ECONNRESET (EOF),
 * -EPROTO (not msgpack, too big, too deep: detail in c->why).
 */
static int conn_next(struct conn *c)
{
	for (;;) {
		sigset_t block, old;
		struct pollfd pfd;
		struct timespec ts, *tsp = NULL;
		int r;

		if (c->start < c->end) {
			ssize_t n = mf_scan(&c->sc, c->buf + c->start, c->end - c->start);
			size_t off = 0;

			if (n < 0) {
				snprintf(c->why, sizeof(c->why), "%s",
					 n == -EMSGSIZE ? "reply too large" :
					 n == -ELOOP ? "reply nested too deeply" : "reply is not msgpack");
				return -EPROTO;
			}
			if (n > 0) {
				msgpack_unpack_return ur = msgpack_unpack_next(&c->up,
					(const char *)c->buf + c->start, (size_t)n, &off);

				mf_reset(&c->sc);
				c->start += (size_t)n;
				if (ur != MSGPACK_UNPACK_SUCCESS || off != (size_t)n) {
					snprintf(c->why, sizeof(c->why), "reply is not valid msgpack");
					return -EPROTO;
				}
				return 1;
			}
		}
		if (c->fd < 0)
			return -ECONNRESET;
		/* SIGINT stays blocked except inside ppoll, so a Ctrl-C cannot slip in before the wait. */
		sigemptyset(&block);
		sigaddset(&block, SIGINT);
		sigprocmask(SIG_BLOCK, &block, &old);
		if (got_sigint) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			return -EINTR;
		}
		if (opt_timeout_ms >= 0) {
			ts.tv_sec = opt_timeout_ms / 1000;
			ts.tv_nsec = (long)(opt_timeout_ms % 1000) * 1000000L;
			tsp = &ts;
		}
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		r = ppoll(&pfd, 1, tsp, &old);
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		r = conn_fill(c);
		if (r < 0)
			return r;
	}
}

/* True when the daemon has closed the connection since the last turn (idle_timeout). */
bool conn_stale(struct conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	if (c->fd < 0)
		return true;
	while (poll(&pfd, 1, 0) == 1) {
		int r = conn_fill(c);

		if (r < 0)
			return true;
		if (r == 0)
			break;
	}
	return false;
}

/* ------------------------------------------------------------------ rpc --- */

/*
 * Waits for the response to msgid `id`, passing its chunks to fn. Returns
 * 0 (rep->result), 1 (rep->error) or a negative errno as for conn_next.
 * Responses to other msgids (a cancel's answer) are skipped.
 */
int rpc_wait(struct conn *c, uint32_t id, chunk_fn fn, void *ctx, struct reply *rep)
{
	for (;;) {
		const msgpack_object *o = &c->up.data;
		struct proto_msg m;
		char why[160];
		int r = conn_next(c);

		if (r < 0)
			return r;
		/* A connection-level fault: [1, nil, error, nil], then the daemon closes. */
		if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4 &&
		    o->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
		    o->via.array.ptr[0].via.u64 == MSG_RESPONSE &&
		    o->via.array.ptr[1].type == MSGPACK_OBJECT_NIL) {
			rep->error = &o->via.array.ptr[2];
			rep->answered = true;
			return 1;
		}
		if (proto_parse(o, &m, why, sizeof(why)) != PE_OK) {
			snprintf(c->why, sizeof(c->why), "unexpected message from the daemon: %s", why);
			return -EPROTO;
		}
		if (m.type == MSG_RESPONSE) {
			if (!m.has_msgid || m.msgid != id)
				continue;
			rep->answered = true;
			if (m.error && m.error->type != MSGPACK_OBJECT_NIL) {
				rep->error = m.error;
				return 1;
			}
			rep->result = m.result;
			return 0;
		}
		if (m.type == MSG_NOTIFICATION && proto_method_is(&m, "generate.chunk") && m.params &&
		    m.params->type == MSGPACK_OBJECT_ARRAY && m.params->via.array.size >= 2 &&
		    m.params->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
		    m.params->via.array.ptr[0].via.u64 == id &&
		    m.params->via.array.ptr[1].type == MSGPACK_OBJECT_MAP) {
			rep->answered = true;
			if (fn) {
				r = fn(ctx, &m.params->via.array.ptr[1]);
				if (r < 0)
					return r;
			}
		}
	}
}

/* Prints "mistralctl: code: message" for a daemon error. */
void print_daemon_error(const msgpack_object *e)
{
	const msgpack_object *code = map_str(e, "code"), *msg = map_str(e, "message");

	fflush(stdout);
	if (code && msg && msg->via.str.size) {
		fprintf(stderr, "mistralctl: %.*s: %.*s\n", (int)code->via.str.size, code->via.str.ptr,
			(int)msg->via.str.size, msg->via.str.ptr);
	} else if (code) {
		fprintf(stderr, "mistralctl: %.*s\n", (int)code->via.str.size, code->via.str.ptr);
	} else {
		fputs("mistralctl: daemon error: ", stderr);
		json_obj(stderr, e);
		fputc('\n', stderr);
	}
}

bool error_is(const msgpack_object *e, const char *code)
{
	const msgpack_object *c = map_str(e, "code");

	return c && c->via.str.size == strlen(code) && !memcmp(c->via.str.ptr, code, c->via.str.size);
}

/* Maps a failed wait or send to an exit status after saying why. */
int fail_status(struct conn *c, int r)
{
	switch (r) {
	case -EINTR:
		return XS_INTR;
	case -EIO:
		return XS_DAEMON;    /* stdout failed; already reported */
	case -ETIMEDOUT:
		errmsg("no reply from the daemon within %g s", (double)opt_timeout_ms / 1000.0);
		return XS_PROTO;
	case -ECONNRESET:
	case -EPIPE:
		errmsg("connection to the daemon lost");
		return XS_PROTO;
	case -EPROTO:
		errmsg("protocol error: %s", c->why);
		return XS_PROTO;
	default:
		errmsg("connection to the daemon: %s", strerror(-r));
		return XS_PROTO;
	}
}

/* ---------------------------------------------------------------- params --- */

struct param *req_set(struct req *r, const char *key, enum pkind kind)
{
	unsigned i;

	for (i = 0; i < r->n; i++) {
		if (!strcmp(r->p[i].key, key))
			break;
	}
	if (i == r->n) {
		if (r->n == MAX_PARAMS)
			abort();    /* a fixed option table cannot reach this */
		r->n++;
	}
	memset(&r->p[i], 0, sizeof(r->p[i]));
	r->p[i].key = key;
	r->p[i].kind = kind;
	return &r->p[i];
}

void req_bool(struct req *r, const char *key, bool v)
{
	req_set(r, key, PK_BOOL)->b = v;
}

void req_str(struct req *r, const char *key, const char *s, size_t len)
{
	struct param *p = req_set(r, key, PK_STR);

	p->s = s;
	p->len = len;
}

const struct param *req_get(const struct req *r, const char *key)
{
	unsigned i;

	for (i = 0; i < r->n; i++) {
		if (!strcmp(r->p[i].key, key))
			return &r->p[i];
	}
	return NULL;
}

void req_free(struct req *r)
{
	free(r->stop);
	free(r->tokens);
}

static struct proto_kv param_kv(const struct param *p)
{
	switch (p->kind) {
	case PK_INT: return PROTO_KV_I64(p->key, p->i);
	case PK_UINT: return PROTO_KV_U64(p->key, p->u);
	case PK_FLOAT: return PROTO_KV_F64(p->key, p->f);
	case PK_BOOL: return PROTO_KV_BOOL(p->key, p->b);
	case PK_STR: return PROTO_KV_STRN(p->key, p->s, p->len);
	}
	abort();    /* req_set takes only the kinds above */
}

static void pack_stop(msgpack_packer *pk, const void *arg)
{
	const struct req *r = arg;

	msgpack_pack_array(pk, r->n_stop);
	for (unsigned i = 0; i < r->n_stop; i++)
		proto_pack_cstr(pk, r->stop[i]);
}

/* Not a PROTO_KV_IDS: those are the engine's int32 ids, these the user's uint32 ones. */
static void pack_tokens(msgpack_packer *pk, const void *arg)
{
	const struct req *r = arg;

	msgpack_pack_array(pk, (uint32_t)r->n_tokens);
	for (size_t k = 0; k < r->n_tokens; k++)
		msgpack_pack_uint32(pk, r->tokens[k]);
}

/* The params map: the options, then stop and tokens, then the caller's extra entry. */
static void pack_req(msgpack_packer *pk, const struct req *r, const struct proto_kv *extra)
{
	struct proto_kv kv[MAX_PARAMS + 3];
	size_t n = 0;

	for (unsigned i = 0; i < r->n; i++)
		kv[n++] = param_kv(&r->p[i]);
	kv[n++] = r->n_stop ? PROTO_KV_FN("stop", pack_stop, r) : PROTO_KV_SKIP;
	kv[n++] = r->has_tokens ? PROTO_KV_FN("tokens", pack_tokens, r) : PROTO_KV_SKIP;
	kv[n++] = extra ? *extra : PROTO_KV_SKIP;
	proto_pack_map(pk, kv, n);
}

/* Sends one request whose params come from r, plus extra (NULL: none). */
int send_req(struct conn *c, uint32_t id, const char *method, const struct req *r,
	     const struct proto_kv *extra)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int ret;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_request_head(&pk, id, method);
	pack_req(&pk, r, extra);
	ret = conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return ret;
}

/*
 * Sends a request and waits for its answer. Returns 0 with rep->result
 * set, or an exit status after printing why (the daemon's error: 1).
 * A send that fails because the daemon already answered and closed (a
 * too_large request) still reports that answer.
 */
int call(struct conn *c, const char *method, const struct req *r, chunk_fn fn, void *ctx,
		struct reply *rep)
{
	uint32_t id = c->next_id++;
	int ret = send_req(c, id, method, r, NULL);

	memset(rep, 0, sizeof(*rep));
	if (ret == -EPIPE) {
		ret = rpc_wait(c, id, fn, ctx, rep);
		if (ret < 0)
			ret = -EPIPE;
	} else if (ret == 0) {
		ret = rpc_wait(c, id, fn, ctx, rep);
	}
	if (ret == 1) {
		print_daemon_error(rep->error);
		return XS_DAEMON;
	}
	if (ret < 0)
		return fail_status(c, ret);
	return 0;
}
