/* mistrald: start-up, model loading and reloading, signals, systemd notification, shutdown. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "conf.h"
#include "counters.h"
#include "gguf.h"
#include "http.h"
#include "log.h"
#include "methods.h"
#include "server.h"
#include "worker.h"
#include "ompwait.h"

/* A model load running on its own thread, so the old model keeps serving during a reload. */
struct load {
	pthread_t thread;
	struct md_config cfg;         /* the settings it loads with (strings owned) */
	struct md_daemon *d;          /* where progress goes (load_bytes, load_total_bytes) */
	struct md_bundle *bundle;     /* result */
	int rc;
	char err[512];
	struct event *done;           /* activated on the loop when finished */
	bool initial;
};

struct daemon_state {
	struct event_base *base;
	struct md_daemon d;
	struct md_server *srv;
	struct md_http *http;         /* NULL: no HTTP API */
	struct md_worker *worker;
	struct event *wake_ev, *status_ev, *watchdog_ev, *stop_ev;
	struct event *sigterm, *sigint, *sighup;
	struct load *load;
	int argc;
	char **argv;
	uint64_t wd_usec, wd_last_beat;
	double stop_deadline;
	size_t stop_unsent;           /* unsent bytes at the previous shutdown tick */
	bool aborted;
	bool await_swap;              /* a reload's model is installed; READY=1 once it serves */
	char serving[512];            /* the model path READY=1 will name */
	uint64_t next_weight_bytes;   /* of the installed model */
	char next_name[128];          /* its name, the HTTP API's model id once it serves */
	int exit_code;
};

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

static void load_progress(void *ud, uint64_t done, uint64_t total)
{
	struct load *l = ud;

	atomic_store(&l->d->load_total_bytes, total);
	atomic_store(&l->d->load_bytes, done);
}

static const struct ms_kernels *pick_kernels(const char *name, char *err, size_t n)
{
	const struct ms_kernels *k;
	enum ms_isa want;

	if (ms_kernels_choose(name, &k, &want) < 0) {
		snprintf(err, n, "unknown kernel set '%s'", name);
		return NULL;
	}
	if (k->isa != want)
		md_log(LOG_WARNING, "this CPU cannot run %s kernels; using %s", ms_isa_name(want), ms_isa_name(k->isa));
	return k;
}

static void *load_main(void *arg)
{
	struct load *l = arg;

	l->rc = md_bundle_load(&l->cfg, pick_kernels, load_progress, l, &l->bundle, l->err, sizeof(l->err));
	event_active(l->done, EV_READ, 0);
	return NULL;
}

static void load_free(struct load *l)
{
	if (!l)
		return;
	md_config_free(&l->cfg);
	md_bundle_free(l->bundle);
	if (l->done)
		event_free(l->done);
	free(l);
}

static void load_done_cb(evutil_socket_t fd, short what, void *arg);
static void begin_shutdown(struct daemon_state *st, const char *why);

static int start_load(struct daemon_state *st, const struct md_config *cfg, bool initial)
{
	struct load *l = calloc(1, sizeof(*l));
	int r;

	if (!l || md_config_copy(&l->cfg, cfg) < 0) {
		free(l);
		return -ENOMEM;
	}
	l->initial = initial;
	l->d = &st->d;
	atomic_store(&st->d.load_bytes, 0);
	atomic_store(&st->d.load_total_bytes, 0);
	l->done = event_new(st->base, -1, 0, load_done_cb, st);
	if (!l->done) {
		load_free(l);
		return -ENOMEM;
	}
	st->load = l;
	r = pthread_create(&l->thread, NULL, load_main, l);
	if (r) {
		st->load = NULL;
		load_free(l);
		return -r;
	}
	md_log(LOG_INFO, "loading %s", cfg->model);
	return 0;
}

/*
 * READY=1, `ready` in status, once the installed model serves: the first
 * model is swapped in by md_worker_install itself, a reload's only when the
 * sequences on the old model are done (the worker then wakes the loop).
 * Until then the state stays loading/reloading and the old model answers.
 */
