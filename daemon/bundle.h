/* The model the worker serves: loaded, kernels chosen, scratch allocated; built by the loader, owned by the worker. */
#ifndef MD_BUNDLE_H
#define MD_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "kernels.h"
#include "model.h"
#include "template.h"

struct md_config;

/* A model ready to serve: loaded, kernels chosen, scratch allocated. */
struct md_bundle {
	struct ms_model *model;
	struct ms_ctx *ctx;
	const struct ms_kernels *kernels;
	char *path;
	uint32_t n_ctx;              /* context per sequence */
	uint32_t parallel;
	uint32_t threads;
	uint32_t batch;
	uint32_t kv_type;            /* GGML_TYPE_F16 or GGML_TYPE_F32 */
	uint32_t pcache_entries;     /* prompt cache limits, resolved (auto sized); 0: off */
	size_t pcache_bytes;
	enum ms_template tmpl;
};

/* Chooses the kernel set named in the configuration; NULL with a message in err when it cannot. */
typedef const struct ms_kernels *(*md_pick_kernels_fn)(const char *name, char *err, size_t n);

/*
 * Loads c->model and everything serving it needs. Blocking (seconds to
 * minutes for a big model): the daemon runs it on its own thread while the
 * old bundle keeps serving. progress(ud, bytes copied, total) as the weights come in.
 * Returns 0 and *out, or -errno with a message in err.
 */
int md_bundle_load(const struct md_config *c, md_pick_kernels_fn pick,
		   ms_progress_fn progress, void *ud,
		   struct md_bundle **out, char *err, size_t errlen);
void md_bundle_free(struct md_bundle *b);   /* accepts NULL */

#endif
