/* The HTTP front door: evhttp listeners on the daemon's loop, connection limits and deadlines, routing, errors, delivery of results. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <msgpack.h>

#include "counters.h"
#include "http.h"
#include "http_api.h"
#include "log.h"
#include "promtext.h"

#define SWEEP_SECONDS 1           /* deadline granularity, and how late a closed connection's fd is released */
#define KEY_FILE_MAX  4096        /* a bearer token is tens of bytes; anything near this is the wrong file */
#define MAX_LISTENERS (MD_HTTP_LISTEN_MAX * 2)
#define WORKERS_PREFIX "/ai/run/"

struct hreq;

/*
 * One HTTP connection, from its bufferevent (made in bev_cb, so every
 * connection is seen from its first byte, before evhttp has a request for
 * it). evhttp frees connections on its own (timeouts, EOF, errors) and says
 * so only for those that sent a request; the extra reference on bev keeps
 * it readable until the sweep notices evhttp's free by its cleared
 * callbacks and drops it. The cost: a closed connection's fd lives up to
 * SWEEP_SECONDS longer.
 */
struct hconn {
	struct md_http *h;
	struct bufferevent *bev;
	struct evhttp_connection *evcon;   /* once a request arrived */
	struct hreq *cur;                  /* the request being answered */
	double deadline;                   /* the next request must be in by then; 0 while one is answered */
	bool gone;                         /* evhttp freed the connection */
	bool over_limit;                   /* beyond http_max_connections: refused */
	struct hconn *prev, *next;
};

/* One request handed to the worker, until its final output or its client leaves. */
struct hreq {
	uint64_t id;                       /* the job's conn_id */
	struct hconn *hc;
	struct evhttp_request *req;
	struct md_job *job;                /* our reference */
	struct md_api_req rq;
	bool sse;                          /* the event-stream headers are out */
	bool cut;                          /* its socket was shut: waiting for evhttp's close_cb to free req */
	struct hreq *prev, *next;
};

struct md_http {
	struct event_base *base;
	struct md_daemon *d;
	struct evhttp *http;
	struct event *sweep;
	struct event *accept_retry;
	struct evhttp_bound_socket *bound[MAX_LISTENERS];
	size_t n_bound;
	char *unix_paths[MAX_LISTENERS];   /* created here: removed at exit */
	size_t n_unix;
	char *key;                         /* the bearer token, NULL: none required */
	size_t key_len;
	bool allow_remote;
	uint32_t timeout, max_conns;
	size_t out_limit;
	size_t in_limit;                   /* a whole request, headers and body */
	mode_t unix_mode;
	struct hconn *conns;
	uint32_t n_conns;                  /* not yet gone */
	struct hreq *reqs;
	size_t n_reqs;
	uint64_t next_id;
};

/* ------------------------------------------------------------------------ */
/* Replies                                                                   */
/* ------------------------------------------------------------------------ */

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 499: return "Client Closed Request";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

static void reply(struct evhttp_request *req, int status, const char *type, struct evbuffer *body)
{
	struct evkeyvalq *hd = evhttp_request_get_output_headers(req);

	evhttp_add_header(hd, "Content-Type", type);
	if (status >= 400)
		atomic_fetch_add(&md_counters.http_errors_total, 1);
	evhttp_send_reply(req, status, reason(status), body);
}

/* Requests under /ai/run/ get their errors in the Workers AI shape, whatever stage refused them. */
static bool workers_path(struct evhttp_request *req)
{
	const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
	const char *path = u ? evhttp_uri_get_path(u) : NULL;

	return path && strncmp(path, WORKERS_PREFIX, strlen(WORKERS_PREFIX)) == 0;
}

static void reply_error(struct evhttp_request *req, const struct md_api_err *e)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	md_api_error_body(e, workers_path(req), b);
	if (e->status == 401)
		evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
	reply(req, e->status, "application/json", b);
	evbuffer_free(b);
}

