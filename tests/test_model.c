/* Unit tests for engine/model.c: small llama GGUF files written on the fly, loaded, validated and rejected. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "kernels.h"
#include "model.h"
#include "quant.h"
#include "../tests/tap.h"

#include "gguf_writer.h"

/* The tensor shapes every generated file uses (the keys may say otherwise). */
#define D    64u   /* dim */
#define NL   2u    /* layers */
#define NH   4u    /* heads */
#define NKV  2u    /* kv heads */
#define FF   96u   /* ffn */
#define KVD  (D / NH * NKV)
#define VOC  512u  /* the bundled tokenizer's size */

#define ABSENT (-1)

/* What one generated file contains; spec_default() is the valid model. */
struct spec {
	const char *arch;         /* NULL: key left out */
	const char *name;         /* general.name, NULL: left out */
	int64_t dim, layers, heads, kv_heads, ffn, ctx;   /* ABSENT: left out */
	int64_t rope_dims, window, vocab_size;            /* ABSENT: left out */
	bool has_eps, has_rope_base;
	float eps, rope_base;
	const char *as_string;    /* this key is written as the string "64" instead */
	bool tied;                /* no output.weight */
	bool no_tokenizer;
	uint32_t tok_type, out_type, mat_type;
	const char *drop;         /* tensor left out */
	const char *odd;          /* tensor written with odd_dims / odd_ne / odd_type */
	uint32_t odd_dims, odd_type;
	uint64_t odd_ne[4];
};

static struct spec spec_default(void)
{
	return (struct spec){
		.arch = "llama", .name = "Tiny Test",
		.dim = D, .layers = NL, .heads = NH, .kv_heads = NKV, .ffn = FF, .ctx = 256,
		.rope_dims = ABSENT, .window = ABSENT, .vocab_size = ABSENT,
		.tok_type = GGML_TYPE_F32, .out_type = GGML_TYPE_F32, .mat_type = GGML_TYPE_F32,
	};
}

static struct gguf *vocab_src;   /* stories260K.gguf: its tokenizer.* keys are copied */
static char dir[4096];

/* The tensors of the last file written, in file order, with their byte sizes. */
#define MAX_T 64
static char t_names[MAX_T][GGUF_MAX_NAME + 1];
static uint64_t t_bytes[MAX_T];
static unsigned n_t;
static uint64_t t_total;

static uint8_t pattern(unsigned idx, uint64_t j)
{
	return (uint8_t)(idx * 37u + (unsigned)j * 13u + (unsigned)(j >> 8));
}

static void make_dir(void)
{
	const char *base = getenv("TEST_TMPDIR");

	snprintf(dir, sizeof(dir), "%s/test_model.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(dir)) {
		diag("mkdtemp %s: %s", dir, strerror(errno));
		abort();
	}
	/* The mlock test reads the files as nobody. */
	chmod(dir, 0755);
}

static void remove_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[4400];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static int add_tensor(struct gguf_writer *w, const struct spec *s, const char *name,
		      uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint32_t type)
{
	uint64_t ne[4] = { ne0, ne1, 1, 1 };

	if (s->drop && !strcmp(s->drop, name))
		return 0;
	if (s->odd && !strcmp(s->odd, name)) {
		n_dims = s->odd_dims;
		memcpy(ne, s->odd_ne, sizeof(ne));
		type = s->odd_type;
	}
	if (n_t == MAX_T)
		return -1;
	snprintf(t_names[n_t], sizeof(t_names[n_t]), "%s", name);
	n_t++;
	return gguf_writer_add_tensor(w, name, n_dims, ne, type);
}

static int add_u(struct gguf_writer *w, const struct spec *s, const char *key, int64_t v)
{
	if (s->as_string && !strcmp(s->as_string, key))
		return gguf_writer_add_str(w, key, "64");
	if (v == ABSENT)
		return 0;
	return gguf_writer_add_u32(w, key, (uint32_t)v);
}

static int add_f(struct gguf_writer *w, const struct spec *s, const char *key, bool has, float v)
{
	if (s->as_string && !strcmp(s->as_string, key))
		return gguf_writer_add_str(w, key, "64");
	return has ? gguf_writer_add_f32(w, key, v) : 0;
}

