/* mistral-bench: measures load, prompt and decode speed of a GGUF model in this process, next to the machine's own read bandwidth. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <omp.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "arena.h"
#include "bench_chat.h"
#include "cli.h"
#include "forward.h"
#include "kernels.h"
#include "model.h"
#include "quant.h"
#include "trace.h"
#include "ompwait.h"

#define PROG "mistral-bench"

#define MAX_PROMPTS 8
#define MAX_STREAMS 8           /* --streams sizes */
#define MAX_STREAMS_N 64        /* sequences in one --streams size */
#define MAX_REPEAT 100
#define SHORT_PROMPT 8          /* tokens evaluated before the short-context decode */
#define CTX_SLACK 64            /* positions past long + gen, so the cache never runs full */
#define BW_PASSES 5
#define BW_MIN_BYTES ((size_t)256 << 20)   /* well past any L3 this code will meet */

extern char **environ;

enum variant { V_MHA, V_GQA, V_MQA, V_COUNT };
static const char *const variant_name[V_COUNT] = { "mha", "gqa", "mqa" };

struct opts {
	const char *model;
	const char *isa;
	const char *vocab_from;
	const char *type;        /* --attention weight type, passed to mistral-mkmodel */
	const char *trace;       /* --trace: file for the short decode's timing records */
	long threads;
	long gen;
	long long_ctx;           /* cached positions for the long-context decode */
	long repeat;
	long batch;
	long bw_mib;
	long prompts[MAX_PROMPTS];
	size_t n_prompts;
	long streams[MAX_STREAMS];   /* --streams: concurrent sequences per batched decode */
	long contend;                /* --contend: busy-loop processes beside a second measurement */
	long chat, chat_system, chat_user, chat_answer, chat_retok;   /* --chat TURNS and its shape */
	size_t n_streams;
	uint32_t kv_type;
	bool json, mlock, quick, repeat_set, gen_set, keep, plain_rows;
	enum ms_page_policy pages;
	/* --attention */
	bool attention;
	bool variants[V_COUNT];
	long dim, layers, heads, ffn;
};

/* Everything one model's run measured; medians over the repeats. */
struct result {
	char name[128];
	char path[PATH_MAX];
	char types[256];               /* "Q8_0 x 224, F32 x 65" */
	const char *weight_type;       /* the type holding most matrix bytes */
	const char *page_kind;
	char page_note[256];
	bool locked;
	const char *isa;
	long threads;
	struct ms_hparams hp;
	uint32_t window;
	uint64_t weight_bytes;         /* every tensor */
	uint64_t bytes_per_token;      /* every matrix one decode token reads */
	uint64_t x8_bytes;             /* of those, in the interleaved layout */
	const char *kv_type;
	size_t kv_bytes_per_token;
	size_t kv_bytes_long;          /* cache of one sequence holding long_ctx positions */
	uint32_t long_keys;            /* keys one query attends to in the long decode */
	double load_s;
	double pp_tps[MAX_PROMPTS];
	bool pp_done[MAX_PROMPTS];
	double tg_tps, tg_long_tps;
	double measured_gbps, achieved_gbps, ratio;
	size_t bw_bytes;
	/* every repeat, for the spread */
	double pp_runs[MAX_PROMPTS][MAX_REPEAT];
	double tg_runs[MAX_REPEAT], tg_long_runs[MAX_REPEAT], bw_runs[MAX_REPEAT];
	double bw_probe_runs[MAX_REPEAT], bw_plain_runs[MAX_REPEAT];
	unsigned bw_streams_won[MAX_REPEAT];
	double ratio_runs[MAX_REPEAT];  /* each run's own achieved / measured */
	/* --streams: aggregate decode tok/s of N sequences stepped together */
	double streams_runs[MAX_STREAMS][MAX_REPEAT];
	double streams_tps[MAX_STREAMS];
	/* --contend: the first prompt size and the short decode again, with busy loops running */
	double contend_pp_runs[MAX_REPEAT], contend_tg_runs[MAX_REPEAT];
	double contend_pp_tps, contend_tg_tps;
	long n_runs;
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " -m MODEL [options]\n"
"       " PROG " --attention mha,gqa,mqa --vocab-from GGUF [shape options] [options]\n"
"\n"
"Measures a GGUF model in this process: load time, prompt processing (tok/s)\n"
"for each --prompt size, decode tok/s at short context and with --ctx tokens\n"
"cached, weight bytes read per decode token, the GB/s that achieves, the\n"
"machine's own read bandwidth measured next to each decode run, and the ratio.\n"
"Figures are medians of --repeat runs. Nothing is asserted.\n"
"\n"
"  -m, --model FILE         GGUF model\n"
"  -t, --threads N          OpenMP threads (default: online CPUs)\n"
"      --isa NAME           kernel set: generic, avx2, ... or auto (default auto\n"
"                           or $MISTRAL_ISA)\n"
"      --pages hugetlb|thp|none  weight memory (default thp)\n"
"      --mlock              lock the weights in memory\n"
"      --json               print one JSON object instead of the table\n"
"      --prompt N[,N...]    prompt sizes in tokens (default 64,512)\n"
"      --gen N              decode tokens timed per run (default 16)\n"
"      --ctx N              cached positions for the long-context decode (default\n"
"                           4096); they are filled with random keys and values,\n"
"                           not prefilled\n"
"      --repeat R           runs per figure; the median is reported (default 3)\n"
"      --batch N            prompt tokens per evaluation chunk (default 512)\n"
"      --kv-type f16|f32    KV cache element type (default f16)\n"
"      --layout x8|rows     matrices interleaved eight rows at a time for the x8\n"
"                           kernels (default: every type but F32), or not\n"
"      --bw-mib N           read-bandwidth buffer in MiB (default 2048, less when\n"
"                           memory is short)\n"
"      --streams N[,N...]   also decode N sequences at once (one batched step\n"
"                           each token, as the daemon does for concurrent\n"
"                           requests) and report their aggregate tok/s\n"
"      --contend N          measure the first prompt size and the decode again\n"
"                           with N busy-loop processes running beside them\n"
"                           (a CPU shared with other work) and show both\n"
"      --trace FILE         write the timing records of the short-context\n"
"                           decode tokens (each piece of a step, each matmul\n"
"                           region's per-thread times) to FILE, one a line\n"
"      --quick              one run, 8 decode tokens, prompts above 64 skipped,\n"
"                           a 256 MiB bandwidth buffer\n"
"      --chat TURNS         instead: play a conversation of TURNS turns, each\n"
"                           prompt the whole history plus a user message, with\n"
"                           the prompt cache (the kept state of the previous\n"
"                           turn, as mistrald keeps it) and without; print per\n"
"                           turn the prompt, cached and new tokens and the time\n"
"                           to first token both ways and for the new tokens alone\n"
"      --chat-system N --chat-user N --chat-answer N --chat-retok N  its shape:\n"
"                           system prompt tokens (default 0), tokens each user\n"
"                           message and answer add (default 64, 64), answer\n"
"                           tokens re-tokenized differently in the next prompt\n"
"                           (default 2); --repeat times the cached and the\n"
"                           new-tokens-only evaluations (medians)\n"
"\n"
"  --attention LIST         instead of -m: write same-size random models that\n"
"                           differ only in key/value heads (LIST: mha, gqa, mqa\n"
"                           or all, comma-separated) with mistral-mkmodel (next\n"
"                           to this program or $MKMODEL) into $TMPDIR, and show\n"
"                           KV-cache bytes and decode speed side by side\n"
"      --vocab-from GGUF    tokenizer for those models (required)\n"
"      --dim N --layers N --heads N --ffn N  shape (default 1024, 8, 16, 2816;\n"
"                           kv heads: heads, heads/4, 1)\n"
"      --type TYPE          their matrix type (default Q8_0)\n"
"      --keep               leave the written models in place and name them\n"
"\n"
"  -h, --help               this text\n"
"  -V, --version            version\n"
"\n"
"Exit status: 0 measured, 1 failure, 2 bad usage.\n");
}

