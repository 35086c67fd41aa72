/* The transformer forward pass: rolling KV cache, sliding-window GQA attention, batched prefill. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "forward.h"
#include "quant.h"
#include "trace.h"

/* One sequence's share of a round: b rows starting at row0, positions p0... */
struct segment {
	struct ms_kv *kv;
	uint32_t p0;
	size_t row0, b;
	size_t done;             /* tokens of the item evaluated before this round */
	float *logits;
	bool all_logits;
	bool last;               /* the item's final token is in this round */
};

#define OUT_ROWS 32   /* rows per output-projection group: 32 x vocab floats of scratch */
#define ATT_BLOCK 64  /* keys scored at once per group: the scores stay in L1 */
/* How a tile's keys are split into pieces (tile_splits). */
#define ATT_MAX_SPLIT 16
#define ATT_PIECE 256
#define ATT_TASKS 16
/*
 * Consecutive rows of one sequence per attention task (a tile): each block
 * of keys and values is read from memory once for ATT_TILE x group query
 * heads, then from L1, instead of once per row. A tile of several rows
 * scores ATT_TILE_BLOCK keys at a time. At the 7B shape (66 rows over
 * 3,127 cached positions, two layers, one thread, CPU time, loaded
 * machine): 8 rows x 64 keys 57-59 ms, x 128 50-52, x 256 49-52; 6 and
 * 16 rows x 128 50-53; 4 rows x 64 61 or more (BENCHMARKS.md, 0fc8f78).
 */
#define ATT_TILE 8
#define ATT_TILE_BLOCK 128

/*
 * Rows [r0, r0 + nr) of one segment, attended to together, over nk keys
 * split into `splits` pieces; its softmax states start at partial + state
 * and its tasks at task0 in the pass that runs it.
 */
struct att_tile {
	size_t r0, nr, nk, splits;
	size_t state, task0;
};

struct ms_ctx {
	const struct ms_model *m;
	const struct ms_kernels *k;
	uint32_t max_batch;      /* tokens per chunk at most */
	uint32_t n_threads;      /* OpenMP team size for every parallel region */
	/* activations for one chunk of B <= max_batch tokens, row-major */
	float *x;                /* [B][dim] residual stream */
	float *xn;               /* [B][dim] normalized input of a sub-layer */
	float *q;                /* [B][dim] queries (rotated) */
	float *kc;               /* [B][kv_dim] the chunk's keys (rotated) */
	float *vc;               /* [B][kv_dim] the chunk's values */
	void *kct;               /* [B][kv_dim] the chunk's keys in each sequence's cache type */
	void *vct;               /* [B][kv_dim] the chunk's values likewise */
	float *att;              /* [B][dim] attention output, heads concatenated */
	float *tmp;              /* [B][dim] projection output before the residual add */
	float *hg;               /* [B][ffn] gate, then silu(gate) * up */
	float *hu;               /* [B][ffn] up */
	float *rope_cos;         /* [B][rope_dims/2] */
	float *rope_sin;         /* [B][rope_dims/2] */
	double *inv_freq;        /* [rope_dims/2] base^(-2i/rope_dims) */
	const struct ms_attn_kernels *ak;
	float *att_scratch;      /* [n_threads][att_stride]: a tile's queries and one block's scores */
	size_t att_stride;
	float *partial;          /* [att_units][group][head_dim + 2]: per-piece softmax states */
	size_t att_units;        /* (row, KV head, piece) states one attention pass holds */
	uint32_t *task_tile;     /* [att_units] tile of each task of a pass */
	struct att_tile *tiles;  /* [max_batch] */
	void *mm_scratch;        /* activation conversion for ms_matmul */
	/* the round being evaluated */
	struct segment *segs;    /* [max_batch] */
	size_t n_segs;
	uint32_t *row_seg;       /* [max_batch] segment of each row */
	uint32_t *row_pos;       /* [max_batch] absolute position of each row */
	int32_t *row_tok;        /* [max_batch] token of each row */
	size_t *item_done;       /* [max_batch] per batch item progress */
	float *out;              /* [OUT_ROWS][vocab] output projection */
	float **out_dst;         /* [OUT_ROWS] where each output row goes */
	int (*progress)(void *ud);
	void *progress_ud;
};

/* ------------------------------------------------------------------------ */
/* KV cache                                                                  */
/* ------------------------------------------------------------------------ */

static uint32_t effective_window(uint32_t n_ctx, uint32_t window)
{
	/* A window that covers the whole context never masks anything. */
	return (window && window < n_ctx) ? window : 0;
}

static size_t kv_elt(uint32_t type)
{
	return type == GGML_TYPE_F16 ? 2 : 4;
}

static uint32_t ring_slots(uint32_t n_ctx, uint32_t window, uint32_t margin)
{
	uint32_t w = effective_window(n_ctx, window);

	if (!w)
		return n_ctx;
	return margin < n_ctx - w ? w + margin : n_ctx;
}

size_t ms_kv_bytes(const struct ms_model *m, uint32_t n_ctx, uint32_t window, uint32_t margin, uint32_t type)
{
	return 2 * (size_t)m->hp.n_layers * ring_slots(n_ctx, window, margin) * m->hp.kv_dim * kv_elt(type);
}

/* Bytes kv_alloc asks its arena for: the two arrays and their alignment. */
static size_t kv_request(const struct ms_kv *proto)
{
	return 2 * (size_t)proto->n_layers * proto->n_slots * proto->kv_dim * proto->elt + 128;
}

/* The struct and its two arrays, n_slots deep, in pages of the given policy. */
static int kv_alloc(struct ms_kv *proto, enum ms_page_policy policy, struct ms_kv **out, ms_err *err)
{
	struct ms_kv *kv = malloc(sizeof(*kv));
	size_t n = (size_t)proto->n_layers * proto->n_slots * proto->kv_dim;
	struct ms_arena_opts ao = { .policy = policy };
	int r;

	if (!kv)
		return ms_errf(err, -ENOMEM, "out of memory for a KV cache");
	*kv = *proto;
	kv->k = kv->v = NULL;
	kv->mem = NULL;
	if ((r = ms_arena_create(kv_request(kv), &ao, &kv->mem, err)) < 0) {
		free(kv);
		return r;
	}
	kv->k = ms_arena_alloc(kv->mem, n * kv->elt, 64);
	kv->v = ms_arena_alloc(kv->mem, n * kv->elt, 64);
	if (!kv->k || !kv->v) {
		ms_kv_free(kv);
		return ms_errf(err, -ENOMEM, "out of memory for a KV cache of %zu bytes", 2 * n * proto->elt);
	}
	*out = kv;
	return 0;
}

