/* mistralctl: the command-line client of mistrald, speaking its msgpack-rpc protocol over the Unix socket. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <histedit.h>
#include <msgpack.h>

#include "proto.h"

#define DEFAULT_SOCKET   "/run/mistrald/mistrald.sock"
/* A generate result with 4096 tokens and 20 logprobs each is a few MiB; 64 MiB is generous. */
#define MAX_REPLY_BYTES  ((size_t)64 << 20)
#define MAX_REPLY_DEPTH  32
#define MAX_STDIN_BYTES  ((size_t)16 << 20)
#define MAX_LINE_BYTES   ((size_t)1 << 20)
#define READ_CHUNK       65536
/* How long a full listen backlog may keep us retrying connect() when no --timeout is given. */
#define CONNECT_RETRY_MS 30000

/* Exit statuses, documented in mistralctl(1). */
enum {
	XS_OK = 0,
	XS_DAEMON = 1,    /* the daemon answered with an error (or output could not be written) */
	XS_USAGE = 2,
	XS_CONNECT = 3,
	XS_PROTO = 4,     /* protocol error, connection lost, timeout */
	XS_INTR = 130,
};

static const char *opt_socket;
static int opt_timeout_ms = -1;        /* -1: wait as long as it takes */
static volatile sig_atomic_t got_sigint;

__attribute__((format(printf, 1, 2)))
static void errmsg(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("mistralctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void on_sigint(int sig)
{
	(void)sig;
	got_sigint = 1;
}

/* ---------------------------------------------------------------- output --- */

/* Length of the valid UTF-8 sequence at s, 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len, i;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xbf))
			return 0;
	}
	return len;
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD so the output always parses. */
static void json_str(FILE *f, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	putc('"', f);
	while (i < n) {
		unsigned char c = p[i];
		size_t l;

		if (c < 0x80) {
			switch (c) {
			case '"':  fputs("\\\"", f); break;
			case '\\': fputs("\\\\", f); break;
			case '\n': fputs("\\n", f); break;
			case '\r': fputs("\\r", f); break;
			case '\t': fputs("\\t", f); break;
			case '\b': fputs("\\b", f); break;
			case '\f': fputs("\\f", f); break;
			default:
				if (c < 0x20 || c == 0x7f)
					fprintf(f, "\\u%04x", c);
				else
					putc(c, f);
			}
			i++;
			continue;
		}
		l = utf8_seq(p + i, n - i);
		if (!l) {
			fputs("\\ufffd", f);
			i++;
			continue;
		}
		fwrite(p + i, 1, l, f);
		i += l;
	}
	putc('"', f);
}

/* The shortest %g rendering that reads back as the same value (as a float for float32). */
static void fmt_double(char *buf, size_t n, double v, bool f32)
{
	int prec;

	/* Whole numbers read better without an exponent: rope_base 1000000, not 1e+06. */
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(buf, n, "%.0f", v);
		return;
	}
	for (prec = 1; prec <= 17; prec++) {
		double back;

		snprintf(buf, n, "%.*g", prec, v);
		back = strtod(buf, NULL);
		if (f32 ? (float)back == (float)v : back == v)
			return;
	}
}

static void json_obj(FILE *f, const msgpack_object *o);

static void json_key(FILE *f, const msgpack_object *k)
{
	char *mem = NULL;
	size_t len = 0;
	FILE *m;

	if (k->type == MSGPACK_OBJECT_STR) {
		json_str(f, k->via.str.ptr, k->via.str.size);
		return;
	}
	/* JSON keys are strings: render any other key as JSON text, then quote that. */
	m = open_memstream(&mem, &len);
	if (!m) {
		fputs("\"?\"", f);
		return;
	}
	json_obj(m, k);
	if (fclose(m) == 0)
		json_str(f, mem, len);
	else
		fputs("\"?\"", f);
	free(mem);
}

/* Compact, one-line JSON for a decoded reply; recursion is bounded by MAX_REPLY_DEPTH. */
static void json_obj(FILE *f, const msgpack_object *o)
{
	char num[40];
	uint32_t i;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", f);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", f);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		fprintf(f, "%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		fprintf(f, "%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64)) {
			fputs("null", f);
			break;
		}
		fmt_double(num, sizeof(num), o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
		fputs(num, f);
		break;
	case MSGPACK_OBJECT_STR:
		json_str(f, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_BIN:
		json_str(f, o->via.bin.ptr, o->via.bin.size);
		break;
	case MSGPACK_OBJECT_ARRAY:
		putc('[', f);
		for (i = 0; i < o->via.array.size; i++) {
			if (i)
				putc(',', f);
			json_obj(f, &o->via.array.ptr[i]);
		}
		putc(']', f);
		break;
	case MSGPACK_OBJECT_MAP:
		putc('{', f);
		for (i = 0; i < o->via.map.size; i++) {
			if (i)
				putc(',', f);
			json_key(f, &o->via.map.ptr[i].key);
			putc(':', f);
			json_obj(f, &o->via.map.ptr[i].val);
		}
		putc('}', f);
		break;
	default:
		fputs("null", f);   /* ext: the protocol never sends one */
		break;
	}
}

static bool obj_is_num(const msgpack_object *o)
{
	return o && (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
		     o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
		     o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64);
}

static double obj_double(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
	default: return 0;
	}
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	return proto_find(map, key);
}

static const msgpack_object *map_str(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = map_get(map, key);

	return v && v->type == MSGPACK_OBJECT_STR ? v : NULL;
}

static double map_num(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = map_get(map, key);

	return obj_is_num(v) ? obj_double(v) : 0;
}

/* A scalar as a human reads it: strings raw unless they hold control characters. */
static void human_value(FILE *f, const msgpack_object *o)
{
	char num[40];
	uint32_t i;

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		for (i = 0; i < o->via.str.size; i++) {
			if ((unsigned char)o->via.str.ptr[i] < 0x20 || o->via.str.ptr[i] == 0x7f)
				break;
		}
		if (i == o->via.str.size && utf8_valid(o->via.str.ptr, o->via.str.size))
			fwrite(o->via.str.ptr, 1, o->via.str.size, f);
		else
			json_str(f, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_NIL:
		fputs("-", f);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		fmt_double(num, sizeof(num), o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
		fputs(num, f);
		break;
	case MSGPACK_OBJECT_ARRAY:
		for (i = 0; i < o->via.array.size; i++) {
			if (i)
				putc(' ', f);
			human_value(f, &o->via.array.ptr[i]);
		}
		break;
	default:
		json_obj(f, o);
		break;
	}
}

/* "key: value" lines; nested maps become dotted keys (hparams.dim: 4096). */
static void human_print(FILE *f, const char *prefix, const msgpack_object *o)
{
	uint32_t i;

	if (o->type != MSGPACK_OBJECT_MAP) {
		fprintf(f, "%s: ", prefix);
		human_value(f, o);
		putc('\n', f);
		return;
	}
	for (i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];
		char key[256];

		if (kv->key.type != MSGPACK_OBJECT_STR)
			continue;
		snprintf(key, sizeof(key), "%s%s%.*s", prefix, *prefix ? "." : "",
			 (int)(kv->key.via.str.size > 200 ? 200 : kv->key.via.str.size), kv->key.via.str.ptr);
		human_print(f, key, &kv->val);
	}
}