static int fill_meta(struct gguf_writer *w, const struct spec *s)
{
	char name[96];
	int r = 0;

	if (s->arch)
		r |= gguf_writer_add_str(w, "general.architecture", s->arch);
	if (s->name)
		r |= gguf_writer_add_str(w, "general.name", s->name);
	r |= add_u(w, s, "llama.embedding_length", s->dim);
	r |= add_u(w, s, "llama.block_count", s->layers);
	r |= add_u(w, s, "llama.attention.head_count", s->heads);
	r |= add_u(w, s, "llama.attention.head_count_kv", s->kv_heads);
	r |= add_u(w, s, "llama.feed_forward_length", s->ffn);
	r |= add_u(w, s, "llama.context_length", s->ctx);
	r |= add_u(w, s, "llama.rope.dimension_count", s->rope_dims);
	r |= add_u(w, s, "llama.attention.sliding_window", s->window);
	r |= add_u(w, s, "llama.vocab_size", s->vocab_size);
	r |= add_f(w, s, "llama.attention.layer_norm_rms_epsilon", s->has_eps, s->eps);
	r |= add_f(w, s, "llama.rope.freq_base", s->has_rope_base, s->rope_base);
	if (r)
		return -1;
	for (uint64_t i = 0; !s->no_tokenizer && i < vocab_src->n_kv; i++) {
		const struct gguf_kv *kv = &vocab_src->kv[i];

		if (kv->key.n > 10 && !memcmp(kv->key.p, "tokenizer.", 10) &&
		    gguf_writer_add_value(w, kv->key.p, kv->key.n, &kv->val))
			return -1;
	}

	n_t = 0;
	if (add_tensor(w, s, "token_embd.weight", 2, D, VOC, s->tok_type) ||
	    add_tensor(w, s, "output_norm.weight", 1, D, 1, GGML_TYPE_F32) ||
	    (!s->tied && add_tensor(w, s, "output.weight", 2, D, VOC, s->out_type)))
		return -1;
	for (unsigned l = 0; l < NL; l++) {
#define T(suffix) (snprintf(name, sizeof(name), "blk.%u." suffix, l), name)
		if (add_tensor(w, s, T("attn_norm.weight"), 1, D, 1, GGML_TYPE_F32) ||
		    add_tensor(w, s, T("attn_q.weight"), 2, D, D, s->mat_type) ||
		    add_tensor(w, s, T("attn_k.weight"), 2, D, KVD, s->mat_type) ||
		    add_tensor(w, s, T("attn_v.weight"), 2, D, KVD, s->mat_type) ||
		    add_tensor(w, s, T("attn_output.weight"), 2, D, D, s->mat_type) ||
		    add_tensor(w, s, T("ffn_norm.weight"), 1, D, 1, GGML_TYPE_F32) ||
		    add_tensor(w, s, T("ffn_gate.weight"), 2, D, FF, s->mat_type) ||
		    add_tensor(w, s, T("ffn_up.weight"), 2, D, FF, s->mat_type) ||
		    add_tensor(w, s, T("ffn_down.weight"), 2, FF, D, s->mat_type))
			return -1;
#undef T
	}
	return 0;
}

/* Writes the file for s as dir/fname; the full path goes to path. false (with a diag) on failure. */
static bool write_model(const struct spec *s, const char *fname, char *path, size_t cap)
{
	struct gguf_writer *w = gguf_writer_new(0);
	uint8_t buf[4096];
	bool good = false;
	int fd = -1;

	snprintf(path, cap, "%s/%s", dir, fname);
	if (!w || fill_meta(w, s) < 0)
		goto out;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || gguf_writer_begin(w, fd) < 0)
		goto out;
	t_total = 0;
	for (unsigned i = 0; i < n_t; i++) {
		t_bytes[i] = gguf_writer_tensor_bytes(w, i);
		t_total += t_bytes[i];
		for (uint64_t off = 0; off < t_bytes[i]; off += sizeof(buf)) {
			size_t n = t_bytes[i] - off < sizeof(buf) ? (size_t)(t_bytes[i] - off) : sizeof(buf);

			for (size_t j = 0; j < n; j++)
				buf[j] = pattern(i, off + j);
			if (gguf_writer_write(w, buf, n) < 0)
				goto out;
		}
	}
	good = gguf_writer_end(w) == 0;
out:
	if (!good)
		diag("writing %s failed: %s", path, w ? gguf_writer_errmsg(w) : "no writer");
	if (fd >= 0)
		close(fd);
	gguf_writer_free(w);
	return good;
}

/* ------------------------------------------------------------------------ */
/* Leak probes: descriptors and mappings of the test directory               */
/* ------------------------------------------------------------------------ */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int count_dir_mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[8192];
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, dir) != NULL;
	fclose(f);
	return n;
}

/* ------------------------------------------------------------------------ */
/* Valid models                                                              */
/* ------------------------------------------------------------------------ */

struct prog {
	int calls;
	uint64_t done, total;        /* the last call's bytes */
	double first, last;
	bool decreased, out_of_range;
};

static void on_progress(void *ud, uint64_t done, uint64_t total)
{
	struct prog *p = ud;
	double frac = total ? (double)done / (double)total : -1;

	if (p->calls++ == 0)
		p->first = frac;
	else if (frac < p->last)
		p->decreased = true;
	if (!(frac > 0.0 && frac <= 1.0))
		p->out_of_range = true;
	p->last = frac;
	p->done = done;
	p->total = total;
}

static struct ms_load_opts opts_none(void)
{
	return (struct ms_load_opts){ .arena = { .policy = MS_POLICY_NONE }, .window = MS_WINDOW_AUTO };
}

static int find_idx(const char *name)
{
	for (unsigned i = 0; i < n_t; i++)
		if (!strcmp(t_names[i], name))
			return (int)i;
	return -1;
}

/*
 * File offset of byte j of an interleaved (MS_LAYOUT_X8) tensor, from the
 * layout's description in kernels.h: groups of 8 rows; per block index the
 * 8 rows' f16 scales, then 4-byte pieces of their codes, row by row for
 * each piece.
 */
static uint64_t x8_source(uint64_t j, uint64_t rb, uint64_t bb)
{
	uint64_t g = j / (8 * rb), o = j % (8 * rb);
	uint64_t i = o / (8 * bb), q = o % (8 * bb);
	uint64_t base = g * 8 * rb + i * bb;

	if (q < 16)
		return base + (q / 2) * rb + q % 2;
	q -= 16;
	return base + (q % 32 / 4) * rb + 2 + 4 * (q / 32) + q % 4;
}

/*
 * Checks that p lies in the used part of the arena, is aligned, and holds
 * the file's bytes (in the interleaved order when mat says so).
 */