__attribute__((format(printf, 5, 6)))
static void errorf(struct evhttp_request *req, int status, const char *type, const char *code, const char *fmt, ...)
{
	struct md_api_err e;
	char msg[sizeof(e.message)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	md_api_errf(&e, status, type, code, NULL, "%s", msg);
	reply_error(req, &e);
}

/* ------------------------------------------------------------------------ */
/* Requests in flight                                                        */
/* ------------------------------------------------------------------------ */

static struct hreq *find_req(struct md_http *h, uint64_t id)
{
	for (struct hreq *r = h->reqs; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

static void req_finish(struct md_http *h, struct hreq *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		h->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	h->n_reqs--;
	if (r->hc && r->hc->cur == r)
		r->hc->cur = NULL;
	md_job_unref(r->job);
	free(r);
}

/* The client is gone (or will be cut off): the sequence stops within a token and answers nobody. */
static void req_abandon(struct md_http *h, struct hreq *r)
{
	atomic_store(&r->job->gone, true);
	atomic_store(&r->job->cancel, true);
	md_worker_kick(h->d->worker);
	req_finish(h, r);
}

/* Shuts the socket: evhttp sees the end and frees the connection. */
static void cut(struct hconn *hc)
{
	evutil_socket_t fd = bufferevent_getfd(hc->bev);

	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

/*
 * Sends SSE bytes, first the headers. A client that stops reading would
 * make evhttp buffer without end, so the backlog is checked first, as on
 * the socket (output_buffer_bytes), and such a client is cut off: its
 * sequence is cancelled now, while the request stays until evhttp, seeing
 * the shut socket, hands it back in close_cb to be freed.
 */
static bool sse_send(struct md_http *h, struct hreq *r, struct evbuffer *b)
{
	size_t unsent = evbuffer_get_length(bufferevent_get_output(r->hc->bev));

	if (unsent > h->out_limit) {
		md_log(LOG_WARNING, "http: client is not reading its stream (%zu bytes unsent, limit %zu); closing it",
		       unsent, h->out_limit);
		cut(r->hc);
		r->cut = true;
		atomic_store(&r->job->gone, true);
		atomic_store(&r->job->cancel, true);
		md_worker_kick(h->d->worker);
		return false;
	}
	if (!r->sse) {
		struct evkeyvalq *hd = evhttp_request_get_output_headers(r->req);

		evhttp_add_header(hd, "Content-Type", "text/event-stream");
		evhttp_add_header(hd, "Cache-Control", "no-cache");
		evhttp_send_reply_start(r->req, 200, "OK");
		r->sse = true;
	}
	evhttp_send_reply_chunk(r->req, b);
	return true;
}

void md_http_deliver(struct md_http *h, struct md_out *o)
{
	struct hreq *r = h ? find_req(h, o->conn_id) : NULL;
	struct evbuffer *b;
	struct md_api_err e;

	if (!r || r->cut || !(b = evbuffer_new())) {
		md_out_free(o);
		return;
	}
	switch (md_api_render(&r->rq, o->data, o->len, b, &e)) {
	case API_MSG_CHUNK:
		if (evbuffer_get_length(b))
			sse_send(h, r, b);
		break;
	case API_MSG_DONE:
		if (!r->rq.stream) {
			reply(r->req, 200, "application/json", b);
		} else if (sse_send(h, r, b)) {
			evhttp_send_reply_end(r->req);
		} else {
			break;   /* cut off */
		}
		req_finish(h, r);
		break;
	case API_MSG_ERROR:
		if (r->sse) {
			/* too late for a status: the error goes out as the stream's last event */
			evbuffer_add(b, "data: ", 6);
			md_api_error_body(&e, r->rq.api == API_WORKERS, b);
			evbuffer_add(b, "\n\n", 2);
			if (sse_send(h, r, b))
				evhttp_send_reply_end(r->req);
			else
				break;
		} else {
			reply_error(r->req, &e);
		}
		req_finish(h, r);
		break;
	}
	evbuffer_free(b);
	md_out_free(o);
}

size_t md_http_inflight(struct md_http *h)
{
	return h ? h->n_reqs : 0;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

static void hconn_free(struct md_http *h, struct hconn *hc)
{
	if (hc->prev)
		hc->prev->next = hc->next;
	else
		h->conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	if (!hc->gone)
		h->n_conns--;
	bufferevent_decref(hc->bev);
	free(hc);
}

static void hconn_gone(struct md_http *h, struct hconn *hc)
{
	if (hc->gone)
		return;
	hc->gone = true;
	h->n_conns--;
	h->d->http_connections = h->n_conns;
}

/* evhttp is freeing a connection that sent a request. */
static void close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct hconn *hc = arg;
	struct md_http *h = hc->h;
	struct hreq *r = hc->cur;

	(void)evcon;
	/* evhttp frees it next; nothing more is read into it while the sweep comes */
	bufferevent_disable(hc->bev, EV_READ);
	if (r) {
		md_log(LOG_DEBUG, "http: client left during a request; cancelling it");
		/* detached (end of file, timeout): evhttp left the request to us; else it frees it */
		if (!evhttp_request_get_connection(r->req))
			evhttp_request_free(r->req);
		req_abandon(h, r);
	}
	hconn_gone(h, hc);
}

static void complete_cb(struct evhttp_request *req, void *arg)
{
	struct hconn *hc = arg;

	(void)req;
	hc->deadline = md_now() + hc->h->timeout;
}

static void reap(struct md_http *h);

/*
 * Every connection starts here. Its input is capped so that a client
 * pouring bytes into a connection evhttp has already given up (freed, but
 * still referenced here until the sweep) cannot grow it without bound. The
 * cap is a whole request: evhttp takes a body out of the input only once
 * all of it is there.
 */
static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
	struct md_http *h = arg;
	struct hconn *hc;

	/* clients that left since the last sweep do not count against the limit */
	if (h->n_conns >= h->max_conns)
		reap(h);
	hc = calloc(1, sizeof(*hc));
	if (!hc)
		return NULL;   /* evhttp makes its own; gen_cb refuses its requests */
	hc->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!hc->bev) {
		free(hc);
		return NULL;
	}
	bufferevent_incref(hc->bev);
	bufferevent_setwatermark(hc->bev, EV_READ, 0, h->in_limit);
	hc->h = h;
	hc->over_limit = h->n_conns >= h->max_conns;
	/* one over the limit gets a second to ask, and a 503 for its answer */
	hc->deadline = md_now() + (hc->over_limit ? 1 : h->timeout);
	hc->next = h->conns;
	if (h->conns)
		h->conns->prev = hc;
	h->conns = hc;
	h->n_conns++;
	h->d->http_connections = h->n_conns;
	atomic_fetch_add(&md_counters.http_connections_total, 1);
	return hc->bev;
}

static struct hconn *find_conn(struct md_http *h, struct bufferevent *bev)
{
	for (struct hconn *hc = h->conns; hc; hc = hc->next)
		if (hc->bev == bev && !hc->gone)
			return hc;
	return NULL;
}

/* Frees the connections evhttp has freed, with or without a word (their callbacks are cleared). */
static void reap(struct md_http *h)
{
	struct hconn *hc = h->conns, *next;

	for (; hc; hc = next) {
		bufferevent_data_cb rcb, wcb;
		bufferevent_event_cb ecb;

		next = hc->next;
		bufferevent_getcb(hc->bev, &rcb, &wcb, &ecb, NULL);
		if (hc->gone || (!rcb && !wcb && !ecb))
			hconn_free(h, hc);
	}
	h->d->http_connections = h->n_conns;
}

/*
 * evhttp stops reading a connection while its request is answered, so a
 * client that leaves before its whole answer is ready went unseen: its
 * sequence generated to the end for nobody, holding a slot. The sweep
 * peeks for the end of file instead and frees such a connection, and
 * close_cb cancels the request. A client that half-closes after sending
 * counts as gone, as in nginx (its 499). Costs a recv per request in
 * flight per sweep; a client is noticed within SWEEP_SECONDS.
 */
static void drop_departed(struct md_http *h)
{
	struct hreq *r, *next;

	for (r = h->reqs; r; r = next) {
		evutil_socket_t fd;
		ssize_t n;
		char c;

		next = r->next;   /* evhttp_connection_free frees r through close_cb */
		if (r->cut || !r->hc || !r->hc->evcon || r->hc->gone)
			continue;
		fd = bufferevent_getfd(r->hc->bev);
		if (fd < 0)
			continue;
		n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			md_log(LOG_DEBUG, "http: a client left before its answer; cancelling it");
			evhttp_connection_free(r->hc->evcon);
		}
	}
}

/* Deadlines, clients gone while answered, and connections evhttp has freed. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct md_http *h = arg;
	double now = md_now();

	(void)fd;
	(void)what;
	drop_departed(h);
	reap(h);
	for (struct hconn *hc = h->conns; hc; hc = hc->next) {
		if (hc->deadline && now > hc->deadline) {
			md_log(LOG_DEBUG, "http: no complete request within %u s; closing the connection", h->timeout);
			hc->deadline = 0;
			cut(hc);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The loop always runs over the whole key, whatever the guess's length, so
 * timing reveals neither how much of a guess was right nor the key's length.
 */
static bool authorized(struct md_http *h, struct evhttp_request *req)
{
	const char *a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	unsigned char diff;
	size_t n;

	if (!h->key)
		return true;
	if (!a || strncasecmp(a, "Bearer ", 7) != 0)
		return false;
	a += 7;
	n = strlen(a);
	diff = n != h->key_len;
	for (size_t i = 0; i < h->key_len; i++)
		diff |= (unsigned char)(h->key[i] ^ (i < n ? a[i] : 0));
	return diff == 0;
}

static void do_health(struct md_http *h, struct evhttp_request *req)
{
	enum md_state st = (enum md_state)atomic_load(&h->d->state);
	struct evbuffer *b = evbuffer_new();
	bool ready = st == MD_READY || (st == MD_RELOADING && md_worker_has_model(h->d->worker));

	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add_printf(b, "{\"status\":\"%s\"}", md_state_name(st));
	reply(req, ready ? 200 : 503, "application/json", b);
	evbuffer_free(b);
}

static void do_metrics(struct md_http *h, struct evhttp_request *req)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked u;
	struct evbuffer *b = evbuffer_new();
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	md_metrics_pack(h->d, &pk);
	msgpack_unpacked_init(&u);
	f = open_memstream(&text, &len);
	if (b && f && msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS) {
		prom_print(f, &u.data);
		fclose(f);
		f = NULL;
		evbuffer_add(b, text, len);
		reply(req, 200, "text/plain; version=0.0.4", b);
	} else {
		evhttp_send_error(req, 500, NULL);
	}
	if (f)
		fclose(f);
	free(text);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	if (b)
		evbuffer_free(b);
}