static void check_swap(struct daemon_state *st)
{
	if (!st->await_swap || md_worker_swap_pending(st->worker))
		return;
	st->await_swap = false;
	if (atomic_load(&st->d.state) == MD_STOPPING)
		return;
	st->d.model_weight_bytes = st->next_weight_bytes;
	snprintf(st->d.model_name, sizeof(st->d.model_name), "%s", st->next_name);
	atomic_store(&st->d.state, MD_READY);
	md_log(LOG_INFO, "serving %s", st->serving);
	sd_notifyf(0, "READY=1\nSTATUS=Serving %s", st->serving);
}

static void load_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_state *st = arg;
	struct load *l = st->load;
	struct md_bundle *b;

	(void)fd;
	(void)what;
	pthread_join(l->thread, NULL);
	st->load = NULL;
	if (atomic_load(&st->d.state) == MD_STOPPING) {
		load_free(l);
		return;
	}
	if (l->rc < 0) {
		if (l->initial) {
			char why[600];

			md_log(LOG_ERR, "cannot load the model: %s", l->err);
			st->exit_code = 1;
			/* The requests that waited for it hear why before the daemon exits. */
			snprintf(why, sizeof(why), "the model failed to load: %s", l->err);
			md_worker_fail_waiting(st->worker, why);
			begin_shutdown(st, "no model");
		} else {
			md_log(LOG_ERR, "reload failed, the previous model stays in service: %s", l->err);
			atomic_store(&st->d.state, MD_READY);
			sd_notify(0, "READY=1\nSTATUS=Reload failed; serving the previous model");
		}
		load_free(l);
		return;
	}
	b = l->bundle;
	l->bundle = NULL;
	md_log(LOG_INFO, "model %s resident: %u layers, dim %u, heads %u/%u, window %u (%s), context %u, "
	       "%.2f GB in %s pages%s, %s kernels, %u threads, %u parallel",
	       b->model->name, b->model->hp.n_layers, b->model->hp.dim, b->model->hp.n_heads,
	       b->model->hp.n_kv_heads, b->model->window, b->model->window_source, b->n_ctx,
	       (double)b->model->weight_bytes / 1e9, ms_page_kind_name(b->model->arena->kind),
	       b->model->arena->locked ? ", locked" : "", b->kernels->name, b->threads, b->parallel);
	st->next_weight_bytes = b->model->weight_bytes;
	snprintf(st->next_name, sizeof(st->next_name), "%s", b->model->name);
	snprintf(st->serving, sizeof(st->serving), "%s", l->cfg.model);
	st->await_swap = true;
	md_worker_install(st->worker, b);
	load_free(l);
	check_swap(st);
}

/* While loading: progress for `systemctl status`, and more start-up time so a 15 GB copy is not killed. */
static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_state *st = arg;

	(void)fd;
	(void)what;
	if (st->load) {
		unsigned long long total = atomic_load(&st->d.load_total_bytes);

		sd_notifyf(0, "STATUS=Loading model: %llu%%\nEXTEND_TIMEOUT_USEC=%llu",
			   total ? atomic_load(&st->d.load_bytes) * 100 / total : 0, 20000000ull);
	}
}

/* ------------------------------------------------------------------------ */
/* Signals                                                                   */
/* ------------------------------------------------------------------------ */

static void wake_loop(void *ud)
{
	struct daemon_state *st = ud;

	event_active(st->wake_ev, EV_READ, 0);
}

/* The worker's outputs to their front doors, told apart by the connection id's HTTP bit. */
static void deliver_all(struct daemon_state *st)
{
	struct md_out *o = md_worker_take_outputs(st->worker);

	while (o) {
		struct md_out *next = o->next;

		if (o->conn_id & MD_HTTP_ID_BIT)
			md_http_deliver(st->http, o);
		else
			md_server_deliver(st->srv, o);
		o = next;
	}
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_state *st = arg;

	(void)fd;
	(void)what;
	deliver_all(st);
	check_swap(st);
}

/* WATCHDOG=1 only while both threads make progress: this timer proves the
 * loop runs, the heartbeat proves the inference thread does. */