static void parse_prompts(const char *s, struct opts *o)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		cli_die_usage("--prompt list too long");
	strcpy(buf, s);
	o->n_prompts = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->n_prompts == MAX_PROMPTS)
			cli_die_usage("at most %d --prompt sizes", MAX_PROMPTS);
		o->prompts[o->n_prompts++] = cli_long("--prompt size", tok, 1, 65536);
	}
	if (!o->n_prompts)
		cli_die_usage("empty --prompt list");
}

static void parse_streams(const char *s, struct opts *o)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		cli_die_usage("--streams list too long");
	strcpy(buf, s);
	o->n_streams = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->n_streams == MAX_STREAMS)
			cli_die_usage("at most %d --streams sizes", MAX_STREAMS);
		o->streams[o->n_streams++] = cli_long("--streams size", tok, 1, 64);
	}
	if (!o->n_streams)
		cli_die_usage("empty --streams list");
}

static void parse_variants(const char *s, struct opts *o)
{
	char buf[64], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		cli_die_usage("bad --attention '%s' (mha, gqa, mqa or all, comma-separated)", s);
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		bool found = false;

		if (!strcmp(tok, "all")) {
			for (int v = 0; v < V_COUNT; v++)
				o->variants[v] = true;
			continue;
		}
		for (int v = 0; v < V_COUNT; v++) {
			if (!strcmp(tok, variant_name[v])) {
				o->variants[v] = true;
				found = true;
			}
		}
		if (!found)
			cli_die_usage("bad --attention '%s' (mha, gqa, mqa or all, comma-separated)", s);
	}
	o->attention = true;
}

enum {
	O_ISA = 256, O_PAGES, O_MLOCK, O_JSON, O_ATTENTION, O_PROMPT, O_GEN, O_CTX, O_REPEAT,
	O_QUICK, O_BATCH, O_BW, O_KV, O_VOCAB, O_DIM, O_LAYERS, O_HEADS, O_FFN, O_TYPE, O_KEEP, O_LAYOUT,
	O_STREAMS, O_CONTEND, O_TRACE, O_CHAT, O_CHAT_SYSTEM, O_CHAT_USER, O_CHAT_ANSWER, O_CHAT_RETOK,
};

