/* A Llama-architecture (Mistral-family) model: hyperparameters, weights in the arena, tokenizer. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gguf.h"
#include "kernels.h"
#include "model.h"
#include "quant.h"

/* Sanity bounds: far above any Mistral-family shape, low enough that no
 * product of them overflows the size arithmetic below. */
#define MAX_DIM     65536u
#define MAX_LAYERS  1024u
#define MAX_HEADS   1024u
#define MAX_FFN     (1u << 20)
#define MAX_VOCAB   (1u << 21)
#define MAX_CTX     (1u << 24)

#define TENSOR_ALIGN 64   /* cache line: kernels may use aligned loads */

void ms_model_free(struct ms_model *m)
{
	if (!m)
		return;
	ms_tokenizer_free(m->tok);
	ms_arena_destroy(m->arena);
	free(m->layers);
	free(m);
}

/* ------------------------------------------------------------------------ */
/* Hyperparameters                                                           */
/* ------------------------------------------------------------------------ */

static int get_req_u32(const struct gguf *g, const char *key, uint32_t *out, ms_err *err)
{
	int r = ms_gguf_get_u32(g, key, out, err);

	if (r == -ENOENT)
		return ms_errf(err, -EINVAL, "model: required key %s is missing", key);
	return r;
}

static int check_range(const char *what, uint32_t v, uint32_t lo, uint32_t hi, ms_err *err)
{
	if (v < lo || v > hi)
		return ms_errf(err, -EINVAL, "model: %s = %u is outside %u..%u", what, v, lo, hi);
	return 0;
}

static int read_hparams(const struct gguf *g, struct ms_hparams *hp, ms_err *err)
{
	struct gguf_str arch;
	int r;

	r = ms_gguf_get_str(g, "general.architecture", &arch, err);
	if (r == -ENOENT)
		return ms_errf(err, -EINVAL, "model: general.architecture is missing");
	if (r < 0)
		return r;
	if (arch.n != 5 || memcmp(arch.p, "llama", 5) != 0)
		return ms_errf(err, -EINVAL, "model: architecture '%.*s' is not supported (only llama)",
			       (int)(arch.n > 64 ? 64 : arch.n), arch.p);

	if ((r = get_req_u32(g, "llama.embedding_length", &hp->dim, err)) < 0 ||
	    (r = get_req_u32(g, "llama.block_count", &hp->n_layers, err)) < 0 ||
	    (r = get_req_u32(g, "llama.attention.head_count", &hp->n_heads, err)) < 0 ||
	    (r = get_req_u32(g, "llama.feed_forward_length", &hp->ffn, err)) < 0 ||
	    (r = get_req_u32(g, "llama.context_length", &hp->ctx_train, err)) < 0)
		return r;
	r = ms_gguf_get_u32(g, "llama.attention.head_count_kv", &hp->n_kv_heads, err);
	if (r == -ENOENT)
		hp->n_kv_heads = hp->n_heads;
	else if (r < 0)
		return r;
	/* Defaults as llama.cpp applies them when a converter left a key out. */
	r = ms_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &hp->eps, err);
	if (r == -ENOENT)
		hp->eps = 1e-5f;
	else if (r < 0)
		return r;
	r = ms_gguf_get_f32(g, "llama.rope.freq_base", &hp->rope_base, err);
	if (r == -ENOENT)
		hp->rope_base = 10000.0f;
	else if (r < 0)
		return r;
	r = ms_gguf_get_u32(g, "llama.attention.sliding_window", &hp->file_window, err);
	if (r == -ENOENT)
		hp->file_window = 0;
	else if (r < 0)
		return r;

	if ((r = check_range("llama.embedding_length", hp->dim, 1, MAX_DIM, err)) < 0 ||
	    (r = check_range("llama.block_count", hp->n_layers, 1, MAX_LAYERS, err)) < 0 ||
	    (r = check_range("llama.attention.head_count", hp->n_heads, 1, MAX_HEADS, err)) < 0 ||
	    (r = check_range("llama.attention.head_count_kv", hp->n_kv_heads, 1, hp->n_heads, err)) < 0 ||
	    (r = check_range("llama.feed_forward_length", hp->ffn, 1, MAX_FFN, err)) < 0 ||
	    (r = check_range("llama.context_length", hp->ctx_train, 1, MAX_CTX, err)) < 0)
		return r;
	if (hp->dim % hp->n_heads)
		return ms_errf(err, -EINVAL, "model: embedding_length %u is not a multiple of head_count %u",
			       hp->dim, hp->n_heads);
	if (hp->n_heads % hp->n_kv_heads)
		return ms_errf(err, -EINVAL, "model: head_count_kv %u does not divide head_count %u",
			       hp->n_kv_heads, hp->n_heads);
	hp->head_dim = hp->dim / hp->n_heads;
	if (hp->head_dim % 2)
		return ms_errf(err, -EINVAL, "model: head dimension %u is odd; RoPE rotates pairs",
			       hp->head_dim);
	hp->kv_dim = hp->head_dim * hp->n_kv_heads;
	r = ms_gguf_get_u32(g, "llama.rope.dimension_count", &hp->rope_dims, err);
	if (r == -ENOENT)
		hp->rope_dims = hp->head_dim;
	else if (r < 0)
		return r;
	if (hp->rope_dims != hp->head_dim)
		return ms_errf(err, -EINVAL, "model: rope.dimension_count %u differs from the head dimension %u (partial RoPE is not supported)",
			       hp->rope_dims, hp->head_dim);
	if (!(hp->eps > 0.0f && hp->eps < 1.0f))
		return ms_errf(err, -EINVAL, "model: layer_norm_rms_epsilon %g is not in (0, 1)",
			       (double)hp->eps);
	if (!(hp->rope_base > 1.0f && hp->rope_base < 1e12f))
		return ms_errf(err, -EINVAL, "model: rope.freq_base %g is out of range", (double)hp->rope_base);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */
