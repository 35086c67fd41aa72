/* mistralctl's output: messages, replies as JSON, as key: value lines or as Prometheus text, streamed answers. */
#ifndef MCTL_OUTPUT_H
#define MCTL_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <msgpack.h>

/* "mistralctl: ..." on stderr, after flushing stdout so the two stay in order. */
void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Flushes stdout; a write error is reported once: -EIO. */
int out_flush(void);

/* A JSON string; bytes that are not UTF-8 become U+FFFD so the output always parses. */
void json_str(FILE *f, const char *s, size_t n);
/* Compact, one-line JSON for a decoded reply. */
void json_obj(FILE *f, const msgpack_object *o);
/* A scalar as a human reads it: strings raw unless they hold control characters. */
void human_value(FILE *f, const msgpack_object *o);
/* "key: value" lines; nested maps become dotted keys (hparams.dim: 4096). */
void human_print(FILE *f, const char *prefix, const msgpack_object *o);

/* Lookups in a reply map: NULL (0 for map_num) when map is not a map or the key is absent or mistyped. */
const msgpack_object *map_get(const msgpack_object *map, const char *key);
const msgpack_object *map_str(const msgpack_object *map, const char *key);
double map_num(const msgpack_object *map, const char *key);

/* Per-token log-probabilities of a result, one line each on stderr. */
void print_logprobs(const msgpack_object *lp);
/* Timings and token counts of a result, one line on stderr. */
void print_stats(const msgpack_object *res);

/* Streamed text goes straight to stdout, flushed per chunk. */
struct stream_out {
	size_t bytes;
	char last;
};

int write_text(struct stream_out *so, const char *s, size_t n);
/* A chunk_fn (rpc.h) writing each generate.chunk's text; ctx is a struct stream_out. */
int on_chunk(void *ctx, const msgpack_object *chunk);
/* The shell-friendly end of a text answer: a newline unless it already ends with one. */
int end_text(struct stream_out *so);

#endif