static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_state *st = arg;
	struct md_worker_stats ws;

	(void)fd;
	(void)what;
	md_worker_stats(st->worker, &ws);
	if (ws.heartbeat != st->wd_last_beat) {
		st->wd_last_beat = ws.heartbeat;
		sd_notify(0, "WATCHDOG=1");
	} else {
		md_log(LOG_WARNING, "inference thread made no progress for %.1f s; withholding the watchdog ping",
		       (double)st->wd_usec / 2e6);
	}
}

static void stop_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_state *st = arg;
	double now = md_now();
	size_t running, unsent, readers;

	(void)fd;
	(void)what;
	deliver_all(st);
	running = md_server_inflight(st->srv) + md_http_inflight(st->http);
	unsent = md_server_unsent(st->srv, &readers);
	if (running == 0 && unsent == 0) {
		event_base_loopexit(st->base, NULL);
		return;
	}
	if (!st->aborted && now > st->stop_deadline) {
		md_log(LOG_WARNING, "shutdown timeout (%u s): ending %zu request%s still running; "
		       "%zu byte%s of output that %zu client%s did not read will be dropped",
		       st->d.cfg->shutdown_timeout, running, running == 1 ? "" : "s", unsent,
		       unsent == 1 ? "" : "s", readers, readers == 1 ? "" : "s");
		md_worker_abort(st->worker);
		st->aborted = true;
	} else if (st->aborted && running == 0 && unsent == st->stop_unsent) {
		/* Past the deadline the ended requests' last bytes went out a tick ago
		 * to every client that reads; the rest do not hold the exit up. */
		event_base_loopexit(st->base, NULL);
		return;
	}
	st->stop_unsent = unsent;
	/* An inference step that never ends does not hold it up for ever either. */
	if (now > st->stop_deadline + 3)
		event_base_loopexit(st->base, NULL);
}

static void begin_shutdown(struct daemon_state *st, const char *why)
{
	struct timeval tv = { 0, 50 * 1000 };

	if (atomic_load(&st->d.state) == MD_STOPPING)
		return;
	md_log(LOG_INFO, "%s: shutting down", why);
	atomic_store(&st->d.state, MD_STOPPING);
	sd_notify(0, "STOPPING=1\nSTATUS=Shutting down");
	md_server_stop_listening(st->srv);
	md_http_stop_listening(st->http);
	md_worker_drain(st->worker);
	st->stop_deadline = md_now() + st->d.cfg->shutdown_timeout;
	st->stop_ev = event_new(st->base, -1, EV_PERSIST, stop_tick_cb, st);
	if (!st->stop_ev) {
		event_base_loopexit(st->base, NULL);
		return;
	}
	event_add(st->stop_ev, &tv);
}

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	begin_shutdown(arg, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

static bool http_settings_differ(const struct md_config *a, const struct md_config *b)
{
	if (a->n_http_listen != b->n_http_listen || !a->http_api_key != !b->http_api_key ||
	    (a->http_api_key && strcmp(a->http_api_key, b->http_api_key) != 0) ||
	    a->http_allow_remote != b->http_allow_remote || a->http_timeout != b->http_timeout ||
	    a->http_max_body_bytes != b->http_max_body_bytes || a->http_max_header_bytes != b->http_max_header_bytes ||
	    a->http_max_connections != b->http_max_connections)
		return true;
	for (uint32_t i = 0; i < a->n_http_listen; i++)
		if (strcmp(a->http_listen[i], b->http_listen[i]) != 0)
			return true;
	return false;
}

/*
 * SIGHUP: read the configuration again (file, then the original command
 * line on top) and load the model it names. Settings that only apply at
 * start (the socket) are reported, not changed.
 */
static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon_state *st = arg;
	struct md_config *nc;
	struct md_cli cli = { 0 };
	char err[512];
	int r;

	(void)sig;
	(void)what;
	if (atomic_load(&st->d.state) != MD_READY) {
		md_log(LOG_WARNING, "SIGHUP ignored: the daemon is %s",
		       md_state_name((enum md_state)atomic_load(&st->d.state)));
		return;
	}
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading",
		   (unsigned long long)(md_now() * 1e6));
	nc = calloc(1, sizeof(*nc));
	if (!nc) {
		md_log(LOG_ERR, "reload: out of memory");
		sd_notify(0, "READY=1");
		return;
	}
	optind = 1;
	r = md_config_from_args(nc, &cli, st->argc, st->argv, err, sizeof(err));
	if (r < 0) {
		md_log(LOG_ERR, "reload: bad configuration, keeping the current one: %s", err);
		md_config_free(nc);
		free(nc);
		sd_notify(0, "READY=1\nSTATUS=Reload failed: bad configuration");
		return;
	}
	if (strcmp(nc->socket_path, st->d.cfg->socket_path) != 0)
		md_log(LOG_WARNING, "reload: the socket path changed; that takes a restart");
	if (http_settings_differ(nc, st->d.cfg))
		md_log(LOG_WARNING, "reload: the http_* settings changed; they take a restart");
	md_log_set_level(nc->log_level);
	md_config_free(st->d.cfg);
	free(st->d.cfg);
	st->d.cfg = nc;
	atomic_store(&st->d.state, MD_RELOADING);
	r = start_load(st, nc, false);
	if (r < 0) {
		md_log(LOG_ERR, "reload: cannot start loading: %s", strerror(-r));
		atomic_store(&st->d.state, MD_READY);
		sd_notify(0, "READY=1");
	}
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

