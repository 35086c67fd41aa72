/* mistral-run: one-shot offline generation with the engine, streamed to stdout. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "cli.h"
#include "forward.h"
#include "generate.h"
#include "kernels.h"
#include "model.h"
#include "template.h"
#include "tokenizer.h"
#include "ompwait.h"

#define MAX_STOPS MS_STOP_MAX_COUNT

struct opts {
	const char *model;
	const char *prompt;
	const char *prompt_tokens;
	const char *system;
	const char *logits_path;
	const char *isa;
	const char *stops[MAX_STOPS];
	size_t stop_lens[MAX_STOPS];
	size_t n_stops;
	long n_predict;
	long n_ctx;
	long threads;
	long batch;
	int32_t window;
	bool raw, print_tokens, mlock;
	uint32_t kv_type;
	enum ms_page_policy pages;
	struct ms_sampler_params sp;
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: mistral-run -m MODEL (-p PROMPT | --prompt-tokens IDS) [options]\n"
"\n"
"Generates text from a GGUF model in this process; stdout carries only the\n"
"generated text (or ids), timings go to stderr.\n"
"\n"
"  -m, --model FILE          GGUF model (llama architecture: Mistral, Llama)\n"
"  -p, --prompt TEXT         prompt text; the model's instruct template is applied\n"
"      --raw                 no template: BOS + the prompt as plain text\n"
"      --system TEXT         system prompt (folded into the first user message)\n"
"      --prompt-tokens IDS   comma-separated token ids fed as they are (no BOS)\n"
"  -n, --n-predict N         tokens to generate (default 128; 0 = prompt only)\n"
"      --temperature T       0 = greedy (default 0.6)\n"
"      --top-k N             (default 40; 0 = off)\n"
"      --top-p P             (default 0.95; 1 = off)\n"
"      --min-p P             (default 0.05; 0 = off)\n"
"      --repetition-penalty F  (default 1.0 = off)\n"
"      --frequency-penalty F (default 0)\n"
"      --presence-penalty F  (default 0)\n"
"      --seed S              sampling seed (default 24301)\n"
"      --stop TEXT           stop string (repeatable, up to 16)\n"
"      --print-tokens        print generated ids, space-separated, instead of text\n"
"      --logits FILE         write float32 logits of every evaluated position\n"
"                            (positions x vocab, row-major, little-endian)\n"
"      --sliding-window N|off|auto  attention window (default auto: the file's\n"
"                            key, else 4096 for Mistral 7B v0.1, else none)\n"
"  -c, --ctx N               context length (default: the model's, at most 8192)\n"
"  -t, --threads N           OpenMP threads (default: online CPUs)\n"
"      --batch N             prompt tokens evaluated per chunk (default 256)\n"
"      --isa generic|avx2|avx512|auto  kernel set (default auto or $MISTRAL_ISA)\n"
"      --pages hugetlb|thp|none  weight memory (default thp)\n"
"      --mlock               lock the weights in memory\n"
"      --kv-type f16|f32     KV cache element type (default f16; f32 is exact)\n"
"  -h, --help                this text\n"
"  -V, --version             version\n");
}

enum {
	O_RAW = 256, O_SYSTEM, O_PTOK, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REP, O_FREQ, O_PRES,
	O_SEED, O_STOP, O_PRINT, O_LOGITS, O_WINDOW, O_BATCH, O_ISA, O_PAGES, O_MLOCK, O_KV,
};

static void parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "n-predict", required_argument, NULL, 'n' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "raw", no_argument, NULL, O_RAW },
		{ "system", required_argument, NULL, O_SYSTEM },
		{ "prompt-tokens", required_argument, NULL, O_PTOK },
		{ "temperature", required_argument, NULL, O_TEMP },
		{ "top-k", required_argument, NULL, O_TOPK },
		{ "top-p", required_argument, NULL, O_TOPP },
		{ "min-p", required_argument, NULL, O_MINP },
		{ "repetition-penalty", required_argument, NULL, O_REP },
		{ "frequency-penalty", required_argument, NULL, O_FREQ },
		{ "presence-penalty", required_argument, NULL, O_PRES },
		{ "seed", required_argument, NULL, O_SEED },
		{ "stop", required_argument, NULL, O_STOP },
		{ "print-tokens", no_argument, NULL, O_PRINT },
		{ "logits", required_argument, NULL, O_LOGITS },
		{ "sliding-window", required_argument, NULL, O_WINDOW },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "isa", required_argument, NULL, O_ISA },
		{ "pages", required_argument, NULL, O_PAGES },
		{ "mlock", no_argument, NULL, O_MLOCK },
		{ "kv-type", required_argument, NULL, O_KV },
		{ NULL, 0, NULL, 0 },
	};
	long v;
	int c;

	ms_sampler_params_default(&o->sp);
	o->n_predict = 128;
	o->batch = 256;
	o->window = MS_WINDOW_AUTO;
	o->pages = MS_POLICY_THP;
	o->kv_type = GGML_TYPE_F16;
	o->isa = getenv("MISTRAL_ISA");
	while ((c = getopt_long(argc, argv, ":m:p:n:c:t:hV", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'p': o->prompt = optarg; break;
		case 'n': o->n_predict = cli_long("--n-predict", optarg, 0, INT32_MAX); break;
		case 'c': o->n_ctx = cli_long("--ctx", optarg, 1, 1L << 24); break;
		case 't': o->threads = cli_long("--threads", optarg, 1, 1024); break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("mistral-run (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION); exit(0);
		case O_RAW: o->raw = true; break;
		case O_SYSTEM: o->system = optarg; break;
		case O_PTOK: o->prompt_tokens = optarg; break;
		/* the sampler's own check, after parsing, judges the ranges */
		case O_TEMP: o->sp.temperature = cli_float("--temperature", optarg); break;
		case O_TOPK:
			o->sp.top_k = (int32_t)cli_long("--top-k", optarg, INT32_MIN, INT32_MAX);
			break;
		case O_TOPP: o->sp.top_p = cli_float("--top-p", optarg); break;
		case O_MINP: o->sp.min_p = cli_float("--min-p", optarg); break;
		case O_REP: o->sp.repetition_penalty = cli_float("--repetition-penalty", optarg); break;
		case O_FREQ: o->sp.frequency_penalty = cli_float("--frequency-penalty", optarg); break;
		case O_PRES: o->sp.presence_penalty = cli_float("--presence-penalty", optarg); break;
		case O_SEED: o->sp.seed = cli_u64("--seed", optarg); break;
		case O_STOP:
			if (o->n_stops == MAX_STOPS)
				cli_die_usage("too many --stop strings (at most 16): '%s'", optarg);
			o->stop_lens[o->n_stops] = strlen(optarg);
			o->stops[o->n_stops++] = optarg;
			break;
		case O_PRINT: o->print_tokens = true; break;
		case O_LOGITS: o->logits_path = optarg; break;
		case O_WINDOW:
			if (!strcmp(optarg, "off"))
				o->window = MS_WINDOW_OFF;
			else if (!strcmp(optarg, "auto"))
				o->window = MS_WINDOW_AUTO;
			else if (cli_parse_long(optarg, 1, 1L << 24, &v))
				o->window = (int32_t)v;
			else
				cli_die_usage("bad --sliding-window '%s' (a number, off or auto)", optarg);
			break;
		case O_BATCH: o->batch = cli_long("--batch", optarg, 1, 65536); break;
		case O_ISA: o->isa = optarg; break;
		case O_PAGES:
			if (ms_page_policy_parse(optarg, &o->pages) < 0)
				cli_die_usage("bad --pages '%s' (hugetlb, thp or none)", optarg);
			break;
		case O_MLOCK: o->mlock = true; break;
		case O_KV:
			if (ms_kv_type_parse(optarg, &o->kv_type) < 0)
				cli_die_usage("bad --kv-type '%s' (f16 or f32)", optarg);
			break;
		case ':': cli_die_usage("option '%s' needs an argument", argv[optind - 1]);
		default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		cli_die_usage("unexpected argument '%s'", argv[optind]);
	if (!o->model)
		cli_die_usage("%s", "no model given (-m FILE)");
	if (!o->prompt == !o->prompt_tokens)
		cli_die_usage("%s", "give exactly one of -p PROMPT and --prompt-tokens IDS");
	if (!o->threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		o->threads = n > 0 ? n : 1;
	}
}

