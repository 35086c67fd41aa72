/* The HTTP front door: evhttp listeners on the daemon's loop, connection limits and deadlines, routing, errors, delivery of results. */
#ifndef MD_HTTP_H
#define MD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "job.h"
#include "methods.h"

/* Jobs from HTTP requests carry connection ids with this bit set; the socket's never do. */
#define MD_HTTP_ID_BIT (1ull << 63)

struct md_http;

/*
 * Sets up evhttp with the configuration's limits and reads http_api_key.
 * NULL with a reason in err.
 */
struct md_http *md_http_new(struct event_base *base, struct md_daemon *d, char *err, size_t errlen);
void md_http_free(struct md_http *h);   /* closes everything; accepts NULL */

/* Serves an inherited listening socket (socket activation). 0 or -errno with a reason. */
int md_http_add_fd(struct md_http *h, int fd, char *err, size_t errlen);
/* Binds and serves one http_listen address. 0 or -errno with a reason. */
int md_http_bind(struct md_http *h, const char *spec, char *err, size_t errlen);

/* Stops accepting; requests in flight go on. Accepts NULL. */
void md_http_stop_listening(struct md_http *h);

/* Delivers one output of the worker for an HTTP request (conn_id has MD_HTTP_ID_BIT) and frees it. */
void md_http_deliver(struct md_http *h, struct md_out *o);

/* Requests still being answered; 0 for NULL. */
size_t md_http_inflight(struct md_http *h);

#endif