static bool tensor_ok(const struct ms_model *m, const char *name, const void *p, const struct ms_tensor *mat)
{
	const uint8_t *b = p;
	const bool x8 = mat && mat->layout == MS_LAYOUT_X8;
	const struct ggml_type_info *ti = mat ? ms_ggml_type_get(mat->type) : NULL;
	int idx = find_idx(name);

	if (!b || idx < 0) {
		diag("%s: pointer %p, file index %d", name, p, idx);
		return false;
	}
	if (b < m->arena->base || (uint64_t)(b - m->arena->base) + t_bytes[idx] > m->arena->used ||
	    (uintptr_t)b % 64) {
		diag("%s at %p is outside the arena [%p, +%zu) or misaligned", name, p,
		     (void *)m->arena->base, m->arena->used);
		return false;
	}
	if (x8 && (!ti || mat->rows % 8 || mat == &m->tok_embd ||
		   (mat->type != GGML_TYPE_Q8_0 && mat->type != GGML_TYPE_Q4_0 && mat->type != GGML_TYPE_F16 &&
		    mat->type != GGML_TYPE_BF16))) {
		diag("%s: interleaved, but type %u rows %llu", name, mat->type, (unsigned long long)mat->rows);
		return false;
	}
	for (uint64_t j = 0; j < t_bytes[idx]; j++) {
		if (b[j] != pattern((unsigned)idx, x8 ? x8_source(j, mat->row_bytes, ti->bytes) : j)) {
			diag("%s: byte %llu differs from the file", name, (unsigned long long)j);
			return false;
		}
	}
	return true;
}

static bool mat_ok(const struct ms_model *m, const char *name, const struct ms_tensor *t,
		   uint32_t type, uint64_t cols, uint64_t rows)
{
	uint64_t rb = 0;

	ms_ggml_row_bytes(type, cols, &rb);
	if (t->type != type || t->cols != cols || t->rows != rows || t->row_bytes != rb) {
		diag("%s: type %u cols %llu rows %llu row_bytes %zu", name, t->type,
		     (unsigned long long)t->cols, (unsigned long long)t->rows, t->row_bytes);
		return false;
	}
	return tensor_ok(m, name, t->data, t);
}

static bool all_tensors_ok(const struct ms_model *m, const struct spec *s)
{
	char name[96];
	bool good = true;

	good &= mat_ok(m, "token_embd.weight", &m->tok_embd, s->tok_type, D, VOC);
	good &= tensor_ok(m, "output_norm.weight", m->output_norm, NULL);
	if (!s->tied)
		good &= mat_ok(m, "output.weight", &m->output, s->out_type, D, VOC);
	for (unsigned l = 0; l < NL; l++) {
		const struct ms_layer *L = &m->layers[l];

#define T(suffix) (snprintf(name, sizeof(name), "blk.%u." suffix, l), name)
		good &= tensor_ok(m, T("attn_norm.weight"), L->attn_norm, NULL);
		good &= mat_ok(m, T("attn_q.weight"), &L->wq, s->mat_type, D, D);
		good &= mat_ok(m, T("attn_k.weight"), &L->wk, s->mat_type, D, KVD);
		good &= mat_ok(m, T("attn_v.weight"), &L->wv, s->mat_type, D, KVD);
		good &= mat_ok(m, T("attn_output.weight"), &L->wo, s->mat_type, D, D);
		good &= tensor_ok(m, T("ffn_norm.weight"), L->ffn_norm, NULL);
		good &= mat_ok(m, T("ffn_gate.weight"), &L->w_gate, s->mat_type, D, FF);
		good &= mat_ok(m, T("ffn_up.weight"), &L->w_up, s->mat_type, D, FF);
		good &= mat_ok(m, T("ffn_down.weight"), &L->w_down, s->mat_type, FF, D);
#undef T
	}
	return good;
}