int ms_kv_create(const struct ms_model *m, uint32_t n_ctx, uint32_t window, uint32_t margin, uint32_t type,
		 struct ms_kv **out, ms_err *err)
{
	struct ms_kv proto = { 0 };

	if (n_ctx == 0)
		return ms_errf(err, -EINVAL, "context length must be at least 1");
	if (type != GGML_TYPE_F16 && type != GGML_TYPE_F32)
		return ms_errf(err, -EINVAL, "KV cache type %s is not supported (F16 or F32)",
			       ms_ggml_type_name(type));
	proto.n_ctx = n_ctx;
	proto.window = effective_window(n_ctx, window);
	proto.n_slots = ring_slots(n_ctx, window, margin);
	proto.kv_dim = m->hp.kv_dim;
	proto.n_layers = m->hp.n_layers;
	proto.n_kv_heads = m->hp.n_kv_heads;
	proto.type = type;
	proto.elt = kv_elt(type);
	/*
	 * Decode reads the whole window of every layer each step: the same
	 * page kind as the weights (huge pages when they got them) spares the
	 * TLB the same way. Falls back quietly; the cache is not locked.
	 */
	return kv_alloc(&proto, m->page_policy, out, err);
}

size_t ms_kv_mapped_bytes(const struct ms_kv *kv)
{
	return kv->mem->size;
}

int ms_kv_fill_synthetic(struct ms_kv *kv, uint32_t pos, uint64_t seed)
{
	size_t n = (size_t)kv->n_layers * kv->n_slots * kv->kv_dim;
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	if (pos > kv->n_ctx)
		return -EINVAL;
	for (size_t i = 0; i < 2 * n; i++) {
		float f;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		f = (float)((double)(x >> 40) / (double)(1ull << 23) - 1.0);
		if (kv->type == GGML_TYPE_F16)
			((uint16_t *)(i < n ? kv->k : kv->v))[i % n] = ms_f32_to_f16(f);
		else
			((float *)(i < n ? kv->k : kv->v))[i % n] = f;
	}
	kv->pos = pos;
	kv->first = pos > kv->n_slots ? pos - kv->n_slots : 0;
	return 0;
}

void ms_kv_reset(struct ms_kv *kv)
{
	kv->pos = 0;
	kv->first = 0;
}

void ms_kv_free(struct ms_kv *kv)
{
	if (!kv)
		return;
	ms_arena_destroy(kv->mem);
	free(kv);
}

/* Oldest position the query at p attends to. */
static uint32_t window_low(uint32_t window, uint32_t p)
{
	return window && p + 1 > window ? p + 1 - window : 0;
}

bool ms_kv_resumable(const struct ms_kv *kv, uint32_t window, uint32_t p)
{
	return p <= kv->pos && (p == 0 || kv->first <= window_low(window, p));
}

int ms_kv_truncate(struct ms_kv *kv, uint32_t p)
{
	if (!ms_kv_resumable(kv, kv->window, p))
		return -ERANGE;
	kv->pos = p;
	if (p == 0)
		kv->first = 0;
	return 0;
}

/* Keys and values of positions [lo, hi) from src's slots to dst's, in runs contiguous in both rings. */
static void kv_copy_positions(struct ms_kv *dst, const struct ms_kv *src, uint32_t lo, uint32_t hi)
{
	const size_t hrow = (size_t)(src->kv_dim / src->n_kv_heads) * src->elt;
	const size_t heads = (size_t)src->n_layers * src->n_kv_heads;

	for (uint32_t j = lo; j < hi;) {
		const uint32_t ss = j % src->n_slots, ds = j % dst->n_slots;
		uint32_t run = hi - j;

		run = run < src->n_slots - ss ? run : src->n_slots - ss;
		run = run < dst->n_slots - ds ? run : dst->n_slots - ds;
		for (size_t h = 0; h < heads; h++) {
			const size_t so = (h * src->n_slots + ss) * hrow, d = (h * dst->n_slots + ds) * hrow;

			memcpy((uint8_t *)dst->k + d, (const uint8_t *)src->k + so, run * hrow);
			memcpy((uint8_t *)dst->v + d, (const uint8_t *)src->v + so, run * hrow);
		}
		j += run;
	}
}

int ms_kv_copy(struct ms_kv *dst, const struct ms_kv *src, uint32_t n)
{
	uint32_t lo;

	if (dst->type != src->type || dst->kv_dim != src->kv_dim || dst->n_layers != src->n_layers ||
	    dst->n_kv_heads != src->n_kv_heads || n > src->pos || dst == src)
		return -EINVAL;
	if (n > dst->n_ctx)
		return -ENOSPC;
	lo = n > dst->n_slots ? n - dst->n_slots : 0;
	lo = lo > src->first ? lo : src->first;
	lo = lo < n ? lo : n;
	kv_copy_positions(dst, src, lo, n);
	dst->pos = n;
	dst->first = lo;
	return 0;
}

/*
 * Snapshots at least this big go in transparent huge pages. Fresh normal
 * pages cost a fault each, 4 KiB at a time: 3,127 positions of Mistral 7B
 * (391 MiB) took 1.2-1.4 s of CPU to snapshot that way under KVM, against
 * 55-100 ms in 2 MiB pages (BENCHMARKS.md). Rounding up to 2 MiB adds at
 * most an eighth to an entry this size; smaller ones (a short prompt, a
 * small model) stay in normal pages, whose faults cost little there.
 */
#define KV_SNAPSHOT_HUGE ((size_t)16 << 20)

/* The shape of n positions' snapshot, and the pages it asks for. */
static enum ms_page_policy snapshot_shape(const struct ms_kv *src, uint32_t n, struct ms_kv *proto)
{
	*proto = *src;
	proto->n_ctx = n;
	proto->n_slots = n < src->n_slots ? n : src->n_slots;
	proto->pos = proto->first = 0;
	/*
	 * Only when the ring got huge pages itself (the weights' policy is not
	 * none, and the kernel offers them); THP and never hugetlb, whose pool
	 * the administrator sized for the weights and the sequences' rings.
	 */
	if (src->mem->kind != MS_PAGES_NORMAL && kv_request(proto) >= KV_SNAPSHOT_HUGE)
		return MS_POLICY_THP;
	return MS_POLICY_NONE;
}

size_t ms_kv_snapshot_bytes(const struct ms_kv *src, uint32_t n)
{
	struct ms_kv proto;
	enum ms_page_policy policy;

	if (n == 0 || n > src->pos)
		return 0;
	policy = snapshot_shape(src, n, &proto);
	return ms_arena_map_bytes(kv_request(&proto), policy);
}