static void do_models(struct md_http *h, struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	md_api_models_body(h->d->model_name, (long long)time(NULL), b);
	reply(req, 200, "application/json", b);
	evbuffer_free(b);
}

/* POST bodies of the generation endpoints: parse, queue, and answer when the worker does. */
static void do_generate(struct md_http *h, struct hconn *hc, struct evhttp_request *req, enum md_api api)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	struct md_api_err e;
	struct md_job *job = NULL;
	struct hreq *r;
	int rc;

	if (atomic_load(&h->d->state) == MD_STOPPING) {
		errorf(req, 503, "server_error", "shutting_down", "%s", "the daemon is shutting down");
		return;
	}
	if (!md_worker_has_model(h->d->worker)) {
		errorf(req, 503, "server_error", "loading", "%s", "the model is still loading");
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r || !body) {
		free(r);
		errorf(req, 500, "server_error", "internal", "%s", "out of memory");
		return;
	}
	if (md_api_parse(h->d, api, body, len, &r->rq, &job, &e) < 0) {
		free(r);
		atomic_fetch_add(&md_counters.requests_failed_total, 1);
		reply_error(req, &e);
		return;
	}
	r->id = MD_HTTP_ID_BIT | ++h->next_id;
	r->hc = hc;
	r->req = req;
	r->job = job;
	job->conn_id = r->id;
	snprintf(r->rq.id, sizeof(r->rq.id), "%s-%llx", api == API_CHAT ? "chatcmpl" : "cmpl",
		 (unsigned long long)h->next_id);
	r->rq.created = (long long)time(NULL);
	md_job_ref(job);   /* ours; the worker takes the first */
	rc = md_worker_submit(h->d->worker, job);
	if (rc < 0) {
		md_job_unref(job);
		md_job_unref(job);
		free(r);
		if (rc == -EBUSY) {
			atomic_fetch_add(&md_counters.busy_rejections_total, 1);
			errorf(req, 429, "rate_limit_error", "busy", "%s",
			       "every slot is generating and the queue is full; try again later");
		} else {
			errorf(req, 503, "server_error", "shutting_down", "%s", "the daemon is shutting down");
		}
		return;
	}
	atomic_fetch_add(&md_counters.requests_total, 1);
	r->next = h->reqs;
	if (h->reqs)
		h->reqs->prev = r;
	h->reqs = r;
	h->n_reqs++;
	hc->cur = r;
}