/* ------------------------------------------------------------------------ */

/* Looks a tensor up and checks its shape: cols x rows (rows 0 means 1-D). */
static int find_tensor(const struct gguf *g, const char *name, uint64_t cols, uint64_t rows,
		       bool f32_only, const struct gguf_tensor **out, ms_err *err)
{
	const struct gguf_tensor *t = ms_gguf_find_tensor(g, name);
	const struct ggml_type_info *ti;
	uint32_t want_dims = rows ? 2 : 1;

	if (!t)
		return ms_errf(err, -EINVAL, "model: tensor %s is missing", name);
	ti = ms_ggml_type_get(t->type);
	if (!ti || !ti->supported)
		return ms_errf(err, -ENOTSUP, "model: tensor %s has type %s, which this engine does not support",
			       name, ti ? ti->name : "unknown");
	if (f32_only && t->type != GGML_TYPE_F32)
		return ms_errf(err, -ENOTSUP, "model: tensor %s has type %s; norm weights must be F32",
			       name, ti->name);
	if (t->n_dims != want_dims || t->ne[0] != cols || (rows && t->ne[1] != rows)) {
		return ms_errf(err, -EINVAL,
			       "model: tensor %s has shape [%llu, %llu] (%u dims), expected [%llu, %llu]",
			       name, (unsigned long long)t->ne[0],
			       (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), t->n_dims,
			       (unsigned long long)cols, (unsigned long long)(rows ? rows : 1));
	}
	*out = t;
	return 0;
}

/* A tensor to copy and where its arena address goes: a matrix or a norm vector. */
struct wanted {
	const struct gguf_tensor *src;
	struct ms_tensor *mat;
	const float **norm;
};

struct loader {
	const struct gguf *g;
	struct ms_model *m;
	struct wanted *w;   /* [cap] */
	size_t n, cap;
	bool plain_rows;    /* ms_load_opts.plain_rows */
};

static int want(struct loader *ld, const char *name, uint64_t cols, uint64_t rows, bool f32_only,
		struct ms_tensor *mat, const float **norm, ms_err *err)
{
	const struct gguf_tensor *t = NULL;
	int r = find_tensor(ld->g, name, cols, rows, f32_only, &t, err);

