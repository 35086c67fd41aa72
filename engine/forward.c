/* The transformer forward pass: rolling KV cache, sliding-window GQA attention, batched prefill. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "quant.h"

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
	float *att;              /* [B][dim] attention output, heads concatenated */
	float *tmp;              /* [B][dim] projection output before the residual add */
	float *hg;               /* [B][ffn] gate, then silu(gate) * up */
	float *hu;               /* [B][ffn] up */
	float *rope_cos;         /* [B][rope_dims/2] */
	float *rope_sin;         /* [B][rope_dims/2] */
	double *inv_freq;        /* [rope_dims/2] base^(-2i/rope_dims) */
	float *scores;           /* [n_threads][score_cap] attention weights */
	size_t score_cap;
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

size_t ms_kv_bytes(const struct ms_model *m, uint32_t n_ctx, uint32_t window)
{
	uint32_t w = effective_window(n_ctx, window);
	size_t slots = w ? w : n_ctx;

	return 2 * (size_t)m->hp.n_layers * slots * m->hp.kv_dim * sizeof(float);
}

int ms_kv_create(const struct ms_model *m, uint32_t n_ctx, uint32_t window,
		 struct ms_kv **out, ms_err *err)
{
	struct ms_kv *kv;
	size_t n;

	if (n_ctx == 0)
		return ms_errf(err, -EINVAL, "context length must be at least 1");
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return ms_errf(err, -ENOMEM, "out of memory for a KV cache");
	kv->n_ctx = n_ctx;
	kv->window = effective_window(n_ctx, window);
	kv->n_slots = kv->window ? kv->window : n_ctx;
	kv->kv_dim = m->hp.kv_dim;
	kv->n_layers = m->hp.n_layers;
	n = (size_t)kv->n_layers * kv->n_slots * kv->kv_dim;
	kv->k = malloc(n * sizeof(float));
	kv->v = malloc(n * sizeof(float));
	if (!kv->k || !kv->v) {
		ms_kv_free(kv);
		return ms_errf(err, -ENOMEM, "out of memory for a KV cache of %zu bytes",
			       ms_kv_bytes(m, n_ctx, window));
	}
	*out = kv;
	return 0;
}

void ms_kv_reset(struct ms_kv *kv)
{
	kv->pos = 0;
}

void ms_kv_free(struct ms_kv *kv)
{
	if (!kv)
		return;
	free(kv->k);
	free(kv->v);
	free(kv);
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
	free(c->att);
	free(c->tmp);
	free(c->hg);
	free(c->hu);
	free(c->rope_cos);
	free(c->rope_sin);
	free(c->inv_freq);
	free(c->scores);
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
	size_t s = ms_matmul_scratch_bytes(k, m->output.type, m->hp.dim, b);

	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		const struct ms_layer *L = &m->layers[l];

		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wq.type, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wk.type, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wv.type, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->wo.type, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->w_gate.type, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->w_up.type, m->hp.dim, b));
		s = max_sz(s, ms_matmul_scratch_bytes(k, L->w_down.type, m->hp.ffn, b));
	}
	return s;
}