static const struct {
	const char *name, *help;
} metric_help[] = {
	{ "requests_total", "Requests handled since start." },
	{ "requests_failed_total", "Requests that ended with an error." },
	{ "requests_cancelled_total", "Requests cancelled by a client, a disconnect or shutdown." },
	{ "busy_rejections_total", "Requests rejected with busy (queue or per-connection limit full)." },
	{ "prompt_tokens_total", "Prompt tokens evaluated." },
	{ "tokens_generated_total", "Tokens generated." },
	{ "connections_total", "Client connections accepted." },
	{ "connections_current", "Client connections open now." },
	{ "protocol_errors_total", "Connections closed or requests rejected for protocol errors." },
	{ "active_sequences", "Sequences generating now." },
	{ "queued_requests", "Requests waiting for a free sequence slot." },
	{ "prompt_seconds_total", "Seconds spent evaluating prompts." },
	{ "generate_seconds_total", "Seconds spent generating tokens." },
	{ "model_weight_bytes", "Bytes of model weights resident." },
	{ "uptime_seconds", "Seconds since the daemon started." },
};

/* Prometheus text exposition format; counters are the names ending in _total. */
static void metrics_print(FILE *f, const msgpack_object *o)
{
	uint32_t i;

	if (o->type != MSGPACK_OBJECT_MAP)
		return;
	for (i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];
		const msgpack_object *v = &kv->val;
		const char *help = NULL;
		char name[160], num[40];
		size_t j, n, len;
		bool counter;

		if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size == 0)
			continue;
		if (!obj_is_num(v) && v->type != MSGPACK_OBJECT_BOOLEAN)
			continue;
		n = kv->key.via.str.size;
		if (n > sizeof(name) - sizeof("mistrald_"))
			n = sizeof(name) - sizeof("mistrald_");
		len = (size_t)snprintf(name, sizeof(name), "mistrald_");
		for (j = 0; j < n; j++) {
			char c = kv->key.via.str.ptr[j];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '_'))
				c = '_';
			name[len++] = c;
		}
		name[len] = '\0';
		for (j = 0; j < sizeof(metric_help) / sizeof(metric_help[0]); j++) {
			if (strlen(metric_help[j].name) == kv->key.via.str.size &&
			    !memcmp(metric_help[j].name, kv->key.via.str.ptr, kv->key.via.str.size))
				help = metric_help[j].help;
		}
		counter = len > 6 && !strcmp(name + len - 6, "_total");
		if (help)
			fprintf(f, "# HELP %s %s\n", name, help);
		else
			fprintf(f, "# HELP %s mistrald metric %s.\n", name, name + 9);
		fprintf(f, "# TYPE %s %s\n", name, counter ? "counter" : "gauge");
		switch (v->type) {
		case MSGPACK_OBJECT_BOOLEAN:
			fprintf(f, "%s %d\n", name, v->via.boolean ? 1 : 0);
			break;
		case MSGPACK_OBJECT_POSITIVE_INTEGER:
			fprintf(f, "%s %" PRIu64 "\n", name, v->via.u64);
			break;
		case MSGPACK_OBJECT_NEGATIVE_INTEGER:
			fprintf(f, "%s %" PRId64 "\n", name, v->via.i64);
			break;
		default:
			if (isnan(v->via.f64))
				snprintf(num, sizeof(num), "NaN");
			else if (isinf(v->via.f64))
				snprintf(num, sizeof(num), "%cInf", v->via.f64 > 0 ? '+' : '-');
			else
				fmt_double(num, sizeof(num), v->via.f64, v->type == MSGPACK_OBJECT_FLOAT32);
			fprintf(f, "%s %s\n", name, num);
			break;
		}
	}
}

