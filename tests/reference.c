/* A naive reference forward pass for the tests: no cache, no chunks, no kernels, double precision. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"
#include "reference.h"

/*
 * Row r of an interleaved matrix, read from the layout's description in
 * kernels.h (groups of 8 rows; per block index each f16 header field of
 * the 8 rows, then the rest of the blocks in 4-byte pieces, row by row for
 * each piece): each plain block is put back together, then dequantized as
 * usual.
 */
static void x8_dequant_row(const struct ms_tensor *t, size_t r, float *out)
{
	const struct ggml_type_info *ti = ms_ggml_type_get(t->type);
	const uint8_t *grp = (const uint8_t *)t->data + (r / 8) * 8 * t->row_bytes;
	/* f16 fields: d (and dmin) */
	const size_t nf = t->type == GGML_TYPE_Q4_K || t->type == GGML_TYPE_Q5_K ? 2 : 1;
	const size_t body = ti->bytes - 2 * nf;
	/* Q6_K keeps d after its body, the others before */
	const size_t fo = t->type == GGML_TYPE_Q6_K ? body : 0, bo = t->type == GGML_TYPE_Q6_K ? 0 : 2 * nf;
	uint8_t blk[256];

	for (size_t i = 0; i < t->cols / ti->blck; i++) {
		const uint8_t *g = grp + i * 8 * ti->bytes;

		for (size_t f = 0; f < nf; f++)
			memcpy(blk + fo + 2 * f, g + 8 * fo + 16 * f + 2 * (r % 8), 2);
		for (size_t c = 0; c < body / 4; c++)
			memcpy(blk + bo + 4 * c, g + 8 * bo + 32 * c + 4 * (r % 8), 4);
		ms_dequantize_row(t->type, blk, out + i * ti->blck, ti->blck);
	}
}

/* The whole matrix as doubles, rows x cols. */
static double *dequant(const struct ms_tensor *t)
{
	double *out = malloc(t->rows * t->cols * sizeof(double));
	float *row = malloc(t->cols * sizeof(float));

	if (!out || !row) {
		free(out);
		free(row);
		return NULL;
	}
	for (size_t r = 0; r < t->rows; r++) {
		if (t->layout == MS_LAYOUT_X8)
			x8_dequant_row(t, r, row);
		else
			ms_dequantize_row(t->type, (const uint8_t *)t->data + r * t->row_bytes, row, t->cols);
		for (size_t c = 0; c < t->cols; c++)
			out[r * t->cols + c] = row[c];
	}
	free(row);
	return out;
}

/*
 * The engine multiplies quantized weights by activations quantized to 8
 * bits per block (mistrald's documented matmul semantics, as in ggml):
 *  - Q8_0 and Q4_0 weights: blocks of 32, d = amax/127 stored as F16,
 *    q = round half away from zero (x / d);
 *  - K-quant weights: blocks of 256, iscale = 127/amax, q = round half to
 *    even (x * iscale), d = 1/iscale stored as F32.
 * The reference rounds its inputs the same way (written here from that
 * rule, in float like the engine) so that it checks the integer kernels
 * and not the rounding; everything else stays in double.
 */
int ref_bf16_acts;

static void quantize_activations(uint32_t wtype, double *x, size_t n)
{
	size_t bs;
	bool k;

	if (wtype == GGML_TYPE_BF16 && ref_bf16_acts) {
		for (size_t i = 0; i < n; i++)
			x[i] = (double)ms_bf16_to_f32(ms_f32_to_bf16((float)x[i]));
		return;
	}
	switch (wtype) {
	case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0: bs = 32; k = false; break;
	case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K: bs = 256; k = true; break;
	default: return;
	}
	for (size_t b = 0; b < n; b += bs) {
		float amax = 0;

		for (size_t i = b; i < b + bs; i++)
			amax = fabsf((float)x[i]) > amax ? fabsf((float)x[i]) : amax;
		if (amax == 0)
			continue;
		if (k) {
			float iscale = 127.0f / amax, d = 1.0f / iscale;

			for (size_t i = b; i < b + bs; i++)
				x[i] = (double)(nearbyintf((float)x[i] * iscale) * d);
		} else {
			float d = amax / 127.0f, id = 1.0f / d;
			float d16 = ms_f16_to_f32(ms_f32_to_f16(d));

			for (size_t i = b; i < b + bs; i++)
				x[i] = (double)(roundf((float)x[i] * id) * d16);
		}
	}
}

/* y[n][rows] = x[n][cols] W^T */
static int linear(const struct ms_tensor *t, const double *x_in, size_t n, double *y)
{
	double *w = dequant(t), *x = malloc(n * t->cols * sizeof(double));

	if (!w || !x) {
		free(w);
		free(x);
		return -1;
	}
	memcpy(x, x_in, n * t->cols * sizeof(double));
	for (size_t i = 0; i < n; i++)
		quantize_activations(t->type, x + i * t->cols, t->cols);
	for (size_t i = 0; i < n; i++)
		for (size_t r = 0; r < t->rows; r++) {
			double s = 0;

			for (size_t c = 0; c < t->cols; c++)
				s += w[r * t->cols + c] * x[i * t->cols + c];
			y[i * t->rows + r] = s;
		}
	free(w);
	free(x);
	return 0;
}

