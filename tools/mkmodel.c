/* mistral-mkmodel: writes a llama-architecture GGUF with deterministic random weights, for tests and benchmarks. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "cli.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "quant.h"

#define PROG "mistral-mkmodel"

/* Output bytes generated per parallel step: enough rows to keep every thread busy. */
#define CHUNK_BYTES (16u << 20)

enum { SET_DIM = 1, SET_LAYERS = 2, SET_HEADS = 4, SET_KV_HEADS = 8, SET_FFN = 16,
       SET_CONTEXT = 32, SET_ROPE = 64, SET_EPS = 128 };

/*
 * A --type: one storage type for every matrix, or one of llama.cpp's K-quant
 * mixes, which put more bits where quantization error costs most: the
 * output projection always, attn_v and ffn_down on half the layers.
 */
struct ftype {
	const char *name;
	uint32_t base;          /* most matrices */
	uint32_t more;          /* output.weight; attn_v and ffn_down where use_more_bits */
	uint32_t file_type;     /* llama.cpp's llama_ftype, for general.file_type */
};

static const struct ftype ftypes[] = {
	{ "F32",    GGML_TYPE_F32,  GGML_TYPE_F32,   0 },
	{ "F16",    GGML_TYPE_F16,  GGML_TYPE_F16,   1 },
	{ "BF16",   GGML_TYPE_BF16, GGML_TYPE_BF16, 32 },
	{ "Q8_0",   GGML_TYPE_Q8_0, GGML_TYPE_Q8_0,  7 },
	{ "Q4_0",   GGML_TYPE_Q4_0, GGML_TYPE_Q4_0,  2 },
	/* pure K types carry the ftype llama-quantize --pure gives them */
	{ "Q4_K",   GGML_TYPE_Q4_K, GGML_TYPE_Q4_K, 14 },	/* Q4_K_S */
	{ "Q5_K",   GGML_TYPE_Q5_K, GGML_TYPE_Q5_K, 16 },	/* Q5_K_S */
	{ "Q6_K",   GGML_TYPE_Q6_K, GGML_TYPE_Q6_K, 18 },
	{ "Q4_K_M", GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, 15 },
	{ "Q5_K_M", GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, 17 },
};

#define TYPE_LIST "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q4_K_M or Q5_K_M"

struct opts {
	const char *out;
	const char *vocab;
	const char *name;
	const struct ftype *type;
	uint32_t dim, layers, heads, kv_heads, ffn, context, window;
	float rope_base, eps;
	uint64_t seed;
	bool no_output, verbose;
	unsigned set;           /* SET_* bits of options given explicitly */
};

/* How a tensor's values are drawn. */
enum init { INIT_EMBD, INIT_MATRIX, INIT_NORM };

struct plan {
	char name[GGUF_MAX_NAME + 1];
	uint32_t n_dims;
	uint64_t ne[2];
	uint32_t type;
	enum init init;
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " --out FILE --type TYPE --vocab-from GGUF [options]\n"
"Write a llama-architecture GGUF model with deterministic random weights.\n"
"\n"
"Required:\n"
"  -o, --out FILE         output file (written as FILE.tmp, then renamed)\n"
"  -t, --type TYPE        matrix type: F32, F16, BF16, Q8_0, Q4_0, Q4_K,\n"
"                         Q5_K, Q6_K, or a llama.cpp mix: Q4_K_M, Q5_K_M\n"
"                         (Q4_K/Q5_K, with Q6_K for output.weight and for\n"
"                         attn_v and ffn_down on half the layers);\n"
"                         norm weights are always F32; K types need dim\n"
"                         and ffn to be multiples of 256\n"
"      --vocab-from GGUF  copy every tokenizer.* key from this GGUF;\n"
"                         the vocabulary size is its token count\n"
"\n"
"Shape (defaults: a tiny model):\n"
"      --dim N            embedding length (64)\n"
"      --layers N         transformer blocks (2)\n"
"      --heads N          attention heads, must divide dim (4)\n"
"      --kv-heads N       key/value heads, must divide heads (2)\n"
"      --ffn N            feed-forward hidden size (128)\n"
"      --context N        llama.context_length (256)\n"
"      --window N         llama.attention.sliding_window; 0 writes no key (0)\n"
"      --rope-base F      llama.rope.freq_base (10000)\n"
"      --eps F            RMSNorm epsilon (1e-5)\n"
"      --preset NAME      mistral-7b: dim 4096, layers 32, heads 32,\n"
"                         kv-heads 8, ffn 14336, context 32768, rope-base 1e6;\n"
"                         explicit shape options override it\n"
"\n"
"Other:\n"
"      --seed N           weights depend only on the seed and tensor name (1)\n"
"      --name STR         general.name (\"mkmodel random\")\n"
"      --no-output        omit output.weight (engines reuse token_embd)\n"
"  -v, --verbose          report progress on standard error\n"
"  -h, --help             show this help\n"
"      --version          show the version\n"
"\n"
"Exit status: 0 written, 1 failure (nothing left behind), 2 bad usage.\n");
}