	if (r < 0)
		return r;
	if (ld->n == ld->cap)
		return ms_errf(err, -EOVERFLOW, "model: too many tensors");
	ld->w[ld->n++] = (struct wanted){ .src = t, .mat = mat, .norm = norm };
	return 0;
}

/* Records a matrix; its data pointer is filled in after the copy. */
static int want_matrix(struct loader *ld, const char *name, uint64_t cols, uint64_t rows,
		       struct ms_tensor *t, ms_err *err)
{
	int r = want(ld, name, cols, rows, false, t, NULL, err);
	const struct gguf_tensor *gt;
	uint64_t rb;

	if (r < 0)
		return r;
	gt = ld->w[ld->n - 1].src;
	r = ms_ggml_row_bytes(gt->type, cols, &rb);
	if (r < 0)
		return ms_errf(err, r, "model: tensor %s: bad row size", name);
	t->type = gt->type;
	t->cols = cols;
	t->rows = rows;
	t->row_bytes = (size_t)rb;
	if (gt->type < 32)
		ld->m->types_seen[gt->type]++;
	return 0;
}

static int want_norm(struct loader *ld, const char *name, uint64_t dim, const float **p, ms_err *err)
{
	int r = want(ld, name, dim, 0, true, NULL, p, err);

	if (r == 0)
		ld->m->types_seen[GGML_TYPE_F32]++;
	return r;
}

static int collect_tensors(struct loader *ld, ms_err *err)
{
	struct ms_model *m = ld->m;
	const struct ms_hparams *hp = &m->hp;
	char name[96];
	int r;

	if ((r = want_matrix(ld, "token_embd.weight", hp->dim, hp->vocab, &m->tok_embd, err)) < 0 ||
	    (r = want_norm(ld, "output_norm.weight", hp->dim, &m->output_norm, err)) < 0)
		return r;
	if (ms_gguf_find_tensor(ld->g, "output.weight")) {
		r = want_matrix(ld, "output.weight", hp->dim, hp->vocab, &m->output, err);
		if (r < 0)
			return r;
	} else {
		m->tied_output = true;
	}
	for (uint32_t l = 0; l < hp->n_layers; l++) {
		struct ms_layer *L = &m->layers[l];

#define T(suffix) (snprintf(name, sizeof(name), "blk.%u." suffix, l), name)
		if ((r = want_norm(ld, T("attn_norm.weight"), hp->dim, &L->attn_norm, err)) < 0 ||
		    (r = want_matrix(ld, T("attn_q.weight"), hp->dim, hp->dim, &L->wq, err)) < 0 ||
		    (r = want_matrix(ld, T("attn_k.weight"), hp->dim, hp->kv_dim, &L->wk, err)) < 0 ||
		    (r = want_matrix(ld, T("attn_v.weight"), hp->dim, hp->kv_dim, &L->wv, err)) < 0 ||
		    (r = want_matrix(ld, T("attn_output.weight"), hp->dim, hp->dim, &L->wo, err)) < 0 ||
		    (r = want_norm(ld, T("ffn_norm.weight"), hp->dim, &L->ffn_norm, err)) < 0 ||
		    (r = want_matrix(ld, T("ffn_gate.weight"), hp->dim, hp->ffn, &L->w_gate, err)) < 0 ||
		    (r = want_matrix(ld, T("ffn_up.weight"), hp->dim, hp->ffn, &L->w_up, err)) < 0 ||
		    (r = want_matrix(ld, T("ffn_down.weight"), hp->ffn, hp->dim, &L->w_down, err)) < 0)
			return r;
#undef T
	}
	return 0;
}

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/*
 * Interleave this matrix for the x8 kernels? token_embd is read a row at a
 * time (embedding lookup, and the output when tied), so it stays plain.
 */
static bool wants_x8(const struct loader *ld, const struct ms_tensor *mat)
{
	return mat && !ld->plain_rows && mat != &ld->m->tok_embd && ms_x8_type(mat->type) &&
	       mat->rows % MS_X8 == 0;
}