enum route_kind { R_HEALTH, R_METRICS, R_MODELS, R_CHAT, R_COMPLETIONS, R_WORKERS };

static const struct route {
	const char *path;
	bool prefix;
	enum evhttp_cmd_type method;
	enum route_kind kind;
} routes[] = {
	{ "/health", false, EVHTTP_REQ_GET, R_HEALTH },
	{ "/metrics", false, EVHTTP_REQ_GET, R_METRICS },
	{ "/v1/models", false, EVHTTP_REQ_GET, R_MODELS },
	{ "/v1/chat/completions", false, EVHTTP_REQ_POST, R_CHAT },
	{ "/v1/completions", false, EVHTTP_REQ_POST, R_COMPLETIONS },
	{ WORKERS_PREFIX, true, EVHTTP_REQ_POST, R_WORKERS },
};

static void gen_cb(struct evhttp_request *req, void *arg)
{
	struct md_http *h = arg;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct hconn *hc = find_conn(h, evhttp_connection_get_bufferevent(evcon));
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct route *rt = NULL;

	atomic_fetch_add(&md_counters.http_requests_total, 1);
	md_log(LOG_DEBUG, "http: %s %.200s", method == EVHTTP_REQ_GET ? "GET" : method == EVHTTP_REQ_POST ? "POST" : "other",
	       path ? path : "");
	if (!hc) {
		/* bev_cb had no memory for it: without a record its client's leaving would go unseen */
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		errorf(req, 500, "server_error", "internal", "out of memory");
		return;
	}
	if (!hc->evcon) {
		hc->evcon = evcon;
		evhttp_connection_set_closecb(evcon, close_cb, hc);
	}
	hc->deadline = 0;
	evhttp_request_set_on_complete_cb(req, complete_cb, hc);
	if (hc->over_limit) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		errorf(req, 503, "server_error", "busy", "too many HTTP connections (http_max_connections)");
		return;
	}
	if (!authorized(h, req)) {
		errorf(req, 401, "invalid_request_error", "invalid_api_key", "%s",
		       "a valid API key is required: Authorization: Bearer KEY");
		return;
	}
	if (!path)
		path = "";
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (routes[i].prefix ? strncmp(path, routes[i].path, strlen(routes[i].path)) == 0 && path[strlen(routes[i].path)]
				     : strcmp(path, routes[i].path) == 0) {
			rt = &routes[i];
			break;
		}
	}
	if (!rt) {
		errorf(req, 404, "invalid_request_error", "not_found", "no such endpoint: %.200s", path);
		return;
	}
	if (method != rt->method && !(method == EVHTTP_REQ_HEAD && rt->method == EVHTTP_REQ_GET)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
				  rt->method == EVHTTP_REQ_GET ? "GET, HEAD" : "POST");
		errorf(req, 405, "invalid_request_error", "method_not_allowed", "%s takes %s", rt->path,
		       rt->method == EVHTTP_REQ_GET ? "GET" : "POST");
		return;
	}
	switch (rt->kind) {
	case R_HEALTH: do_health(h, req); break;
	case R_METRICS: do_metrics(h, req); break;
	case R_MODELS: do_models(h, req); break;
	case R_CHAT: do_generate(h, hc, req, API_CHAT); break;
	case R_COMPLETIONS: do_generate(h, hc, req, API_COMPLETIONS); break;
	case R_WORKERS: do_generate(h, hc, req, API_WORKERS); break;
	}
}