static void test_valid(void)
{
	struct spec s = spec_default();
	struct ms_load_opts o = opts_none();
	struct ms_model *m = NULL;
	struct prog pg = { 0 };
	ms_err err = { 0 };
	char path[4400];
	int r;

	if (!write_model(&s, "valid.gguf", path, sizeof(path))) {
		ok(0, "valid model written");
		return;
	}
	{
		int fds0 = count_fds();

		r = ms_model_check(path, &o, &err);
		ok(r == 0 && err.code == 0 && count_fds() == fds0 && count_dir_mappings() == 0,
		   "ms_model_check passes the valid model, nothing left open or mapped (%d: %s)", r, err.msg);
		ok(ms_model_load(path, &o, NULL, NULL, NULL, &err) == -EINVAL, "ms_model_load without out: -EINVAL");
		memset(&err, 0, sizeof(err));
	}
	r = ms_model_load(path, &o, on_progress, &pg, &m, &err);
	if (!ok(r == 0 && m, "valid model loads (%d: %s)", r, err.msg))
		return;
	ok(err.code == 0 && err.msg[0] == '\0', "a successful load leaves no error behind ('%s')", err.msg);
	ok(m->hp.dim == D && m->hp.n_layers == NL && m->hp.n_heads == NH &&
	   m->hp.n_kv_heads == NKV && m->hp.ffn == FF && m->hp.ctx_train == 256 &&
	   m->hp.vocab == VOC,
	   "hparams: dim %u layers %u heads %u kv %u ffn %u ctx %u vocab %u", m->hp.dim,
	   m->hp.n_layers, m->hp.n_heads, m->hp.n_kv_heads, m->hp.ffn, m->hp.ctx_train, m->hp.vocab);
	ok(m->hp.head_dim == 16 && m->hp.kv_dim == 32, "head_dim %u (16), kv_dim %u (32)",
	   m->hp.head_dim, m->hp.kv_dim);
	ok(m->hp.rope_dims == 16, "rope_dims defaults to head_dim (%u)", m->hp.rope_dims);
	ok(m->hp.eps == 1e-5f, "eps defaults to 1e-5 (%g)", (double)m->hp.eps);
	ok(m->hp.rope_base == 10000.0f, "rope base defaults to 10000 (%g)", (double)m->hp.rope_base);
	ok(m->hp.file_window == 0 && m->window == 0 && !strcmp(m->window_source, "none"),
	   "no window key, not v0.1: window %u source '%s'", m->window, m->window_source);
	ok(!strcmp(m->name, "Tiny Test"), "name from general.name ('%s')", m->name);
	ok(!m->tied_output, "output.weight present: not tied");
	ok(all_tensors_ok(m, &s), "every tensor is in the arena, aligned, shaped and copied byte for byte");
	ok(m->weight_bytes == t_total && t_total > 0,
	   "weight_bytes %llu = sum of tensor bytes %llu", (unsigned long long)m->weight_bytes,
	   (unsigned long long)t_total);
	ok(m->arena->used <= m->arena->size && m->arena->used >= t_total,
	   "arena used %zu within size %zu", m->arena->used, m->arena->size);
	ok(m->types_seen[GGML_TYPE_F32] == n_t && m->types_seen[GGML_TYPE_F16] == 0 &&
	   m->types_seen[GGML_TYPE_Q8_0] == 0,
	   "types_seen: %u F32 (%u tensors)", m->types_seen[GGML_TYPE_F32], n_t);
	ok(m->arena->kind == MS_PAGES_NORMAL && !m->arena->note[0],
	   "policy none: normal pages (%s), no fallback note '%s'",
	   ms_page_kind_name(m->arena->kind), m->arena->note);
	ok(pg.calls >= 1 && pg.last == 1.0 && !pg.decreased && !pg.out_of_range,
	   "progress: %d calls, first %g, last %g, never decreasing", pg.calls, pg.first, pg.last);
	ok(pg.total == m->weight_bytes && pg.done == pg.total,
	   "progress ends with %llu of %llu bytes, the weight bytes", (unsigned long long)pg.done,
	   (unsigned long long)pg.total);
	ok(m->tok && ms_tok_n_vocab(m->tok) == VOC && ms_tok_bos(m->tok) == 1,
	   "tokenizer built (%u tokens)", m->tok ? ms_tok_n_vocab(m->tok) : 0);
	ms_model_free(m);
	unlink(path);

	/* Explicit keys, mixed types, tied output, name from the basename. */
	s = spec_default();
	s.name = NULL;
	s.tied = true;
	s.has_eps = true;
	s.eps = 1e-6f;
	s.has_rope_base = true;
	s.rope_base = 1e6f;
	s.rope_dims = 16;
	s.vocab_size = VOC;
	s.tok_type = GGML_TYPE_F16;
	s.mat_type = GGML_TYPE_Q8_0;
	m = NULL;
	memset(&pg, 0, sizeof(pg));
	if (!write_model(&s, "tied-q8.gguf", path, sizeof(path))) {
		ok(0, "tied model written");
		return;
	}
	r = ms_model_load(path, &o, on_progress, &pg, &m, &err);
	if (!ok(r == 0 && m, "tied Q8_0 model loads (%d: %s)", r, err.msg))
		return;
	ok(m->tied_output && m->output.data == m->tok_embd.data &&
	   !memcmp(&m->output, &m->tok_embd, sizeof(m->output)),
	   "output.weight absent: tied, output equals token_embd");
	ok(m->hp.eps == 1e-6f && m->hp.rope_base == 1e6f && m->hp.rope_dims == 16,
	   "eps %g, rope base %g, rope dims %u read from the file", (double)m->hp.eps,
	   (double)m->hp.rope_base, m->hp.rope_dims);
	ok(!strcmp(m->name, "tied-q8.gguf"), "no general.name: name is the basename ('%s')", m->name);
	ok(all_tensors_ok(m, &s), "tied Q8_0 model: every tensor in the arena and copied");
	ok(m->weight_bytes == t_total, "tied: weight_bytes %llu = %llu",
	   (unsigned long long)m->weight_bytes, (unsigned long long)t_total);
	ok(m->types_seen[GGML_TYPE_F32] == 2 * NL + 1 && m->types_seen[GGML_TYPE_F16] == 1 &&
	   m->types_seen[GGML_TYPE_Q8_0] == 7 * NL,
	   "types_seen: F32 %u (5), F16 %u (1), Q8_0 %u (14)", m->types_seen[GGML_TYPE_F32],
	   m->types_seen[GGML_TYPE_F16], m->types_seen[GGML_TYPE_Q8_0]);
	ok(pg.calls >= 1 && pg.last == 1.0 && !pg.decreased && !pg.out_of_range,
	   "tied: progress ends at 1.0 (%d calls)", pg.calls);
	ok(m->layers[0].wq.layout == MS_LAYOUT_X8 && m->layers[NL - 1].w_down.layout == MS_LAYOUT_X8 &&
	   m->layers[0].wk.layout == MS_LAYOUT_X8 && m->tok_embd.layout == MS_LAYOUT_ROWS,
	   "Q8_0 matrices are interleaved at load, token_embd (F16, read by row) is not");
	ms_model_free(m);
	m = NULL;
	o.plain_rows = true;
	r = ms_model_load(path, &o, NULL, NULL, &m, &err);
	o.plain_rows = false;
	ok(r == 0 && m && m->layers[0].wq.layout == MS_LAYOUT_ROWS &&
	   m->layers[NL - 1].w_down.layout == MS_LAYOUT_ROWS && all_tensors_ok(m, &s),
	   "plain_rows: every matrix stays in file order, byte for byte (%d)", r);
	ms_model_free(m);
	unlink(path);

	/* F16 and BF16 matrices are interleaved too: one-element blocks (kernels.h). */
	for (int bf = 0; bf < 2; bf++) {
		s = spec_default();
		s.mat_type = bf ? GGML_TYPE_BF16 : GGML_TYPE_F16;
		m = NULL;
		if (!write_model(&s, bf ? "bf16.gguf" : "f16.gguf", path, sizeof(path))) {
			ok(0, "%s model written", bf ? "BF16" : "F16");
			continue;
		}
		r = ms_model_load(path, &o, NULL, NULL, &m, &err);
		ok(r == 0 && m && m->layers[0].wq.layout == MS_LAYOUT_X8 &&
		   m->layers[NL - 1].w_down.layout == MS_LAYOUT_X8 && all_tensors_ok(m, &s),
		   "%s matrices are interleaved at load, the file's bytes in the documented order (%d: %s)",
		   bf ? "BF16" : "F16", r, err.msg);
		ms_model_free(m);
		unlink(path);
	}

	/* A long general.name is truncated, NUL-terminated; NULL opts and progress work. */
	s = spec_default();
	s.name = "Mistral-7B-Instruct-v0.2-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	m = NULL;
	if (write_model(&s, "longname.gguf", path, sizeof(path)) &&
	    ok(ms_model_load(path, NULL, NULL, NULL, &m, &err) == 0 && m,
	       "NULL opts and NULL progress load (%s)", err.msg)) {
		ok(strlen(m->name) == sizeof(m->name) - 1 && !strncmp(m->name, s.name, sizeof(m->name) - 1),
		   "200-byte general.name truncated to %zu bytes", strlen(m->name));
		ok(m->window == 0, "Mistral v0.2 by name: no window");
		ms_model_free(m);
	}
	unlink(path);
}