/*
 * Copies every wanted tensor into the arena, interleaving the matrices
 * the x8 kernels read (same bytes, other order: the reordering costs about
 * as much as the copy). Reading the mapping touches each page of the file
 * once; MADV_SEQUENTIAL lets the kernel read ahead and drop pages behind
 * us, so a 15 GB load does not keep two copies in the page cache and the
 * arena at once.
 */
static int copy_weights(struct loader *ld, ms_progress_fn progress, void *ud, ms_err *err)
{
	struct ms_model *m = ld->m;
	uint64_t total = 0, done = 0;

	for (size_t i = 0; i < ld->n; i++)
		total += ld->w[i].src->nbytes;
	for (size_t i = 0; i < ld->n; i++) {
		const struct gguf_tensor *t = ld->w[i].src;
		struct ms_tensor *mat = ld->w[i].mat;
		void *p = ms_arena_alloc(m->arena, t->nbytes, TENSOR_ALIGN);
		const bool x8 = wants_x8(ld, mat) && t->nbytes == mat->rows * mat->row_bytes;
		/* Chunked so progress moves during one 500 MB tensor; whole groups when interleaving. */
		uint64_t step = 64u << 20;

		if (!p)
			return ms_errf(err, -ENOMEM, "model: arena exhausted at tensor %s", t->name);
		if (x8)
			step = (step / (MS_X8 * mat->row_bytes) + 1) * MS_X8 * mat->row_bytes;
		for (uint64_t off = 0; off < t->nbytes; off += step) {
			uint64_t len = t->nbytes - off < step ? t->nbytes - off : step;
			const uint8_t *src = (const uint8_t *)t->data + off;

			if (x8)
				(void)ms_repack_x8(mat->type, src, mat->row_bytes, mat->cols,
						   len / (MS_X8 * mat->row_bytes), (uint8_t *)p + off);
			else
				memcpy((uint8_t *)p + off, src, len);
			done += len;
			if (progress && total)
				progress(ud, done, total);
		}
		if (mat) {
			mat->data = p;
			mat->layout = x8 ? MS_LAYOUT_X8 : MS_LAYOUT_ROWS;
		} else {
			*ld->w[i].norm = p;
		}
	}
	m->weight_bytes = total;
	return 0;
}

static bool contains_ci(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	for (; *hay; hay++) {
		size_t i = 0;

		while (i < n && hay[i] && tolower((unsigned char)hay[i]) == needle[i])
			i++;
		if (i == n)
			return true;
	}
	return false;
}

/* "v0.1" as a version, not the start of "v0.12". */
static bool has_v01(const char *s)
{
	for (const char *p = s; (p = strstr(p, "v0.1")) != NULL; p++) {
		if (!isdigit((unsigned char)p[4]))
			return true;
	}
	return false;
}

/* Mistral 7B v0.1 files carry no window key but were trained with W = 4096. */
static bool looks_like_mistral_v01(const char *s)
{
	char low[256];
	size_t i;

	for (i = 0; i < sizeof(low) - 1 && s[i]; i++)
		low[i] = (char)tolower((unsigned char)s[i]);
	low[i] = '\0';
	return contains_ci(low, "mistral") && contains_ci(low, "7b") && has_v01(low);
}

static void choose_window(struct ms_model *m, int32_t mode, const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	if (mode > 0) {
		m->window = (uint32_t)mode;
		m->window_source = "config";
	} else if (mode == MS_WINDOW_OFF) {
		m->window = 0;
		m->window_source = "none (switched off)";
	} else if (m->hp.file_window) {
		m->window = m->hp.file_window;
		m->window_source = "file";
	} else if (looks_like_mistral_v01(m->name) || looks_like_mistral_v01(base)) {
		m->window = 4096;
		m->window_source = "auto (Mistral 7B v0.1)";
	} else {
		m->window = 0;
		m->window_source = "none";
	}
}