static int parse_ids(const char *s, uint32_t vocab, int32_t **ids, size_t *n)
{
	size_t cap = 16, len = 0;
	int32_t *a = malloc(cap * sizeof(*a));

	if (!a)
		return -ENOMEM;
	while (*s) {
		char *end;
		long v;

		errno = 0;
		v = strtol(s, &end, 10);
		if (errno || end == s || v < 0 || (unsigned long)v >= vocab) {
			free(a);
			return -EINVAL;
		}
		if (len == cap) {
			int32_t *b = realloc(a, 2 * cap * sizeof(*a));

			if (!b) {
				free(a);
				return -ENOMEM;
			}
			a = b;
			cap *= 2;
		}
		a[len++] = (int32_t)v;
		s = end;
		if (*s == ',')
			s++;
		else if (*s) {
			free(a);
			return -EINVAL;
		}
	}
	*ids = a;
	*n = len;
	return 0;
}

/*
 * Everything one run holds, from the options to the timings; each step
 * below fills its part, and run_free releases what was made.
 */
struct run {
	struct opts o;
	const struct ms_kernels *k;
	struct ms_model *m;
	struct ms_kv *kv;
	struct ms_ctx *ctx;
	struct ms_gen *gen;
	FILE *lf;                    /* --logits file, or NULL */
	int32_t *prompt;
	size_t n_prompt, vocab;
	size_t n_gen;                /* tokens sampled, the end-of-sequence one included */
	float *logits;               /* [n_prompt or 1][vocab] */
	uint32_t n_ctx;
	double t_eval, t_gen;        /* monotonic seconds: prompt evaluation starts, generation starts */
};