static int start_http(struct daemon_state *st)
{
	char err[512];

	if (st->http)
		return 0;
	st->http = md_http_new(st->base, &st->d, err, sizeof(err));
	if (!st->http) {
		md_log(LOG_ERR, "%s", err);
		return -EINVAL;
	}
	return 0;
}

/*
 * Inherited sockets named "http" (FileDescriptorName=http) serve the HTTP
 * API, the others MessagePack-RPC. Either kind missing from systemd's set
 * is made from the configuration instead: the socket path, http_listen.
 */
static int setup_listeners(struct daemon_state *st)
{
	const struct md_config *cfg = st->d.cfg;
	char err[512];
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names), fd, r = 0, n_rpc = 0, n_http = 0;

	if (n < 0) {
		md_log(LOG_ERR, "socket activation: %s", strerror(-n));
		return n;
	}
	for (int i = 0; i < n && r == 0; i++) {
		fd = SD_LISTEN_FDS_START + i;
		if (names && names[i] && strcmp(names[i], "http") == 0) {
			if ((r = start_http(st)) < 0)
				break;
			if ((r = md_http_add_fd(st->http, fd, err, sizeof(err))) < 0)
				md_log(LOG_ERR, "socket activation: %s", err);
			n_http++;
			continue;
		}
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			md_log(LOG_ERR, "socket activation: fd %d is not a listening Unix stream socket", fd);
			r = -EINVAL;
			break;
		}
		r = md_server_add_listener(st->srv, fd);
		n_rpc++;
	}
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (r < 0)
		return r;
	if (n > 0)
		md_log(LOG_INFO, "listening on %d socket-activated socket%s (%d HTTP)", n, n > 1 ? "s" : "", n_http);
	if (n_rpc == 0) {
		r = md_server_bind(st->srv, cfg->socket_path, cfg->socket_mode, cfg->socket_group, &fd, err, sizeof(err));
		if (r < 0) {
			md_log(LOG_ERR, "%s", err);
			return r;
		}
		if ((r = md_server_add_listener(st->srv, fd)) < 0)
			return r;
		md_log(LOG_INFO, "listening on %s", cfg->socket_path);
	}
	if (n_http == 0 && cfg->n_http_listen) {
		if ((r = start_http(st)) < 0)
			return r;
		for (uint32_t i = 0; i < cfg->n_http_listen; i++) {
			if ((r = md_http_bind(st->http, cfg->http_listen[i], err, sizeof(err))) < 0) {
				md_log(LOG_ERR, "%s", err);
				return r;
			}
		}
	}
	return 0;
}

static struct event *add_signal(struct daemon_state *st, int sig, event_callback_fn cb)
{
	struct event *ev = evsignal_new(st->base, sig, cb, st);

	if (ev)
		event_add(ev, NULL);
	return ev;
}

