/* mistralctl: the command-line client of mistrald, speaking its msgpack-rpc protocol over the Unix socket. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "mistralctl.h"
#include "output.h"
#include "promtext.h"
#include "proto.h"
#include "rpc.h"

#define MAX_STDIN_BYTES  ((size_t)16 << 20)

static void on_sigint(int sig)
{
	(void)sig;
	got_sigint = 1;
}

/* --------------------------------------------------------------- options --- */

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

static void cmd_usage(const struct cmd *cmd, FILE *f)
{
	fprintf(f, "usage: mistralctl [--socket PATH] [--timeout S] %s %s\n\n%s", cmd->name, cmd->synopsis,
		cmd->help);
}

int usage_error(const char *cmd)
{
	fprintf(stderr, "Try 'mistralctl %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return XS_USAGE;
}

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
int common_opt(const struct cmd *cmd, int o)
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
int sampling_opt(struct req *r, int o, const char *name, bool *stats)
{
	if (o >= O_SAMPLING && o < O_SAMPLING + PS_COUNT) {
		const struct proto_sampling_param *ps = &proto_sampling[o - O_SAMPLING];
		char opt[64];

		snprintf(opt, sizeof(opt), "--%s", name);
		if (ps->is_float)
			return parse_floatarg(r, opt, ps->key, optarg) < 0 ? -1 : 1;
		return parse_intarg(r, opt, ps->key, optarg) < 0 ? -1 : 1;
	}
	switch (o) {
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
	int o, li = 0, ret = XS_USAGE;

	r.stop = calloc((size_t)argc + 1, sizeof(*r.stop));
	if (!r.stop)
		return XS_DAEMON;
	while ((o = getopt_long(argc, argv, "s:t:h", opts, &li)) != -1) {
		int h = common_opt(cmd, o);

		if (h == 2) {
			ret = XS_OK;
			goto out;
		}
		if (h == 0)
			h = sampling_opt(&r, o, opts[li].name, &stats);
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
		ret = await_model(&c, json);
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

/* ------------------------------------------------- waiting for a load --- */

/*
 * Polls `status` (5 a second) until the daemon's first model serves; on a
 * terminal (show) one line on stderr says how far the load is, erased when
 * it ends. The daemon itself holds requests during a load (load_wait), so
 * this only shows the wait, and bounds it for `status --wait`: limit_s > 0
 * gives up after that long, limit_s < 0 after the daemon's own load_wait
 * (what the request would wait). 0 once serving (a reload serves the old
 * model meanwhile), else an exit status after saying why.
 */
int await_ready(struct conn *c, bool show, double limit_s)
{
	static const struct req none = { .n = 0 };
	struct timespec t0, now;
	const bool daemon_limit = limit_s < 0;
	bool shown = false;
	int ret;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct reply rep;
		const msgpack_object *st;
		double done, total;

		if ((ret = call(c, "status", &none, NULL, NULL, &rep)))
			break;
		st = map_str(rep.result, "state");
		if (!st || st->via.str.size != 7 || memcmp(st->via.str.ptr, "loading", 7)) {
			if (st && st->via.str.size == 8 && !memcmp(st->via.str.ptr, "stopping", 8)) {
				errmsg("the daemon is shutting down");
				ret = XS_DAEMON;
			}
			break;
		}
		if (limit_s < 0) {
			limit_s = map_num(rep.result, "load_wait");
			if (limit_s <= 0)
				break;   /* the daemon answers "loading" at once */
		}
		done = map_num(rep.result, "load_bytes");
		total = map_num(rep.result, "load_total_bytes");
		if (show) {
			if (total > 0)
				fprintf(stderr, "\rmistralctl: loading the model: %3.0f%% (%.2f of %.2f GB)\033[K",
					100.0 * done / total, done / 1e9, total / 1e9);
			else
				fprintf(stderr, "\rmistralctl: loading the model...\033[K");
			fflush(stderr);
			shown = true;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (limit_s > 0 && (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) * 1e-9 >= limit_s) {
			if (shown)
				fputc('\n', stderr);
			shown = false;
			if (daemon_limit) {
				/* what the daemon would answer the request by now */
				errmsg("loading: the model is still loading after %g s (load_wait)", limit_s);
				ret = XS_DAEMON;
			} else {
				errmsg("the model is still loading after %g s", limit_s);
				ret = XS_PROTO;
			}
			break;
		}
		nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);
		if (got_sigint) {
			ret = XS_INTR;
			break;
		}
	}
	if (shown)
		fputs("\r\033[K", stderr);
	return ret;
}

/* Before a request that needs the model: the progress line, on a terminal only. */
int await_model(struct conn *c, bool json)
{
	return json || !isatty(STDERR_FILENO) ? 0 : await_ready(c, true, -1);
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
	static const char *const model_methods[] = { "tokenize", "detokenize", "info" };
	struct conn c;
	struct reply rep;
	int ret;

	conn_init(&c);
	ret = conn_open(&c);
	for (size_t i = 0; !ret && i < sizeof(model_methods) / sizeof(model_methods[0]); i++) {
		if (!strcmp(method, model_methods[i]))
			ret = await_model(&c, json);
	}
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
	static const struct option opts[] = {
		COMMON_OPTS,
		{ "json", no_argument, NULL, O_JSON },
		{ "wait", no_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 }
	};
	const struct cmd *cmd = find_cmd("status");
	struct req r = { .n = 0 };
	bool json = false, wait = false;
	int o, h, ret;

	while ((o = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		if ((h = common_opt(cmd, o)) == 2)
			return XS_OK;
		if (h < 0)
			return usage_error("status");
		if (h == 0 && o == O_JSON)
			json = true;
		else if (h == 0 && o == 'w')
			wait = true;
		else if (h == 0)
			return usage_error("status");
	}
	if (optind != argc) {
		errmsg("status: unexpected argument '%s'", argv[optind]);
		return usage_error("status");
	}
	if (wait) {
		struct conn c;

		conn_init(&c);
		ret = conn_open(&c);
		/* --timeout bounds the whole wait: the polls themselves are always answered */
		if (!ret)
			ret = await_ready(&c, !json && isatty(STDERR_FILENO),
					  opt_timeout_ms > 0 ? opt_timeout_ms / 1000.0 : 0);
		conn_free(&c);
		if (ret)
			return ret;
	}
	return run_simple("status", &r, json, print_human);
}

static int cmd_metrics(int argc, char **argv)
{
	return cmd_keyvalue("metrics", argc, argv, prom_print);
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
	{ "status", cmd_status, "[--wait] [--json]",
	  "Show the daemon's state, load progress and counters (key: value lines).\n\n"
	  "  --wait                   first wait until the model serves (a progress line\n"
	  "                           on a terminal); --timeout S bounds the wait\n"
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

const struct cmd *find_cmd(const char *name)
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