static void set_name(struct ms_model *m, const struct gguf *g, const char *path)
{
	struct gguf_str s;
	const char *base = strrchr(path, '/');

	if (ms_gguf_get_str(g, "general.name", &s, NULL) == 0 && s.n > 0) {
		size_t n = s.n < sizeof(m->name) - 1 ? (size_t)s.n : sizeof(m->name) - 1;

		memcpy(m->name, s.p, n);
		m->name[n] = '\0';
	} else {
		snprintf(m->name, sizeof(m->name), "%s", base ? base + 1 : path);
	}
}

/* The whole load, or (out NULL) every check of it short of the arena and the copy. */
static int load(const char *path, const struct ms_load_opts *opts, ms_progress_fn progress,
		void *ud, struct ms_model **out, ms_err *err)
{
	struct ms_load_opts def = { .arena = { .policy = MS_POLICY_THP }, .window = MS_WINDOW_AUTO };
	struct loader ld = { 0 };
	struct ms_model *m = NULL;
	struct gguf *g = NULL;
	uint32_t vsize;
	size_t arena_bytes = 0;
	int r;

	if (!opts)
		opts = &def;
	r = ms_gguf_open(path, &g, err);
	if (r < 0)
		return r;
	m = calloc(1, sizeof(*m));
	if (!m) {
		r = ms_errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if ((r = read_hparams(g, &m->hp, err)) < 0)
		goto fail;
	if ((r = ms_tokenizer_load(g, &m->tok, err)) < 0)
		goto fail;
	m->hp.vocab = ms_tok_n_vocab(m->tok);
	if ((r = check_range("vocabulary size", m->hp.vocab, 1, MAX_VOCAB, err)) < 0)
		goto fail;
	r = ms_gguf_get_u32(g, "llama.vocab_size", &vsize, err);
	if (r == 0 && vsize != m->hp.vocab) {
		r = ms_errf(err, -EINVAL, "model: llama.vocab_size %u differs from the %u tokenizer tokens",
			    vsize, m->hp.vocab);
		goto fail;
	} else if (r < 0 && r != -ENOENT) {
		goto fail;
	}
	set_name(m, g, path);
	choose_window(m, opts->window, path);

	m->layers = calloc(m->hp.n_layers, sizeof(*m->layers));
	ld.cap = 3 + 9 * (size_t)m->hp.n_layers;
	ld.w = calloc(ld.cap, sizeof(*ld.w));
	if (!m->layers || !ld.w) {
		r = ms_errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	ld.g = g;
	ld.m = m;
	ld.plain_rows = opts->plain_rows;
	if ((r = collect_tensors(&ld, err)) < 0)
		goto fail;
	if (!out) {
		/* checked: hyperparameters, tokenizer, every tensor's name, type and shape */
		ms_err_clear(err);
		r = 0;
		goto release;
	}
	for (size_t i = 0; i < ld.n; i++)
		arena_bytes += align_up(ld.w[i].src->nbytes, TENSOR_ALIGN);
	m->page_policy = opts->arena.policy;
	if ((r = ms_arena_create(arena_bytes, &opts->arena, &m->arena, err)) < 0)
		goto fail;
	if (g->mapped)
		madvise((void *)g->base, g->size, MADV_SEQUENTIAL);
	if ((r = copy_weights(&ld, progress, ud, err)) < 0)
		goto fail;
	if (m->tied_output)
		m->output = m->tok_embd;

	free(ld.w);
	ms_gguf_close(g);
	/* Optional keys that were absent left -ENOENT behind; success reports nothing. */
	ms_err_clear(err);
	*out = m;
	return 0;
fail:
release:
	free(ld.w);
	ms_model_free(m);
	ms_gguf_close(g);
	return r;
}

int ms_model_load(const char *path, const struct ms_load_opts *opts,
		  ms_progress_fn progress, void *ud,
		  struct ms_model **out, ms_err *err)
{
	if (!out)
		return ms_errf(err, -EINVAL, "model: nowhere to put the model");
	return load(path, opts, progress, ud, out, err);
}

int ms_model_check(const char *path, const struct ms_load_opts *opts, ms_err *err)
{
	return load(path, opts, NULL, NULL, NULL, err);
}
