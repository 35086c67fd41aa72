/* A Llama-architecture (Mistral-family) model: hyperparameters, weights in the arena, tokenizer. */
#ifndef MS_MODEL_H
#define MS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "error.h"
#include "tokenizer.h"

/* Immutable after load. */
struct ms_hparams {
	uint32_t dim;         /* embedding width (4096 for Mistral 7B) */
	uint32_t n_layers;    /* transformer blocks (32) */
	uint32_t n_heads;     /* query heads (32) */
	uint32_t n_kv_heads;  /* key/value heads (8 = GQA; = n_heads MHA; 1 MQA) */
	uint32_t head_dim;    /* dim / n_heads (128) */
	uint32_t kv_dim;      /* head_dim * n_kv_heads (1024) */
	uint32_t ffn;         /* SwiGLU hidden width (14336) */
	uint32_t vocab;       /* tokenizer size (32000 / 32768) */
	uint32_t ctx_train;   /* llama.context_length */
	uint32_t rope_dims;   /* dimensions RoPE rotates (= head_dim) */
	float eps;            /* RMSNorm epsilon */
	float rope_base;      /* RoPE theta */
	uint32_t file_window; /* llama.attention.sliding_window, 0 when absent */
};

/* A 2-D weight: rows of cols elements in a ggml type, rows contiguous. */
struct ms_tensor {
	uint32_t type;        /* enum ggml_type */
	uint64_t cols;        /* ne[0]: elements per row (the input width) */
	uint64_t rows;        /* ne[1]: output width */
	size_t row_bytes;     /* of a plain row (also for MS_LAYOUT_X8: a group is 8 of them) */
	uint32_t layout;      /* enum ms_layout (kernels.h) */
	const void *data;     /* in the arena */
};

struct ms_layer {
	const float *attn_norm;   /* [dim] */
	struct ms_tensor wq;      /* [dim] -> [dim] */
	struct ms_tensor wk;      /* [dim] -> [kv_dim] */
	struct ms_tensor wv;      /* [dim] -> [kv_dim] */
	struct ms_tensor wo;      /* [dim] -> [dim] */
	const float *ffn_norm;    /* [dim] */
	struct ms_tensor w_gate;  /* [dim] -> [ffn]  (W1) */
	struct ms_tensor w_up;    /* [dim] -> [ffn]  (W3) */
	struct ms_tensor w_down;  /* [ffn] -> [dim]  (W2) */
};

enum ms_window_mode {
	MS_WINDOW_AUTO = -1,  /* file key, else 4096 for Mistral 7B v0.1 by name, else none */
	MS_WINDOW_OFF = 0,    /* no window even if the file has one */
	/* > 0: that window */
};

struct ms_load_opts {
	struct ms_arena_opts arena;
	int32_t window;       /* enum ms_window_mode or a window size > 0 */
	/*
	 * Keep every matrix in plain ggml rows. By default every matrix
	 * but token_embd whose type has an x8 layout (ms_x8_type: all weight
	 * types but F32) is interleaved eight rows at a time for the x8
	 * kernels (kernels.h); this exists to measure and test the difference.
	 */
	bool plain_rows;
};

struct ms_model {
	struct ms_hparams hp;
	char name[128];              /* general.name or the file's basename */
	uint32_t window;             /* effective sliding window, 0 = none */
	const char *window_source;   /* "file", "config", "auto (Mistral 7B v0.1)", "none" */
	struct ms_tensor tok_embd;   /* [dim] x vocab rows */
	const float *output_norm;    /* [dim] */
	struct ms_tensor output;     /* [dim] -> [vocab]; token_embd when the file has none */
	bool tied_output;            /* output.weight absent */
	struct ms_layer *layers;     /* [n_layers] */
	struct ms_tokenizer *tok;
	struct ms_arena *arena;      /* owns every weight byte */
	enum ms_page_policy page_policy;  /* what the weights asked for; KV caches ask for the same */
	uint64_t weight_bytes;       /* bytes of all tensors */
	uint32_t types_seen[32];     /* count of tensors per ggml type id */
};

/* Load progress: weight bytes copied so far and the total, non-decreasing, ends with done == total. */
typedef void (*ms_progress_fn)(void *ud, uint64_t done, uint64_t total);

/*
 * Loads path: validates the GGUF, the llama hyperparameters and every
 * tensor's shape against them, copies the weights into a fresh arena
 * (opts->arena says which pages), builds the tokenizer. The file is
 * unmapped before returning. progress (may be NULL) is called with the
 * weight bytes copied so far and their total, so a daemon can report both.
 */
int ms_model_load(const char *path, const struct ms_load_opts *opts,
		  ms_progress_fn progress, void *ud,
		  struct ms_model **out, ms_err *err);
void ms_model_free(struct ms_model *m);   /* accepts NULL */

/*
 * Every check ms_model_load makes (the GGUF, the architecture and
 * hyperparameters, the tokenizer, each tensor's presence, type and shape)
 * without reserving memory or copying a weight: 0 means a load of path
 * would get past them. For mistrald --check-config.
 */
int ms_model_check(const char *path, const struct ms_load_opts *opts, ms_err *err);

#endif