/* Flushes stdout; a write error (disk full, closed pipe with SIGPIPE ignored) is reported once. */
static int out_flush(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		errmsg("cannot write standard output: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

/* ------------------------------------------------------------ connection --- */

struct conn {
	int fd;
	uint8_t *buf;
	size_t cap, start, end;      /* unconsumed input is buf[start..end) */
	struct mf_scanner sc;
	msgpack_unpacked up;         /* the last message; valid until the next one is read */
	uint32_t next_id;
	char why[200];               /* detail for -EPROTO */
};

static void conn_init(struct conn *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->next_id = 1;
	mf_init(&c->sc, MAX_REPLY_BYTES, MAX_REPLY_DEPTH);
	msgpack_unpacked_init(&c->up);
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->start = c->end = 0;
	mf_reset(&c->sc);
}

static void conn_free(struct conn *c)
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
static int conn_open(struct conn *c)
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

/* ------------------------------------------------------------------ rpc --- */

struct reply {
	const msgpack_object *result;   /* on success */
	const msgpack_object *error;    /* on a daemon error */
	bool answered;                  /* something for this request arrived */
};

/* Called for each generate.chunk params map of the request; < 0 aborts the wait. */
typedef int (*chunk_fn)(void *ctx, const msgpack_object *chunk);

/*
 * Waits for the response to msgid `id`, passing its chunks to fn. Returns
 * 0 (rep->result), 1 (rep->error) or a negative errno as for conn_next.
 * Responses to other msgids (a cancel's answer) are skipped.
 */
static int rpc_wait(struct conn *c, uint32_t id, chunk_fn fn, void *ctx, struct reply *rep)
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
static void print_daemon_error(const msgpack_object *e)
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

static bool error_is(const msgpack_object *e, const char *code)
{
	const msgpack_object *c = map_str(e, "code");

	return c && c->via.str.size == strlen(code) && !memcmp(c->via.str.ptr, code, c->via.str.size);
}

/* Maps a failed wait or send to an exit status after saying why. */
static int fail_status(struct conn *c, int r)
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

static struct param *req_set(struct req *r, const char *key, enum pkind kind)
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

static void req_bool(struct req *r, const char *key, bool v)
{
	req_set(r, key, PK_BOOL)->b = v;
}

static void req_str(struct req *r, const char *key, const char *s, size_t len)
{
	struct param *p = req_set(r, key, PK_STR);

	p->s = s;
	p->len = len;
}

static const struct param *req_get(const struct req *r, const char *key)
{
	unsigned i;

	for (i = 0; i < r->n; i++) {
		if (!strcmp(r->p[i].key, key))
			return &r->p[i];
	}
	return NULL;
}

static void req_free(struct req *r)
{
	free(r->stop);
	free(r->tokens);
}

/* Integer option: syntax only, the daemon owns the ranges (and says so in its error). */
static int parse_intarg(struct req *r, const char *opt, const char *key, const char *arg)
{
	char *end;
	const char *d = arg[0] == '-' ? arg + 1 : arg;

	if (*d < '0' || *d > '9')
		goto bad;
	errno = 0;
	if (arg[0] == '-') {
		long long v = strtoll(arg, &end, 10);

		if (errno || *end)
			goto bad;
		req_set(r, key, PK_INT)->i = v;
	} else {
		unsigned long long v = strtoull(arg, &end, 10);

		if (errno || *end)
			goto bad;
		req_set(r, key, PK_UINT)->u = v;
	}
	return 0;
bad:
	errmsg("%s: '%s' is not an integer", opt, arg);
	return -1;
}

static int parse_float(const char *opt, const char *arg, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(arg, &end);
	if (end == arg || *end || errno == ERANGE || !isfinite(*out)) {
		errmsg("%s: '%s' is not a finite number", opt, arg);
		return -1;
	}
	return 0;
}

static int parse_floatarg(struct req *r, const char *opt, const char *key, const char *arg)
{
	double v;

	if (parse_float(opt, arg, &v) < 0)
		return -1;
	req_set(r, key, PK_FLOAT)->f = v;
	return 0;
}

static int parse_u64(const char *arg, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*arg < '0' || *arg > '9')
		return -1;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Token ids from arguments that may each hold several, separated by commas or blanks. */
static int parse_ids(struct req *r, char *const *args, int n)
{
	int a;

	for (a = 0; a < n; a++) {
		const char *s = args[a];

		while (*s) {
			char tok[32];
			size_t l = strcspn(s, ", \t\n");
			uint64_t v;

			if (l == 0) {
				s++;
				continue;
			}
			if (l >= sizeof(tok) || (memcpy(tok, s, l), tok[l] = '\0', parse_u64(tok, UINT32_MAX, &v) < 0)) {
				errmsg("'%.*s' is not a token id", (int)(l > 40 ? 40 : l), s);
				return -1;
			}
			if (r->n_tokens == r->tokens_cap) {
				size_t ncap = r->tokens_cap ? r->tokens_cap * 2 : 16;
				uint32_t *nt = realloc(r->tokens, ncap * sizeof(*nt));

				if (!nt) {
					errmsg("out of memory");
					return -1;
				}
				r->tokens = nt;
				r->tokens_cap = ncap;
			}
			r->tokens[r->n_tokens++] = (uint32_t)v;
			s += l;
		}
	}
	r->has_tokens = true;
	return 0;
}

static void pack_param(msgpack_packer *pk, const struct param *p)
{
	proto_pack_cstr(pk, p->key);
	switch (p->kind) {
	case PK_INT: msgpack_pack_int64(pk, p->i); break;
	case PK_UINT: msgpack_pack_uint64(pk, p->u); break;
	case PK_FLOAT: msgpack_pack_double(pk, p->f); break;
	case PK_BOOL: if (p->b) msgpack_pack_true(pk); else msgpack_pack_false(pk); break;
	case PK_STR: proto_pack_str(pk, p->s, p->len); break;
	}
}

/* The params map: the options, then stop and tokens, then `extra` entries the caller packs. */
static void pack_req(msgpack_packer *pk, const struct req *r, unsigned extra)
{
	unsigned i;

	msgpack_pack_map(pk, r->n + (r->n_stop ? 1 : 0) + (r->has_tokens ? 1 : 0) + extra);
	for (i = 0; i < r->n; i++)
		pack_param(pk, &r->p[i]);
	if (r->n_stop) {
		proto_pack_cstr(pk, "stop");
		msgpack_pack_array(pk, r->n_stop);
		for (i = 0; i < r->n_stop; i++)
			proto_pack_cstr(pk, r->stop[i]);
	}
	if (r->has_tokens) {
		size_t k;

		proto_pack_cstr(pk, "tokens");
		msgpack_pack_array(pk, (uint32_t)r->n_tokens);
		for (k = 0; k < r->n_tokens; k++)
			msgpack_pack_uint32(pk, r->tokens[k]);
	}
}

/* Sends one request whose params come from r (plus extra entries packed by fn). */
static int send_req(struct conn *c, uint32_t id, const char *method, const struct req *r,
		    unsigned extra, void (*fn)(msgpack_packer *, void *), void *arg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int ret;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_request_head(&pk, id, method);
	pack_req(&pk, r, extra);
	if (fn)
		fn(&pk, arg);
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
static int call(struct conn *c, const char *method, const struct req *r, chunk_fn fn, void *ctx,
		struct reply *rep)
{
	uint32_t id = c->next_id++;
	int ret = send_req(c, id, method, r, 0, NULL, NULL);

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

/* ----------------------------------------------------------------- input --- */

/* All of stdin, at most MAX_STDIN_BYTES (a usage error beyond). */
static int read_stdin(char **out, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);

	if (!buf) {
		errmsg("out of memory");
		return XS_DAEMON;
	}
	for (;;) {
		ssize_t r;

		if (n == cap) {
			char *nb;

			if (cap > MAX_STDIN_BYTES) {
				free(buf);
				errmsg("standard input is larger than %zu MiB", MAX_STDIN_BYTES >> 20);
				return XS_USAGE;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				errmsg("out of memory");
				return XS_DAEMON;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(STDIN_FILENO, buf + n, cap - n);
		if (r > 0) {
			n += (size_t)r;
			if (n > MAX_STDIN_BYTES) {
				free(buf);
				errmsg("standard input is larger than %zu MiB", MAX_STDIN_BYTES >> 20);
				return XS_USAGE;
			}
			continue;
		}
		if (r == 0)
			break;
		if (errno == EINTR && !got_sigint)
			continue;
		free(buf);
		if (errno == EINTR)
			return XS_INTR;
		errmsg("standard input: %s", strerror(errno));
		return XS_DAEMON;
	}
	*out = buf;
	*len = n;
	return 0;
}

/*
 * The text argument(s): one "-" means stdin, several are joined with
 * spaces. *text is malloc'd.
 */
static int text_args(char *const *args, int n, char **text, size_t *len)
{
	size_t total = 0, off = 0;
	int i;

	if (n == 1 && !strcmp(args[0], "-"))
		return read_stdin(text, len);
	for (i = 0; i < n; i++)
		total += strlen(args[i]) + 1;
	*text = malloc(total + 1);
	if (!*text) {
		errmsg("out of memory");
		return XS_DAEMON;
	}
	for (i = 0; i < n; i++) {
		size_t l = strlen(args[i]);

		if (i)
			(*text)[off++] = ' ';
		memcpy(*text + off, args[i], l);
		off += l;
	}
	(*text)[off] = '\0';
	*len = off;
	return 0;
}

/* ------------------------------------------------------------- commands --- */

struct cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *synopsis;
	const char *help;
};

static const struct cmd *find_cmd(const char *name);

static void cmd_usage(const struct cmd *cmd, FILE *f)
{
	fprintf(f, "usage: mistralctl [--socket PATH] [--timeout S] %s %s\n\n%s", cmd->name, cmd->synopsis,
		cmd->help);
}

static int usage_error(const char *cmd)
{
	fprintf(stderr, "Try 'mistralctl %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return XS_USAGE;
}

/* Options every command takes. */
enum {
	O_SOCKET = 1000, O_TIMEOUT, O_HELP, O_JSON,
	O_MAX_TOKENS, O_TEMPERATURE, O_TOP_K, O_TOP_P, O_MIN_P, O_SEED, O_REP_PEN,
	O_FREQ_PEN, O_PRES_PEN, O_STOP, O_LOGPROBS, O_SYSTEM, O_STATS,
	O_RAW, O_NO_STREAM, O_TOKENS, O_NO_BOS, O_SPECIAL,
};

#define COMMON_OPTS \
	{ "socket", required_argument, NULL, O_SOCKET }, \
	{ "timeout", required_argument, NULL, O_TIMEOUT }, \
	{ "help", no_argument, NULL, O_HELP }

#define SAMPLING_OPTS \
	{ "max-tokens", required_argument, NULL, O_MAX_TOKENS }, \
	{ "temperature", required_argument, NULL, O_TEMPERATURE }, \
	{ "top-k", required_argument, NULL, O_TOP_K }, \
	{ "top-p", required_argument, NULL, O_TOP_P }, \
	{ "min-p", required_argument, NULL, O_MIN_P }, \
	{ "seed", required_argument, NULL, O_SEED }, \
	{ "repetition-penalty", required_argument, NULL, O_REP_PEN }, \
	{ "frequency-penalty", required_argument, NULL, O_FREQ_PEN }, \
	{ "presence-penalty", required_argument, NULL, O_PRES_PEN }, \
	{ "stop", required_argument, NULL, O_STOP }, \
	{ "logprobs", required_argument, NULL, O_LOGPROBS }, \
	{ "system", required_argument, NULL, O_SYSTEM }, \
	{ "stats", no_argument, NULL, O_STATS }

static int set_timeout(const char *arg)
{
	double s;

	if (parse_float("--timeout", arg, &s) < 0)
		return -1;
	if (s < 0 || s > (double)INT_MAX / 1000.0) {
		errmsg("--timeout: '%s' is out of range (0 = no limit)", arg);
		return -1;
	}
	opt_timeout_ms = s == 0 ? -1 : (int)ceil(s * 1000.0);
	return 0;
}

/*
 * Handles the options all commands share; returns 1 when handled, 0 when
 * not one of them, -1 on a usage error, 2 for --help (printed).
 */
static int common_opt(const struct cmd *cmd, int o)
{
	switch (o) {
	case 's':
	case O_SOCKET:
		opt_socket = optarg;
		return 1;
	case 't':
	case O_TIMEOUT:
		return set_timeout(optarg) < 0 ? -1 : 1;
	case 'h':
	case O_HELP:
		cmd_usage(cmd, stdout);
		return 2;
	case '?':
		return -1;
	default:
		return 0;
	}
}

/* Sampling options shared by generate and chat: 1 handled, 0 not one, -1 usage error. */
static int sampling_opt(struct req *r, int o, bool *stats)
{
	switch (o) {
	case O_MAX_TOKENS: return parse_intarg(r, "--max-tokens", "max_tokens", optarg) < 0 ? -1 : 1;
	case O_TEMPERATURE: return parse_floatarg(r, "--temperature", "temperature", optarg) < 0 ? -1 : 1;
	case O_TOP_K: return parse_intarg(r, "--top-k", "top_k", optarg) < 0 ? -1 : 1;
	case O_TOP_P: return parse_floatarg(r, "--top-p", "top_p", optarg) < 0 ? -1 : 1;
	case O_MIN_P: return parse_floatarg(r, "--min-p", "min_p", optarg) < 0 ? -1 : 1;
	case O_SEED: return parse_intarg(r, "--seed", "seed", optarg) < 0 ? -1 : 1;
	case O_REP_PEN: return parse_floatarg(r, "--repetition-penalty", "repetition_penalty", optarg) < 0 ? -1 : 1;
	case O_FREQ_PEN: return parse_floatarg(r, "--frequency-penalty", "frequency_penalty", optarg) < 0 ? -1 : 1;
	case O_PRES_PEN: return parse_floatarg(r, "--presence-penalty", "presence_penalty", optarg) < 0 ? -1 : 1;
	case O_LOGPROBS: return parse_intarg(r, "--logprobs", "logprobs", optarg) < 0 ? -1 : 1;
	case O_STOP:
		r->stop[r->n_stop++] = optarg;
		return 1;
	case O_SYSTEM:
		req_str(r, "system", optarg, strlen(optarg));
		return 1;
	case O_STATS:
		*stats = true;
		return 1;
	default:
		return 0;
	}
}

/* Per-token log-probabilities, one line each on stderr (text mode keeps stdout for the text). */
static void print_logprobs(const msgpack_object *lp)
{
	uint32_t i, j;

	if (!lp || lp->type != MSGPACK_OBJECT_ARRAY)
		return;
	for (i = 0; i < lp->via.array.size; i++) {
		const msgpack_object *e = &lp->via.array.ptr[i], *top = map_get(e, "top");
		const msgpack_object *tok = map_get(e, "token"), *text = map_str(e, "text");

		fprintf(stderr, "logprob %" PRIu64 " ", obj_is_num(tok) ? (uint64_t)obj_double(tok) : 0);
		if (text)
			json_str(stderr, text->via.str.ptr, text->via.str.size);
		fprintf(stderr, " %.4f", map_num(e, "logprob"));
		if (top && top->type == MSGPACK_OBJECT_ARRAY) {
			fputs(" top", stderr);
			for (j = 0; j < top->via.array.size; j++) {
				const msgpack_object *t = &top->via.array.ptr[j];
				const msgpack_object *tt = map_str(t, "text"), *ti = map_get(t, "token");

				fprintf(stderr, " %" PRIu64 ":", obj_is_num(ti) ? (uint64_t)obj_double(ti) : 0);
				if (tt)
					json_str(stderr, tt->via.str.ptr, tt->via.str.size);
				fprintf(stderr, ":%.4f", map_num(t, "logprob"));
			}
		}
		fputc('\n', stderr);
	}
}

static void print_stats(const msgpack_object *res)
{
	const msgpack_object *t = map_get(res, "timings"), *u = map_get(res, "usage");
	const msgpack_object *dr = map_str(res, "done_reason"), *seed = map_get(res, "seed");

	fflush(stdout);
	fprintf(stderr, "mistralctl: prompt %.0f tokens in %.1f ms (%.1f tok/s), "
		"generated %.0f tokens in %.1f ms (%.1f tok/s), queued %.1f ms",
		map_num(u, "prompt_tokens"), map_num(t, "prompt_ms"), map_num(t, "prompt_tokens_per_s"),
		map_num(u, "completion_tokens"), map_num(t, "generate_ms"), map_num(t, "generate_tokens_per_s"),
		map_num(t, "queue_ms"));
	if (dr)
		fprintf(stderr, ", done: %.*s", (int)dr->via.str.size, dr->via.str.ptr);
	if (seed && seed->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		fprintf(stderr, ", seed %" PRIu64, seed->via.u64);
	fputc('\n', stderr);
}

/* Streamed text goes straight to stdout, flushed per chunk. */
struct stream_out {
	size_t bytes;
	char last;
};

static int write_text(struct stream_out *so, const char *s, size_t n)
{
	if (!n)
		return 0;
	if (fwrite(s, 1, n, stdout) != n) {
		out_flush();
		return -EIO;
	}
	so->bytes += n;
	so->last = s[n - 1];
	return out_flush();
}

static int on_chunk(void *ctx, const msgpack_object *chunk)
{
	const msgpack_object *t = map_str(chunk, "response");

	return t ? write_text(ctx, t->via.str.ptr, t->via.str.size) : 0;
}

/* The shell-friendly end of a text answer: a newline unless it already ends with one. */
static int end_text(struct stream_out *so)
{
	if (so->bytes == 0 || so->last != '\n')
		fputc('\n', stdout);
	return out_flush();
}

static int cmd_generate(int argc, char **argv)
{
	static const struct option opts[] = {
		COMMON_OPTS, SAMPLING_OPTS,
		{ "raw", no_argument, NULL, O_RAW },
		{ "no-stream", no_argument, NULL, O_NO_STREAM },
		{ "json", no_argument, NULL, O_JSON },
		{ "tokens", required_argument, NULL, O_TOKENS },
		{ NULL, 0, NULL, 0 }
	};
	const struct cmd *cmd = find_cmd("generate");
	struct req r = { .n = 0 };
	struct stream_out so = { 0, 0 };
	struct conn c;
	struct reply rep;
	bool json = false, stats = false, stream = true;
	char *text = NULL;
	size_t len = 0;
	int o, ret = XS_USAGE;

	r.stop = calloc((size_t)argc + 1, sizeof(*r.stop));
	if (!r.stop)
		return XS_DAEMON;
	while ((o = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		int h = common_opt(cmd, o);

		if (h == 2) {
			ret = XS_OK;
			goto out;
		}
		if (h == 0)
			h = sampling_opt(&r, o, &stats);
		if (h < 0)
			goto usage;
		if (h)
			continue;
		switch (o) {
		case O_RAW: req_bool(&r, "raw", true); break;
		case O_NO_STREAM: stream = false; break;
		case O_JSON: json = true; break;
		case O_TOKENS:
			if (parse_ids(&r, &optarg, 1) < 0)
				goto usage;
			break;
		default: goto usage;
		}
	}
	if (r.has_tokens) {
		if (optind != argc) {
			errmsg("generate: --tokens and a PROMPT are mutually exclusive");
			goto usage;
		}
	} else {
		if (optind == argc) {
			errmsg("generate: a PROMPT is required");
			goto usage;
		}
		ret = text_args(argv + optind, argc - optind, &text, &len);
		if (ret)
			goto out;
		req_str(&r, "prompt", text, len);
	}
	/* --json prints only the final object, so there is nothing to stream. */
	if (json)
		stream = false;
	req_bool(&r, "stream", stream);

	conn_init(&c);
	ret = conn_open(&c);
	if (!ret)
		ret = call(&c, "generate", &r, stream ? on_chunk : NULL, &so, &rep);
	if (ret == XS_INTR && so.bytes && isatty(STDOUT_FILENO))
		end_text(&so);
	if (!ret) {
		const msgpack_object *res = rep.result, *t = map_str(res, "response");

		if (json) {
			json_obj(stdout, res);
			fputc('\n', stdout);
			ret = out_flush() < 0 ? XS_DAEMON : 0;
		} else {
			if (!stream && t && write_text(&so, t->via.str.ptr, t->via.str.size) < 0)
				ret = XS_DAEMON;
			if (!ret && end_text(&so) < 0)
				ret = XS_DAEMON;
			if (!ret)
				print_logprobs(map_get(res, "logprobs"));
		}
		if (!ret && stats)
			print_stats(res);
	}
	conn_free(&c);
	goto out;
usage:
	ret = usage_error("generate");
out:
	free(text);
	req_free(&r);
	return ret;
}

/* ------------------------------------------------------------------ chat --- */

struct chat_msg {
	const char *role;
	char *content;
	size_t len;
};

struct chat {
	struct chat_msg *m;
	size_t n, cap;
};

static int chat_push(struct chat *h, const char *role, const char *s, size_t len)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return -ENOMEM;
	if (h->n == h->cap) {
		size_t ncap = h->cap ? h->cap * 2 : 16;
		struct chat_msg *nm = realloc(h->m, ncap * sizeof(*nm));

		if (!nm) {
			free(copy);
			return -ENOMEM;
		}
		h->m = nm;
		h->cap = ncap;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	h->m[h->n].role = role;
	h->m[h->n].content = copy;
	h->m[h->n].len = len;
	h->n++;
	return 0;
}

static void chat_truncate(struct chat *h, size_t n)
{
	while (h->n > n)
		free(h->m[--h->n].content);
}

static void pack_messages(msgpack_packer *pk, void *arg)
{
	const struct chat *h = arg;
	size_t i;

	proto_pack_cstr(pk, "messages");
	msgpack_pack_array(pk, (uint32_t)h->n);
	for (i = 0; i < h->n; i++) {
		msgpack_pack_map(pk, 2);
		proto_pack_cstr(pk, "role");
		proto_pack_cstr(pk, h->m[i].role);
		proto_pack_cstr(pk, "content");
		proto_pack_str(pk, h->m[i].content, h->m[i].len);
	}
}

/* True when the daemon has closed the connection since the last turn (idle_timeout). */
static bool conn_stale(struct conn *c)
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

/*
 * One chat turn: the whole history goes out, the answer streams to stdout.
 * Returns 0, 1 for a daemon error (the turn is undone), or a fatal exit
 * status. Ctrl-C cancels the answer; the partial answer stays in history.
 */
static int chat_turn(struct conn *c, struct chat *h, const struct req *r, bool stats, bool tty)
{
	struct stream_out so = { 0, 0 };
	struct reply rep;
	size_t before = h->n - 1;   /* the new user message is already pushed */
	uint32_t id = 0;
	int ret, tries;

	for (tries = 0; tries < 2; tries++) {
		if (conn_stale(c)) {
			ret = conn_open(c);
			if (ret)
				return ret;
		}
		id = c->next_id++;
		memset(&rep, 0, sizeof(rep));
		ret = send_req(c, id, "chat", r, 1, pack_messages, h);
		if (ret == 0 || ret == -EPIPE)
			ret = rpc_wait(c, id, on_chunk, &so, &rep);
		/* The daemon closed an idle connection just as we sent: one fresh try. */
		if ((ret == -ECONNRESET || ret == -EPIPE) && !rep.answered && tries == 0) {
			conn_close(c);
			continue;
		}
		break;
	}
	if (ret == -EINTR) {
		uint32_t cid = c->next_id++;
		struct req cr = { .n = 0 };
		int s;

		got_sigint = 0;
		req_set(&cr, "id", PK_UINT)->u = id;
		s = send_req(c, cid, "cancel", &cr, 0, NULL, NULL);
		if (s < 0)
			return fail_status(c, s);
		/* The answer still comes: done_reason "cancelled", or error cancelled if it had not started. */
		ret = rpc_wait(c, id, on_chunk, &so, &rep);
		if (tty && ret >= 0) {
			fflush(stdout);
			fputs(so.bytes ? "\n[cancelled]" : "[cancelled]", stderr);
		}
	}
	if (ret < 0)
		return fail_status(c, ret);
	if (ret == 1) {
		if (so.bytes)
			end_text(&so);
		if (!error_is(rep.error, "cancelled"))
			print_daemon_error(rep.error);
		else if (tty)
			fputc('\n', stderr);
		chat_truncate(h, before);
		return error_is(rep.error, "cancelled") ? 0 : 1;
	}
	{
		const msgpack_object *t = map_str(rep.result, "response"), *dr = map_str(rep.result, "done_reason");
		bool cancelled = dr && dr->via.str.size == 9 && !memcmp(dr->via.str.ptr, "cancelled", 9);

		if (end_text(&so) < 0)
			return XS_DAEMON;
		if (stats)
			print_stats(rep.result);
		/*
		 * A normal empty answer is kept, as the roles must alternate; one
		 * cancelled before it said anything goes, with its question.
		 */
		if (!t || (cancelled && t->via.str.size == 0) ||
		    chat_push(h, "assistant", t->via.str.ptr, t->via.str.size) < 0)
			chat_truncate(h, before);
	}
	return 0;
}

/* One line of stdin without libedit: 1 read, 0 EOF, -E2BIG (skipped), -EINTR. */
static int plain_line(char **buf, size_t *cap, size_t *len)
{
	size_t n = 0;
	bool toolong = false;
	int ch;

	for (;;) {
		ch = getc(stdin);
		if (ch == EOF) {
			if (ferror(stdin) && errno == EINTR) {
				clearerr(stdin);
				return -EINTR;
			}
			if (n == 0 && !toolong)
				return 0;
			break;
		}
		if (ch == '\n')
			break;
		if (n >= MAX_LINE_BYTES) {
			toolong = true;
			continue;
		}
		if (n + 1 >= *cap) {
			size_t ncap = *cap ? *cap * 2 : 256;
			char *nb = realloc(*buf, ncap);

			if (!nb)
				return -ENOMEM;
			*buf = nb;
			*cap = ncap;
		}
		(*buf)[n++] = (char)ch;
	}
	if (toolong)
		return -E2BIG;
	if (n + 1 > *cap) {
		char *nb = realloc(*buf, n + 1);

		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = n + 1;
	}
	(*buf)[n] = '\0';
	*len = n;
	return 1;
}

static char *chat_prompt(EditLine *el)
{
	(void)el;
	return (char *)"> ";
}

static const char chat_commands[] =
	"/reset  forget the conversation (the --system prompt stays)\n"
	"/quit   leave (so does Ctrl-D)\n"
	"/help   this list\n"
	"//...   send a line that starts with '/'\n"
	"Ctrl-C  cancel the answer being written\n";

static int cmd_chat(int argc, char **argv)
{
	static const struct option opts[] = {
		COMMON_OPTS, SAMPLING_OPTS,
		{ NULL, 0, NULL, 0 }
	};
	const struct cmd *cmd = find_cmd("chat");
	struct req r = { .n = 0 };
	struct chat h = { NULL, 0, 0 };
	struct conn c;
	const struct param *sys;
	EditLine *el = NULL;
	History *hist = NULL;
	HistEvent ev;
	bool stats = false, tty_in = isatty(STDIN_FILENO), edit, failed = false;
	char *line = NULL;
	size_t line_cap = 0, base;
	int o, ret = XS_USAGE;

	r.stop = calloc((size_t)argc + 1, sizeof(*r.stop));
	if (!r.stop)
		return XS_DAEMON;
	while ((o = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		int hh = common_opt(cmd, o);

		if (hh == 2) {
			ret = XS_OK;
			goto out_args;
		}
		if (hh == 0)
			hh = sampling_opt(&r, o, &stats);
		if (hh <= 0)
			goto usage;
	}
	if (optind != argc) {
		errmsg("chat: unexpected argument '%s'", argv[optind]);
		goto usage;
	}
	/* The system prompt is the first message, not a chat parameter. */
	sys = req_get(&r, "system");
	if (sys && chat_push(&h, "system", sys->s, sys->len) < 0) {
		errmsg("out of memory");
		ret = XS_DAEMON;
		goto out_args;
	}
	if (sys) {
		unsigned i = (unsigned)(sys - r.p);

		memmove(&r.p[i], &r.p[i + 1], (r.n - i - 1) * sizeof(r.p[0]));
		r.n--;
	}
	base = h.n;
	req_bool(&r, "stream", true);

	conn_init(&c);
	ret = conn_open(&c);
	if (ret)
		goto out;

	edit = tty_in && isatty(STDOUT_FILENO);
	if (edit) {
		el = el_init("mistralctl", stdin, stdout, stderr);
		hist = history_init();
		if (!el || !hist) {
			errmsg("cannot initialise line editing");
			ret = XS_DAEMON;
			goto out;
		}
		history(hist, &ev, H_SETSIZE, 1000);
		history(hist, &ev, H_SETUNIQUE, 1);
		el_set(el, EL_PROMPT, chat_prompt);
		el_set(el, EL_EDITOR, "emacs");
		el_set(el, EL_HIST, history, hist);
		el_source(el, NULL);
		fputs("Chatting with mistrald; /help for commands, Ctrl-D to leave.\n", stderr);
	}

	for (;;) {
		const char *text;
		size_t len;

		got_sigint = 0;
		if (edit) {
			int count = 0;

			text = el_gets(el, &count);
			if (!text) {
				/* Ctrl-C at the prompt abandons the line, as in a shell. */
				if (count < 0 && got_sigint) {
					fputc('\n', stdout);
					continue;
				}
				fputc('\n', stdout);
				break;
			}
			len = (size_t)count;
			if (len > MAX_LINE_BYTES) {
				errmsg("line longer than %zu bytes ignored", MAX_LINE_BYTES);
				continue;
			}
			while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
				len--;
			if (len)
				history(hist, &ev, H_ENTER, text);
		} else {
			int lr;

			/* A prompt only for a person typing, and never into a pipe. */
			if (tty_in) {
				FILE *pf = isatty(STDOUT_FILENO) ? stdout : stderr;

				fputs("> ", pf);
				fflush(pf);
			}
			lr = plain_line(&line, &line_cap, &len);
			if (lr == -EINTR) {
				if (!tty_in) {
					ret = XS_INTR;
					goto out;
				}
				fputc('\n', stdout);
				continue;
			}
			if (lr == -E2BIG) {
				errmsg("line longer than %zu bytes ignored", MAX_LINE_BYTES);
				failed = true;
				continue;
			}
			if (lr < 0) {
				errmsg("standard input: %s", strerror(-lr));
				ret = XS_DAEMON;
				goto out;
			}
			if (lr == 0)
				break;
			text = line;
		}
		if (len == 0)
			continue;
		if (text[0] == '/' && !(len > 1 && text[1] == '/')) {
			if ((len == 5 && !memcmp(text, "/quit", 5)) || (len == 5 && !memcmp(text, "/exit", 5)))
				break;
			if (len == 6 && !memcmp(text, "/reset", 6)) {
				chat_truncate(&h, base);
				if (tty_in)
					fputs("(conversation cleared)\n", stderr);
				continue;
			}
			if (len == 5 && !memcmp(text, "/help", 5)) {
				fputs(chat_commands, stderr);
				continue;
			}
			errmsg("unknown command '%.*s'; /help lists them", (int)(len > 40 ? 40 : len), text);
			if (!tty_in)
				failed = true;
			continue;
		}
		if (text[0] == '/') {
			text++;
			len--;
		}
		if (chat_push(&h, "user", text, len) < 0) {
			errmsg("out of memory");
			ret = XS_DAEMON;
			goto out;
		}
		ret = chat_turn(&c, &h, &r, stats, tty_in);
		if (ret == 1) {
			failed = true;
			continue;
		}
		if (ret)
			goto out;
	}
	/* Interactive sessions end well; a script learns whether any turn failed. */
	ret = (!tty_in && failed) ? XS_DAEMON : XS_OK;
out:
	if (el)
		el_end(el);
	if (hist)
		history_end(hist);
	conn_free(&c);
	chat_truncate(&h, 0);
	free(h.m);
	free(line);
	goto out_args;
usage:
	ret = usage_error("chat");
out_args:
	req_free(&r);
	return ret;
}

/* ---------------------------------------------------- small commands --- */

/* Option parsing for commands with only --json (and the common ones); -1 usage, 1 help shown. */
static int simple_opts(const struct cmd *cmd, int argc, char **argv, bool *json)
{
	static const struct option opts[] = {
		COMMON_OPTS,
		{ "json", no_argument, NULL, O_JSON },
		{ NULL, 0, NULL, 0 }
	};
	int o;

	while ((o = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		int h = common_opt(cmd, o);

		if (h == 2)
			return 1;
		if (h < 0)
			return -1;
		if (h == 0 && o == O_JSON)
			*json = true;
		else if (h == 0)
			return -1;
	}
	return 0;
}

/* Runs a request and prints the result as JSON or by `print`. */
static int run_simple(const char *method, const struct req *r, bool json,
		      void (*print)(FILE *, const msgpack_object *))
{
	struct conn c;
	struct reply rep;
	int ret;

	conn_init(&c);
	ret = conn_open(&c);
	if (!ret)
		ret = call(&c, method, r, NULL, NULL, &rep);
	if (!ret) {
		if (json) {
			json_obj(stdout, rep.result);
			fputc('\n', stdout);
		} else {
			print(stdout, rep.result);
		}
		if (out_flush() < 0)
			ret = XS_DAEMON;
	}
	conn_free(&c);
	return ret;
}

static void print_human(FILE *f, const msgpack_object *o)
{
	human_print(f, "", o);
}

static int cmd_keyvalue(const char *name, int argc, char **argv,
			void (*print)(FILE *, const msgpack_object *))
{
	const struct cmd *cmd = find_cmd(name);
	struct req r = { .n = 0 };
	bool json = false;
	int h = simple_opts(cmd, argc, argv, &json);

	if (h == 1)
		return XS_OK;
	if (h < 0)
		return usage_error(name);
	if (optind != argc) {
		errmsg("%s: unexpected argument '%s'", name, argv[optind]);
		return usage_error(name);
	}
	return run_simple(name, &r, json, print);
}

static int cmd_info(int argc, char **argv)
{
	return cmd_keyvalue("info", argc, argv, print_human);
}

static int cmd_status(int argc, char **argv)
{
	return cmd_keyvalue("status", argc, argv, print_human);
}

static int cmd_metrics(int argc, char **argv)
{
	return cmd_keyvalue("metrics", argc, argv, metrics_print);
}

static void print_tokens(FILE *f, const msgpack_object *res)
{
	const msgpack_object *t = map_get(res, "tokens");
	uint32_t i;

	if (t && t->type == MSGPACK_OBJECT_ARRAY) {
		for (i = 0; i < t->via.array.size; i++) {
			if (i)
				putc(' ', f);
			human_value(f, &t->via.array.ptr[i]);
		}
	}
	putc('\n', f);
}

static int cmd_tokenize(int argc, char **argv)
{
	static const struct option opts[] = {
		COMMON_OPTS,
		{ "json", no_argument, NULL, O_JSON },
		{ "no-bos", no_argument, NULL, O_NO_BOS },
		{ "special", no_argument, NULL, O_SPECIAL },
		{ NULL, 0, NULL, 0 }
	};
	const struct cmd *cmd = find_cmd("tokenize");
	struct req r = { .n = 0 };
	bool json = false;
	char *text = NULL;
	size_t len;
	int o, ret;

	while ((o = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		int h = common_opt(cmd, o);

		if (h == 2)
			return XS_OK;
		if (h < 0)
			return usage_error("tokenize");
		if (h)
			continue;
		switch (o) {
		case O_JSON: json = true; break;
		case O_NO_BOS: req_bool(&r, "add_bos", false); break;
		case O_SPECIAL: req_bool(&r, "special", true); break;
		default: return usage_error("tokenize");
		}
	}
	if (optind == argc) {
		errmsg("tokenize: a TEXT is required");
		return usage_error("tokenize");
	}
	ret = text_args(argv + optind, argc - optind, &text, &len);
	if (ret)
		return ret;
	req_str(&r, "text", text, len);
	ret = run_simple("tokenize", &r, json, print_tokens);
	free(text);
	return ret;
}

static void print_text(FILE *f, const msgpack_object *res)
{
	const msgpack_object *t = map_str(res, "text");
	struct stream_out so = { 0, 0 };

	if (t && t->via.str.size) {
		fwrite(t->via.str.ptr, 1, t->via.str.size, f);
		so.bytes = t->via.str.size;
		so.last = t->via.str.ptr[t->via.str.size - 1];
	}
	if (so.bytes == 0 || so.last != '\n')
		putc('\n', f);
}

static int cmd_detokenize(int argc, char **argv)
{
	const struct cmd *cmd = find_cmd("detokenize");
	struct req r = { .n = 0 };
	bool json = false;
	int h = simple_opts(cmd, argc, argv, &json), ret;

	if (h == 1)
		return XS_OK;
	if (h < 0)
		return usage_error("detokenize");
	if (optind == argc) {
		errmsg("detokenize: token ids are required");
		return usage_error("detokenize");
	}
	if (parse_ids(&r, argv + optind, argc - optind) < 0) {
		req_free(&r);
		return usage_error("detokenize");
	}
	ret = run_simple("detokenize", &r, json, print_text);
	req_free(&r);
	return ret;
}

static void print_cancelled(FILE *f, const msgpack_object *res)
{
	const msgpack_object *v = map_get(res, "cancelled");

	fprintf(f, "cancelled: %s\n", v && v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean ? "true" : "false");
}

static int cmd_cancel(int argc, char **argv)
{
	const struct cmd *cmd = find_cmd("cancel");
	struct req r = { .n = 0 };
	bool json = false;
	uint64_t id;
	int h = simple_opts(cmd, argc, argv, &json);

	if (h == 1)
		return XS_OK;
	if (h < 0)
		return usage_error("cancel");
	if (optind + 1 != argc || parse_u64(argv[optind], UINT32_MAX, &id) < 0) {
		errmsg("cancel: one request id (0 to 4294967295) is required");
		return usage_error("cancel");
	}
	req_set(&r, "id", PK_UINT)->u = id;
	return run_simple("cancel", &r, json, print_cancelled);
}

static int cmd_help(int argc, char **argv);

#define SAMPLING_HELP \
	"  --max-tokens N           tokens to generate at most (daemon default 256)\n" \
	"  --temperature T          0 = greedy (default 0.6)\n" \
	"  --top-k N                keep the N most likely tokens; 0 = off (40)\n" \
	"  --top-p P                nucleus sampling mass, (0, 1] (0.95)\n" \
	"  --min-p P                drop tokens below P x the best one (0.05)\n" \
	"  --seed S                 sampling seed (default random, reported by --stats)\n" \
	"  --repetition-penalty F   (1.0 = off)\n" \
	"  --frequency-penalty F    [-2, 2] (0)\n" \
	"  --presence-penalty F     [-2, 2] (0)\n" \
	"  --stop S                 stop before the string S; repeatable\n" \
	"  --logprobs N             log-probabilities of each token and N alternatives\n" \
	"  --system TEXT            system prompt\n" \
	"  --stats                  timings and token counts on stderr after the answer\n"

static const struct cmd cmds[] = {
	{ "generate", cmd_generate, "[options] PROMPT... | --tokens IDS",
	  "Generate text from PROMPT (several arguments are joined with spaces; '-' reads\n"
	  "the prompt from standard input) and stream it to standard output. A newline\n"
	  "is added after the text unless it ends with one.\n\n"
	  "  --raw                    no instruct template: BOS + prompt\n"
	  "  --tokens IDS             feed token ids (comma separated) instead of a prompt\n"
	  "  --no-stream              wait for the whole answer, then print it\n"
	  "  --json                   print the final result object as JSON\n"
	  SAMPLING_HELP },
	{ "chat", cmd_chat, "[options]",
	  "Interactive multi-turn chat (line editing when on a terminal; otherwise one\n"
	  "user message per line of standard input). Ctrl-C cancels an answer (the part\n"
	  "already written stays in the conversation); /reset forgets the conversation;\n"
	  "/quit or Ctrl-D leaves.\n\n"
	  SAMPLING_HELP },
	{ "tokenize", cmd_tokenize, "[--no-bos] [--special] [--json] TEXT...",
	  "Print the token ids of TEXT ('-' reads standard input).\n\n"
	  "  --no-bos                 do not prepend the beginning-of-sequence token\n"
	  "  --special                parse control tokens written as text (\"</s>\")\n"
	  "  --json                   print the result object as JSON\n" },
	{ "detokenize", cmd_detokenize, "[--json] ID...",
	  "Print the text of token ids (separated by blanks, commas, or given as\n"
	  "separate arguments), followed by a newline unless it ends with one.\n\n"
	  "  --json                   print the result object as JSON\n" },
	{ "info", cmd_info, "[--json]",
	  "Describe the loaded model and the daemon's configuration (key: value lines).\n\n"
	  "  --json                   print the result object as JSON\n" },
	{ "status", cmd_status, "[--json]",
	  "Show the daemon's state, load and counters (key: value lines).\n\n"
	  "  --json                   print the result object as JSON\n" },
	{ "metrics", cmd_metrics, "[--json]",
	  "Print the daemon's counters and gauges in the Prometheus text format.\n\n"
	  "  --json                   print the result object as JSON\n" },
	{ "cancel", cmd_cancel, "[--json] ID",
	  "Ask the daemon to cancel request ID. The daemon cancels only requests sent\n"
	  "on the same connection, so from here this reports 'cancelled: false'; it\n"
	  "exists for completeness (chat sends cancel on Ctrl-C).\n\n"
	  "  --json                   print the result object as JSON\n" },
	{ "help", cmd_help, "[COMMAND]", "Show the help of mistralctl or of COMMAND.\n" },
};

static const struct cmd *find_cmd(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	}
	return NULL;
}

static void main_usage(FILE *f)
{
	size_t i;

	fputs("usage: mistralctl [--socket PATH] [--timeout S] COMMAND [ARGS]\n"
	      "       mistralctl --help | --version\n\n"
	      "Client of the mistrald inference daemon.\n\n"
	      "  --socket PATH    daemon socket (default $MISTRALD_SOCKET, else " DEFAULT_SOCKET ")\n"
	      "  --timeout S      give up when the daemon sends nothing for S seconds (0 = never)\n\n"
	      "Commands:\n", f);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].synopsis);
	fputs("\n'mistralctl COMMAND --help' describes a command.\n"
	      "Exit status: 0 ok, 1 daemon error, 2 usage, 3 cannot connect, 4 protocol error,\n"
	      "connection lost or timeout, 130 interrupted.\n", f);
}

static int cmd_help(int argc, char **argv)
{
	const struct cmd *cmd;

	if (argc < 2) {
		main_usage(stdout);
		return XS_OK;
	}
	cmd = find_cmd(argv[1]);
	if (!cmd) {
		errmsg("unknown command '%s'", argv[1]);
		return usage_error(NULL);
	}
	cmd_usage(cmd, stdout);
	return XS_OK;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	static char progname[64];
	struct sigaction sa;
	const struct cmd *cmd;
	int o;

	/* LC_CTYPE only: libedit needs it for UTF-8 input; numbers keep the C locale's '.'. */
	setlocale(LC_CTYPE, "");
	/*
	 * No SA_RESTART: Ctrl-C must interrupt a blocking read so the request
	 * can be cancelled. An inherited SIG_IGN (a background job) is kept.
	 */
	memset(&sa, 0, sizeof(sa));
	if (sigaction(SIGINT, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigint;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
	}

	while ((o = getopt_long(argc, argv, "+s:t:hV", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			opt_socket = optarg;
			break;
		case 't':
			if (set_timeout(optarg) < 0)
				return usage_error(NULL);
			break;
		case 'h':
			main_usage(stdout);
			return XS_OK;
		case 'V':
			printf("mistralctl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
			return XS_OK;
		default:
			return usage_error(NULL);
		}
	}
	if (optind == argc) {
		errmsg("a COMMAND is required");
		main_usage(stderr);
		return XS_USAGE;
	}
	cmd = find_cmd(argv[optind]);
	if (!cmd) {
		errmsg("unknown command '%s'", argv[optind]);
		return usage_error(NULL);
	}
	argc -= optind;
	argv += optind;
	/* getopt names the program by argv[0] in its messages: "mistralctl generate: ...". */
	snprintf(progname, sizeof(progname), "mistralctl %s", cmd->name);
	argv[0] = progname;
	optind = 0;    /* glibc: re-initialise getopt for the command's own options */
	return cmd->run(argc, argv);
}