/* ------------------------------------------------------------------------ */
/* Listening                                                                 */
/* ------------------------------------------------------------------------ */

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct md_http *h = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < h->n_bound; i++)
		evconnlistener_enable(evhttp_bound_socket_get_listener(h->bound[i]));
}

/*
 * evhttp takes the listener's callback argument for itself, so the error
 * callback finds its md_http here (one per process).
 */
static struct md_http *accept_owner;

/* EMFILE/ENFILE: stop accepting for a second rather than spin on a ready listener. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct md_http *h = accept_owner;
	struct timeval tv = { 1, 0 };

	(void)l;
	(void)arg;
	md_log(LOG_WARNING, "http: accept failed: %s; pausing accepts for 1 s", strerror(EVUTIL_SOCKET_ERROR()));
	for (size_t i = 0; i < h->n_bound; i++)
		evconnlistener_disable(evhttp_bound_socket_get_listener(h->bound[i]));
	event_add(h->accept_retry, &tv);
}

/* Whether a bound socket is one a remote client cannot reach. */
static bool fd_is_local(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	if (ss.ss_family == AF_UNIX)
		return true;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
	return false;
}

int md_http_add_fd(struct md_http *h, int fd, char *err, size_t errlen)
{
	struct evconnlistener *l;

	if (h->n_bound == MAX_LISTENERS) {
		snprintf(err, errlen, "more than %d HTTP sockets", MAX_LISTENERS);
		return -EMFILE;
	}
	if (!h->allow_remote && !fd_is_local(fd)) {
		snprintf(err, errlen, "HTTP socket fd %d is not a loopback or unix socket; serving it needs "
			 "http_allow_remote = yes and an http_api_key", fd);
		return -EPERM;
	}
	evutil_make_socket_nonblocking(fd);
	evutil_make_socket_closeonexec(fd);
	l = evconnlistener_new(h->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!l) {
		snprintf(err, errlen, "out of memory for an HTTP listener");
		return -ENOMEM;
	}
	h->bound[h->n_bound] = evhttp_bind_listener(h->http, l);
	if (!h->bound[h->n_bound]) {
		evconnlistener_free(l);
		snprintf(err, errlen, "out of memory for an HTTP listener");
		return -ENOMEM;
	}
	accept_owner = h;
	evconnlistener_set_error_cb(l, accept_error_cb);
	h->n_bound++;
	return 0;
}