/* Window source rules (numerics.md 2). */
static void test_window(void)
{
	static const struct {
		const char *what, *name, *file;
		int64_t key;
		int32_t mode;
		uint32_t window;
		const char *source;   /* prefix */
	} c[] = {
		{ "file key", "Mistral-7B-Instruct-v0.1", "w1.gguf", 32, MS_WINDOW_AUTO, 32, "file" },
		{ "v0.1 by name", "Mistral-7B-Instruct-v0.1", "w2.gguf", ABSENT, MS_WINDOW_AUTO, 4096, "auto" },
		{ "v0.1 by basename", NULL, "mistral-7b-v0.1.Q8_0.gguf", ABSENT, MS_WINDOW_AUTO, 4096, "auto" },
		{ "lower-case name", "mistral 7b v0.1 base", "w3.gguf", ABSENT, MS_WINDOW_AUTO, 4096, "auto" },
		{ "name without v0.1", "Mistral-7B-Instruct-v0.2", "w4.gguf", ABSENT, MS_WINDOW_AUTO, 0, "none" },
		{ "v0.1 but not Mistral 7B", "Mixtral-8x7B-v0.1", "w5.gguf", ABSENT, MS_WINDOW_AUTO, 0, "none" },
		{ "off beats the file key", "x", "w6.gguf", 32, MS_WINDOW_OFF, 0, "none" },
		{ "off beats v0.1", "Mistral-7B-v0.1", "w7.gguf", ABSENT, MS_WINDOW_OFF, 0, "none" },
		{ "config 100", "x", "w8.gguf", ABSENT, 100, 100, "config" },
		{ "config beats the file key", "x", "w9.gguf", 32, 100, 100, "config" },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct spec s = spec_default();
		struct ms_load_opts o = opts_none();
		struct ms_model *m = NULL;
		ms_err err = { 0 };
		char path[4400];
		int r;

		s.name = c[i].name;
		s.window = c[i].key;
		o.window = c[i].mode;
		if (!write_model(&s, c[i].file, path, sizeof(path))) {
			ok(0, "window: %s: file written", c[i].what);
			continue;
		}
		r = ms_model_load(path, &o, NULL, NULL, &m, &err);
		ok(r == 0 && m && m->window == c[i].window &&
		   !strncmp(m->window_source, c[i].source, strlen(c[i].source)) &&
		   m->hp.file_window == (c[i].key == ABSENT ? 0 : (uint32_t)c[i].key),
		   "window: %s -> %u '%s' (got %d: %u '%s' %s)", c[i].what, c[i].window, c[i].source,
		   r, m ? m->window : 0, m ? m->window_source : "", err.msg);
		ms_model_free(m);
		unlink(path);
	}
}

/* ------------------------------------------------------------------------ */
/* Rejected models (reliability.md A.11)                                     */
/* ------------------------------------------------------------------------ */

enum tweak_kind {
	K_NONE, K_ARCH, K_NOARCH, K_DIM, K_LAYERS, K_HEADS, K_KV, K_FFN, K_CTX,
	K_ROPE_DIMS, K_EPS, K_BASE, K_VOCAB, K_NOTOK, K_DROP, K_ODD, K_STRING,
};

struct bad_case {
	const char *what;
	enum tweak_kind kind;
	int64_t v;              /* new key value (ABSENT removes it) */
	float f;
	const char *str;        /* arch / tensor / key name */
	uint32_t odd_dims, odd_type;
	uint64_t odd_ne[4];
	int code;               /* expected return */
	const char *msg[3];     /* substrings the message must contain */
};

static void apply(struct spec *s, const struct bad_case *c)
{
	switch (c->kind) {
	case K_NONE: break;
	case K_ARCH: s->arch = c->str; break;
	case K_NOARCH: s->arch = NULL; break;
	case K_DIM: s->dim = c->v; break;
	case K_LAYERS: s->layers = c->v; break;
	case K_HEADS: s->heads = c->v; break;
	case K_KV: s->kv_heads = c->v; break;
	case K_FFN: s->ffn = c->v; break;
	case K_CTX: s->ctx = c->v; break;
	case K_ROPE_DIMS: s->rope_dims = c->v; break;
	case K_EPS: s->has_eps = true; s->eps = c->f; break;
	case K_BASE: s->has_rope_base = true; s->rope_base = c->f; break;
	case K_VOCAB: s->vocab_size = c->v; break;
	case K_NOTOK: s->no_tokenizer = true; break;
	case K_DROP: s->drop = c->str; break;
	case K_STRING: s->as_string = c->str; break;
	case K_ODD:
		s->odd = c->str;
		s->odd_dims = c->odd_dims;
		s->odd_type = c->odd_type;
		memcpy(s->odd_ne, c->odd_ne, sizeof(s->odd_ne));
		break;
	}
}