int ms_kv_snapshot(const struct ms_kv *src, uint32_t n, struct ms_kv **out, ms_err *err)
{
	struct ms_kv proto, *kv;
	enum ms_page_policy policy;
	int r;

	if (n == 0 || n > src->pos)
		return ms_errf(err, -EINVAL, "cannot keep %u positions of a cache holding %u", n, src->pos);
	policy = snapshot_shape(src, n, &proto);
	if ((r = kv_alloc(&proto, policy, &kv, err)) < 0)
		return r;
	ms_kv_copy(kv, src, n);
	*out = kv;
	return 0;
}

size_t ms_common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
	size_t n = na < nb ? na : nb, i = 0;

	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/* ------------------------------------------------------------------------ */
/* Scratch                                                                   */
/* ------------------------------------------------------------------------ */

void ms_ctx_free(struct ms_ctx *c)
{
	if (!c)
		return;
	free(c->x);
	free(c->xn);
	free(c->q);
	free(c->kc);
	free(c->vc);
	free(c->kct);
	free(c->vct);
	free(c->att);
	free(c->tmp);
	free(c->hg);
	free(c->hu);
	free(c->rope_cos);
	free(c->rope_sin);
	free(c->inv_freq);
	free(c->att_scratch);
	free(c->partial);
	free(c->task_tile);
	free(c->tiles);
	free(c->mm_scratch);
	free(c->segs);
	free(c->row_seg);
	free(c->row_pos);
	free(c->row_tok);
	free(c->item_done);
	free(c->out);
	free(c->out_dst);
	free(c);
}

uint32_t ms_ctx_threads(const struct ms_ctx *c)
{
	return c->n_threads;
}

void ms_ctx_set_progress(struct ms_ctx *c, int (*fn)(void *ud), void *ud)
{
	c->progress = fn;
	c->progress_ud = ud;
}

static size_t max_sz(size_t a, size_t b)
{
	return a > b ? a : b;
}

/* Largest activation-conversion buffer any matmul of this model needs. */
static size_t model_mm_scratch(const struct ms_model *m, const struct ms_kernels *k, size_t b)
{
	size_t s = ms_matmul_scratch_bytes(k, m->output.type, m->output.layout, m->hp.dim, b);

	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		const struct ms_layer *L = &m->layers[l];

		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wq.type, L->wq.layout, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wk.type, L->wk.layout, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wv.type, L->wv.layout, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wo.type, L->wo.layout, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->w_gate.type, L->w_gate.layout, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->w_up.type, L->w_up.layout, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->w_down.type, L->w_down.layout, m->hp.ffn, b));
	}
	return s;
}

/* Every weight type of the model must have a kernel in the chosen table. */
static int check_kernels(const struct ms_model *m, const struct ms_kernels *k, ms_err *err)
{
	for (uint32_t t = 0; t < MS_TYPE_SLOTS; t++) {
		if (m->types_seen[t] && t != GGML_TYPE_F32 && !k->type[t].dot)
			return ms_errf(err, -ENOTSUP, "kernel set '%s' has no matmul for type %s",
				       k->name, ms_ggml_type_name(t));
	}
	if (!k->type[GGML_TYPE_F32].dot)
		return ms_errf(err, -ENOTSUP, "kernel set '%s' has no F32 matmul", k->name);
	return 0;
}

int ms_ctx_create(const struct ms_model *m, const struct ms_kernels *k,
		  uint32_t max_batch, uint32_t n_threads, struct ms_ctx **out, ms_err *err)
{
	const struct ms_hparams *hp = &m->hp;
	struct ms_ctx *c;
	size_t b, half, mm;
	int r;

	if (!k)
		return ms_errf(err, -EINVAL, "no kernel set");
	r = check_kernels(m, k, err);
	if (r < 0)
		return r;
	if (max_batch == 0 || max_batch > 65536)
		return ms_errf(err, -EINVAL, "batch size %u out of range 1..65536", max_batch);
	if (n_threads == 0 || n_threads > 1024)
		return ms_errf(err, -EINVAL, "thread count %u out of range 1..1024", n_threads);
	c = calloc(1, sizeof(*c));
	if (!c)
		return ms_errf(err, -ENOMEM, "out of memory for scratch buffers");
	c->m = m;
	c->k = k;
	c->max_batch = max_batch;
	c->n_threads = n_threads;
	b = max_batch;
	half = hp->rope_dims / 2;
	c->x = malloc(b * hp->dim * sizeof(float));
	c->xn = malloc(b * hp->dim * sizeof(float));
	c->q = malloc(b * hp->dim * sizeof(float));
	c->kc = malloc(b * hp->kv_dim * sizeof(float));
	c->vc = malloc(b * hp->kv_dim * sizeof(float));
	c->att = malloc(b * hp->dim * sizeof(float));
	c->tmp = malloc(b * hp->dim * sizeof(float));
	c->hg = malloc(b * hp->ffn * sizeof(float));
	c->hu = malloc(b * hp->ffn * sizeof(float));
	c->rope_cos = malloc(b * half * sizeof(float));
	c->rope_sin = malloc(b * half * sizeof(float));
	c->inv_freq = malloc(half * sizeof(double));
	c->segs = malloc(b * sizeof(*c->segs));
	c->row_seg = malloc(b * sizeof(*c->row_seg));
	c->row_pos = malloc(b * sizeof(*c->row_pos));
	c->row_tok = malloc(b * sizeof(*c->row_tok));
	c->item_done = malloc(b * sizeof(*c->item_done));
	c->out = malloc((size_t)OUT_ROWS * hp->vocab * sizeof(float));
	c->out_dst = malloc(OUT_ROWS * sizeof(*c->out_dst));
	c->kct = malloc(b * hp->kv_dim * sizeof(float));
	c->vct = malloc(b * hp->kv_dim * sizeof(float));
	c->ak = k->attn ? k->attn : &ms_attn_generic;
	/* Per thread: a tile's queries and a block of their scores (the kernels read K and V in place). */
	c->att_stride = (size_t)ATT_TILE * (hp->n_heads / hp->n_kv_heads) * (ATT_TILE_BLOCK + hp->head_dim);
	c->att_scratch = malloc((size_t)n_threads * c->att_stride * sizeof(float));
	/*
	 * A round's rows unsplit plus one split decode row's pieces; a round
	 * that needs more (many lone rows over long caches) runs its tiles in
	 * several passes (attention()). A tile needs at most ATT_MAX_SPLIT
	 * states per KV head (tile_splits), so one always fits.
	 */
	c->att_units = (b + ATT_MAX_SPLIT) * hp->n_kv_heads;
	c->task_tile = malloc(c->att_units * sizeof(*c->task_tile));
	c->tiles = malloc(b * sizeof(*c->tiles));
	c->partial = malloc(c->att_units * (hp->n_heads / hp->n_kv_heads) * (hp->head_dim + 2) * sizeof(float));
	mm = model_mm_scratch(m, k, b);
	c->mm_scratch = mm ? malloc(mm) : NULL;
	if (!c->x || !c->xn || !c->q || !c->kc || !c->vc || !c->att || !c->tmp ||
	    !c->hg || !c->hu || !c->rope_cos || !c->rope_sin || !c->inv_freq ||
	    !c->segs || !c->row_seg || !c->row_pos || !c->row_tok || !c->item_done ||
	    !c->out || !c->out_dst || !c->kct || !c->vct || !c->att_scratch || !c->partial || !c->tiles || !c->task_tile ||
	    (mm && !c->mm_scratch)) {
		ms_ctx_free(c);
		return ms_errf(err, -ENOMEM, "out of memory for scratch buffers of a %u-token batch",
			       max_batch);
	}
	for (size_t i = 0; i < half; i++)
		c->inv_freq[i] = pow((double)hp->rope_base, -2.0 * (double)i / (double)hp->rope_dims);
	*out = c;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Leaf operations (small; the matmuls dominate)                             */
/* ------------------------------------------------------------------------ */

/* out[dim] = x / sqrt(mean(x^2) + eps) * w; the sum in double so that 4096
 * squares lose nothing, which costs nothing next to a matmul. */
static void rmsnorm(float *out, const float *x, const float *w, size_t dim, float eps)
{
	double ss = 0;

	for (size_t i = 0; i < dim; i++)
		ss += (double)x[i] * (double)x[i];
	float scale = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));

	for (size_t i = 0; i < dim; i++)
		out[i] = x[i] * scale * w[i];
}

