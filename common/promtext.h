/* Metrics as Prometheus text, for mistralctl metrics and the HTTP API's /metrics alike. */
#ifndef MS_PROMTEXT_H
#define MS_PROMTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <msgpack.h>

/* The shortest %g rendering that reads back as the same value (as a float when f32). */
void prom_fmt_double(char *buf, size_t n, double v, bool f32);

/* The metrics map (name: number) in the text exposition format, names prefixed mistrald_; counters end in _total. */
void prom_print(FILE *f, const msgpack_object *o);

#endif