static void parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "isa", required_argument, NULL, O_ISA },
		{ "pages", required_argument, NULL, O_PAGES },
		{ "mlock", no_argument, NULL, O_MLOCK },
		{ "json", no_argument, NULL, O_JSON },
		{ "attention", required_argument, NULL, O_ATTENTION },
		{ "prompt", required_argument, NULL, O_PROMPT },
		{ "gen", required_argument, NULL, O_GEN },
		{ "ctx", required_argument, NULL, O_CTX },
		{ "repeat", required_argument, NULL, O_REPEAT },
		{ "quick", no_argument, NULL, O_QUICK },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "bw-mib", required_argument, NULL, O_BW },
		{ "kv-type", required_argument, NULL, O_KV },
		{ "vocab-from", required_argument, NULL, O_VOCAB },
		{ "dim", required_argument, NULL, O_DIM },
		{ "layers", required_argument, NULL, O_LAYERS },
		{ "heads", required_argument, NULL, O_HEADS },
		{ "ffn", required_argument, NULL, O_FFN },
		{ "type", required_argument, NULL, O_TYPE },
		{ "keep", no_argument, NULL, O_KEEP },
		{ "layout", required_argument, NULL, O_LAYOUT },
		{ "streams", required_argument, NULL, O_STREAMS },
		{ "contend", required_argument, NULL, O_CONTEND },
		{ "trace", required_argument, NULL, O_TRACE },
		{ "chat", required_argument, NULL, O_CHAT },
		{ "chat-system", required_argument, NULL, O_CHAT_SYSTEM },
		{ "chat-user", required_argument, NULL, O_CHAT_USER },
		{ "chat-answer", required_argument, NULL, O_CHAT_ANSWER },
		{ "chat-retok", required_argument, NULL, O_CHAT_RETOK },
		{ NULL, 0, NULL, 0 },
	};
	bool bw_set = false;
	int c;

	*o = (struct opts){
		.gen = 16, .long_ctx = 4096, .repeat = 3, .batch = 512, .bw_mib = 2048,
		.prompts = { 64, 512 }, .n_prompts = 2, .pages = MS_POLICY_THP,
		.kv_type = GGML_TYPE_F16,
		.dim = 1024, .layers = 8, .heads = 16, .ffn = 2816, .type = "Q8_0",
		.chat_user = 64, .chat_answer = 64, .chat_retok = 2,
	};
	o->isa = getenv("MISTRAL_ISA");
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:t:hV", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 't': o->threads = cli_long("--threads", optarg, 1, 1024); break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf(PROG " (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION); exit(0);
		case O_ISA: o->isa = optarg; break;
		case O_PAGES:
			if (ms_page_policy_parse(optarg, &o->pages) < 0)
				cli_die_usage("bad --pages '%s' (hugetlb, thp or none)", optarg);
			break;
		case O_MLOCK: o->mlock = true; break;
		case O_JSON: o->json = true; break;
		case O_ATTENTION: parse_variants(optarg, o); break;
		case O_PROMPT: parse_prompts(optarg, o); break;
		case O_STREAMS: parse_streams(optarg, o); break;
		case O_CONTEND: o->contend = cli_long("--contend", optarg, 0, 64); break;
		case O_TRACE: o->trace = optarg; break;
		case O_CHAT: o->chat = cli_long("--chat", optarg, 1, 1000); break;
		case O_CHAT_SYSTEM: o->chat_system = cli_long("--chat-system", optarg, 0, 1L << 20); break;
		case O_CHAT_USER: o->chat_user = cli_long("--chat-user", optarg, 1, 1L << 20); break;
		case O_CHAT_ANSWER: o->chat_answer = cli_long("--chat-answer", optarg, 1, 1L << 20); break;
		case O_CHAT_RETOK: o->chat_retok = cli_long("--chat-retok", optarg, 0, 1L << 20); break;
		case O_GEN: o->gen = cli_long("--gen", optarg, 1, 4096); o->gen_set = true; break;
		case O_CTX: o->long_ctx = cli_long("--ctx", optarg, 1, 1L << 20); break;
		case O_REPEAT:
			o->repeat = cli_long("--repeat", optarg, 1, MAX_REPEAT);
			o->repeat_set = true;
			break;
		case O_QUICK: o->quick = true; break;
		case O_BATCH: o->batch = cli_long("--batch", optarg, 1, 65536); break;
		case O_BW: o->bw_mib = cli_long("--bw-mib", optarg, 256, 1L << 20); bw_set = true; break;
		case O_KV:
			if (ms_kv_type_parse(optarg, &o->kv_type) < 0)
				cli_die_usage("bad --kv-type '%s' (f16 or f32)", optarg);
			break;
		case O_VOCAB: o->vocab_from = optarg; break;
		case O_DIM: o->dim = cli_long("--dim", optarg, 2, 1L << 16); break;
		case O_LAYERS: o->layers = cli_long("--layers", optarg, 1, 4096); break;
		case O_HEADS: o->heads = cli_long("--heads", optarg, 1, 4096); break;
		case O_FFN: o->ffn = cli_long("--ffn", optarg, 1, 1L << 20); break;
		case O_TYPE: o->type = optarg; break;
		case O_KEEP: o->keep = true; break;
		case O_LAYOUT:
			if (!strcmp(optarg, "x8"))
				o->plain_rows = false;
			else if (!strcmp(optarg, "rows"))
				o->plain_rows = true;
			else
				cli_die_usage("bad --layout '%s' (x8 or rows)", optarg);
			break;
		case ':': cli_die_usage("option '%s' needs an argument", argv[optind - 1]);
		default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		cli_die_usage("unexpected argument '%s'", argv[optind]);
	if (o->attention == !!o->model)
		cli_die_usage("give exactly one of -m MODEL and --attention LIST");
	if (o->chat && (o->attention || o->json))
		cli_die_usage("--chat plays against -m MODEL and prints a table (no --attention, no --json)");
	if (o->chat_retok >= o->chat_answer)
		cli_die_usage("--chat-retok %ld must be less than --chat-answer %ld", o->chat_retok, o->chat_answer);
	if (o->attention && !o->vocab_from)
		cli_die_usage("--attention needs --vocab-from GGUF (any GGUF with a tokenizer)");
	if (o->attention && (o->dim % o->heads || o->heads % 4 || (o->dim / o->heads) % 2))
		cli_die_usage("--heads %ld must be a multiple of 4 dividing --dim %ld into an even head size",
			      o->heads, o->dim);
	if (o->quick) {
		if (!o->repeat_set)
			o->repeat = 1;
		if (!o->gen_set)
			o->gen = 8;
		if (!bw_set)
			o->bw_mib = 256;
	}
	if (!o->threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		o->threads = n > 0 ? n : 1;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, long n)
{
	double s[MAX_REPEAT];

	if (n <= 0)
		return 0;
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* xorshift64*: token ids and cache contents only need to be arbitrary, not good. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static void random_tokens(int32_t *t, size_t n, uint32_t vocab, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		t[i] = (int32_t)(rng_next(s) % vocab);
}

/* ------------------------------------------------------------------------ */
/* Read bandwidth                                                            */
/* ------------------------------------------------------------------------ */

/*
 * The buffer the bandwidth passes read. It comes from an arena with the
 * weights' page policy, so the passes see the same TLB behaviour as the
 * matmuls, and is written once (non-zero) so every page is really backed:
 * reading untouched anonymous memory would hit the shared zero page and
 * measure the cache instead.
 */
struct bw {
	struct ms_arena *arena;
	float *buf;
	size_t n;            /* floats */
	int passes;
	long threads;
	const struct ms_kernels *k;
};

/*
 * MemAvailable, which counts the page cache the kernel can drop (after a
 * load it holds much of the model file); 0 when unknown.
 */
static size_t mem_available(void)
{
	char line[256];
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb > SIZE_MAX / 1024 ? 0 : (size_t)kb * 1024;
}

static int bw_create(struct bw *bw, size_t want, const struct opts *o, ms_err *err)
{
	struct ms_arena_opts ao = { .policy = o->pages };
	size_t avail = mem_available();
	size_t bytes = want;
	int r;

	/* Never push the model out of memory to measure memory. */
	if (avail && bytes > avail / 4)
		bytes = avail / 4;
	if (bytes < BW_MIN_BYTES)
		bytes = BW_MIN_BYTES;
	bytes &= ~(size_t)((64 << 10) - 1);
	r = ms_arena_create(bytes, &ao, &bw->arena, err);
	if (r < 0)
		return r;
	bw->buf = ms_arena_alloc(bw->arena, bytes, 4096);
	if (!bw->buf) {
		ms_arena_destroy(bw->arena);
		return ms_errf(err, -ENOMEM, "bandwidth buffer of %zu bytes does not fit its arena", bytes);
	}
	bw->n = bytes / sizeof(float);
	bw->passes = o->quick ? 3 : BW_PASSES;
	bw->threads = o->threads;
	/* The machine's bandwidth, not a slow kernel's: always the best table. */
	bw->k = ms_kernels_get(ms_cpu_best_isa());
	{
		float *p = bw->buf;
		const long n = (long)bw->n;

#pragma omp parallel for num_threads((int)bw->threads) schedule(static)
		for (long i = 0; i < n; i++)
			p[i] = 1.0f;
	}
	return 0;
}

static void bw_free(struct bw *bw)
{
	ms_arena_destroy(bw->arena);
	bw->arena = NULL;
}

/*
 * A plain loop the compiler vectorises at the build's baseline ISA: the
 * cross-check that the kernel probe is not the slow one.
 */
static float plain_sum(size_t n, const float *x)
{
	float acc[16] = { 0 }, total = 0;
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++)
			acc[j] += x[i + j];
	for (; i < n; i++)
		total += x[i];
	for (int j = 0; j < 16; j++)
		total += acc[j];
	return total;
}

/*
 * Best of several passes, each thread reading its own contiguous share, in
 * GB/s: with the best kernel table's sum over `streams` concurrent runs,
 * or (streams 0) the plain loop above.
 */
static double bw_measure(const struct bw *bw, unsigned streams)
{
	double best = 0;
	volatile float sink = 0;

	for (int pass = 0; pass < bw->passes; pass++) {
		float sum = 0;
		double t0 = cli_now(), dt;

#pragma omp parallel num_threads((int)bw->threads) reduction(+:sum)
		{
			size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
			size_t per = (bw->n / nt) & ~(size_t)15;
			size_t lo = id * per, len = id + 1 == nt ? bw->n - lo : per;
			const float *p = bw->buf + lo;

			sum += streams ? bw->k->sum_f32(len, p, streams) : plain_sum(len, p);
		}
		dt = cli_now() - t0;
		sink += sum;
		if (dt > 0 && (double)(bw->n * sizeof(float)) / dt / 1e9 > best)
			best = (double)(bw->n * sizeof(float)) / dt / 1e9;
	}
	(void)sink;
	return best;
}