static void test_bad(void)
{
	static const struct bad_case c[] = {
		{ "architecture gpt2", K_ARCH, 0, 0, "gpt2", 0, 0, {0}, -EINVAL, { "gpt2", "llama" } },
		{ "architecture missing", K_NOARCH, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "general.architecture" } },
		{ "embedding_length missing", K_DIM, ABSENT, 0, NULL, 0, 0, {0}, -EINVAL, { "llama.embedding_length", "missing" } },
		{ "block_count missing", K_LAYERS, ABSENT, 0, NULL, 0, 0, {0}, -EINVAL, { "llama.block_count", "missing" } },
		{ "head_count missing", K_HEADS, ABSENT, 0, NULL, 0, 0, {0}, -EINVAL, { "llama.attention.head_count", "missing" } },
		{ "feed_forward_length missing", K_FFN, ABSENT, 0, NULL, 0, 0, {0}, -EINVAL, { "llama.feed_forward_length", "missing" } },
		{ "context_length missing", K_CTX, ABSENT, 0, NULL, 0, 0, {0}, -EINVAL, { "llama.context_length", "missing" } },
		{ "embedding_length stored as a string", K_STRING, 0, 0, "llama.embedding_length", 0, 0, {0}, -EINVAL, { "llama.embedding_length", "string" } },
		{ "epsilon stored as a string", K_STRING, 0, 0, "llama.attention.layer_norm_rms_epsilon", 0, 0, {0}, -EINVAL, { "layer_norm_rms_epsilon" } },
		{ "head_count_kv 3 does not divide 4", K_KV, 3, 0, NULL, 0, 0, {0}, -EINVAL, { "head_count_kv", "3", "4" } },
		{ "head_count_kv 8 > head_count 4", K_KV, 8, 0, NULL, 0, 0, {0}, -EINVAL, { "head_count_kv", "8" } },
		{ "head_count_kv 0", K_KV, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "head_count_kv", "0" } },
		{ "head_count 0", K_HEADS, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "head_count", "0" } },
		{ "dim 66 not a multiple of 4 heads", K_DIM, 66, 0, NULL, 0, 0, {0}, -EINVAL, { "embedding_length", "66", "head_count" } },
		{ "odd head dim (60 / 4 = 15)", K_DIM, 60, 0, NULL, 0, 0, {0}, -EINVAL, { "head dimension", "15", "odd" } },
		{ "rope.dimension_count 8 != head_dim 16", K_ROPE_DIMS, 8, 0, NULL, 0, 0, {0}, -EINVAL, { "rope.dimension_count", "8", "16" } },
		{ "eps 0", K_EPS, 0, 0.0f, NULL, 0, 0, {0}, -EINVAL, { "layer_norm_rms_epsilon" } },
		{ "eps NaN", K_EPS, 0, NAN, NULL, 0, 0, {0}, -EINVAL, { "layer_norm_rms_epsilon", "nan" } },
		{ "eps -1e-5", K_EPS, 0, -1e-5f, NULL, 0, 0, {0}, -EINVAL, { "layer_norm_rms_epsilon" } },
		{ "rope base 0", K_BASE, 0, 0.0f, NULL, 0, 0, {0}, -EINVAL, { "freq_base" } },
		{ "rope base inf", K_BASE, 0, INFINITY, NULL, 0, 0, {0}, -EINVAL, { "freq_base" } },
		{ "dim 2^31", K_DIM, 1ll << 31, 0, NULL, 0, 0, {0}, -EINVAL, { "embedding_length", "2147483648" } },
		{ "layers 0", K_LAYERS, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "block_count", "0" } },
		{ "layers 2^32-1", K_LAYERS, 0xffffffffll, 0, NULL, 0, 0, {0}, -EINVAL, { "block_count", "4294967295" } },
		{ "ffn 0", K_FFN, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "feed_forward_length", "0" } },
		{ "context 0", K_CTX, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "context_length", "0" } },
		{ "layers 3 (blk.2 missing)", K_LAYERS, 3, 0, NULL, 0, 0, {0}, -EINVAL, { "blk.2.attn_norm.weight", "missing" } },
		{ "blk.1.ffn_up.weight missing", K_DROP, 0, 0, "blk.1.ffn_up.weight", 0, 0, {0}, -EINVAL, { "blk.1.ffn_up.weight", "missing" } },
		{ "token_embd.weight missing", K_DROP, 0, 0, "token_embd.weight", 0, 0, {0}, -EINVAL, { "token_embd.weight", "missing" } },
		{ "output_norm.weight missing", K_DROP, 0, 0, "output_norm.weight", 0, 0, {0}, -EINVAL, { "output_norm.weight", "missing" } },
		{ "attn_k dim x dim", K_ODD, 0, 0, "blk.0.attn_k.weight", 2, GGML_TYPE_F32, { D, D, 1, 1 }, -EINVAL, { "blk.0.attn_k.weight", "[64, 64]", "[64, 32]" } },
		{ "ffn_down transposed", K_ODD, 0, 0, "blk.1.ffn_down.weight", 2, GGML_TYPE_F32, { D, FF, 1, 1 }, -EINVAL, { "blk.1.ffn_down.weight", "[64, 96]", "[96, 64]" } },
		{ "token_embd 500 rows for 512 tokens", K_ODD, 0, 0, "token_embd.weight", 2, GGML_TYPE_F32, { D, 500, 1, 1 }, -EINVAL, { "token_embd.weight", "500", "512" } },
		{ "output.weight wrong width", K_ODD, 0, 0, "output.weight", 2, GGML_TYPE_F32, { 32, VOC, 1, 1 }, -EINVAL, { "output.weight", "[32, 512]" } },
		{ "attn_q with 3 dims", K_ODD, 0, 0, "blk.0.attn_q.weight", 3, GGML_TYPE_F32, { D, D, 2, 1 }, -EINVAL, { "blk.0.attn_q.weight", "3 dims" } },
		{ "attn_q 1-D", K_ODD, 0, 0, "blk.1.attn_q.weight", 1, GGML_TYPE_F32, { D * D, 1, 1, 1 }, -EINVAL, { "blk.1.attn_q.weight", "1 dims" } },
		{ "norm 2-D", K_ODD, 0, 0, "blk.0.attn_norm.weight", 2, GGML_TYPE_F32, { D, 2, 1, 1 }, -EINVAL, { "blk.0.attn_norm.weight", "2 dims" } },
		{ "norm wrong length", K_ODD, 0, 0, "output_norm.weight", 1, GGML_TYPE_F32, { 32, 1, 1, 1 }, -EINVAL, { "output_norm.weight", "[32, 1]" } },
		{ "norm stored as F16", K_ODD, 0, 0, "blk.1.ffn_norm.weight", 1, GGML_TYPE_F16, { D, 1, 1, 1 }, -ENOTSUP, { "blk.1.ffn_norm.weight", "F16", "F32" } },
		{ "attn_v as Q4_1", K_ODD, 0, 0, "blk.0.attn_v.weight", 2, GGML_TYPE_Q4_1, { D, KVD, 1, 1 }, -ENOTSUP, { "blk.0.attn_v.weight", "Q4_1", "not support" } },
		{ "ffn_down as Q5_0", K_ODD, 0, 0, "blk.1.ffn_down.weight", 2, GGML_TYPE_Q5_0, { FF, D, 1, 1 }, -ENOTSUP, { "blk.1.ffn_down.weight", "Q5_0" } },
		{ "output as Q3_K", K_ODD, 0, 0, "output.weight", 2, GGML_TYPE_Q3_K, { 256, VOC, 1, 1 }, -ENOTSUP, { "output.weight", "Q3_K" } },
		{ "llama.vocab_size 500 vs 512 tokens", K_VOCAB, 500, 0, NULL, 0, 0, {0}, -EINVAL, { "llama.vocab_size", "500", "512" } },
		{ "no tokenizer", K_NOTOK, 0, 0, NULL, 0, 0, {0}, -EINVAL, { "tokenizer" } },
	};
	int fds0 = count_fds();

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct spec s = spec_default();
		struct ms_load_opts o = opts_none();
		struct ms_model *m = NULL;
		ms_err err = { 0 };
		char path[4400], fname[32];
		bool has = true;
		int r;

		apply(&s, &c[i]);
		snprintf(fname, sizeof(fname), "bad%02zu.gguf", i);
		if (!write_model(&s, fname, path, sizeof(path))) {
			ok(0, "bad: %s: file written", c[i].what);
			continue;
		}
		r = ms_model_load(path, &o, NULL, NULL, &m, &err);
		for (int k = 0; k < 3 && c[i].msg[k]; k++)
			has &= strstr(err.msg, c[i].msg[k]) != NULL;
		ok(r == c[i].code && !m && err.code == r && has &&
		   count_fds() == fds0 && count_dir_mappings() == 0,
		   "bad: %s -> %d '%s'", c[i].what, r, err.msg);
		ms_model_free(m);
		/* the check a daemon's --check-config makes refuses the same files the same way */
		{
			ms_err cerr = { 0 };
			int rc = ms_model_check(path, &o, &cerr);

			ok(rc == r && !strcmp(cerr.msg, err.msg) && count_fds() == fds0 && count_dir_mappings() == 0,
			   "bad: %s: ms_model_check says the same (%d '%s')", c[i].what, rc, cerr.msg);
		}
		unlink(path);
	}
	ok(count_fds() == fds0, "no descriptor left open after %zu failed loads", sizeof(c) / sizeof(c[0]));
}