/* Every weight type of the model must have a kernel in the chosen table. */
static int check_kernels(const struct ms_model *m, const struct ms_kernels *k, ms_err *err)
{
	for (uint32_t t = 0; t < MS_TYPE_SLOTS; t++) {
		if (m->types_seen[t] && t != GGML_TYPE_F32 && !k->type[t].dot)
			return ms_errf(err, -ENOTSUP, "kernel set '%s' has no matmul for type %s",
				       k->name, ggml_type_name(t));
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
	mm = model_mm_scratch(m, k, b);
	c->mm_scratch = mm ? malloc(mm) : NULL;
	if (!c->x || !c->xn || !c->q || !c->kc || !c->vc || !c->att || !c->tmp ||
	    !c->hg || !c->hu || !c->rope_cos || !c->rope_sin || !c->inv_freq ||
	    !c->segs || !c->row_seg || !c->row_pos || !c->row_tok || !c->item_done ||
	    !c->out || !c->out_dst || (mm && !c->mm_scratch)) {
		ms_ctx_free(c);
		return ms_errf(err, -ENOMEM, "out of memory for scratch buffers of a %u-token batch",
			       max_batch);
	}
	for (size_t i = 0; i < half; i++)
		c->inv_freq[i] = pow((double)hp->rope_base, -2.0 * (double)i / (double)hp->rope_dims);
	*out = c;
	return 0;
}

/* Attention weights need one buffer per thread as long as the keys a query sees. */
static int ensure_scores(struct ms_ctx *c, size_t n_keys, ms_err *err)
{
	float *s;

	if (n_keys <= c->score_cap)
		return 0;
	s = realloc(c->scores, (size_t)c->n_threads * n_keys * sizeof(float));
	if (!s)
		return ms_errf(err, -ENOMEM, "out of memory for attention scores");
	c->scores = s;
	c->score_cap = n_keys;
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

static void softmax(float *s, size_t n)
{
	float max = s[0], sum = 0;

	for (size_t i = 1; i < n; i++)
		if (s[i] > max)
			max = s[i];
	for (size_t i = 0; i < n; i++) {
		s[i] = expf(s[i] - max);
		sum += s[i];
	}
	for (size_t i = 0; i < n; i++)
		s[i] /= sum;
}

static int matmul(struct ms_ctx *c, const struct ms_tensor *w, const float *x, size_t b, float *y)
{
	return ms_matmul(c->k, w->type, w->data, w->row_bytes, w->rows, w->cols, x, b, y,
			 c->mm_scratch);
}

/* ------------------------------------------------------------------------ */
/* Attention                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * Causal sliding-window attention at layer l for every row of the round.
 * Row r belongs to segment sg (one sequence's chunk at positions
 * p0..p0+b-1): query p sees keys j with p - W < j <= p; those before p0
 * come from the sequence's ring, the rest from the segment's own rows of
 * kc/vc. Work is split over (row, head) pairs; each keeps its weights in
 * its thread's score buffer.
 */
static void attention(struct ms_ctx *c, uint32_t l, size_t rows)
{
	const struct ms_hparams *hp = &c->m->hp;
	const size_t hd = hp->head_dim, kvd = hp->kv_dim, dim = hp->dim;
	const size_t group = hp->n_heads / hp->n_kv_heads;
	const float scale = (float)(1.0 / sqrt((double)hd));
	const long n_pairs = (long)(rows * hp->n_heads);
	uint64_t work = 0;

	/* Same rule as ms_matmul: a team only for work that outweighs waking it. */
	for (size_t si = 0; si < c->n_segs; si++)
		work += (uint64_t)c->segs[si].b * (c->segs[si].p0 + c->segs[si].b) * hp->n_heads * hd;

#pragma omp parallel for num_threads(c->n_threads) schedule(static) if (work >= (1u << 18))
	for (long pi = 0; pi < n_pairs; pi++) {
		const size_t r = (size_t)pi / hp->n_heads, h = (size_t)pi % hp->n_heads;
		const struct segment *sg = &c->segs[c->row_seg[r]];
		const struct ms_kv *kv = sg->kv;
		const float *kring = kv->k + (size_t)l * kv->n_slots * kvd;
		const float *vring = kv->v + (size_t)l * kv->n_slots * kvd;
		const float *kc = c->kc + sg->row0 * kvd, *vc = c->vc + sg->row0 * kvd;
		const size_t g = h / group;
		const uint32_t p0 = sg->p0, p = c->row_pos[r];
		const uint32_t lo = (kv->window && p + 1 > kv->window) ? p + 1 - kv->window : 0;
		const uint32_t lo_chunk = lo > p0 ? lo : p0;
		const float *qh = c->q + r * dim + h * hd;
		float *s = c->scores + (size_t)omp_get_thread_num() * c->score_cap;
		float *o = c->att + r * dim + h * hd;
		size_t n = 0;

		for (uint32_t j = lo; j < p0; j++)
			s[n++] = scale * c->k->dot_f32(hd, qh, kring + (size_t)(j % kv->n_slots) * kvd + g * hd);
		for (uint32_t j = lo_chunk; j <= p; j++)
			s[n++] = scale * c->k->dot_f32(hd, qh, kc + (size_t)(j - p0) * kvd + g * hd);
		softmax(s, n);
		memset(o, 0, hd * sizeof(float));
		n = 0;
		for (uint32_t j = lo; j < p0; j++)
			c->k->axpy_f32(hd, s[n++], vring + (size_t)(j % kv->n_slots) * kvd + g * hd, o);
		for (uint32_t j = lo_chunk; j <= p; j++)
			c->k->axpy_f32(hd, s[n++], vc + (size_t)(j - p0) * kvd + g * hd, o);
	}
}

/* Writes each segment's keys and values into its ring slots. */
static void kv_store(struct ms_ctx *c, uint32_t l)
{
	for (size_t si = 0; si < c->n_segs; si++) {
		const struct segment *sg = &c->segs[si];
		struct ms_kv *kv = sg->kv;
		const size_t kvd = kv->kv_dim;

		for (size_t i = 0; i < sg->b; i++) {
			size_t slot = (sg->p0 + i) % kv->n_slots;
			size_t off = ((size_t)l * kv->n_slots + slot) * kvd;

			memcpy(kv->k + off, c->kc + (sg->row0 + i) * kvd, kvd * sizeof(float));
			memcpy(kv->v + off, c->vc + (sg->row0 + i) * kvd, kvd * sizeof(float));
		}
	}
}

/* ------------------------------------------------------------------------ */
/* One round (every segment's chunk) through every layer                    */
/* ------------------------------------------------------------------------ */

static float silu(float x)
{
	return x / (1.0f + expf(-x));
}

/*
 * Final norm and output projection for the rows that need logits, in
 * groups of OUT_ROWS so the scratch stays small; each group reads the
 * output matrix once.
 */
static int output_rows(struct ms_ctx *c)
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
			c->out_dst[n++] = sg->all_logits ? sg->logits + (sg->done + i) * vocab : sg->logits;
			if (n < OUT_ROWS)
				continue;
			if ((r = matmul(c, &m->output, c->xn, n, c->out)) < 0)
				return r;
			for (size_t k = 0; k < n; k++)
				memcpy(c->out_dst[k], c->out + k * vocab, vocab * sizeof(float));
			n = 0;
		}
		if (!sg && n) {
			if ((r = matmul(c, &m->output, c->xn, n, c->out)) < 0)
				return r;
			for (size_t k = 0; k < n; k++)
				memcpy(c->out_dst[k], c->out + k * vocab, vocab * sizeof(float));
		}
	}
	return 0;
}

