/* The event loop side: listening sockets, connections, request framing, delivery of results. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "counters.h"
#include "kvmap.h"
#include "log.h"
#include "server.h"

/*
 * One client connection. Input is copied out of libevent into inbuf, a
 * contiguous buffer that grows by doubling up to the message cap, so the
 * resumable scanner sees each byte once however slowly a client trickles
 * it in. Output goes through the bufferevent; its size is checked after
 * every write so a client that stops reading cannot make the daemon
 * buffer without bound.
 */
struct conn {
	uint64_t id;
	struct md_server *srv;
	struct bufferevent *bev;
	struct event *timer;          /* idle timeout, or the flush deadline once closing */
	struct mf_scanner scan;
	unsigned char *inbuf;
	size_t in_len, in_cap;
	struct md_job *inflight;      /* requests with a job, linked by conn_next */
	uint32_t n_inflight;
	bool closing;                 /* flushing a last error, then closed */
	double last_active;
	struct conn *prev, *next;
	struct conn *id_next;         /* the next in its by_id bucket */
};

struct listener {
	struct evconnlistener *l;
	struct listener *next;
};

struct md_server {
	struct event_base *base;
	struct md_daemon *d;
	struct listener *listeners;
	struct event *accept_retry;   /* re-enables accepting after EMFILE */
	struct conn *conns;
	/*
	 * The same connections by id, for the worker's outputs, which name
	 * theirs by id because it may be gone when they arrive: a chained
	 * table with at least as many buckets as connections, so finding one
	 * takes a step or two instead of a walk over all of them per message.
	 */
	struct conn **by_id;
	size_t by_id_mask;            /* buckets - 1, a power of two */
	size_t n_by_id;
	uint64_t next_id;
	char *sock_path;              /* created by md_server_bind: removed at exit */
	char *lock_path;
	int lock_fd;
	int spare_fd;                 /* /dev/null, given up to answer "busy" when out of fds */
};

#define CLOSE_FLUSH_SECONDS 5     /* how long a closing connection may take to read its error */
#define BY_ID_BUCKETS 4           /* to begin with, doubled as connections outnumber them: the tests with many connections grow it */

static void conn_free(struct conn *c);

/* ------------------------------------------------------------------------ */
/* Connections by id                                                         */
/* ------------------------------------------------------------------------ */

/* Ids are handed out in sequence, so their low bits spread them evenly. */
static struct conn **by_id_bucket(struct md_server *s, uint64_t id)
{
	return &s->by_id[id & s->by_id_mask];
}

/* Twice the buckets; without the memory the chains just get longer. */
static void by_id_grow(struct md_server *s)
{
	size_t n = (s->by_id_mask + 1) * 2;
	struct conn **old = s->by_id, **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	s->by_id = b;
	for (size_t i = 0; i <= s->by_id_mask; i++) {
		while (old[i]) {
			struct conn *c = old[i];

			old[i] = c->id_next;
			c->id_next = b[c->id & (n - 1)];
			b[c->id & (n - 1)] = c;
		}
	}
	s->by_id_mask = n - 1;
	free(old);
}

static void by_id_add(struct md_server *s, struct conn *c)
{
	struct conn **b;

	if (++s->n_by_id > s->by_id_mask + 1)
		by_id_grow(s);
	b = by_id_bucket(s, c->id);
	c->id_next = *b;
	*b = c;
}

static void by_id_remove(struct md_server *s, struct conn *c)
{
	for (struct conn **pp = by_id_bucket(s, c->id); *pp; pp = &(*pp)->id_next) {
		if (*pp == c) {
			*pp = c->id_next;
			s->n_by_id--;
			return;
		}
	}
}

/* The open connection with this id, NULL once it has closed. */
static struct conn *find_conn(struct md_server *s, uint64_t id)
{
	struct conn *c = *by_id_bucket(s, id);