static void rmsnorm_rows(float *out, const float *x, const float *w, size_t rows,
			 size_t dim, float eps)
{
	for (size_t r = 0; r < rows; r++)
		rmsnorm(out + r * dim, x + r * dim, w, dim, eps);
}

/* cos/sin of pos * inv_freq for each row; the angle in double because at
 * position 32k a float angle is already 2e-3 radians off. */
static void rope_tables(struct ms_ctx *c, size_t b)
{
	size_t half = c->m->hp.rope_dims / 2;

	for (size_t i = 0; i < b; i++) {
		for (size_t j = 0; j < half; j++) {
			double a = (double)c->row_pos[i] * c->inv_freq[j];

			c->rope_cos[i * half + j] = (float)cos(a);
			c->rope_sin[i * half + j] = (float)sin(a);
		}
	}
}

/* Rotates adjacent pairs (v[2j], v[2j+1]) of every head of each row. */
static void rope_apply(const struct ms_ctx *c, float *v, size_t b, size_t width)
{
	size_t hd = c->m->hp.head_dim, half = c->m->hp.rope_dims / 2;

	for (size_t i = 0; i < b; i++) {
		const float *cs = c->rope_cos + i * half, *sn = c->rope_sin + i * half;

		for (size_t h = 0; h < width / hd; h++) {
			float *x = v + i * width + h * hd;

			for (size_t j = 0; j < half; j++) {
				float x0 = x[2 * j], x1 = x[2 * j + 1];

				x[2 * j] = x0 * cs[j] - x1 * sn[j];
				x[2 * j + 1] = x0 * sn[j] + x1 * cs[j];
			}
		}
	}
}

static int matmul(struct ms_ctx *c, const struct ms_tensor *w, const float *x, size_t b, float *y)
{
	return ms_matmul(c->k, w->type, w->layout, w->data, w->row_bytes, w->rows, w->cols, x, b, y,
			 c->mm_scratch);
}

static struct ms_matmul_op mm_op(const struct ms_tensor *w, float *y, float *acc)
{
	return (struct ms_matmul_op){ .type = w->type, .layout = w->layout, .w = w->data, .row_bytes = w->row_bytes,
				      .rows = w->rows, .cols = w->cols, .y = y, .acc = acc };
}

/* ------------------------------------------------------------------------ */
/* Attention                                                                 */
/* ------------------------------------------------------------------------ */

/* A stretch of keys stored in consecutive rows (ring slots or chunk rows). */
struct key_run {
	const uint8_t *k, *v;    /* first row, already offset to the KV head */
	size_t n;
	size_t stride;           /* bytes from one row to the next */
};

/* Rows of kct/vct are spaced for F32 whatever the cache type, so segments
 * of different types never overlap. */
static size_t chunk_row_bytes(const struct ms_ctx *c)
{
	return c->m->hp.kv_dim * sizeof(float);
}

/*
 * The keys of positions [lo, p] of row r's sequence at layer l, as at most
 * three runs: the cached positions [lo, p0) (two runs when they wrap
 * around the ring) and the chunk's own positions [max(lo, p0), p]; p is at
 * most the last row of r's segment. Softmax does not care about order, so
 * the ring is read in slot order, never reassembled; position lo + t is
 * element t of the runs put end to end.
 */
static size_t key_runs(const struct ms_ctx *c, size_t r, uint32_t l, size_t g, uint32_t lo, uint32_t p,
		       struct key_run *runs)
{
	const struct segment *sg = &c->segs[c->row_seg[r]];
	const struct ms_kv *kv = sg->kv;
	const size_t hd = c->m->hp.head_dim, hrow = hd * kv->elt, head = g * hd * kv->elt;
	const uint32_t p0 = sg->p0;
	/* this layer's slots of KV head g: one contiguous run of rows (forward.h) */
	const size_t at = ((size_t)l * c->m->hp.n_kv_heads + g) * kv->n_slots * hrow;
	const uint8_t *kr = (const uint8_t *)kv->k + at;
	const uint8_t *vr = (const uint8_t *)kv->v + at;
	size_t n = 0;

	if (lo < p0) {
		size_t s0 = lo % kv->n_slots, cnt = p0 - lo;
		size_t first = cnt < kv->n_slots - s0 ? cnt : kv->n_slots - s0;

		runs[n++] = (struct key_run){ kr + s0 * hrow, vr + s0 * hrow, first, hrow };
		if (cnt > first)
			runs[n++] = (struct key_run){ kr, vr, cnt - first, hrow };
	}
	{
		uint32_t j = lo > p0 ? lo : p0;
		size_t off = (sg->row0 + (j - p0)) * chunk_row_bytes(c) + head;

		runs[n++] = (struct key_run){ (const uint8_t *)c->kct + off, (const uint8_t *)c->vct + off,
					      p - j + 1, chunk_row_bytes(c) };
	}
	return n;
}