static void norm(double *out, const double *x, const float *w, size_t dim, double eps)
{
	double ss = 0;

	for (size_t i = 0; i < dim; i++)
		ss += x[i] * x[i];
	ss = 1.0 / sqrt(ss / (double)dim + eps);
	for (size_t i = 0; i < dim; i++)
		out[i] = x[i] * ss * (double)w[i];
}

/* Rotates pair (2i, 2i+1) of a head by pos * base^(-2i/hd). */
static void rope(double *v, size_t hd, size_t pos, double base)
{
	for (size_t i = 0; i < hd / 2; i++) {
		double a = (double)pos / pow(base, (double)(2 * i) / (double)hd);
		double x0 = v[2 * i], x1 = v[2 * i + 1];

		v[2 * i] = x0 * cos(a) - x1 * sin(a);
		v[2 * i + 1] = x0 * sin(a) + x1 * cos(a);
	}
}

float *ref_forward(const struct ms_model *m, const int32_t *toks, size_t n, uint32_t window)
{
	const struct ms_hparams *hp = &m->hp;
	const size_t D = hp->dim, KV = hp->kv_dim, F = hp->ffn, HD = hp->head_dim, V = hp->vocab;
	double *x = calloc(n * D, sizeof(double)), *xn = calloc(n * D, sizeof(double));
	double *q = calloc(n * D, sizeof(double)), *k = calloc(n * KV, sizeof(double));
	double *v = calloc(n * KV, sizeof(double)), *att = calloc(n * D, sizeof(double));
	double *tmp = calloc(n * D, sizeof(double)), *g = calloc(n * F, sizeof(double));
	double *u = calloc(n * F, sizeof(double)), *sc = calloc(n, sizeof(double));
	double *lg = calloc(n * V, sizeof(double));
	float *row = calloc(D, sizeof(float)), *out = calloc(n * V, sizeof(float));
	int bad = !x || !xn || !q || !k || !v || !att || !tmp || !g || !u || !sc || !lg || !row || !out;

	for (size_t t = 0; !bad && t < n; t++) {
		ms_dequantize_row(m->tok_embd.type,
			       (const uint8_t *)m->tok_embd.data + (size_t)toks[t] * m->tok_embd.row_bytes,
			       row, D);
		for (size_t i = 0; i < D; i++)
			x[t * D + i] = row[i];
	}
	for (uint32_t l = 0; !bad && l < hp->n_layers; l++) {
		const struct ms_layer *L = &m->layers[l];

		for (size_t t = 0; t < n; t++)
			norm(xn + t * D, x + t * D, L->attn_norm, D, (double)hp->eps);
		bad |= linear(&L->wq, xn, n, q) | linear(&L->wk, xn, n, k) | linear(&L->wv, xn, n, v);
		for (size_t t = 0; t < n; t++) {
			for (size_t h = 0; h < hp->n_heads; h++)
				rope(q + t * D + h * HD, HD, t, (double)hp->rope_base);
			for (size_t h = 0; h < hp->n_kv_heads; h++)
				rope(k + t * KV + h * HD, HD, t, (double)hp->rope_base);
		}
		for (size_t t = 0; t < n; t++)
			for (size_t h = 0; h < hp->n_heads; h++) {
				size_t kh = h * hp->n_kv_heads / hp->n_heads;
				double mx = -(double)INFINITY, sum = 0;

				for (size_t j = 0; j < n; j++) {
					int visible = j <= t && (!window || j + window > t);
					double s = 0;

					for (size_t i = 0; visible && i < HD; i++)
						s += q[t * D + h * HD + i] * k[j * KV + kh * HD + i];
					sc[j] = visible ? s / sqrt((double)HD) : -(double)INFINITY;
					mx = sc[j] > mx ? sc[j] : mx;
				}
				for (size_t j = 0; j < n; j++) {
					sc[j] = exp(sc[j] - mx);
					sum += sc[j];
				}
				for (size_t i = 0; i < HD; i++) {
					double o = 0;

					for (size_t j = 0; j < n; j++)
						o += sc[j] / sum * v[j * KV + kh * HD + i];
					att[t * D + h * HD + i] = o;
				}
			}
		bad |= linear(&L->wo, att, n, tmp);
		for (size_t i = 0; i < n * D; i++)
			x[i] += tmp[i];
		for (size_t t = 0; t < n; t++)
			norm(xn + t * D, x + t * D, L->ffn_norm, D, (double)hp->eps);
		bad |= linear(&L->w_gate, xn, n, g) | linear(&L->w_up, xn, n, u);
		for (size_t i = 0; i < n * F; i++)
			g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
		bad |= linear(&L->w_down, g, n, tmp);
		for (size_t i = 0; i < n * D; i++)
			x[i] += tmp[i];
	}
	if (!bad) {
		for (size_t t = 0; t < n; t++)
			norm(xn + t * D, x + t * D, m->output_norm, D, (double)hp->eps);
		bad |= linear(&m->output, xn, n, lg);
	}
	for (size_t i = 0; !bad && i < n * V; i++)
		out[i] = (float)lg[i];
	free(x); free(xn); free(q); free(k); free(v); free(att); free(tmp);
	free(g); free(u); free(sc); free(lg); free(row);
	if (bad) {
		free(out);
		return NULL;
	}
	return out;
}