static int write_logits(FILE *f, const float *l, size_t n)
{
	return fwrite(l, sizeof(float), n, f) == n ? 0 : -EIO;
}

/* Writing the --logits file failed: the reason is in errno. */
static int write_failed(const struct run *r)
{
	fprintf(stderr, "mistral-run: writing %s: %s\n", r->o.logits_path, strerror(errno));
	return 1;
}

/* Stdout carries only the answer, so a pipe can take it as it is. */
static void emit(const char *s, size_t n)
{
	if (n && fwrite(s, 1, n, stdout) != n) {
		perror("mistral-run: stdout");
		exit(1);
	}
	fflush(stdout);
}

/*
 * The steps of a run. Each returns 0 to go on, or the exit status after
 * saying why on stderr: 2 for a request that can never work as given,
 * 1 for a failure.
 */

static int load(struct run *r)
{
	const struct opts *o = &r->o;
	struct ms_load_opts lo;
	ms_err err = { 0 };
	struct ms_model *m;
	double t0, t1;

	if (ms_sampler_params_check(&o->sp, &err) < 0) {
		fprintf(stderr, "mistral-run: %s\n", err.msg);
		return 2;
	}
	r->k = cli_pick_kernels(o->isa);
	lo = (struct ms_load_opts){
		.arena = { .policy = o->pages, .mlock = o->mlock },
		.window = o->window,
	};
	t0 = cli_now();
	if (ms_model_load(o->model, &lo, NULL, NULL, &r->m, &err) < 0) {
		fprintf(stderr, "mistral-run: %s: %s\n", o->model, err.msg);
		return 1;
	}
	t1 = cli_now();
	m = r->m;
	r->vocab = m->hp.vocab;
	r->n_ctx = (uint32_t)(o->n_ctx ? o->n_ctx : (m->hp.ctx_train < 8192 ? m->hp.ctx_train : 8192));
	fprintf(stderr, "mistral-run: %s: %u layers, dim %u, heads %u/%u, vocab %zu, window %u (%s), "
		"%s pages%s, kernels %s, %ld threads, loaded in %.2f s\n",
		m->name, m->hp.n_layers, m->hp.dim, m->hp.n_heads, m->hp.n_kv_heads, r->vocab,
		m->window, m->window_source, ms_page_kind_name(m->arena->kind),
		m->arena->locked ? " (locked)" : "", r->k->name, o->threads, t1 - t0);
	if (m->arena->note[0])
		fprintf(stderr, "mistral-run: note: %s\n", m->arena->note);
	return 0;
}