/* A unix: path may be replaced when it is a socket nobody answers on (left by a crash). */
static int clear_stale_unix(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket; not replacing it", path);
		return -EEXIST;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "%s is in use by another process", path);
		return -EADDRINUSE;
	}
	unlink(path);
	return 0;
}

int md_http_bind(struct md_http *h, const char *spec, char *err, size_t errlen)
{
	struct md_listen_addr a;
	char why[256];
	int fd, r, one = 1;
	mode_t old;

	if (md_listen_parse(spec, &a, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "http_listen: %s", why);
		return -EINVAL;
	}
	if (a.is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		if ((r = clear_stale_unix(a.path, err, errlen)) < 0)
			return r;
		memcpy(sa.sun_path, a.path, strlen(a.path) + 1);
		memcpy(&a.addr, &sa, sizeof(sa));
		a.addr_len = sizeof(sa);
	}
	fd = socket(a.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "http_listen %s: socket: %s", spec, strerror(errno));
		return r;
	}
	if (!a.is_unix)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a.addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	/* a unix socket is created private, then opened to exactly socket_mode */
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&a.addr, a.addr_len);
	umask(old);
	if (r == 0 && a.is_unix && (h->unix_paths[h->n_unix] = strdup(a.path)))
		h->n_unix++;
	if (r < 0 || (a.is_unix && chmod(a.path, h->unix_mode) < 0) || listen(fd, 128) < 0) {
		r = -errno;
		snprintf(err, errlen, "http_listen %s: %s", spec, strerror(errno));
		close(fd);
		return r;
	}
	if ((r = md_http_add_fd(h, fd, err, errlen)) < 0) {
		close(fd);
		return r;
	}
	md_log(LOG_INFO, "HTTP API on %s", spec);
	return 0;
}