static const struct ftype *arg_type(const char *s)
{
	for (size_t i = 0; i < sizeof(ftypes) / sizeof(ftypes[0]); i++)
		if (!strcasecmp(s, ftypes[i].name))
			return &ftypes[i];
	cli_die_usage("bad --type '%s' (" TYPE_LIST ")", s);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	enum { O_VOCAB = 256, O_DIM, O_LAYERS, O_HEADS, O_KV_HEADS, O_FFN, O_CONTEXT, O_WINDOW,
	       O_ROPE, O_EPS, O_SEED, O_NAME, O_PRESET, O_NO_OUTPUT, O_VERSION };
	static const struct option lopts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "type", required_argument, NULL, 't' },
		{ "vocab-from", required_argument, NULL, O_VOCAB },
		{ "dim", required_argument, NULL, O_DIM },
		{ "layers", required_argument, NULL, O_LAYERS },
		{ "heads", required_argument, NULL, O_HEADS },
		{ "kv-heads", required_argument, NULL, O_KV_HEADS },
		{ "ffn", required_argument, NULL, O_FFN },
		{ "context", required_argument, NULL, O_CONTEXT },
		{ "window", required_argument, NULL, O_WINDOW },
		{ "rope-base", required_argument, NULL, O_ROPE },
		{ "eps", required_argument, NULL, O_EPS },
		{ "seed", required_argument, NULL, O_SEED },
		{ "name", required_argument, NULL, O_NAME },
		{ "preset", required_argument, NULL, O_PRESET },
		{ "no-output", no_argument, NULL, O_NO_OUTPUT },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	bool preset_7b = false;
	int c;

	*o = (struct opts){
		.name = "mkmodel random",
		.dim = 64, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 128,
		.context = 256, .window = 0, .rope_base = 10000.0f, .eps = 1e-5f,
		.seed = 1,
	};
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:t:vh", lopts, NULL)) != -1) {
		switch (c) {
		case 'o': o->out = optarg; break;
		case 't': o->type = arg_type(optarg); break;
		case O_VOCAB: o->vocab = optarg; break;
		case O_DIM:
			o->dim = cli_u32("--dim", optarg, 1, 1u << 20);
			o->set |= SET_DIM;
			break;
		case O_LAYERS:
			o->layers = cli_u32("--layers", optarg, 1, 4096);
			o->set |= SET_LAYERS;
			break;
		case O_HEADS:
			o->heads = cli_u32("--heads", optarg, 1, 1u << 20);
			o->set |= SET_HEADS;
			break;
		case O_KV_HEADS:
			o->kv_heads = cli_u32("--kv-heads", optarg, 1, 1u << 20);
			o->set |= SET_KV_HEADS;
			break;
		case O_FFN:
			o->ffn = cli_u32("--ffn", optarg, 1, 1u << 22);
			o->set |= SET_FFN;
			break;
		case O_CONTEXT:
			o->context = cli_u32("--context", optarg, 1, UINT32_MAX);
			o->set |= SET_CONTEXT;
			break;
		case O_WINDOW:
			o->window = cli_u32("--window", optarg, 0, UINT32_MAX);
			break;
		case O_ROPE:
			o->rope_base = cli_pos_float("--rope-base", optarg);
			o->set |= SET_ROPE;
			break;
		case O_EPS:
			o->eps = cli_pos_float("--eps", optarg);
			o->set |= SET_EPS;
			break;
		case O_SEED: o->seed = cli_u64("--seed", optarg); break;
		case O_NAME: o->name = optarg; break;
		case O_PRESET:
			if (strcmp(optarg, "mistral-7b"))
				cli_die_usage("unknown --preset '%s' (mistral-7b)", optarg);
			preset_7b = true;
			break;
		case O_NO_OUTPUT: o->no_output = true; break;
		case 'v': o->verbose = true; break;
		case 'h': usage(stdout); exit(0);
		case O_VERSION: printf(PROG " (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION); exit(0);
		case ':': cli_die_usage("option '%s' needs an argument", argv[optind - 1]);
		default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		cli_die_usage("unexpected argument '%s'", argv[optind]);
	/* explicit shape options win wherever they stand relative to --preset */
	if (preset_7b) {
		if (!(o->set & SET_DIM)) o->dim = 4096;
		if (!(o->set & SET_LAYERS)) o->layers = 32;
		if (!(o->set & SET_HEADS)) o->heads = 32;
		if (!(o->set & SET_KV_HEADS)) o->kv_heads = 8;
		if (!(o->set & SET_FFN)) o->ffn = 14336;
		if (!(o->set & SET_CONTEXT)) o->context = 32768;
		if (!(o->set & SET_ROPE)) o->rope_base = 1e6f;
		if (!(o->set & SET_EPS)) o->eps = 1e-5f;
	}
	if (!o->out)
		cli_die_usage("no output file given (--out FILE)");
	if (!o->type)
		cli_die_usage("no tensor type given (--type " TYPE_LIST ")");
	if (!o->vocab)
		cli_die_usage("no vocabulary given (--vocab-from GGUF)");
	if (o->heads > o->dim || o->dim % o->heads)
		cli_die_usage("--heads %" PRIu32 " does not divide --dim %" PRIu32, o->heads, o->dim);
	if (o->kv_heads > o->heads || o->heads % o->kv_heads)
		cli_die_usage("--kv-heads %" PRIu32 " does not divide --heads %" PRIu32,
			      o->kv_heads, o->heads);
	if ((o->dim / o->heads) % 2)
		cli_die_usage("head size --dim/--heads = %" PRIu32 " is odd (RoPE rotates pairs)",
			      o->dim / o->heads);
	/* every matrix row is dim or ffn long; a mix's types share one block size */
	if (ms_ggml_type_get(o->type->base)->blck > 1) {
		uint32_t b = ms_ggml_type_get(o->type->base)->blck;

		if (o->dim % b)
			cli_die_usage("--dim %" PRIu32 " is not a multiple of the %s block size %" PRIu32,
				      o->dim, o->type->name, b);
		if (o->ffn % b)
			cli_die_usage("--ffn %" PRIu32 " is not a multiple of the %s block size %" PRIu32,
				      o->ffn, o->type->name, b);
	}
}

/* ------------------------------------------------------------------------ */
/* Weights                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Each row has its own generator, seeded from (seed, tensor name, row), so
 * rows can be filled in parallel and any row can be recomputed by a test
 * without generating the ones before it. xoshiro256** costs about a
 * nanosecond per value, well under the write cost of a value.
 */
struct rng {
	uint64_t s[4];
};

static inline uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t xoshiro_next(struct rng *r)
{
	uint64_t *s = r->s;
	const uint64_t result = rotl(s[1] * 5, 7) * 9;
	const uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

static uint64_t tensor_seed(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a of the name */
	uint64_t x;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	x = seed ^ h;
	return splitmix64(&x);
}

static void rng_row(struct rng *r, uint64_t tseed, uint64_t row)
{
	uint64_t x = tseed + row * 0xd1342543de82ef95ull;

	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

/*
 * dst[i] = center + scale * u, u uniform in [-1, 1) on a 2^-23 grid. Each
 * 64-bit draw gives two values (bits 40..63 and 16..39), which halves the
 * generator's share of the run time.
 */
static void fill_row(float *dst, size_t n, uint64_t tseed, uint64_t row,
		     float center, float scale)
{
	struct rng r;
	const float k = scale * 0x1p-23f;
	size_t i;

	rng_row(&r, tseed, row);
	for (i = 0; i + 2 <= n; i += 2) {
		const uint64_t x = xoshiro_next(&r);
		const int32_t u0 = (int32_t)(x >> 40) - (1 << 23);
		const int32_t u1 = (int32_t)((x >> 16) & 0xffffff) - (1 << 23);

		dst[i] = center + (float)u0 * k;
		dst[i + 1] = center + (float)u1 * k;
	}
	if (i < n)
		dst[i] = center + (float)((int32_t)(xoshiro_next(&r) >> 40) - (1 << 23)) * k;
}

static void init_params(const struct plan *t, float *center, float *scale)
{
	switch (t->init) {
	case INIT_EMBD:
		*center = 0.0f;
		*scale = 1.0f;
		break;
	case INIT_NORM:
		*center = 1.0f;
		*scale = 0.1f;
		break;
	case INIT_MATRIX:
	default:
		/* variance a^2/3 = 1/fan_in keeps activations at unit scale */
		*center = 0.0f;
		*scale = sqrtf(3.0f / (float)t->ne[0]);
		break;
	}
}

/* ------------------------------------------------------------------------ */
/* Model                                                                    */
/* ------------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3)))
static struct plan *plan_add(struct plan *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->name, sizeof(p->name), fmt, ap);
	va_end(ap);
	return p;
}

static void plan_set(struct plan *p, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
		     uint32_t type, enum init init)
{
	p->n_dims = n_dims;
	p->ne[0] = ne0;
	p->ne[1] = ne1;
	p->type = type;
	p->init = init;
}

/*
 * llama.cpp's use_more_bits (llama_tensor_get_type): the first and last
 * eighth of the layers and every third one between get the larger type.
 */
static bool use_more_bits(uint32_t i, uint32_t n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The tensors in file order (llama.cpp's order); returns how many. */
static size_t build_plan(const struct opts *o, uint64_t vocab, struct plan *p)
{
	const uint64_t kv_dim = (uint64_t)o->dim / o->heads * o->kv_heads;
	const uint32_t ty = o->type->base, f32 = GGML_TYPE_F32;
	size_t n = 0;

	/*
	 * without output.weight, token_embd is also the output projection:
	 * llama.cpp then gives it the output's type
	 */
	plan_set(plan_add(&p[n++], "token_embd.weight"), 2, o->dim, vocab,
		 o->no_output ? o->type->more : ty, INIT_EMBD);
	for (uint32_t l = 0; l < o->layers; l++) {
		const uint32_t tm = use_more_bits(l, o->layers) ? o->type->more : ty;

		plan_set(plan_add(&p[n++], "blk.%u.attn_norm.weight", l),
			 1, o->dim, 1, f32, INIT_NORM);
		plan_set(plan_add(&p[n++], "blk.%u.attn_q.weight", l),
			 2, o->dim, o->dim, ty, INIT_MATRIX);
		plan_set(plan_add(&p[n++], "blk.%u.attn_k.weight", l),
			 2, o->dim, kv_dim, ty, INIT_MATRIX);
		plan_set(plan_add(&p[n++], "blk.%u.attn_v.weight", l),
			 2, o->dim, kv_dim, tm, INIT_MATRIX);
		plan_set(plan_add(&p[n++], "blk.%u.attn_output.weight", l),
			 2, o->dim, o->dim, ty, INIT_MATRIX);
		plan_set(plan_add(&p[n++], "blk.%u.ffn_norm.weight", l),
			 1, o->dim, 1, f32, INIT_NORM);
		plan_set(plan_add(&p[n++], "blk.%u.ffn_gate.weight", l),
			 2, o->dim, o->ffn, ty, INIT_MATRIX);
		plan_set(plan_add(&p[n++], "blk.%u.ffn_up.weight", l),
			 2, o->dim, o->ffn, ty, INIT_MATRIX);
		plan_set(plan_add(&p[n++], "blk.%u.ffn_down.weight", l),
			 2, o->ffn, o->dim, tm, INIT_MATRIX);
	}
	plan_set(plan_add(&p[n++], "output_norm.weight"), 1, o->dim, 1, f32, INIT_NORM);
	if (!o->no_output)
		plan_set(plan_add(&p[n++], "output.weight"), 2, o->dim, vocab, o->type->more,
			 INIT_MATRIX);
	return n;
}

/* Metadata: general.*, llama.*, then the vocabulary's tokenizer.* verbatim. */
static int add_metadata(struct gguf_writer *w, const struct opts *o,
			const struct gguf *voc, uint64_t vocab)
{
	int rc;

	if ((rc = gguf_writer_add_str(w, "general.architecture", "llama")) ||
	    (rc = gguf_writer_add_str(w, "general.name", o->name)) ||
	    (rc = gguf_writer_add_u32(w, "general.file_type", o->type->file_type)) ||
	    (ms_ggml_type_get(o->type->base)->blck > 1 &&
	     (rc = gguf_writer_add_u32(w, "general.quantization_version", 2))) ||
	    (rc = gguf_writer_add_u32(w, "llama.context_length", o->context)) ||
	    (rc = gguf_writer_add_u32(w, "llama.embedding_length", o->dim)) ||
	    (rc = gguf_writer_add_u32(w, "llama.block_count", o->layers)) ||
	    (rc = gguf_writer_add_u32(w, "llama.feed_forward_length", o->ffn)) ||
	    (rc = gguf_writer_add_u32(w, "llama.attention.head_count", o->heads)) ||
	    (rc = gguf_writer_add_u32(w, "llama.attention.head_count_kv", o->kv_heads)) ||
	    (rc = gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", o->eps)) ||
	    (rc = gguf_writer_add_f32(w, "llama.rope.freq_base", o->rope_base)) ||
	    (rc = gguf_writer_add_u32(w, "llama.rope.dimension_count", o->dim / o->heads)) ||
	    (rc = gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)vocab)) ||
	    (o->window &&
	     (rc = gguf_writer_add_u32(w, "llama.attention.sliding_window", o->window))))
		return rc;
	for (uint64_t i = 0; i < voc->n_kv; i++) {
		const struct gguf_kv *kv = &voc->kv[i];

		if (kv->key.n > 10 && !memcmp(kv->key.p, "tokenizer.", 10)) {
			rc = gguf_writer_add_value(w, kv->key.p, (size_t)kv->key.n, &kv->val);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Pipeline: the OpenMP team fills one chunk while a thread writes the other  */
/* ------------------------------------------------------------------------ */

/*
 * Two chunk buffers. Generating a 7B model costs about as much CPU as
 * copying it into the page cache, so overlapping the two nearly halves the
 * run time; memory stays at two chunks plus one float row per thread.
 */
struct pipe {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct gguf_writer *w;
	uint8_t *buf[2];
	size_t len[2];
	bool full[2];           /* filled, not yet written */
	bool done;              /* no more chunks will come */
	int rc;                 /* first write error */
};

static void *writer_main(void *arg)
{
	struct pipe *p = arg;
	int rc;

	for (int k = 0;; k ^= 1) {
		pthread_mutex_lock(&p->mu);
		while (!p->full[k] && !p->done)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!p->full[k]) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		pthread_mutex_unlock(&p->mu);
		rc = gguf_writer_write(p->w, p->buf[k], p->len[k]);
		pthread_mutex_lock(&p->mu);
		p->full[k] = false;
		if (rc && !p->rc)
			p->rc = rc;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		if (rc)
			return NULL;
	}
}

/* Waits until buffer k may be refilled; the writer's error, if any. */
static int pipe_acquire(struct pipe *p, int k)
{
	int rc;

	pthread_mutex_lock(&p->mu);
	while (p->full[k] && !p->rc)
		pthread_cond_wait(&p->cv, &p->mu);
	rc = p->rc;
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static void pipe_post(struct pipe *p, int k, size_t len)
{
	pthread_mutex_lock(&p->mu);
	p->len[k] = len;
	p->full[k] = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Generates one tensor a chunk of rows at a time and hands the chunks on. */
static int write_tensor(struct pipe *p, int *k, const struct plan *t, uint64_t seed,
			float *scratch, size_t scratch_stride)
{
	const size_t ne0 = (size_t)t->ne[0];
	const uint64_t rows = t->ne[1];
	const uint64_t tseed = tensor_seed(seed, t->name);
	uint64_t rb64;
	size_t rb, per_chunk;
	float center, scale;
	int rc;

	init_params(t, &center, &scale);
	rc = ms_ggml_row_bytes(t->type, ne0, &rb64);
	if (rc)
		return rc;
	rb = (size_t)rb64;
	per_chunk = rb >= CHUNK_BYTES ? 1 : CHUNK_BYTES / rb;
	for (uint64_t r0 = 0; r0 < rows; r0 += per_chunk) {
		const int64_t n = (int64_t)(rows - r0 < per_chunk ? rows - r0 : per_chunk);
		uint8_t *chunk = p->buf[*k];

		rc = pipe_acquire(p, *k);
		if (rc)
			return rc;
#pragma omp parallel for schedule(static)
		for (int64_t i = 0; i < n; i++) {
			uint8_t *dst = chunk + (size_t)i * rb;

			if (t->type == GGML_TYPE_F32) {
				/* chunk is malloc()ed and rb a multiple of 4: aligned */
				fill_row((float *)(void *)dst, ne0, tseed, r0 + (uint64_t)i,
					 center, scale);
			} else {
				float *f = scratch + (size_t)omp_get_thread_num() * scratch_stride;

				fill_row(f, ne0, tseed, r0 + (uint64_t)i, center, scale);
				ms_quantize_row(t->type, f, dst, ne0);
			}
		}
		pipe_post(p, *k, (size_t)n * rb);
		*k ^= 1;
	}
	return 0;
}

static int write_model(const struct opts *o, const char *tmp, int fd)
{
	struct gguf *voc = NULL;
	struct gguf_writer *w = NULL;
	struct plan *plan = NULL;
	struct pipe pipe = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	pthread_t writer;
	bool writer_started = false;
	float *scratch = NULL;
	size_t chunk_bytes;
	int k = 0;
	struct gguf_arr tokens;
	ms_err err = { 0 };
	size_t n_tensors, max_row = 0, max_ne0 = 0;
	uint64_t total, done = 0;
	double t0 = cli_now();
	int rc, nthreads = omp_get_max_threads();

	rc = ms_gguf_open(o->vocab, &voc, &err);
	if (rc) {
		fprintf(stderr, PROG ": %s: %s\n", o->vocab, err.msg[0] ? err.msg : strerror(-rc));
		return rc;
	}
	rc = ms_gguf_get_arr(voc, "tokenizer.ggml.tokens", GGUF_STRING, &tokens, &err);
	if (rc || tokens.n == 0 || tokens.n > UINT32_MAX) {
		fprintf(stderr, PROG ": %s: no usable tokenizer.ggml.tokens array%s%s\n", o->vocab,
			err.msg[0] ? ": " : "", err.msg);
		rc = rc ? rc : -EINVAL;
		goto out;
	}

	rc = -ENOMEM;
	plan = calloc((size_t)o->layers * 9 + 3, sizeof(*plan));
	w = gguf_writer_new(0);
	if (!plan || !w) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	n_tensors = build_plan(o, tokens.n, plan);
	rc = add_metadata(w, o, voc, tokens.n);
	for (size_t i = 0; i < n_tensors && !rc; i++)
		rc = gguf_writer_add_tensor(w, plan[i].name, plan[i].n_dims, plan[i].ne,
					    plan[i].type);
	if (rc) {
		fprintf(stderr, PROG ": %s\n", gguf_writer_errmsg(w));
		goto out;
	}
	ms_gguf_close(voc);	/* the writer holds its own copy of the metadata */
	voc = NULL;

	for (size_t i = 0; i < n_tensors; i++) {
		uint64_t rb = gguf_writer_tensor_bytes(w, i) / plan[i].ne[1];

		if (rb > max_row)
			max_row = (size_t)rb;
		if (plan[i].ne[0] > max_ne0)
			max_ne0 = (size_t)plan[i].ne[0];
	}
	total = gguf_writer_file_size(w);
	/* progress counts the header (the tokenizer can be most of a tiny file) as done */
	done = total;
	for (size_t i = 0; i < n_tensors; i++)
		done -= gguf_writer_tensor_bytes(w, i);
	rc = -ENOMEM;
	chunk_bytes = max_row > CHUNK_BYTES ? max_row : CHUNK_BYTES;
	pipe.w = w;
	pipe.buf[0] = malloc(chunk_bytes);
	pipe.buf[1] = malloc(chunk_bytes);
	scratch = malloc((size_t)nthreads * max_ne0 * sizeof(float));
	if (!pipe.buf[0] || !pipe.buf[1] || !scratch) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	if (o->verbose)
		fprintf(stderr, PROG ": %s: %zu tensors, %" PRIu64 " tokens, %.1f MiB, %d threads\n",
			o->out, n_tensors, (uint64_t)tokens.n, (double)total / 1048576.0, nthreads);

	rc = gguf_writer_begin(w, fd);
	if (!rc) {
		rc = -pthread_create(&writer, NULL, writer_main, &pipe);
		writer_started = !rc;
		if (rc)
			fprintf(stderr, PROG ": cannot start the writer thread: %s\n", strerror(-rc));
	}
	for (size_t i = 0; i < n_tensors && !rc; i++) {
		rc = write_tensor(&pipe, &k, &plan[i], o->seed, scratch, max_ne0);
		done += gguf_writer_tensor_bytes(w, i);
		/* one line per layer: a 7B model gives 32, a tiny one 2 */
		if (o->verbose && !rc && (i + 1 == n_tensors ||
					  strstr(plan[i].name, "ffn_down"))) {
			double dt = cli_now() - t0;

			fprintf(stderr, PROG ": %5.1f%%  %8.1f MiB  %6.1f s  %6.1f MiB/s  %s\n",
				100.0 * (double)done / (double)total, (double)done / 1048576.0,
				dt, (double)done / 1048576.0 / (dt > 0 ? dt : 1), plan[i].name);
		}
	}
	if (writer_started) {
		pthread_mutex_lock(&pipe.mu);
		pipe.done = true;
		pthread_cond_broadcast(&pipe.cv);
		pthread_mutex_unlock(&pipe.mu);
		pthread_join(writer, NULL);
		if (!rc)
			rc = pipe.rc;
	}
	if (!rc)
		rc = gguf_writer_end(w);
	if (rc) {
		fprintf(stderr, PROG ": %s: %s\n", tmp, gguf_writer_errmsg(w));
		goto out;
	}
	if (fsync(fd)) {
		rc = -errno;
		fprintf(stderr, PROG ": %s: fsync: %s\n", tmp, strerror(errno));
		goto out;
	}
	if (o->verbose)
		fprintf(stderr, PROG ": wrote %.1f MiB in %.1f s\n",
			(double)total / 1048576.0, cli_now() - t0);
out:
	free(scratch);
	free(pipe.buf[0]);
	free(pipe.buf[1]);
	free(plan);
	gguf_writer_free(w);
	ms_gguf_close(voc);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;
	char *tmp;
	int fd, rc;

	cli_prog = PROG;
	parse_args(argc, argv, &o);
	if (asprintf(&tmp, "%s.tmp", o.out) < 0) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	/* write beside the target and rename, so readers never see half a model */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, PROG ": %s: %s\n", tmp, strerror(errno));
		free(tmp);
		return 1;
	}
	rc = write_model(&o, tmp, fd);
	if (close(fd) && !rc) {
		fprintf(stderr, PROG ": %s: close: %s\n", tmp, strerror(errno));
		rc = -EIO;
	}
	if (!rc && rename(tmp, o.out)) {
		rc = -errno;
		fprintf(stderr, PROG ": rename %s to %s: %s\n", tmp, o.out, strerror(-rc));
	}
	if (rc)
		unlink(tmp);
	free(tmp);
	return rc ? 1 : 0;
}