/* ------------------------------------------------------------------------ */
/* Memory (reliability.md A.13)                                              */
/* ------------------------------------------------------------------------ */

static long read_long(const char *path)
{
	char buf[64];
	FILE *f = fopen(path, "re");
	long v = -1;

	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f))
		v = strtol(buf, NULL, 10);
	fclose(f);
	return v;
}

static void test_hugetlb(void)
{
	struct spec s = spec_default();
	struct ms_load_opts o = opts_none();
	struct ms_model *m = NULL;
	ms_err err = { 0 };
	char path[4400];
	int r;

	if (read_long("/proc/sys/vm/nr_hugepages") != 0 ||
	    read_long("/proc/sys/vm/nr_overcommit_hugepages") != 0) {
		skip("hugetlb: the pool is not empty (vm.nr_hugepages / nr_overcommit_hugepages)");
		skip("hugetlb: fallback");
		return;
	}
	if (!write_model(&s, "huge.gguf", path, sizeof(path))) {
		ok(0, "hugetlb: file written");
		return;
	}
	o.arena.policy = MS_POLICY_HUGETLB;
	o.arena.strict = true;
	r = ms_model_load(path, &o, NULL, NULL, &m, &err);
	ok(r < 0 && !m && strstr(err.msg, "needed") && strstr(err.msg, "pages") &&
	   strstr(err.msg, "HugePages_Free 0") && count_dir_mappings() == 0,
	   "hugetlb strict, empty pool: %d '%s'", r, err.msg);
	ms_model_free(m);
	m = NULL;
	o.arena.strict = false;
	r = ms_model_load(path, &o, NULL, NULL, &m, &err);
	ok(r == 0 && m && m->arena->kind != MS_PAGES_HUGETLB && strstr(m->arena->note, "hugetlb"),
	   "hugetlb not strict: falls back to %s ('%s')",
	   m ? ms_page_kind_name(m->arena->kind) : "-", m ? m->arena->note : err.msg);
	ms_model_free(m);
	unlink(path);
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MS_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MS_TEST_ASAN 1
#endif

static bool under_asan(void)
{
#ifdef MS_TEST_ASAN
	return true;
#else
	return false;
#endif
}

/* Child side of the mlock test: writes "r|locked|mlock_errno|msg" to fd. */
static void mlock_child(int fd, const char *path)
{
	struct rlimit rl = { 4096, 4096 };
	struct ms_load_opts o = opts_none();
	struct ms_model *m = NULL;
	ms_err err = { 0 };
	char out[1024];
	int r, n;

	if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		_exit(10);
	if (geteuid() == 0 &&
	    (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0))
		_exit(11);
	o.arena.mlock = true;
	o.arena.mlock_required = true;
	r = ms_model_load(path, &o, NULL, NULL, &m, &err);
	n = snprintf(out, sizeof(out), "%d|%d|%s\n", r, m != NULL, err.msg);
	ms_model_free(m);
	m = NULL;
	o.arena.mlock_required = false;
	r = ms_model_load(path, &o, NULL, NULL, &m, &err);
	n += snprintf(out + n, sizeof(out) - (size_t)n, "%d|%d|%d|%s\n", r,
		      m ? m->arena->locked : -1, m ? m->arena->mlock_errno : -1,
		      m ? m->arena->note : err.msg);
	ms_model_free(m);
	if (write(fd, out, (size_t)n) != n)
		_exit(12);
	_exit(0);
}

static void test_mlock(void)
{
	struct spec s = spec_default();
	char path[4400], buf[1024] = "", msg[512] = "", note[512] = "";
	int p[2], st = 0, r1 = 1, got1 = -1, r2 = 1, locked = -1, merr = -1;
	ssize_t n, tot = 0;
	pid_t pid;

	if (geteuid() != 0) {
		skip("mlock_required: not root (cannot switch to an unprivileged user)");
		skip("mlock not required: warning");
		return;
	}
	if (under_asan()) {
		/* ASan's interceptor makes mlock() a no-op that succeeds. */
		skip("mlock_required: AddressSanitizer ignores mlock");
		skip("mlock not required: AddressSanitizer ignores mlock");
		return;
	}
	if (!write_model(&s, "mlock.gguf", path, sizeof(path)) || pipe2(p, O_CLOEXEC) < 0) {
		ok(0, "mlock: file and pipe");
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		mlock_child(p[1], path);
	}
	close(p[1]);
	while (pid > 0 && (n = read(p[0], buf + tot, sizeof(buf) - 1 - (size_t)tot)) > 0)
		tot += n;
	buf[tot] = '\0';
	close(p[0]);
	if (pid > 0)
		waitpid(pid, &st, 0);
	if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		ok(0, "mlock child ran (status %d)", st);
		unlink(path);
		return;
	}
	sscanf(buf, "%d|%d|%511[^\n]\n%d|%d|%d|%511[^\n]", &r1, &got1, msg, &r2, &locked, &merr, note);
	ok(r1 < 0 && got1 == 0 && strstr(msg, "mlock") && strstr(msg, "RLIMIT_MEMLOCK is 4096 bytes"),
	   "mlock_required under a 4 KiB RLIMIT_MEMLOCK: %d '%s'", r1, msg);
	ok(r2 == 0 && locked == 0 && merr > 0 && strstr(note, "RLIMIT_MEMLOCK is 4096 bytes"),
	   "mlock not required: loads unlocked with the limit in the note (%d, '%s')", r2, note);
	unlink(path);
}