/* The prompt's ids: given ones, raw text, or the instruct template around the text. */
static int build_prompt(struct run *r)
{
	const struct opts *o = &r->o;
	ms_err err = { 0 };
	int rc;

	if (o->prompt_tokens) {
		if (parse_ids(o->prompt_tokens, (uint32_t)r->vocab, &r->prompt, &r->n_prompt) < 0) {
			fprintf(stderr, "mistral-run: --prompt-tokens: ids must be comma-separated integers below %zu\n",
				r->vocab);
			return 2;
		}
		rc = 0;
	} else if (o->raw) {
		rc = ms_tokenize(r->m->tok, o->prompt, strlen(o->prompt), ms_tok_add_bos(r->m->tok), false,
				 &r->prompt, &r->n_prompt, &err);
	} else {
		struct ms_chat_msg msgs[2];
		size_t nm = 0;

		if (o->system)
			msgs[nm++] = (struct ms_chat_msg){ MS_ROLE_SYSTEM, o->system, strlen(o->system) };
		msgs[nm++] = (struct ms_chat_msg){ MS_ROLE_USER, o->prompt, strlen(o->prompt) };
		rc = ms_template_apply(r->m->tok, ms_template_detect(r->m->tok), msgs, nm,
				       &r->prompt, &r->n_prompt, &err);
	}
	if (rc < 0) {
		fprintf(stderr, "mistral-run: prompt: %s\n", err.msg);
		return 1;
	}
	if (r->n_prompt == 0) {
		fprintf(stderr, "mistral-run: the prompt has no tokens\n");
		return 2;
	}
	if (r->n_prompt > r->n_ctx) {
		fprintf(stderr, "mistral-run: the prompt has %zu tokens but the context holds %u\n",
			r->n_prompt, r->n_ctx);
		return 1;
	}
	return 0;
}

/* KV cache, evaluation context, the generation state and the logits buffer and file. */
static int prepare(struct run *r)
{
	const struct opts *o = &r->o;
	const struct ms_gen_params gp = {
		.sp = o->sp, .max_tokens = (uint32_t)o->n_predict,
		/* Ids are printed as they come: stop strings apply to text only. */
		.stops = o->print_tokens ? NULL : o->stops, .stop_lens = o->stop_lens,
		.n_stops = o->print_tokens ? 0 : o->n_stops,
		.strip_leading_space = !o->raw && !o->prompt_tokens,
	};
	ms_err err = { 0 };

	if (ms_kv_create(r->m, r->n_ctx, r->m->window, 0, o->kv_type, &r->kv, &err) < 0 ||
	    ms_ctx_create(r->m, r->k, (uint32_t)o->batch, (uint32_t)o->threads, &r->ctx, &err) < 0 ||
	    ms_gen_create(r->m->tok, &gp, &r->gen, &err) < 0) {
		fprintf(stderr, "mistral-run: %s\n", err.msg);
		return 1;
	}
	r->logits = malloc((o->logits_path ? r->n_prompt : 1) * r->vocab * sizeof(float));
	if (!r->logits) {
		fprintf(stderr, "mistral-run: out of memory for logits\n");
		return 1;
	}
	if (o->logits_path && !(r->lf = fopen(o->logits_path, "wb"))) {
		fprintf(stderr, "mistral-run: %s: %s\n", o->logits_path, strerror(errno));
		return 1;
	}
	return 0;
}