/*
 * The machine's read bandwidth now: the fastest of the kernel sum with 1,
 * 2 and MS_SUM_STREAMS streams a thread (which wins depends on the
 * machine and the buffer) and the plain loop, so a slow probe cannot
 * flatter the decode ratio. *probe gets the kernel's best, *plain the
 * loop's, *streams_won the stream count behind *probe.
 */
static double bw_best(const struct bw *bw, double *probe, double *plain, unsigned *streams_won)
{
	*probe = 0;
	for (unsigned s = 1; s <= MS_SUM_STREAMS; s *= 2) {
		double v = bw_measure(bw, s);

		if (v > *probe) {
			*probe = v;
			*streams_won = s;
		}
	}
	*plain = bw_measure(bw, 0);
	return *probe > *plain ? *probe : *plain;
}

/* ------------------------------------------------------------------------ */
/* Model measurements                                                        */
/* ------------------------------------------------------------------------ */

static uint64_t tensor_bytes(const struct ms_tensor *t)
{
	return t->rows * (uint64_t)t->row_bytes;
}

/* Matrix bytes one decode token reads (the token_embd row it dequantizes is noise). */
static void weight_stats(const struct ms_model *m, struct result *res)
{
	uint64_t by_type[MS_TYPE_SLOTS] = { 0 };
	uint64_t total = 0, best = 0;
	size_t off = 0;

	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		const struct ms_layer *L = &m->layers[l];
		const struct ms_tensor *ts[] = {
			&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down,
		};

		for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
			total += tensor_bytes(ts[i]);
			if (ts[i]->layout == MS_LAYOUT_X8)
				res->x8_bytes += tensor_bytes(ts[i]);
			if (ts[i]->type < MS_TYPE_SLOTS)
				by_type[ts[i]->type] += tensor_bytes(ts[i]);
		}
	}
	total += tensor_bytes(&m->output);
	if (m->output.layout == MS_LAYOUT_X8)
		res->x8_bytes += tensor_bytes(&m->output);
	if (m->output.type < MS_TYPE_SLOTS)
		by_type[m->output.type] += tensor_bytes(&m->output);
	res->bytes_per_token = total;
	res->weight_type = "none";
	for (uint32_t t = 0; t < MS_TYPE_SLOTS; t++) {
		if (by_type[t] > best) {
			best = by_type[t];
			res->weight_type = ms_ggml_type_name(t);
		}
	}
	res->types[0] = '\0';
	for (uint32_t t = 0; t < MS_TYPE_SLOTS; t++) {
		int n;

		if (!m->types_seen[t] || off >= sizeof(res->types))
			continue;
		n = snprintf(res->types + off, sizeof(res->types) - off, "%s%s x %u",
			     off ? ", " : "", ms_ggml_type_name(t), m->types_seen[t]);
		if (n > 0)
			off += (size_t)n;
	}
}

/* n random tokens as one prompt on an emptied cache; tok/s. */
static int time_prompt(struct ms_ctx *ctx, struct ms_kv *kv, size_t n, int32_t *toks, uint32_t vocab,
		       float *logits, uint64_t *rng, double *tps, ms_err *err)
{
	double t;
	int r;

	ms_kv_reset(kv);
	random_tokens(toks, n, vocab, rng);
	t = cli_now();
	if ((r = ms_eval(ctx, kv, toks, n, logits, false, err)) < 0)
		return r;
	*tps = (double)n / (cli_now() - t);
	return 0;
}

/* Decodes gen tokens one at a time from the cache as it is; tok/s. */
static int time_decode(struct ms_ctx *ctx, struct ms_kv *kv, long gen, uint32_t vocab,
		       float *logits, uint64_t *rng, double *tps, ms_err *err)
{
	double t0 = cli_now();
	int r;

	for (long i = 0; i < gen; i++) {
		int32_t tok = (int32_t)(rng_next(rng) % vocab);

		if ((r = ms_eval(ctx, kv, &tok, 1, logits, false, err)) < 0)
			return r;
	}
	*tps = (double)gen / (cli_now() - t0);
	return 0;
}

/*
 * Short context: SHORT_PROMPT tokens on an emptied cache, then gen tokens
 * one at a time; tok/s. trace (NULL: none) records the decode tokens.
 */
static int time_short_decode(struct ms_ctx *ctx, struct ms_kv *kv, long gen, int32_t *toks, uint32_t vocab,
			     float *logits, uint64_t *rng, struct ms_trace *trace, double *tps, ms_err *err)
{
	int r;

	ms_kv_reset(kv);
	random_tokens(toks, SHORT_PROMPT, vocab, rng);
	if ((r = ms_eval(ctx, kv, toks, SHORT_PROMPT, NULL, false, err)) < 0)
		return r;
	ms_trace_set(trace);
	r = time_decode(ctx, kv, gen, vocab, logits, rng, tps, err);
	ms_trace_set(NULL);
	return r;
}

/*
 * n sequences, each after its own SHORT_PROMPT tokens, decoded together:
 * gen batched steps of one token per sequence, with every sequence's
 * logits. Aggregate tok/s into *tps.
 */
static int time_streams(const struct ms_model *m, struct ms_ctx *ctx, const struct opts *o, size_t n,
			uint64_t *rng, double *tps, ms_err *err)
{
	struct ms_kv *kv[MAX_STREAMS_N] = { 0 };
	struct ms_batch_item it[MAX_STREAMS_N] = { { 0 } };
	int32_t toks[MAX_STREAMS_N][SHORT_PROMPT];
	float *logits = calloc(n * m->hp.vocab, sizeof(float));
	double t0;
	int r = 0;

	if (!logits)
		return ms_errf(err, -ENOMEM, "no memory for %zu streams' logits", n);
	for (size_t i = 0; i < n; i++) {
		if ((r = ms_kv_create(m, SHORT_PROMPT + (uint32_t)o->gen + CTX_SLACK, m->window, 0, o->kv_type, &kv[i],
				      err)) < 0)
			goto out;
		random_tokens(toks[i], SHORT_PROMPT, m->hp.vocab, rng);
		it[i] = (struct ms_batch_item){ .kv = kv[i], .toks = toks[i], .n = SHORT_PROMPT,
						.logits = logits + i * m->hp.vocab };
	}
	if ((r = ms_eval_batch(ctx, it, n, err)) < 0)
		goto out;
	t0 = cli_now();
	for (long g = 0; g < o->gen; g++) {
		for (size_t i = 0; i < n; i++) {
			toks[i][0] = (int32_t)(rng_next(rng) % m->hp.vocab);
			it[i].n = 1;
		}
		if ((r = ms_eval_batch(ctx, it, n, err)) < 0)
			goto out;
	}
	*tps = (double)n * (double)o->gen / (cli_now() - t0);
out:
	for (size_t i = 0; i < n; i++)
		ms_kv_free(kv[i]);
	free(logits);
	return r;
}