/*
 * The largest of s[0..n) and m (NaNs ignored), in eight independent lanes:
 * one running maximum is a chain of dependent maxss, and the lanes made a
 * decode step's attention 8% faster with the AVX-512 kernels (7B shape,
 * 512 positions in cache, one thread: 24 -> 26 GB/s of keys and values).
 * A maximum is exact in any order.
 */
static float block_max(const float *s, size_t n, float m)
{
	float lane[8];
	size_t t = 0;

	for (int l = 0; l < 8; l++)
		lane[l] = m;
	for (; t + 8 <= n; t += 8)
		for (int l = 0; l < 8; l++)
			lane[l] = s[t + l] > lane[l] ? s[t + l] : lane[l];
	for (; t < n; t++)
		lane[0] = s[t] > lane[0] ? s[t] : lane[0];
	for (int l = 0; l < 8; l++)
		m = lane[l] > m ? lane[l] : m;
	return m;
}

/*
 * x[0..n) *= a, in eight lanes so that -O2 vectorises it (an unknown
 * trip count alone stays scalar): the running sums' rescale when a
 * block raises the max, once or twice per piece of a split row.
 */
static void scale_lanes(float *x, size_t n, float a)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			x[i + l] *= a;
	for (; i < n; i++)
		x[i] *= a;
}

/* Oldest position row r attends to (window and causality only). */
static uint32_t row_low(const struct ms_ctx *c, size_t r)
{
	return window_low(c->segs[c->row_seg[r]].kv->window, c->row_pos[r]);
}

/* Keys a tile scores at once; one row: the decode step's block, tuned for one row's four heads. */
static size_t tile_block(const struct att_tile *tl)
{
	return tl->nr > 1 ? ATT_TILE_BLOCK : ATT_BLOCK;
}

/*
 * One task: the G query heads of KV head g for the rows of tile tl, over
 * keys [k0, k1) of the tile's key list (positions row_low(first row) to
 * the last row's own), with an online softmax over blocks of blk keys.
 * The kernels read each key and value row straight from the cache once
 * per four query heads, and a block (32 kB of F16 keys at the 7B shape)
 * stays in L1 or L2 while every row of the tile reads it: one pass over
 * the cache from memory per tile where there was one per row (a chunk of
 * 66 rows over 3,127 cached positions read 27 GB of keys and values in
 * 32 layers, and two threads contended for it). Rows whose
 * last (causality) or first (window) key falls inside a block have the
 * keys they do not see left out of their softmax and given weight 0.
 * Leaves (max, sum, unnormalised output) per query, row-major, in st.
 */
static void attend_task(const struct ms_ctx *c, uint32_t l, const struct att_tile *tl, size_t g, size_t k0,
			size_t k1, float *st, float *scratch)
{
	const struct ms_hparams *hp = &c->m->hp;
	const size_t hd = hp->head_dim, G = hp->n_heads / hp->n_kv_heads, nq = tl->nr * G;
	const struct ms_kv *kv = c->segs[c->row_seg[tl->r0]].kv;
	const float scale = (float)(1.0 / sqrt((double)hd));
	const uint32_t lo = row_low(c, tl->r0), plast = c->row_pos[tl->r0 + tl->nr - 1];
	const size_t blk = tile_block(tl);
	float *s = scratch;   /* [nq][blk] scores, then softmax numerators */
	const float *q = c->q + tl->r0 * hp->dim + g * G * hd;
	struct key_run runs[3];
	size_t n_runs = key_runs(c, tl->r0, l, g, lo, plast, runs), base = 0;

	if (tl->nr > 1) {
		/* the tile's queries side by side, as the kernels take them */
		float *qt = scratch + (size_t)ATT_TILE * G * ATT_TILE_BLOCK;

		for (size_t i = 0; i < tl->nr; i++)
			memcpy(qt + i * G * hd, q + i * hp->dim, G * hd * sizeof(float));
		q = qt;
	}
	for (size_t qi = 0; qi < nq; qi++) {
		float *e = st + qi * (hd + 2);

		e[0] = -INFINITY;
		e[1] = 0;
		memset(e + 2, 0, hd * sizeof(float));
	}
	for (size_t ri = 0; ri < n_runs; base += runs[ri].n, ri++) {
		const size_t from = k0 > base ? k0 - base : 0, to = k1 - base < runs[ri].n ? k1 - base : runs[ri].n;

		if (k1 <= base || from >= runs[ri].n)
			continue;
		for (size_t b0 = from; b0 < to; b0 += blk) {
			const size_t nb = to - b0 < blk ? to - b0 : blk, off = b0 * runs[ri].stride;
			const size_t t0 = base + b0;   /* the block's first key, position lo + t0 */

			c->ak->scores(hd, nq, q, runs[ri].k + off, runs[ri].stride, kv->type, nb, scale, s, blk);
			for (size_t i = 0; i < tl->nr; i++) {
				/* the part [a, z) of the block row i sees */
				const size_t rl = row_low(c, tl->r0 + i) - lo, rh = c->row_pos[tl->r0 + i] - lo + 1;
				const size_t a = rl > t0 ? rl - t0 : 0, z = rh < t0 + nb ? (rh > t0 ? rh - t0 : 0) : nb;

				for (size_t h = 0; h < G; h++) {
					float *e = st + (i * G + h) * (hd + 2), *sq = s + (i * G + h) * blk;
					float mx, corr;

					if (a >= z) {
						memset(sq, 0, nb * sizeof(float));
						continue;
					}
					mx = block_max(sq + a, z - a, e[0]);
					corr = expf(e[0] - mx);
					/* e[1] == 0: nothing seen yet, every sum still 0 (a piece's first block) */
					if (corr != 1.0f && e[1] != 0) {
						e[1] *= corr;
						scale_lanes(e + 2, hd, corr);
					}
					e[1] += c->ak->exp_sum(z - a, mx, sq + a);
					e[0] = mx;
					memset(sq, 0, a * sizeof(float));
					memset(sq + z, 0, (nb - z) * sizeof(float));
				}
			}
			c->ak->accum(hd, nq, s, blk, runs[ri].v + off, runs[ri].stride, kv->type, nb, st + 2, hd + 2);
		}
	}
}

/*
 * Pieces a tile's nk keys are split into, for a segment of b rows on a
 * model with nkv KV heads: as many as give a row ATT_TASKS tasks (KV heads
 * x pieces), leave each piece at least ATT_PIECE keys (it then outweighs
 * merging it) and the segment at most ATT_MAX_SPLIT row-pieces. So a lone
 * decode row over a long cache gives a team of up to 16 threads a share
 * on a model with one KV head, while a chunk of many rows, whose tiles
 * already make tasks enough, is not split. A function of the model and
 * the sequence's own chunk and positions, never of the batch or the
 * thread count: summing a row's keys in other pieces rounds differently,
 * and a sequence's logits must be the same bits alone, batched, and on
 * any number of threads. Each piece costs a state, a restart of the
 * online softmax and a merge: 16 pieces of 256 keys a KV head made a
 * decode step of a 7B-attention model 2-3% slower than unsplit at 4096
 * positions (one thread), 2 pieces nothing measurable (BENCHMARKS.md).
 */