/* Evaluates the whole prompt; leaves the last position's logits first in the buffer. */
static int eval_prompt(struct run *r)
{
	ms_err err = { 0 };

	r->t_eval = cli_now();
	if (ms_eval(r->ctx, r->kv, r->prompt, r->n_prompt, r->logits, r->lf != NULL, &err) < 0) {
		fprintf(stderr, "mistral-run: %s\n", err.msg);
		return 1;
	}
	if (r->lf && write_logits(r->lf, r->logits, r->n_prompt * r->vocab) < 0)
		return write_failed(r);
	if (r->lf)
		memmove(r->logits, r->logits + (r->n_prompt - 1) * r->vocab, r->vocab * sizeof(float));
	ms_gen_accept(r->gen, r->prompt, r->n_prompt);
	r->t_gen = cli_now();
	return 0;
}

/* Samples, prints and feeds back tokens until a finish reason or a full context. */
static int generate(struct run *r)
{
	const struct opts *o = &r->o;
	struct ms_gen_out go;
	enum ms_finish fin = MS_FINISH_NONE;
	ms_err err = { 0 };

	while ((long)r->n_gen < o->n_predict) {
		fin = ms_gen_step(r->gen, r->logits, &go);
		r->n_gen++;
		if (go.tok < 0)
			break;
		if (o->print_tokens) {
			printf(r->n_gen > 1 ? " %d" : "%d", go.tok);
			fflush(stdout);
		} else {
			emit(go.text, go.len);
		}
		if (fin != MS_FINISH_NONE)
			break;
		if (r->kv->pos >= r->kv->n_ctx) {
			fprintf(stderr, "mistral-run: context full after %zu tokens\n", r->n_gen);
			fin = MS_FINISH_LENGTH;
			break;
		}
		if (ms_eval(r->ctx, r->kv, &go.tok, 1, r->logits, r->lf != NULL, &err) < 0) {
			fprintf(stderr, "mistral-run: %s\n", err.msg);
			return 1;
		}
		if (r->lf && write_logits(r->lf, r->logits, r->vocab) < 0)
			return write_failed(r);
	}
	if (!o->print_tokens) {
		ms_gen_end(r->gen, fin, &go);
		emit(go.text, go.len);
	}
	if (o->print_tokens && r->n_gen)
		printf("\n");
	return 0;
}

/* Speeds on stderr; then the --logits file is complete only if it closes cleanly. */
static int report(struct run *r)
{
	double t3 = cli_now();
	FILE *lf = r->lf;

	fprintf(stderr, "\nmistral-run: prompt %zu tokens in %.3f s (%.2f tok/s), generated %zu tokens in %.3f s (%.2f tok/s)\n",
		r->n_prompt, r->t_gen - r->t_eval, (double)r->n_prompt / (r->t_gen - r->t_eval), r->n_gen,
		t3 - r->t_gen, r->n_gen ? (double)r->n_gen / (t3 - r->t_gen) : 0.0);
	r->lf = NULL;
	if (lf && fclose(lf) != 0)
		return write_failed(r);
	return 0;
}

static void run_free(struct run *r)
{
	if (r->lf)
		fclose(r->lf);
	free(r->logits);
	free(r->prompt);
	ms_gen_free(r->gen);
	ms_ctx_free(r->ctx);
	ms_kv_free(r->kv);
	ms_model_free(r->m);
}

int main(int argc, char **argv)
{
	struct run r = { 0 };
	int status;

	mistral_omp_wait_setup(argv);

	cli_prog = "mistral-run";
	parse_args(argc, argv, &r.o);
	if ((status = load(&r)) == 0 &&
	    (status = build_prompt(&r)) == 0 &&
	    (status = prepare(&r)) == 0 &&
	    (status = eval_prompt(&r)) == 0 &&
	    (status = generate(&r)) == 0)
		status = report(&r);
	run_free(&r);
	return status;
}