/* The bundled model, loaded with the defaults. */
static void test_bundled(void)
{
	char path[4200];
	struct ms_model *m = NULL;
	ms_err err = { 0 };
	int r;

	snprintf(path, sizeof(path), "%s/stories260K.gguf", test_data_dir());
	r = ms_model_load(path, NULL, NULL, NULL, &m, &err);
	ok(r == 0 && m && m->hp.vocab == 512 && m->hp.ctx_train == 128 && m->hp.dim == 64 &&
	   m->hp.n_layers == 5 && m->hp.head_dim == 8 && m->hp.kv_dim == 32 && !m->tied_output &&
	   m->window == 0 && !strcmp(m->name, "llama"),
	   "stories260K.gguf loads with defaults (%d %s)", r, err.msg);
	ms_model_free(m);
}

int main(void)
{
	char path[4200];
	ms_err err = { 0 };

	snprintf(path, sizeof(path), "%s/stories260K.gguf", test_data_dir());
	if (ms_gguf_open(path, &vocab_src, &err) < 0) {
		diag("cannot open %s: %s", path, err.msg);
		ok(0, "bundled model opens");
		return done_testing();
	}
	make_dir();
	ms_model_free(NULL);
	ok(1, "ms_model_free(NULL) returns");

	test_valid();
	test_window();
	test_bad();
	test_hugetlb();
	test_mlock();
	test_bundled();

	ms_gguf_close(vocab_src);
	remove_dir();
	return done_testing();
}