int main(int argc, char **argv)
{
	/* static: a load thread abandoned at exit may still report progress into st.d */
	static struct daemon_state st;
	struct md_config *cfg = calloc(1, sizeof(*cfg));
	struct md_cli cli = { 0 };
	char err[512];
	struct timeval one = { 1, 0 };
	int r;

	mistral_omp_wait_setup(argv);
	st.argc = argc;
	st.argv = argv;

	if (!cfg) {
		fprintf(stderr, "mistrald: out of memory\n");
		return 1;
	}
	r = md_config_from_args(cfg, &cli, argc, argv, err, sizeof(err));
	if (cli.help || cli.version || r < 0 || cli.check_config) {
		int status = 0;

		if (cli.help) {
			md_config_usage(stdout);
		} else if (cli.version) {
			printf("mistrald %s\n", PACKAGE_VERSION);
		} else if (r < 0) {
			fprintf(stderr, "mistrald: %s\n", err);
			/* one rule, mistrald(8): 2 for the command line, 1 for the configuration */
			status = cli.usage_error ? 2 : 1;
		} else {
			ms_err e = { 0 };

			/* every check the load will make, so an OK here means a reload will take the file */
			if (ms_model_check(cfg->model, NULL, &e) < 0) {
				fprintf(stderr, "mistrald: model %s: %s\n", cfg->model, e.msg);
				status = 1;
			} else {
				printf("configuration OK; model %s passes every load check short of the copy\n",
				       cfg->model);
			}
		}
		md_config_free(cfg);
		free(cfg);
		return status;
	}
	md_log_set_level(cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() < 0 || !(st.base = event_base_new())) {
		md_log(LOG_ERR, "cannot set up the event loop");
		return 1;
	}
	st.d.cfg = cfg;
	st.d.t_start = md_now();
	atomic_init(&st.d.state, MD_LOADING);
	st.wake_ev = event_new(st.base, -1, 0, wake_cb, &st);
	st.status_ev = event_new(st.base, -1, EV_PERSIST, status_cb, &st);
	st.srv = md_server_new(st.base, &st.d);
	if (!st.wake_ev || !st.status_ev || !st.srv ||
	    md_worker_start(&st.worker, wake_loop, &st, cfg->queue_depth, cfg->load_wait) < 0) {
		md_log(LOG_ERR, "cannot start: out of memory or threads");
		return 1;
	}
	st.d.worker = st.worker;
	st.sigterm = add_signal(&st, SIGTERM, sigterm_cb);
	st.sigint = add_signal(&st, SIGINT, sigterm_cb);
	st.sighup = add_signal(&st, SIGHUP, sighup_cb);
	if (setup_listeners(&st) < 0) {
		st.exit_code = 1;
		goto out;
	}
	if (sd_watchdog_enabled(0, &st.wd_usec) > 0) {
		struct timeval tv = { (time_t)(st.wd_usec / 2000000), (suseconds_t)(st.wd_usec / 2 % 1000000) };

		st.watchdog_ev = event_new(st.base, -1, EV_PERSIST, watchdog_cb, &st);
		if (st.watchdog_ev)
			event_add(st.watchdog_ev, &tv);
	}
	event_add(st.status_ev, &one);
	sd_notify(0, "STATUS=Loading model: 0%");
	if ((r = start_load(&st, cfg, true)) < 0) {
		md_log(LOG_ERR, "cannot start loading: %s", strerror(-r));
		st.exit_code = 1;
		goto out;
	}
	event_base_dispatch(st.base);
out:
	/* A load still running at exit is abandoned: exit() ends its thread. */
	md_worker_stop(st.worker);
	md_http_free(st.http);
	md_server_free(st.srv);
	if (st.stop_ev)
		event_free(st.stop_ev);
	if (st.watchdog_ev)
		event_free(st.watchdog_ev);
	if (st.sigterm)
		event_free(st.sigterm);
	if (st.sigint)
		event_free(st.sigint);
	if (st.sighup)
		event_free(st.sighup);
	if (!st.load) {
		event_free(st.status_ev);
		event_free(st.wake_ev);
		event_base_free(st.base);
	}
	md_config_free(st.d.cfg);
	free(st.d.cfg);
	if (st.exit_code == 0)
		md_log(LOG_INFO, "stopped");
	return st.exit_code;
}