/*
 * n processes that only burn CPU, as a busy neighbour would; NULL when
 * none could be started (the caller reports it).
 */
static pid_t *contend_start(long n)
{
	pid_t *pids = calloc((size_t)n, sizeof(*pids));

	if (!pids)
		return NULL;
	for (long i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			volatile unsigned long x = 0;

			for (;;)
				x++;
		}
		if (pids[i] < 0) {
			for (long j = 0; j < i; j++)
				kill(pids[j], SIGKILL), waitpid(pids[j], NULL, 0);
			free(pids);
			return NULL;
		}
	}
	return pids;
}

static void contend_stop(pid_t *pids, long n)
{
	for (long i = 0; pids && i < n; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	free(pids);
}

/*
 * The records as text, one a line: what n_thr a b t0 t1, then for each
 * timed thread in conv done items (ns, CLOCK_MONOTONIC; trace.h).
 */
static int write_trace(const char *path, const struct ms_trace *t)
{
	FILE *f = fopen(path, "w");
	int bad;

	if (!f) {
		const int e = errno;

		fprintf(stderr, PROG ": %s: %s\n", path, strerror(e));
		return -e;
	}
	fprintf(f, "# what n_thr a b t0 t1 [in conv done items] x n_thr; dropped %zu\n", t->dropped);
	for (size_t i = 0; i < t->n; i++) {
		const struct ms_trace_rec *r = &t->rec[i];

		fprintf(f, "%u %u %llu %llu %llu %llu", r->what, r->n_thr, (unsigned long long)r->a,
			(unsigned long long)r->b, (unsigned long long)r->t0, (unsigned long long)r->t1);
		for (uint32_t j = 0; j < r->n_thr && j < MS_TRACE_THREADS; j++)
			fprintf(f, " %llu %llu %llu %llu", (unsigned long long)r->in[j],
				(unsigned long long)r->conv[j], (unsigned long long)r->done[j],
				(unsigned long long)r->items[j]);
		fputc('\n', f);
	}
	bad = ferror(f);
	if (fclose(f) || bad) {
		fprintf(stderr, PROG ": %s: write failed\n", path);
		return -EIO;
	}
	return 0;
}

/*
 * Loads path and measures it. pp: whether to run the prompt sizes (the
 * attention comparison only needs decode). Progress goes to stderr unless
 * quiet, so a long 7B run shows it is alive.
 */
static int bench_model(const char *path, const struct opts *o, bool pp, struct result *res)
{
	const struct ms_kernels *k = cli_pick_kernels(o->isa);
	struct ms_load_opts lo = {
		.arena = { .policy = o->pages, .mlock = o->mlock },
		.window = MS_WINDOW_AUTO,
		.plain_rows = o->plain_rows,
	};
	struct ms_model *m = NULL;
	struct ms_kv *kv = NULL;
	struct ms_ctx *ctx = NULL;
	struct bw bw = { 0 };
	struct ms_trace trace = { 0 };
	int32_t *toks = NULL;
	float *logits = NULL;
	uint64_t rng = 0x853c49e6748fea9bull;
	ms_err err = { 0 };
	size_t max_prompt = SHORT_PROMPT;
	uint32_t n_ctx;
	double t0;
	int r;

	memset(res, 0, sizeof(*res));
	snprintf(res->path, sizeof(res->path), "%s", path);
	t0 = cli_now();
	if ((r = ms_model_load(path, &lo, NULL, NULL, &m, &err)) < 0) {
		fprintf(stderr, PROG ": %s: %s\n", path, err.msg);
		return r;
	}
	res->load_s = cli_now() - t0;
	snprintf(res->name, sizeof(res->name), "%s", m->name);
	res->hp = m->hp;
	res->window = m->window;
	res->weight_bytes = m->weight_bytes;
	res->page_kind = ms_page_kind_name(m->arena->kind);
	snprintf(res->page_note, sizeof(res->page_note), "%s", m->arena->note);
	res->locked = m->arena->locked;
	res->isa = k->name;
	res->threads = o->threads;
	weight_stats(m, res);

	if (pp) {
		for (size_t i = 0; i < o->n_prompts; i++)
			if (!(o->quick && o->prompts[i] > 64) && (size_t)o->prompts[i] > max_prompt)
				max_prompt = (size_t)o->prompts[i];
	}
	n_ctx = (uint32_t)o->long_ctx + (uint32_t)o->gen + CTX_SLACK;
	if (n_ctx < max_prompt + (size_t)o->gen + CTX_SLACK)
		n_ctx = (uint32_t)(max_prompt + (size_t)o->gen + CTX_SLACK);
	res->kv_type = ms_ggml_type_name(o->kv_type);
	res->kv_bytes_per_token = ms_kv_bytes(m, 1, 0, 0, o->kv_type);
	res->kv_bytes_long = ms_kv_bytes(m, (uint32_t)o->long_ctx, m->window, 0, o->kv_type);
	res->long_keys = (m->window && m->window < o->long_ctx + 1) ? m->window : (uint32_t)o->long_ctx + 1;

	toks = malloc(max_prompt * sizeof(*toks));
	logits = malloc((size_t)m->hp.vocab * sizeof(*logits));
	if (o->trace) {
		/* a decode token makes 12 records a layer and 4 more */
		trace.cap = ((size_t)m->hp.n_layers * 16 + 16) * (size_t)o->gen * (size_t)o->repeat;
		trace.rec = calloc(trace.cap, sizeof(*trace.rec));
	}
	if (!toks || !logits || (o->trace && !trace.rec)) {
		fprintf(stderr, PROG ": out of memory\n");
		r = -ENOMEM;
		goto out;
	}
	if ((r = ms_kv_create(m, n_ctx, m->window, 0, o->kv_type, &kv, &err)) < 0 ||
	    (r = ms_ctx_create(m, k, (uint32_t)(o->batch > MAX_STREAMS_N ? o->batch : MAX_STREAMS_N),
				 (uint32_t)o->threads, &ctx, &err)) < 0 ||
	    (r = bw_create(&bw, (size_t)o->bw_mib << 20, o, &err)) < 0) {
		fprintf(stderr, PROG ": %s: %s\n", path, err.msg);
		goto out;
	}
	res->bw_bytes = bw.n * sizeof(float);

	/* One token first: thread team start-up and first-touch scratch are not speed. */
	random_tokens(toks, 1, m->hp.vocab, &rng);
	if ((r = ms_eval(ctx, kv, toks, 1, logits, false, &err)) < 0)
		goto eval_fail;

	for (long rep = 0; rep < o->repeat; rep++) {
		if (!o->json)
			fprintf(stderr, PROG ": run %ld of %ld\n", rep + 1, o->repeat);
		for (size_t i = 0; pp && i < o->n_prompts; i++) {
			size_t n = (size_t)o->prompts[i];

			if (o->quick && n > 64)
				continue;
			if ((r = time_prompt(ctx, kv, n, toks, m->hp.vocab, logits, &rng, &res->pp_runs[i][rep],
					     &err)) < 0)
				goto eval_fail;
			res->pp_done[i] = true;
		}
		if ((r = time_short_decode(ctx, kv, o->gen, toks, m->hp.vocab, logits, &rng, trace.rec ? &trace : NULL,
					   &res->tg_runs[rep], &err)) < 0)
			goto eval_fail;
		/* right next to the decode it is compared with: the machine is shared */
		res->bw_runs[rep] = bw_best(&bw, &res->bw_probe_runs[rep], &res->bw_plain_runs[rep],
					    &res->bw_streams_won[rep]);

		/*
		 * Long context: random keys and values stand in for a prefill of
		 * long_ctx tokens, which would take minutes on a 7B model; attention
		 * costs the same whatever the values are.
		 */
		if ((r = ms_kv_fill_synthetic(kv, (uint32_t)o->long_ctx, (uint64_t)rep + 1)) < 0) {
			ms_errf(&err, r, "cannot fill the KV cache to %ld positions", o->long_ctx);
			goto eval_fail;
		}
		if ((r = time_decode(ctx, kv, o->gen, m->hp.vocab, logits, &rng,
				     &res->tg_long_runs[rep], &err)) < 0)
			goto eval_fail;
		for (size_t i = 0; i < o->n_streams; i++)
			if ((r = time_streams(m, ctx, o, (size_t)o->streams[i], &rng, &res->streams_runs[i][rep],
					      &err)) < 0)
				goto eval_fail;
	}
	if (o->contend && pp && o->n_prompts) {
		size_t n = (size_t)o->prompts[0];
		pid_t *pids = contend_start(o->contend);

		if (!pids) {
			r = ms_errf(&err, -EAGAIN, "cannot start %ld busy-loop processes", o->contend);
			goto eval_fail;
		}
		for (long rep = 0; rep < o->repeat && r >= 0; rep++)
			if ((r = time_prompt(ctx, kv, n, toks, m->hp.vocab, logits, &rng, &res->contend_pp_runs[rep],
					     &err)) >= 0)
				r = time_short_decode(ctx, kv, o->gen, toks, m->hp.vocab, logits, &rng, NULL,
						      &res->contend_tg_runs[rep], &err);
		contend_stop(pids, o->contend);
		if (r < 0)
			goto eval_fail;
		res->contend_pp_tps = median(res->contend_pp_runs, o->repeat);
		res->contend_tg_tps = median(res->contend_tg_runs, o->repeat);
	}
	res->n_runs = o->repeat;
	/* a busy neighbour slows a run's decode and its bandwidth passes alike */
	for (long i = 0; i < o->repeat; i++)
		res->ratio_runs[i] = res->bw_runs[i] > 0 ?
			(double)res->bytes_per_token * res->tg_runs[i] / 1e9 / res->bw_runs[i] : 0;
	for (size_t i = 0; i < o->n_prompts; i++)
		if (res->pp_done[i])
			res->pp_tps[i] = median(res->pp_runs[i], o->repeat);
	res->tg_tps = median(res->tg_runs, o->repeat);
	res->tg_long_tps = median(res->tg_long_runs, o->repeat);
	for (size_t i = 0; i < o->n_streams; i++)
		res->streams_tps[i] = median(res->streams_runs[i], o->repeat);
	res->measured_gbps = median(res->bw_runs, o->repeat);
	res->achieved_gbps = (double)res->bytes_per_token * res->tg_tps / 1e9;
	res->ratio = res->measured_gbps > 0 ? res->achieved_gbps / res->measured_gbps : 0;
	r = o->trace ? write_trace(o->trace, &trace) : 0;
	goto out;
eval_fail:
	fprintf(stderr, PROG ": %s: %s\n", path, err.msg);
out:
	bw_free(&bw);
	free(trace.rec);
	free(toks);
	free(logits);
	ms_ctx_free(ctx);
	ms_kv_free(kv);
	ms_model_free(m);
	return r;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void json_num(const char *key, double v, bool have)
{
	printf(",\"%s\":", key);
	if (have)
		printf("%.6g", v);
	else
		printf("null");
}

static void json_runs(const char *key, const double *v, long n)
{
	printf(",\"%s\":[", key);
	for (long i = 0; i < n; i++)
		printf("%s%.6g", i ? "," : "", v[i]);
	printf("]");
}

static double pp_of(const struct opts *o, const struct result *res, long n, bool *have)
{
	for (size_t i = 0; i < o->n_prompts; i++) {
		if (o->prompts[i] == n && res->pp_done[i]) {
			*have = true;
			return res->pp_tps[i];
		}
	}
	*have = false;
	return 0;
}

/* The fields of one model's object, without braces, so --attention can nest them. */
static void json_body(const struct opts *o, const struct result *res)
{
	const struct ms_hparams *hp = &res->hp;
	bool have;
	double v;
	char key[64];

	printf("\"model\":");
	json_str(res->path);
	printf(",\"name\":");
	json_str(res->name);
	printf(",\"version\":");
	json_str(PACKAGE_VERSION);
	printf(",\"isa\":");
	json_str(res->isa);
	printf(",\"threads\":%ld,\"page_kind\":", res->threads);
	json_str(res->page_kind);
	printf(",\"page_note\":");
	json_str(res->page_note);
	printf(",\"locked\":%s,\"weight_type\":", res->locked ? "true" : "false");
	json_str(res->weight_type);
	printf(",\"types\":");
	json_str(res->types);
	printf(",\"n_layers\":%u,\"dim\":%u,\"n_heads\":%u,\"n_kv_heads\":%u,\"ffn\":%u,"
	       "\"vocab\":%u,\"window\":%u,\"weight_bytes\":%llu",
	       hp->n_layers, hp->dim, hp->n_heads, hp->n_kv_heads, hp->ffn, hp->vocab,
	       res->window, (unsigned long long)res->weight_bytes);
	json_num("load_s", res->load_s, true);
	v = pp_of(o, res, 64, &have);
	json_num("pp64_tps", v, have);
	v = pp_of(o, res, 512, &have);
	json_num("pp512_tps", v, have);
	for (size_t i = 0; i < o->n_prompts; i++) {
		if (o->prompts[i] == 64 || o->prompts[i] == 512)
			continue;
		snprintf(key, sizeof(key), "pp%ld_tps", o->prompts[i]);
		json_num(key, res->pp_tps[i], res->pp_done[i]);
	}
	printf(",\"tg_tokens\":%ld", o->gen);
	json_num("tg_tps", res->tg_tps, true);
	json_num("tg4096_tps", res->tg_long_tps, true);
	printf(",\"tg_long_cached\":%ld,\"tg_long_keys\":%u,\"tg_long_fill\":\"random\"",
	       o->long_ctx, res->long_keys);
	printf(",\"kv_type\":");
	json_str(res->kv_type);
	printf(",\"kv_bytes_per_token\":%zu,\"kv_bytes_long\":%zu", res->kv_bytes_per_token,
	       res->kv_bytes_long);
	printf(",\"weight_bytes_per_token\":%llu", (unsigned long long)res->bytes_per_token);
	printf(",\"x8_bytes_per_token\":%llu", (unsigned long long)res->x8_bytes);
	json_num("achieved_gbps", res->achieved_gbps, true);
	json_num("measured_gbps", res->measured_gbps, true);
	json_num("bandwidth_ratio", res->ratio, true);
	printf(",\"bw_buffer_bytes\":%zu,\"repeat\":%ld,\"runs\":{", res->bw_bytes, res->n_runs);
	printf("\"tg_tps\":[");
	for (long i = 0; i < res->n_runs; i++)
		printf("%s%.6g", i ? "," : "", res->tg_runs[i]);
	printf("]");
	json_runs("tg4096_tps", res->tg_long_runs, res->n_runs);
	json_runs("measured_gbps", res->bw_runs, res->n_runs);
	json_runs("probe_gbps", res->bw_probe_runs, res->n_runs);
	json_runs("plain_loop_gbps", res->bw_plain_runs, res->n_runs);
	json_runs("bandwidth_ratio", res->ratio_runs, res->n_runs);
	for (size_t i = 0; i < o->n_streams; i++) {
		snprintf(key, sizeof(key), "streams%ld_tps", o->streams[i]);
		json_runs(key, res->streams_runs[i], res->n_runs);
	}
	if (o->contend) {
		json_runs("contend_pp_tps", res->contend_pp_runs, res->n_runs);
		json_runs("contend_tg_tps", res->contend_tg_runs, res->n_runs);
	}
	for (size_t i = 0; i < o->n_prompts; i++) {
		if (!res->pp_done[i])
			continue;
		snprintf(key, sizeof(key), "pp%ld_tps", o->prompts[i]);
		json_runs(key, res->pp_runs[i], res->n_runs);
	}
	printf("}");
}

static void fmt_bytes(char *buf, size_t cap, double b)
{
	if (b >= 1e9)
		snprintf(buf, cap, "%.2f GB", b / 1e9);
	else if (b >= 1e6)
		snprintf(buf, cap, "%.1f MB", b / 1e6);
	else if (b >= 1e3)
		snprintf(buf, cap, "%.1f kB", b / 1e3);
	else
		snprintf(buf, cap, "%.0f B", b);
}

static void print_spread(const double *v, long n)
{
	if (n < 2)
		return;
	printf("   (runs:");
	for (long i = 0; i < n; i++)
		printf(" %.2f", v[i]);
	printf(")");
}

static void print_table(const struct opts *o, const struct result *res)
{
	const struct ms_hparams *hp = &res->hp;
	char b1[32], b2[32];

	printf("model        %s (%s)\n", res->name, res->path);
	printf("shape        %u layers, dim %u, heads %u/%u kv, ffn %u, vocab %u, window ",
	       hp->n_layers, hp->dim, hp->n_heads, hp->n_kv_heads, hp->ffn, hp->vocab);
	if (res->window)
		printf("%u\n", res->window);
	else
		printf("none\n");
	fmt_bytes(b1, sizeof(b1), (double)res->weight_bytes);
	printf("weights      %s: %s\n", b1, res->types);
	printf("pages        %s%s%s%s\n", res->page_kind, res->locked ? " (locked)" : "",
	       res->page_note[0] ? "; " : "", res->page_note);
	printf("kernels      %s, %ld threads; %.0f%% of the matrix bytes interleaved (x8 kernels)\n", res->isa,
	       res->threads, res->bytes_per_token ? 100.0 * (double)res->x8_bytes / (double)res->bytes_per_token : 0.0);
	printf("load         %.2f s\n", res->load_s);
	for (size_t i = 0; i < o->n_prompts; i++) {
		if (!res->pp_done[i]) {
			printf("pp%-10ld skipped (--quick)\n", o->prompts[i]);
			continue;
		}
		printf("pp%-10ld %.2f tok/s", o->prompts[i], res->pp_tps[i]);
		print_spread(res->pp_runs[i], res->n_runs);
		printf("\n");
	}
	printf("tg%-10ld %.2f tok/s after a %d-token prompt", o->gen, res->tg_tps, SHORT_PROMPT);
	print_spread(res->tg_runs, res->n_runs);
	printf("\n");
	printf("tg%ld@%-5ld %.2f tok/s with %ld positions cached", o->gen, o->long_ctx,
	       res->tg_long_tps, o->long_ctx);
	print_spread(res->tg_long_runs, res->n_runs);
	printf("\n");
	printf("             (the cache is filled with random keys and values, not prefilled;\n"
	       "             each query attends to %u keys%s)\n", res->long_keys,
	       res->window && res->window <= o->long_ctx ? ": the model's window is smaller" : "");
	fmt_bytes(b1, sizeof(b1), (double)res->bytes_per_token);
	printf("bytes/token  %s of weights read per decode token (every matrix, output included)\n", b1);
	fmt_bytes(b1, sizeof(b1), (double)res->kv_bytes_per_token);
	fmt_bytes(b2, sizeof(b2), (double)res->kv_bytes_long);
	printf("kv cache     %s, %s per token, %s for %ld positions\n", res->kv_type, b1, b2,
	       o->long_ctx);
	printf("achieved     %.2f GB/s (bytes/token x short-context decode tok/s)\n", res->achieved_gbps);
	printf("measured     %.2f GB/s read bandwidth, best of %d passes over %.0f MiB, %ld threads, "
	       "next to each decode run", res->measured_gbps, o->quick ? 3 : BW_PASSES,
	       (double)res->bw_bytes / (1 << 20), res->threads);
	print_spread(res->bw_runs, res->n_runs);
	printf("\n");
	printf("             (the fastest of the %s kernels' sum over 1, 2 and %d streams a thread, median %.2f,\n"
	       "             %u streams in the last run, and a plain C loop, median %.2f)\n",
	       ms_isa_name(ms_cpu_best_isa()), MS_SUM_STREAMS, median(res->bw_probe_runs, res->n_runs),
	       res->n_runs ? res->bw_streams_won[res->n_runs - 1] : 0, median(res->bw_plain_runs, res->n_runs));
	printf("ratio        %.2f of the measured bandwidth (medians of %ld run%s)", res->ratio,
	       res->n_runs, res->n_runs == 1 ? "" : "s");
	print_spread(res->ratio_runs, res->n_runs);
	printf("\n");
	if (o->contend && res->pp_tps[0] > 0 && res->tg_tps > 0)
		printf("contended    %ld busy loops beside it: pp%ld %.2f tok/s (%.0f%% of idle), tg%ld %.2f tok/s "
		       "(%.0f%% of idle)\n", o->contend, o->prompts[0], res->contend_pp_tps,
		       100 * res->contend_pp_tps / res->pp_tps[0], o->gen, res->contend_tg_tps,
		       100 * res->contend_tg_tps / res->tg_tps);
	for (size_t i = 0; i < o->n_streams; i++) {
		printf("streams %-4ld %.2f tok/s in all, %.2f each", o->streams[i], res->streams_tps[i],
		       res->streams_tps[i] / (double)o->streams[i]);
		if (res->streams_tps[0] > 0 && i > 0)
			printf(", %.2fx the %ld-stream figure", res->streams_tps[i] / res->streams_tps[0], o->streams[0]);
		print_spread(res->streams_runs[i], res->n_runs);
		printf("\n");
	}
}

/* ------------------------------------------------------------------------ */
/* --attention                                                               */
/* ------------------------------------------------------------------------ */

/* mistral-mkmodel: $MKMODEL, else next to this program, else on $PATH. */
static void find_mkmodel(char *out, size_t cap)
{
	const char *env = getenv("MKMODEL");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(out, cap, "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			int w;

			*slash = '\0';
			w = snprintf(out, cap, "%s/mistral-mkmodel", self);
			if (w > 0 && (size_t)w < cap && access(out, X_OK) == 0)
				return;
		}
	}
	snprintf(out, cap, "mistral-mkmodel");
}

static int run_mkmodel(const char *mk, const struct opts *o, long kv_heads, const char *out)
{
	char dim[24], layers[24], heads[24], kvh[24], ffn[24], name[64];
	const char *argv[] = {
		mk, "--out", out, "--type", o->type, "--vocab-from", o->vocab_from, "--dim", dim, "--layers", layers,
		"--heads", heads, "--kv-heads", kvh, "--ffn", ffn, "--context", "32768",
		"--window", "4096", "--name", name, NULL,
	};
	pid_t pid;
	int st, r;

	snprintf(dim, sizeof(dim), "%ld", o->dim);
	snprintf(layers, sizeof(layers), "%ld", o->layers);
	snprintf(heads, sizeof(heads), "%ld", o->heads);
	snprintf(kvh, sizeof(kvh), "%ld", kv_heads);
	snprintf(ffn, sizeof(ffn), "%ld", o->ffn);
	snprintf(name, sizeof(name), "mistral-bench attention kv%ld", kv_heads);
	r = posix_spawnp(&pid, mk, NULL, NULL, (char *const *)argv, environ);
	if (r) {
		fprintf(stderr, PROG ": cannot run %s: %s\n", mk, strerror(r));
		return -r;
	}
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, PROG ": %s failed writing %s\n", mk, out);
		return -EIO;
	}
	return 0;
}