static size_t tile_splits(size_t nk, size_t b, size_t nkv)
{
	size_t s = 1;

	while (nkv * s < ATT_TASKS && 2 * s * b <= ATT_MAX_SPLIT && nk / (2 * s) >= ATT_PIECE)
		s *= 2;
	return s;
}

/*
 * Splits the round's rows into tiles: each segment's rows in runs of at
 * most ATT_TILE, of even sizes (66 rows: six of 7 and three of 8, not
 * eight of 8 and one of 2), so the tasks weigh about the same. A tile
 * sees the keys from its first row's oldest to its last row.
 */
static size_t make_tiles(struct ms_ctx *c)
{
	size_t n = 0;

	for (size_t si = 0; si < c->n_segs; si++) {
		const struct segment *sg = &c->segs[si];
		const size_t nt = (sg->b + ATT_TILE - 1) / ATT_TILE;

		for (size_t i = 0; i < nt; i++) {
			struct att_tile *tl = &c->tiles[n++];

			tl->r0 = sg->row0 + sg->b * i / nt;
			tl->nr = sg->row0 + sg->b * (i + 1) / nt - tl->r0;
			tl->nk = c->row_pos[tl->r0 + tl->nr - 1] - row_low(c, tl->r0) + 1;
			tl->splits = tile_splits(tl->nk, sg->b, c->m->hp.n_kv_heads);
		}
	}
	return n;
}

/*
 * Normalised outputs of tile tl's rows: each query's pieces rescaled to
 * their common max and summed in piece order.
 */
static void merge_pieces(struct ms_ctx *c, const struct att_tile *tl)
{
	const struct ms_hparams *hp = &c->m->hp;
	const size_t hd = hp->head_dim, G = hp->n_heads / hp->n_kv_heads, st_size = G * (hd + 2);
	const size_t piece = tl->nr * st_size;   /* from one piece's state to the next */

	for (size_t i = 0; i < tl->nr; i++) {
		for (size_t g = 0; g < hp->n_kv_heads; g++) {
			const float *base = c->partial + tl->state + (g * tl->splits * tl->nr + i) * st_size;

			for (size_t qi = 0; qi < G; qi++) {
				float *o = c->att + (tl->r0 + i) * hp->dim + (g * G + qi) * hd;
				float mx = -INFINITY, sum = 0;

				for (size_t sp = 0; sp < tl->splits; sp++) {
					float m = base[sp * piece + qi * (hd + 2)];

					mx = m > mx ? m : mx;
				}
				memset(o, 0, hd * sizeof(float));
				for (size_t sp = 0; sp < tl->splits; sp++) {
					const float *e = base + sp * piece + qi * (hd + 2);
					float w;

					if (e[1] == 0)
						continue;
					w = expf(e[0] - mx);
					sum += w * e[1];
					c->k->axpy_f32(hd, w, e + 2, o);
				}
				for (size_t j = 0; j < hd; j++)
					o[j] /= sum;
			}
		}
	}
}

/*
 * Causal sliding-window attention at layer l for every row of the round:
 * query p sees keys j with p - W < j <= p. Tasks are (tile, KV head, piece
 * of the tile's keys); the pieces' softmax states are merged afterwards.
 * Tiles run in passes of as many as att_units states hold (one pass unless
 * many lone rows have long caches); within a pass, the state of tile tl,
 * KV head g, piece sp, row i is at tl->state + ((g * splits + sp) * nr + i)
 * * st_size, so a tile's rows are side by side.
 */
static void attention(struct ms_ctx *c, uint32_t l)
{
	const struct ms_hparams *hp = &c->m->hp;
	const size_t nkv = hp->n_kv_heads, st_size = (hp->n_heads / nkv) * (hp->head_dim + 2);
	const size_t n_tiles = make_tiles(c);

	for (size_t t0 = 0, t1; t0 < n_tiles; t0 = t1) {
		size_t units = 0;
		uint64_t work = 0;
		long n_tasks = 0;

		for (t1 = t0; t1 < n_tiles; t1++) {
			struct att_tile *tl = &c->tiles[t1];
			const size_t u = tl->nr * tl->splits * nkv;

			if (t1 > t0 && units + u > c->att_units)
				break;
			tl->state = units * st_size;
			tl->task0 = (size_t)n_tasks;
			for (size_t j = 0; j < nkv * tl->splits; j++)
				c->task_tile[n_tasks++] = (uint32_t)t1;
			units += u;
			work += (uint64_t)tl->nk * tl->nr * hp->n_heads * hp->head_dim;
		}
#pragma omp parallel for num_threads(c->n_threads) schedule(dynamic, 1) if (work >= (1u << 18))
		for (long t = 0; t < n_tasks; t++) {
			const struct att_tile *tl = &c->tiles[c->task_tile[t]];
			const size_t j = (size_t)t - tl->task0, g = j / tl->splits, sp = j % tl->splits;

			/* pieces of whole blocks: the blocks an unsplit tile would score */
			const size_t blk = tile_block(tl), nb = (tl->nk + blk - 1) / blk;
			const size_t k1 = blk * (nb * (sp + 1) / tl->splits);

			attend_task(c, l, tl, g, blk * (nb * sp / tl->splits), k1 < tl->nk ? k1 : tl->nk,
				    c->partial + tl->state + (g * tl->splits + sp) * tl->nr * st_size,
				    c->att_scratch + (size_t)omp_get_thread_num() * c->att_stride);
		}
		for (size_t ti = t0; ti < t1; ti++)
			merge_pieces(c, &c->tiles[ti]);
	}
}

/* The chunk's keys and values in each sequence's cache type: attention
 * reads them as later steps will read them from the ring. */
static void chunk_to_cache_type(struct ms_ctx *c)
{
	const size_t kvd = c->m->hp.kv_dim;

	for (size_t si = 0; si < c->n_segs; si++) {
		const struct segment *sg = &c->segs[si];

		for (size_t i = sg->row0; i < sg->row0 + sg->b; i++) {
			uint8_t *kd = (uint8_t *)c->kct + i * chunk_row_bytes(c);
			uint8_t *vd = (uint8_t *)c->vct + i * chunk_row_bytes(c);

			if (sg->kv->type == GGML_TYPE_F16) {
				c->ak->f32_to_f16(kvd, c->kc + i * kvd, (uint16_t *)(void *)kd);
				c->ak->f32_to_f16(kvd, c->vc + i * kvd, (uint16_t *)(void *)vd);
			} else {
				memcpy(kd, c->kc + i * kvd, kvd * sizeof(float));
				memcpy(vd, c->vc + i * kvd, kvd * sizeof(float));
			}
		}
	}
}

