/* Metrics as Prometheus text, for mistralctl metrics and the HTTP API's /metrics alike. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promtext.h"

/* The shortest %g rendering that reads back as the same value (as a float for float32). */
void prom_fmt_double(char *buf, size_t n, double v, bool f32)
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

static const struct {
	const char *name, *help;
} metric_help[] = {
	{ "requests_total", "Requests handled since start." },
	{ "requests_failed_total", "Requests that ended with an error." },
	{ "requests_cancelled_total", "Requests cancelled by a client, a disconnect or shutdown." },
	{ "busy_rejections_total", "Requests rejected with busy (queue or per-connection limit full)." },
	{ "prompt_tokens_total", "Prompt tokens received (cached ones included)." },
	{ "tokens_generated_total", "Tokens generated." },
	{ "connections_total", "Client connections accepted." },
	{ "connections_current", "Client connections open now." },
	{ "protocol_errors_total", "Connections closed or requests rejected for protocol errors." },
	{ "active_sequences", "Sequences generating now." },
	{ "queued_requests", "Requests waiting for a free sequence slot." },
	{ "prompt_seconds_total", "Seconds spent evaluating prompts." },
	{ "generate_seconds_total", "Seconds spent generating tokens." },
	{ "prompt_cache_hits_total", "Requests that reused a cached or shared prompt prefix." },
	{ "prompt_cache_misses_total", "Requests that found no prefix to reuse." },
	{ "prompt_cache_evictions_total", "Prompt cache entries evicted to stay within its limits." },
	{ "prompt_cache_tokens_total", "Prompt tokens not evaluated thanks to the prompt cache." },
	{ "prompt_cache_entries", "Finished sequences held by the prompt cache." },
	{ "prompt_cache_bytes", "Bytes held by the prompt cache." },
	{ "model_weight_bytes", "Bytes of model weights resident." },
	{ "uptime_seconds", "Seconds since the daemon started." },
	{ "http_requests_total", "HTTP requests received (every endpoint)." },
	{ "http_errors_total", "HTTP requests answered with an error status." },
	{ "http_connections_total", "HTTP connections accepted." },
	{ "http_connections_current", "HTTP connections open now." },
};

/* Prometheus text exposition format; counters are the names ending in _total. */
void prom_print(FILE *f, const msgpack_object *o)
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
		if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER && v->type != MSGPACK_OBJECT_NEGATIVE_INTEGER &&
		    v->type != MSGPACK_OBJECT_FLOAT32 && v->type != MSGPACK_OBJECT_FLOAT64 &&
		    v->type != MSGPACK_OBJECT_BOOLEAN)
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
				prom_fmt_double(num, sizeof(num), v->via.f64, v->type == MSGPACK_OBJECT_FLOAT32);
			fprintf(f, "%s %s\n", name, num);
			break;
		}
	}
}
