/* The event loop side: listening sockets, connections, request framing, delivery of results. */
#ifndef MD_SERVER_H
#define MD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "methods.h"

struct md_server;

struct md_server *md_server_new(struct event_base *base, struct md_daemon *d);
void md_server_free(struct md_server *s);   /* closes everything; accepts NULL */

/*
 * Listens on fd (already bound and listening: from sd_listen_fds or
 * md_server_bind). Returns 0 or -errno.
 */
int md_server_add_listener(struct md_server *s, int fd);

/*
 * Creates the daemon's own socket at path: takes PATH.lock (a live
 * instance holding it means -EADDRINUSE), replaces a stale socket file,
 * binds with mode and group, listens. *fd_out on success. The lock is
 * kept until md_server_free, which also removes the socket it created.
 */
int md_server_bind(struct md_server *s, const char *path, mode_t mode, const char *group,
		   int *fd_out, char *err, size_t errlen);

/* Stops accepting; existing connections go on. */
void md_server_stop_listening(struct md_server *s);

/* Sends one output of the worker to its connection (dropped when that has closed) and frees it. */
void md_server_deliver(struct md_server *s, struct md_out *o);

/* Requests still in flight on any connection. */
size_t md_server_inflight(struct md_server *s);
/* Bytes still waiting to be written to clients; *conns (may be NULL): how many clients they are for. */
size_t md_server_unsent(struct md_server *s, size_t *conns);

#endif