/* Writes each segment's keys and values into its ring slots, head by head. */
static void kv_store(struct ms_ctx *c, uint32_t l)
{
	const size_t nkv = c->m->hp.n_kv_heads;

	for (size_t si = 0; si < c->n_segs; si++) {
		const struct segment *sg = &c->segs[si];
		struct ms_kv *kv = sg->kv;
		const size_t hrow = c->m->hp.head_dim * kv->elt;

		for (size_t i = 0; i < sg->b; i++) {
			const size_t slot = (sg->p0 + i) % kv->n_slots;
			const uint8_t *ks = (const uint8_t *)c->kct + (sg->row0 + i) * chunk_row_bytes(c);
			const uint8_t *vs = (const uint8_t *)c->vct + (sg->row0 + i) * chunk_row_bytes(c);

			for (size_t g = 0; g < nkv; g++) {
				const size_t off = (((size_t)l * nkv + g) * kv->n_slots + slot) * hrow;

				memcpy((uint8_t *)kv->k + off, ks + g * hrow, hrow);
				memcpy((uint8_t *)kv->v + off, vs + g * hrow, hrow);
			}
		}
	}
}

/* ------------------------------------------------------------------------ */
/* One round (every segment's chunk) through every layer                    */
/* ------------------------------------------------------------------------ */

/* Records [*t0, now) as a piece of kind what and starts the next piece; nothing when not tracing. */
static void tr_mark(struct ms_trace *tr, uint32_t what, uint64_t *t0)
{
	if (!tr)
		return;
	ms_trace_piece(tr, what, *t0, 0, 0);
	*t0 = ms_trace_now();
}

/* The next piece starts now (a matmul, which records itself, just ended). */
static void tr_skip(const struct ms_trace *tr, uint64_t *t0)
{
	if (tr)
		*t0 = ms_trace_now();
}

/*
 * Final norm and output projection for the rows that need logits, in
 * groups of OUT_ROWS so the scratch stays small; each group reads the
 * output matrix once.
 */
static int output_rows(struct ms_ctx *c, struct ms_trace *tr, uint64_t *t0)
{
	const struct ms_model *m = c->m;
	const size_t dim = m->hp.dim, vocab = m->hp.vocab;
	size_t n = 0;
	int r;

	for (size_t si = 0; si <= c->n_segs; si++) {
		const struct segment *sg = si < c->n_segs ? &c->segs[si] : NULL;
		size_t first = 0, count = 0;

		if (sg && sg->logits) {
			first = sg->all_logits ? 0 : sg->b - 1;
			count = sg->all_logits ? sg->b : (sg->last ? 1 : 0);
		}
		for (size_t i = first; i < first + count; i++) {
			rmsnorm(c->xn + n * dim, c->x + (sg->row0 + i) * dim, m->output_norm, dim, m->hp.eps);
			tr_mark(tr, MS_TR_NORM, t0);
			c->out_dst[n++] = sg->all_logits ? sg->logits + (sg->done + i) * vocab : sg->logits;
			if (n < OUT_ROWS)
				continue;
			if ((r = matmul(c, &m->output, c->xn, n, c->out)) < 0)
				return r;
			tr_skip(tr, t0);
			for (size_t k = 0; k < n; k++)
				memcpy(c->out_dst[k], c->out + k * vocab, vocab * sizeof(float));
			tr_mark(tr, MS_TR_OUT, t0);
			n = 0;
		}
		if (!sg && n) {
			if ((r = matmul(c, &m->output, c->xn, n, c->out)) < 0)
				return r;
			tr_skip(tr, t0);
			for (size_t k = 0; k < n; k++)
				memcpy(c->out_dst[k], c->out + k * vocab, vocab * sizeof(float));
			tr_mark(tr, MS_TR_OUT, t0);
		}
	}
	return 0;
}

static int eval_round(struct ms_ctx *c, size_t b)
{
	struct ms_trace *tr = ms_trace_get();
	const uint64_t t_round = tr ? ms_trace_now() : 0;
	uint64_t t0 = t_round;
	const struct ms_model *m = c->m;
	const struct ms_hparams *hp = &m->hp;
	const size_t dim = hp->dim, ffn = hp->ffn;
	int r;

	for (size_t i = 0; i < b; i++) {
		const uint8_t *row = (const uint8_t *)m->tok_embd.data +
				     (size_t)c->row_tok[i] * m->tok_embd.row_bytes;

		r = ms_dequantize_row(m->tok_embd.type, row, c->x + i * dim, dim);
		if (r < 0)
			return r;
	}
	tr_mark(tr, MS_TR_EMBED, &t0);
	rope_tables(c, b);
	tr_mark(tr, MS_TR_ROPE, &t0);

	for (uint32_t l = 0; l < hp->n_layers; l++) {
		const struct ms_layer *L = &m->layers[l];

		rmsnorm_rows(c->xn, c->x, L->attn_norm, b, dim, hp->eps);
		tr_mark(tr, MS_TR_NORM, &t0);
		{
			const struct ms_matmul_op qkv[] = { mm_op(&L->wq, c->q, NULL), mm_op(&L->wk, c->kc, NULL),
							    mm_op(&L->wv, c->vc, NULL) };

			if ((r = ms_matmul_multi(c->k, qkv, 3, c->xn, b, c->mm_scratch)) < 0)
				return r;
		}
		tr_skip(tr, &t0);
		rope_apply(c, c->q, b, dim);
		rope_apply(c, c->kc, b, hp->kv_dim);
		tr_mark(tr, MS_TR_ROPE, &t0);
		chunk_to_cache_type(c);
		tr_mark(tr, MS_TR_CACHE, &t0);
		attention(c, l);
		tr_mark(tr, MS_TR_ATTN, &t0);
		kv_store(c, l);
		tr_mark(tr, MS_TR_CACHE, &t0);
		{
			const struct ms_matmul_op wo = mm_op(&L->wo, c->tmp, c->x);

			if ((r = ms_matmul_multi(c->k, &wo, 1, c->att, b, c->mm_scratch)) < 0)
				return r;
		}
		tr_skip(tr, &t0);

		rmsnorm_rows(c->xn, c->x, L->ffn_norm, b, dim, hp->eps);
		tr_mark(tr, MS_TR_NORM, &t0);
		{
			const struct ms_matmul_op gu[] = { mm_op(&L->w_gate, c->hg, NULL), mm_op(&L->w_up, c->hu, NULL) };

			/* a model whose gate and up differ in type takes the separate product */
			if ((r = ms_matmul_glu(c->k, &gu[0], &gu[1], c->xn, b, c->mm_scratch)) == -EINVAL) {
				if ((r = ms_matmul_multi(c->k, gu, 2, c->xn, b, c->mm_scratch)) < 0)
					return r;
				ms_glu_product(c->k, b * ffn, c->hg, c->hu, c->n_threads);
				tr_mark(tr, MS_TR_SILU, &t0);
			} else if (r < 0) {
				return r;
			}
		}
		{
			const struct ms_matmul_op down = mm_op(&L->w_down, c->tmp, c->x);

			if ((r = ms_matmul_multi(c->k, &down, 1, c->hg, b, c->mm_scratch)) < 0)
				return r;
		}
		tr_skip(tr, &t0);
		if (c->progress && c->progress(c->progress_ud))
			return -ECANCELED;
	}
	r = output_rows(c, tr, &t0);
	if (tr && r >= 0)
		ms_trace_piece(tr, MS_TR_ROUND, t_round, b, 0);
	return r;
}