	while (c && c->id != id)
		c = c->id_next;
	return c;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Queues bytes for the client; false (and the connection is gone) when the
 * client is not reading. The limit applies to what is still unsent from
 * before this message, so one large final result (a long answer with
 * logprobs) passes while the backlog stays bounded by the limit plus one
 * message.
 */
static bool conn_send(struct conn *c, const void *data, size_t len)
{
	size_t unsent = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (unsent > c->srv->d->cfg->output_buffer_bytes) {
		md_log(LOG_WARNING, "connection %llu: client is not reading (%zu bytes unsent, limit %zu); closing it",
		       (unsigned long long)c->id, unsent, c->srv->d->cfg->output_buffer_bytes);
		conn_free(c);
		return false;
	}
	if (bufferevent_write(c->bev, data, len) < 0) {
		conn_free(c);
		return false;
	}
	return true;
}

static bool conn_send_sb(struct conn *c, msgpack_sbuffer *sb)
{
	bool ok = conn_send(c, sb->data, sb->size);

	msgpack_sbuffer_destroy(sb);
	return ok;
}

static bool send_error(struct conn *c, bool has_msgid, uint32_t msgid, enum proto_err e, const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_error(&pk, has_msgid, msgid, e, msg);
	return conn_send_sb(c, &sb);
}

/* ------------------------------------------------------------------------ */
/* Connection lifetime                                                       */
/* ------------------------------------------------------------------------ */

/* Frees a connection; its requests are cancelled and their results dropped. */
static void conn_free(struct conn *c)
{
	struct md_server *s = c->srv;
	bool kicked = false;

	while (c->inflight) {
		struct md_job *j = c->inflight;

		c->inflight = j->conn_next;
		atomic_store(&j->gone, true);
		atomic_store(&j->cancel, true);
		md_job_unref(j);
		kicked = true;
	}
	if (kicked)
		md_worker_kick(s->d->worker);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	by_id_remove(s, c);
	s->d->connections--;
	md_log(LOG_DEBUG, "connection %llu closed", (unsigned long long)c->id);
	if (c->timer)
		event_free(c->timer);
	bufferevent_free(c->bev);
	free(c->inbuf);
	free(c);
}

static void closing_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_free(arg);
}

static void closing_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_free(arg);
}