static int attention_mode(const struct opts *o)
{
	static struct result res[V_COUNT];
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], mk[PATH_MAX], path[V_COUNT][PATH_MAX + 32];
	long kvh[V_COUNT] = { o->heads, o->heads / 4, 1 };
	bool first = true;
	int r = 0, status = 1;

	find_mkmodel(mk, sizeof(mk));
	snprintf(dir, sizeof(dir), "%s/mistral-bench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		fprintf(stderr, PROG ": mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	for (int v = 0; v < V_COUNT; v++) {
		if (!o->variants[v])
			continue;
		snprintf(path[v], sizeof(path[v]), "%s/%s.gguf", dir, variant_name[v]);
		if (!o->json)
			fprintf(stderr, PROG ": writing %s (%ld kv heads) with %s\n", path[v], kvh[v], mk);
		if ((r = run_mkmodel(mk, o, kvh[v], path[v])) < 0)
			goto out;
		if (!o->json)
			fprintf(stderr, PROG ": measuring %s\n", variant_name[v]);
		r = bench_model(path[v], o, false, &res[v]);
		if (!o->keep)
			unlink(path[v]);
		if (r < 0)
			goto out;
	}
	if (o->json) {
		printf("{\"mode\":\"attention\",\"tg_long_cached\":%ld,\"variants\":[", o->long_ctx);
		for (int v = 0; v < V_COUNT; v++) {
			if (!o->variants[v])
				continue;
			printf("%s{\"variant\":\"%s\",", first ? "" : ",", variant_name[v]);
			json_body(o, &res[v]);
			printf("}");
			first = false;
		}
		printf("]}\n");
	} else {
		char b1[32], b2[32], b3[32];

		printf("Same-size models differing only in key/value heads: %ld layers, dim %ld, "
		       "%ld heads, ffn %ld, %s, window 4096\n",
		       o->layers, o->dim, o->heads, o->ffn, o->type);
		printf("%ld positions cached for the long figure (random keys and values, not prefilled); "
		       "%s, %ld threads, medians of %ld runs\n\n",
		       o->long_ctx, cli_pick_kernels(o->isa)->name, o->threads, o->repeat);
		printf("%-8s %8s %12s %14s %14s %10s %12s %12s %8s\n", "variant", "kv heads",
		       "KV/token", "KV/sequence", "weights/token", "tg tok/s", "tg@ctx tok/s",
		       "tg@ctx GB/s", "bw GB/s");
		for (int v = 0; v < V_COUNT; v++) {
			const struct result *x = &res[v];
			/* long-context bytes per token: every weight plus every cached key and value */
			double long_bytes = (double)x->bytes_per_token +
					    (double)x->kv_bytes_per_token * (double)(x->long_keys - 1);

			if (!o->variants[v])
				continue;
			fmt_bytes(b1, sizeof(b1), (double)x->kv_bytes_per_token);
			fmt_bytes(b2, sizeof(b2), (double)x->kv_bytes_long);
			fmt_bytes(b3, sizeof(b3), (double)x->bytes_per_token);
			printf("%-8s %8u %12s %14s %14s %10.2f %12.2f %12.2f %8.2f\n", variant_name[v],
			       x->hp.n_kv_heads, b1, b2, b3, x->tg_tps, x->tg_long_tps,
			       long_bytes * x->tg_long_tps / 1e9, x->measured_gbps);
		}
		printf("\nKV/sequence: the cache of one sequence holding %ld positions. "
		       "tg@ctx GB/s: (weights + cached keys and values) x tok/s.\n", o->long_ctx);
		if (o->keep)
			printf("models kept in %s\n", dir);
	}
	status = 0;
out:
	if (!o->keep)
		rmdir(dir);
	return status;
}

int main(int argc, char **argv)
{
	static struct result res;
	struct opts o;

	mistral_omp_wait_setup(argv);

	cli_prog = PROG;
	parse_args(argc, argv, &o);
	if (o.attention)
		return attention_mode(&o);
	if (o.chat) {
		const struct bench_chat_opts co = {
			.model = o.model, .isa = o.isa, .threads = o.threads, .turns = o.chat,
			.system = o.chat_system, .user = o.chat_user, .answer = o.chat_answer,
			.retok = o.chat_retok, .batch = o.batch, .repeat = o.repeat, .kv_type = o.kv_type, .pages = o.pages,
			.mlock = o.mlock, .plain_rows = o.plain_rows,
		};

		return bench_chat(&co) < 0 ? 1 : 0;
	}
	if (bench_model(o.model, &o, true, &res) < 0)
		return 1;
	if (o.json) {
		printf("{");
		json_body(&o, &res);
		printf("}\n");
	} else {
		print_table(&o, &res);
	}
	return 0;
}