/* Longest chunk a sequence may take in one round: past the window it would
 * overwrite ring slots that its own first queries still need. */
static size_t max_chunk(const struct ms_ctx *c, const struct ms_kv *kv)
{
	return kv->window && kv->window < c->max_batch ? kv->window : c->max_batch;
}

static int check_item(const struct ms_ctx *c, const struct ms_batch_item *it, size_t idx, ms_err *err)
{
	const struct ms_kv *kv = it->kv;

	if (kv->kv_dim != c->m->hp.kv_dim || kv->n_layers != c->m->hp.n_layers)
		return ms_errf(err, -EINVAL, "sequence %zu: KV cache shape does not match the model", idx);
	if (it->n > kv->n_ctx - kv->pos)
		return ms_errf(err, -ENOSPC, "%zu tokens do not fit: %u of %u context positions used",
			       it->n, kv->pos, kv->n_ctx);
	for (size_t i = 0; i < it->n; i++) {
		if (it->toks[i] < 0 || (uint32_t)it->toks[i] >= c->m->hp.vocab)
			return ms_errf(err, -EINVAL, "token id %d at index %zu is outside the vocabulary (%u)",
				       it->toks[i], i, c->m->hp.vocab);
	}
	for (size_t j = 0; j < idx; j++) {
		if ((it - idx + j)->kv == kv)
			return ms_errf(err, -EINVAL, "sequence %zu: the same KV cache appears twice in a batch", idx);
	}
	return 0;
}

/*
 * Slots up to position end - 1 have been written (a finished round, or
 * some layers of an abandoned one): the positions those slots held before
 * are gone. An abandoned round leaves pos where it was, so its sequence
 * can still be rolled back to what survived.
 */
static void forget_overwritten(struct ms_kv *kv, uint32_t end)
{
	if (end > kv->n_slots && kv->first < end - kv->n_slots)
		kv->first = end - kv->n_slots < kv->pos ? end - kv->n_slots : kv->pos;
}

int ms_eval_batch(struct ms_ctx *c, const struct ms_batch_item *items, size_t n_items, ms_err *err)
{
	size_t *done;
	int r = 0;

	if (n_items > c->max_batch)
		return ms_errf(err, -EINVAL, "%zu sequences in one batch; at most %u", n_items, c->max_batch);
	for (size_t i = 0; i < n_items; i++) {
		if ((r = check_item(c, &items[i], i, err)) < 0)
			return r;
	}
	done = c->item_done;
	memset(done, 0, n_items * sizeof(*done));
	omp_set_num_threads((int)c->n_threads);

	/*
	 * Rounds: every unfinished sequence contributes its next chunk, whole,
	 * where it fits in what max_batch leaves, so concurrent decodes share
	 * each weight read. A chunk that does not fit waits for the next round
	 * rather than being cut: a sequence's chunks then start where they
	 * would alone (every max_chunk tokens), and since attention sums its
	 * keys in blocks counted from a chunk's start, in pieces that depend
	 * on the chunk and its positions alone (tile_splits), its logits are
	 * the same bits alone or batched with others, on any number of threads
	 * (the matmuls' are by contract).
	 * It costs a round that is not full where the cut would have filled
	 * it; the first unfinished item always fits an empty round.
	 */
	for (;;) {
		size_t rows = 0;

		c->n_segs = 0;
		for (size_t i = 0; i < n_items && rows < c->max_batch; i++) {
			const struct ms_batch_item *it = &items[i];
			size_t left = it->n - done[i], b = max_chunk(c, it->kv);
			struct segment *sg;

			if (!left)
				continue;
			b = b < left ? b : left;
			if (b > c->max_batch - rows)
				continue;
			sg = &c->segs[c->n_segs++];
			*sg = (struct segment){
				.kv = it->kv, .p0 = it->kv->pos, .row0 = rows, .b = b, .done = done[i],
				.logits = it->logits, .all_logits = it->all_logits, .last = done[i] + b == it->n,
			};
			for (size_t k = 0; k < b; k++) {
				c->row_seg[rows + k] = (uint32_t)(c->n_segs - 1);
				c->row_pos[rows + k] = sg->p0 + (uint32_t)k;
				c->row_tok[rows + k] = it->toks[done[i] + k];
			}
			rows += b;
		}
		if (!rows)
			break;
		r = eval_round(c, rows);
		for (size_t si = 0; r < 0 && si < c->n_segs; si++)
			forget_overwritten(c->segs[si].kv, c->segs[si].kv->pos + (uint32_t)c->segs[si].b);
		if (r == -ECANCELED)
			return ms_errf(err, r, "evaluation abandoned by the caller");
		if (r < 0)
			return ms_errf(err, r, "evaluation failed");
		for (size_t si = 0, i = 0; si < c->n_segs; si++) {
			struct segment *sg = &c->segs[si];

			while (items[i].kv != sg->kv)
				i++;
			sg->kv->pos += (uint32_t)sg->b;
			forget_overwritten(sg->kv, sg->kv->pos);
			done[i] += sg->b;
		}
	}
	return 0;
}

int ms_eval(struct ms_ctx *c, struct ms_kv *kv, const int32_t *toks, size_t n,
	    float *logits, bool all_logits, ms_err *err)
{
	struct ms_batch_item it = {
		.kv = kv, .toks = toks, .n = n, .logits = logits, .all_logits = all_logits,
	};

	return ms_eval_batch(c, &it, 1, err);
}