void md_http_stop_listening(struct md_http *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n_bound; i++)
		evhttp_del_accept_socket(h->http, h->bound[i]);
	h->n_bound = 0;
	if (h->accept_retry)   /* NULL when md_http_new failed before making it */
		event_del(h->accept_retry);
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * The token: the file's first line, surrounding blanks dropped. Only a
 * regular file: a FIFO or a device would hang or feed the start-up
 * (O_NONBLOCK keeps the open of a FIFO from waiting for a writer).
 */
static int read_key(struct md_http *h, const char *path, char *err, size_t errlen)
{
	char buf[KEY_FILE_MAX + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	ssize_t n;
	char *s, *e;
	int r;

	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "http_api_key %s: %s", path, strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(err, errlen, "http_api_key %s: not a regular file", path);
		return -EINVAL;
	}
	n = read(fd, buf, KEY_FILE_MAX + 1);
	r = errno;
	close(fd);
	if (n < 0 || n > KEY_FILE_MAX) {
		snprintf(err, errlen, "http_api_key %s: %s", path, n < 0 ? strerror(r) : "larger than 4 KiB");
		explicit_bzero(buf, sizeof(buf));
		return -EINVAL;
	}
	buf[n] = '\0';
	for (s = buf; *s == ' ' || *s == '\t'; s++)
		;
	e = s + strcspn(s, "\r\n");
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	for (char *p = s; *p; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "http_api_key %s: the token must be printable ASCII without blanks", path);
			explicit_bzero(buf, sizeof(buf));
			return -EINVAL;
		}
	}
	if (e - s < 8) {
		snprintf(err, errlen, "http_api_key %s: the token is shorter than 8 characters", path);
		explicit_bzero(buf, sizeof(buf));
		return -EINVAL;
	}
	h->key_len = (size_t)(e - s);
	h->key = strdup(s);
	explicit_bzero(buf, sizeof(buf));
	return h->key ? 0 : -ENOMEM;
}

struct md_http *md_http_new(struct event_base *base, struct md_daemon *d, char *err, size_t errlen)
{
	const struct md_config *cfg = d->cfg;
	struct md_http *h = calloc(1, sizeof(*h));
	struct timeval sweep = { SWEEP_SECONDS, 0 };

	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->base = base;
	h->d = d;
	h->allow_remote = cfg->http_allow_remote;
	h->timeout = cfg->http_timeout;
	h->max_conns = cfg->http_max_connections;
	h->out_limit = cfg->output_buffer_bytes;
	h->in_limit = cfg->http_max_body_bytes + cfg->http_max_header_bytes + 4096;
	h->unix_mode = cfg->socket_mode;
	if (cfg->http_api_key && read_key(h, cfg->http_api_key, err, errlen) < 0) {
		md_http_free(h);
		return NULL;
	}
	h->http = evhttp_new(base);
	h->sweep = event_new(base, -1, EV_PERSIST, sweep_cb, h);
	h->accept_retry = evtimer_new(base, accept_retry_cb, h);
	if (!h->http || !h->sweep || !h->accept_retry) {
		snprintf(err, errlen, "out of memory");
		md_http_free(h);
		return NULL;
	}
	evhttp_set_max_body_size(h->http, (ev_ssize_t)cfg->http_max_body_bytes);
	evhttp_set_max_headers_size(h->http, (ev_ssize_t)cfg->http_max_header_bytes);
	evhttp_set_timeout(h->http, (int)cfg->http_timeout);
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
				   EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_bevcb(h->http, bev_cb, h);
	evhttp_set_gencb(h->http, gen_cb, h);
	event_add(h->sweep, &sweep);
	return h;
}

void md_http_free(struct md_http *h)
{
	if (!h)
		return;
	md_http_stop_listening(h);
	/* closes every connection: close_cb abandons their requests */
	if (h->http)
		evhttp_free(h->http);
	while (h->reqs)
		req_abandon(h, h->reqs);
	while (h->conns)
		hconn_free(h, h->conns);
	for (size_t i = 0; i < h->n_unix; i++) {
		unlink(h->unix_paths[i]);
		free(h->unix_paths[i]);
	}
	if (h->sweep)
		event_free(h->sweep);
	if (h->accept_retry)
		event_free(h->accept_retry);
	if (h->key)
		explicit_bzero(h->key, h->key_len);
	if (accept_owner == h)
		accept_owner = NULL;
	free(h->key);
	free(h);
}
