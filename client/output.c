/* mistralctl's output: messages, replies as JSON, as key: value lines or as Prometheus text, streamed answers. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "output.h"
#include "promtext.h"
#include "proto.h"
#include "utf8.h"

void errmsg(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("mistralctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD so the output always parses. */
void json_str(FILE *f, const char *s, size_t n)
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
void json_obj(FILE *f, const msgpack_object *o)
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
		prom_fmt_double(num, sizeof(num), o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
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

const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	return proto_find(map, key);
}

const msgpack_object *map_str(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = map_get(map, key);

	return v && v->type == MSGPACK_OBJECT_STR ? v : NULL;
}

double map_num(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = map_get(map, key);

	return obj_is_num(v) ? obj_double(v) : 0;
}

/* A scalar as a human reads it: strings raw unless they hold control characters. */
void human_value(FILE *f, const msgpack_object *o)
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
		prom_fmt_double(num, sizeof(num), o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
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
void human_print(FILE *f, const char *prefix, const msgpack_object *o)
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

/* Flushes stdout; a write error (disk full, closed pipe with SIGPIPE ignored) is reported once. */
int out_flush(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		errmsg("cannot write standard output: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

/* Per-token log-probabilities, one line each on stderr (text mode keeps stdout for the text). */
void print_logprobs(const msgpack_object *lp)
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

void print_stats(const msgpack_object *res)
{
	const msgpack_object *t = map_get(res, "timings"), *u = map_get(res, "usage");
	const msgpack_object *dr = map_str(res, "done_reason"), *seed = map_get(res, "seed");

	fflush(stdout);
	/* tok/s counts the evaluated tokens: cached ones are copied, not computed */
	fprintf(stderr, "mistralctl: prompt %.0f tokens in %.1f ms (%.1f tok/s; %.0f cached, %.0f new), "
		"generated %.0f tokens in %.1f ms (%.1f tok/s), queued %.1f ms",
		map_num(u, "prompt_tokens"), map_num(t, "prompt_ms"), map_num(t, "prompt_tokens_per_s"),
		map_num(u, "cached_tokens"), map_num(u, "prompt_tokens") - map_num(u, "cached_tokens"),
		map_num(u, "completion_tokens"), map_num(t, "generate_ms"), map_num(t, "generate_tokens_per_s"),
		map_num(t, "queue_ms"));
	if (dr)
		fprintf(stderr, ", done: %.*s", (int)dr->via.str.size, dr->via.str.ptr);
	if (seed && seed->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		fprintf(stderr, ", seed %" PRIu64, seed->via.u64);
	fputc('\n', stderr);
}


int write_text(struct stream_out *so, const char *s, size_t n)
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

int on_chunk(void *ctx, const msgpack_object *chunk)
{
	const msgpack_object *t = map_str(chunk, "response");

	return t ? write_text(ctx, t->via.str.ptr, t->via.str.size) : 0;
}

/* The shell-friendly end of a text answer: a newline unless it already ends with one. */
int end_text(struct stream_out *so)
{
	if (so->bytes == 0 || so->last != '\n')
		fputc('\n', stdout);
	return out_flush();
}