static int eval_round(struct ms_ctx *c, size_t b)
{
	const struct ms_model *m = c->m;
	const struct ms_hparams *hp = &m->hp;
	const size_t dim = hp->dim, ffn = hp->ffn;
	int r;

	for (size_t i = 0; i < b; i++) {
		const uint8_t *row = (const uint8_t *)m->tok_embd.data +
				     (size_t)c->row_tok[i] * m->tok_embd.row_bytes;

		r = dequantize_row(m->tok_embd.type, row, c->x + i * dim, dim);
		if (r < 0)
			return r;
	}
	rope_tables(c, b);

	for (uint32_t l = 0; l < hp->n_layers; l++) {
		const struct ms_layer *L = &m->layers[l];

		rmsnorm_rows(c->xn, c->x, L->attn_norm, b, dim, hp->eps);
		if ((r = matmul(c, &L->wq, c->xn, b, c->q)) < 0 ||
		    (r = matmul(c, &L->wk, c->xn, b, c->kc)) < 0 ||
		    (r = matmul(c, &L->wv, c->xn, b, c->vc)) < 0)
			return r;
		rope_apply(c, c->q, b, dim);
		rope_apply(c, c->kc, b, hp->kv_dim);
		attention(c, l, b);
		kv_store(c, l);
		if ((r = matmul(c, &L->wo, c->att, b, c->tmp)) < 0)
			return r;
		for (size_t i = 0; i < b * dim; i++)
			c->x[i] += c->tmp[i];

		rmsnorm_rows(c->xn, c->x, L->ffn_norm, b, dim, hp->eps);
		if ((r = matmul(c, &L->w_gate, c->xn, b, c->hg)) < 0 ||
		    (r = matmul(c, &L->w_up, c->xn, b, c->hu)) < 0)
			return r;
		{
			const long n = (long)(b * ffn);

#pragma omp parallel for num_threads(c->n_threads) schedule(static) if (n > 16384)
			for (long i = 0; i < n; i++)
				c->hg[i] = silu(c->hg[i]) * c->hu[i];
		}
		if ((r = matmul(c, &L->w_down, c->hg, b, c->tmp)) < 0)
			return r;
		for (size_t i = 0; i < b * dim; i++)
			c->x[i] += c->tmp[i];
		if (c->progress && c->progress(c->progress_ud))
			return -ECANCELED;
	}
	return output_rows(c);
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

int ms_eval_batch(struct ms_ctx *c, const struct ms_batch_item *items, size_t n_items, ms_err *err)
{
	size_t *done, need = 0;
	int r = 0;

	if (n_items > c->max_batch)
		return ms_errf(err, -EINVAL, "%zu sequences in one batch; at most %u", n_items, c->max_batch);
	for (size_t i = 0; i < n_items; i++) {
		const struct ms_kv *kv = items[i].kv;
		size_t keys = (size_t)(kv->window ? kv->window : kv->n_ctx) + max_chunk(c, kv);

		if ((r = check_item(c, &items[i], i, err)) < 0)
			return r;
		need = keys > need ? keys : need;
	}
	if ((r = ensure_scores(c, need, err)) < 0)
		return r;
	done = c->item_done;
	memset(done, 0, n_items * sizeof(*done));
	omp_set_num_threads((int)c->n_threads);

	/* Rounds: every unfinished sequence contributes its next chunk, as many
	 * rows as fit in max_batch, so concurrent decodes share each weight read. */
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
			b = b < c->max_batch - rows ? b : c->max_batch - rows;
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
		if (r == -ECANCELED)
			return ms_errf(err, r, "evaluation abandoned by the caller");
		if (r < 0)
			return ms_errf(err, r, "evaluation failed");
		for (size_t si = 0, i = 0; si < c->n_segs; si++) {
			struct segment *sg = &c->segs[si];

			while (items[i].kv != sg->kv)
				i++;
			sg->kv->pos += (uint32_t)sg->b;
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