/* After a protocol fault: no more input; the error already queued is flushed, then the connection closes. */
static void conn_close_after_flush(struct conn *c)
{
	struct timeval tv = { CLOSE_FLUSH_SECONDS, 0 };

	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_free(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(c->bev, NULL, closing_write_cb, NULL, c);
	event_del(c->timer);
	event_assign(c->timer, c->srv->base, -1, 0, closing_timer_cb, c);
	event_add(c->timer, &tv);
}

static void protocol_fault(struct conn *c, enum proto_err e, const char *msg)
{
	atomic_fetch_add(&md_counters.protocol_errors_total, 1);
	md_log(LOG_INFO, "connection %llu: protocol error: %s; closing", (unsigned long long)c->id, msg);
	if (send_error(c, false, 0, e, msg))
		conn_close_after_flush(c);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

static struct md_job *find_inflight(struct conn *c, uint32_t msgid)
{
	for (struct md_job *j = c->inflight; j; j = j->conn_next)
		if (j->msgid == msgid)
			return j;
	return NULL;
}

static bool do_cancel(struct conn *c, const struct proto_msg *m)
{
	char msg[256] = "";
	uint64_t id;
	struct md_job *j = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int r = proto_get_uint(proto_params(m), "id", UINT32_MAX, &id, msg, sizeof(msg));

	if (r <= 0)
		return send_error(c, true, m->msgid, PE_INVALID_PARAMS,
				  r < 0 ? msg : "field 'id': the msgid of a request on this connection is required");
	j = find_inflight(c, (uint32_t)id);
	if (j) {
		atomic_store(&j->cancel, true);
		md_worker_kick(c->srv->d->worker);
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_result_head(&pk, m->msgid);
	{
		const struct proto_kv kv[] = { PROTO_KV_BOOL("cancelled", j != NULL) };

		proto_pack_map(&pk, kv, PROTO_KV_LEN(kv));
	}
	return conn_send_sb(c, &sb);
}

/* Handles one complete message; false when the connection was closed. */
static bool handle_message(struct conn *c, const unsigned char *data, size_t len)
{
	struct md_daemon *d = c->srv->d;
	msgpack_unpacked u;
	struct proto_msg m;
	struct md_job *job = NULL;
	msgpack_sbuffer sb;
	char msg[256];
	size_t off = 0;
	bool alive = true;
	int r;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
		msgpack_unpacked_destroy(&u);
		protocol_fault(c, PE_INVALID_REQUEST, "malformed MessagePack");
		return false;
	}
	if (proto_parse(&u.data, &m, msg, sizeof(msg)) != PE_OK) {
		atomic_fetch_add(&md_counters.protocol_errors_total, 1);
		if (m.has_msgid) {
			alive = send_error(c, true, m.msgid, PE_INVALID_REQUEST, msg);
		} else {
			protocol_fault(c, PE_INVALID_REQUEST, msg);
			alive = false;
		}
		goto out;
	}
	if (m.type != MSG_REQUEST)   /* client notifications and responses: nothing to answer */
		goto out;
	md_log(LOG_DEBUG, "connection %llu: request %u %.*s", (unsigned long long)c->id, m.msgid,
	       (int)(m.method_len > 64 ? 64 : m.method_len), m.method);
	if (find_inflight(c, m.msgid)) {
		snprintf(msg, sizeof(msg), "msgid %u is already in flight on this connection", m.msgid);
		alive = send_error(c, true, m.msgid, PE_INVALID_REQUEST, msg);
		goto out;
	}
	if (proto_method_is(&m, "cancel")) {
		alive = do_cancel(c, &m);
		goto out;
	}
	msgpack_sbuffer_init(&sb);
	r = md_method_handle(d, &m, c->id, &sb, &job);
	if (r == 0) {
		alive = conn_send_sb(c, &sb);
		goto out;
	}
	msgpack_sbuffer_destroy(&sb);
	if (c->n_inflight >= d->cfg->max_requests_per_connection) {
		snprintf(msg, sizeof(msg), "%u requests are already in flight on this connection (max_requests_per_connection)",
			 c->n_inflight);
		md_job_unref(job);
		atomic_fetch_add(&md_counters.busy_rejections_total, 1);
		alive = send_error(c, true, m.msgid, PE_BUSY, msg);
		goto out;
	}
	md_job_ref(job);   /* the connection's reference; the worker takes the first */
	r = md_worker_submit(d->worker, job);
	if (r < 0) {
		md_job_unref(job);
		md_job_unref(job);
		if (r == -EBUSY)
			atomic_fetch_add(&md_counters.busy_rejections_total, 1);
		alive = send_error(c, true, m.msgid, r == -EBUSY ? PE_BUSY : PE_SHUTTING_DOWN,
				   r == -EBUSY ? "every slot is generating and the queue is full; try again later"
					       : "the daemon is shutting down");
		goto out;
	}
	atomic_fetch_add(&md_counters.requests_total, 1);
	job->conn_next = c->inflight;
	c->inflight = job;
	c->n_inflight++;
out:
	msgpack_unpacked_destroy(&u);
	return alive;
}

/* Appends what libevent read to inbuf, growing it by doubling up to the cap plus one read. */
static int pull_input(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t avail = evbuffer_get_length(in);
	size_t cap = c->scan.max_bytes + 1;   /* the limit this connection was opened with */

	while (avail) {
		size_t room, n;

		if (c->in_len == cap)
			return 0;   /* the scanner has already rejected anything this long */
		if (c->in_len == c->in_cap) {
			size_t nc = c->in_cap ? c->in_cap * 2 : 4096;
			unsigned char *p;

			nc = nc < cap ? nc : cap;
			p = realloc(c->inbuf, nc);
			if (!p)
				return -ENOMEM;
			c->inbuf = p;
			c->in_cap = nc;
		}
		room = c->in_cap - c->in_len;
		n = evbuffer_remove(in, c->inbuf + c->in_len, avail < room ? avail : room);
		c->in_len += n;
		avail -= n;
	}
	return 0;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	char msg[128];

	(void)bev;
	c->last_active = md_now();
	for (;;) {
		ssize_t n;

		if (pull_input(c) < 0) {
			md_log(LOG_ERR, "connection %llu: out of memory for input", (unsigned long long)c->id);
			conn_free(c);
			return;
		}
		if (c->in_len == 0)
			return;
		n = mf_scan(&c->scan, c->inbuf, c->in_len);
		if (n == 0) {
			if (evbuffer_get_length(bufferevent_get_input(c->bev)))
				continue;
			return;
		}
		if (n < 0) {
			if (n == -EMSGSIZE)
				snprintf(msg, sizeof(msg), "message larger than %zu bytes (max_message_bytes)",
					 c->srv->d->cfg->max_message_bytes);
			else if (n == -ELOOP)
				snprintf(msg, sizeof(msg), "message nested deeper than %u levels (max_nesting)",
					 c->srv->d->cfg->max_nesting);
			else
				snprintf(msg, sizeof(msg), "bytes that are not MessagePack");
			protocol_fault(c, n == -EMSGSIZE ? PE_TOO_LARGE : PE_INVALID_REQUEST, msg);
			return;
		}
		if (!handle_message(c, c->inbuf, (size_t)n))
			return;
		memmove(c->inbuf, c->inbuf + n, c->in_len - (size_t)n);
		c->in_len -= (size_t)n;
		mf_reset(&c->scan);
	}
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (c->n_inflight)
			md_log(LOG_DEBUG, "connection %llu: client left with %u requests in flight; cancelling them",
			       (unsigned long long)c->id, c->n_inflight);
		conn_free(c);
	}
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint32_t limit = c->srv->d->cfg->idle_timeout;
	double idle = md_now() - c->last_active;
	struct timeval tv;

	(void)fd;
	(void)what;
	if (!limit)
		return;
	if (!c->n_inflight && idle >= (double)limit) {
		md_log(LOG_DEBUG, "connection %llu: idle for %u s; closing", (unsigned long long)c->id, limit);
		conn_free(c);
		return;
	}
	idle = c->n_inflight ? 0 : idle;
	tv.tv_sec = (time_t)((double)limit - idle);
	tv.tv_usec = (suseconds_t)(((double)limit - idle - (double)tv.tv_sec) * 1e6);
	event_add(c->timer, &tv);
}

/* ------------------------------------------------------------------------ */
/* Accepting                                                                 */
/* ------------------------------------------------------------------------ */

static void reject_connection(struct md_server *s, evutil_socket_t fd, const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	(void)s;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_error(&pk, false, 0, PE_BUSY, msg);
	/* Best effort: a fresh socket buffer takes these few bytes without blocking. */
	if (send(fd, sb.data, sb.size, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		md_log(LOG_DEBUG, "could not tell a rejected client why: %s", strerror(errno));
	msgpack_sbuffer_destroy(&sb);
	evutil_closesocket(fd);
	atomic_fetch_add(&md_counters.busy_rejections_total, 1);
	md_log(LOG_WARNING, "%s; rejected a client", msg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct md_server *s = arg;
	const struct md_config *cfg = s->d->cfg;
	struct conn *c;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct timeval tv = { (time_t)cfg->idle_timeout, 0 };

	(void)l;
	(void)sa;
	(void)salen;
	if (s->d->connections >= cfg->max_connections) {
		char msg[128];

		snprintf(msg, sizeof(msg), "too many connections (max_connections = %u)", cfg->max_connections);
		reject_connection(s, fd, msg);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE))) {
		md_log(LOG_ERR, "out of memory accepting a connection");
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->timer = event_new(s->base, -1, 0, idle_cb, c);
	if (!c->timer) {
		bufferevent_free(c->bev);
		free(c);
		md_log(LOG_ERR, "out of memory accepting a connection");
		return;
	}
	c->id = ++s->next_id;
	c->srv = s;
	c->last_active = md_now();
	mf_init(&c->scan, cfg->max_message_bytes, cfg->max_nesting);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	by_id_add(s, c);
	s->d->connections++;
	atomic_fetch_add(&md_counters.connections_total, 1);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
		md_log(LOG_DEBUG, "connection %llu from uid %u pid %d", (unsigned long long)c->id,
		       (unsigned)cred.uid, (int)cred.pid);
	bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
	/* Stop reading while a full message's worth is waiting to be scanned. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, cfg->max_message_bytes + 1);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (cfg->idle_timeout)
		event_add(c->timer, &tv);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct md_server *s = arg;

	(void)fd;
	(void)what;
	for (struct listener *l = s->listeners; l; l = l->next)
		evconnlistener_enable(l->l);
}

/*
 * Out of file descriptors with clients waiting in the listen backlog: the
 * spare descriptor is given up for one accept at a time, so each of them
 * is told "busy" and closed at once rather than left waiting until the
 * shortage ends. Returns true when the spare could be taken back (the
 * listener may stay enabled: the next client is shed the same way).
 */
static bool shed_backlog(struct md_server *s, int lfd, int e)
{
	char msg[128];
	unsigned n = 0;

	snprintf(msg, sizeof(msg), "out of file descriptors (%s); try again later", strerror(e));
	while (s->spare_fd >= 0) {
		int fd;

		close(s->spare_fd);
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			reject_connection(s, fd, msg);
			n++;
		}
		s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			break;   /* the backlog is empty (EAGAIN), or another thread took the slot */
	}
	if (n)
		md_log(LOG_WARNING, "%s: answered %u waiting client%s busy", msg, n, n > 1 ? "s" : "");
	return s->spare_fd >= 0;
}

/* EMFILE/ENFILE: shed the waiting clients; without a spare, stop accepting for a second rather than spin. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct md_server *s = arg;
	struct timeval tv = { 1, 0 };
	int e = EVUTIL_SOCKET_ERROR();

	if ((e == EMFILE || e == ENFILE) && shed_backlog(s, evconnlistener_get_fd(l), e))
		return;
	md_log(LOG_WARNING, "accept failed: %s; pausing accepts for 1 s", strerror(e));
	for (struct listener *li = s->listeners; li; li = li->next)
		evconnlistener_disable(li->l);
	event_add(s->accept_retry, &tv);
}

int md_server_add_listener(struct md_server *s, int fd)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	evutil_make_socket_nonblocking(fd);
	l->l = evconnlistener_new(s->base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!l->l) {
		free(l);
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(l->l, accept_error_cb);
	l->next = s->listeners;
	s->listeners = l;
	return 0;
}

void md_server_stop_listening(struct md_server *s)
{
	while (s->listeners) {
		struct listener *l = s->listeners;

		s->listeners = l->next;
		evconnlistener_free(l->l);
		free(l);
	}
	event_del(s->accept_retry);
}

/* ------------------------------------------------------------------------ */
/* Own socket                                                                */
/* ------------------------------------------------------------------------ */

int md_server_bind(struct md_server *s, const char *path, mode_t mode, const char *group,
		   int *fd_out, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (asprintf(&s->lock_path, "%s.lock", path) < 0) {
		s->lock_path = NULL;
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lock_fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create lock file %s: %s", s->lock_path, strerror(errno));
		return r;
	}
	/* The lock, not the socket file, says whether an instance is alive:
	 * a crashed daemon leaves the file but its lock dies with it. */
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
		snprintf(err, errlen, "another mistrald is serving %s (it holds %s)", path, s->lock_path);
		close(s->lock_fd);
		s->lock_fd = -1;
		free(s->lock_path);
		s->lock_path = NULL;
		return r;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket; not replacing it", path);
			return -EEXIST;
		}
		md_log(LOG_NOTICE, "replacing stale socket %s", path);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return r;
	}
	/* Created private, then opened up to exactly the configured mode:
	 * no window in which the socket is wider than asked. */
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot bind %s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	s->sock_path = strdup(path);
	if (group) {
		struct group *g = getgrnam(group);

		if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0) {
			r = g ? -errno : -ENOENT;
			snprintf(err, errlen, "cannot give %s to group %s: %s", path, group,
				 g ? strerror(errno) : "no such group");
			close(fd);
			return r;
		}
	}
	if (chmod(path, mode) < 0 || listen(fd, 128) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot set up %s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	*fd_out = fd;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Delivery                                                                  */
/* ------------------------------------------------------------------------ */

static void drop_inflight(struct conn *c, struct md_job *job)
{
	for (struct md_job **pp = &c->inflight; *pp; pp = &(*pp)->conn_next) {
		if (*pp == job) {
			*pp = job->conn_next;
			c->n_inflight--;
			md_job_unref(job);
			return;
		}
	}
}

void md_server_deliver(struct md_server *s, struct md_out *o)
{
	struct conn *c = find_conn(s, o->conn_id);

	if (c && !c->closing) {
		bool alive = conn_send(c, o->data, o->len);

		if (alive && o->final) {
			drop_inflight(c, o->job);
			c->last_active = md_now();
		}
	}
	md_out_free(o);
}

size_t md_server_inflight(struct md_server *s)
{
	size_t n = 0;

	for (struct conn *c = s->conns; c; c = c->next)
		n += c->n_inflight;
	return n;
}

size_t md_server_unsent(struct md_server *s, size_t *conns)
{
	size_t n = 0, k = 0;

	for (struct conn *c = s->conns; c; c = c->next) {
		size_t len = evbuffer_get_length(bufferevent_get_output(c->bev));

		n += len;
		k += len > 0;
	}
	if (conns)
		*conns = k;
	return n;
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                  */
/* ------------------------------------------------------------------------ */

struct md_server *md_server_new(struct event_base *base, struct md_daemon *d)
{
	struct md_server *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->base = base;
	s->d = d;
	s->lock_fd = -1;
	s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s->accept_retry = evtimer_new(base, accept_retry_cb, s);
	s->by_id = calloc(BY_ID_BUCKETS, sizeof(*s->by_id));
	if (!s->accept_retry || !s->by_id) {
		if (s->accept_retry)
			event_free(s->accept_retry);
		if (s->spare_fd >= 0)
			close(s->spare_fd);
		free(s->by_id);
		free(s);
		return NULL;
	}
	s->by_id_mask = BY_ID_BUCKETS - 1;
	return s;
}

void md_server_free(struct md_server *s)
{
	if (!s)
		return;
	md_server_stop_listening(s);
	while (s->conns)
		conn_free(s->conns);
	event_free(s->accept_retry);
	if (s->sock_path)
		unlink(s->sock_path);
	if (s->lock_path && s->lock_fd >= 0)
		unlink(s->lock_path);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->spare_fd >= 0)
		close(s->spare_fd);
	free(s->by_id);
	free(s->sock_path);
	free(s->lock_path);
	free(s);
}
