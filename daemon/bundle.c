/* The model the worker serves: loading it with the configured settings, and freeing it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "conf.h"
#include "log.h"
#include "pcache.h"

int md_bundle_load(const struct md_config *c, md_pick_kernels_fn pick,
		   ms_progress_fn progress, void *ud,
		   struct md_bundle **out, char *errbuf, size_t errlen)
{
	struct ms_load_opts lo = {
		.arena = { .policy = c->hugepages, .mlock = c->mlock || c->mlock_required,
			   .mlock_required = c->mlock_required },
		.window = c->sliding_window,
	};
	struct md_bundle *b = calloc(1, sizeof(*b));
	ms_err err = { 0 };
	long ncpu;
	int rc;

	if (!b) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	b->path = strdup(c->model);
	rc = ms_model_load(c->model, &lo, progress, ud, &b->model, &err);
	if (rc < 0) {
		snprintf(errbuf, errlen, "%s: %s", c->model, err.msg);
		goto fail;
	}
	b->kernels = pick(c->kernels, errbuf, errlen);
	if (!b->kernels) {
		rc = -EINVAL;
		goto fail;
	}
	b->n_ctx = c->context ? c->context : b->model->hp.ctx_train;
	if (b->n_ctx > b->model->hp.ctx_train) {
		md_log(LOG_NOTICE, "context %u is longer than the model was trained for (%u); using %u",
		       b->n_ctx, b->model->hp.ctx_train, b->model->hp.ctx_train);
		b->n_ctx = b->model->hp.ctx_train;
	}
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	b->threads = c->threads ? c->threads : (uint32_t)(ncpu > 0 ? ncpu : 1);
	b->parallel = c->parallel;
	b->batch = c->batch;
	b->tmpl = ms_template_detect(b->model->tok);
	/* F16 (the default) is half the bytes of F32 per cached token, so twice
	 * the context per GiB and half the cache traffic per decode step. */
	b->kv_type = c->kv_cache;
	/* auto: sized now that the weights are resident, leaving the running
	 * sequences' own caches room to be allocated. */
	b->pcache_entries = c->prompt_cache ? c->prompt_cache_entries : 0;
	b->pcache_bytes = c->prompt_cache == MD_PROMPT_CACHE_AUTO ?
		md_pcache_auto_bytes(b->parallel * ms_kv_bytes(b->model, b->n_ctx, b->model->window,
								MD_PCACHE_MARGIN, b->kv_type)) :
		c->prompt_cache;
	if (!b->pcache_bytes)
		b->pcache_entries = 0;
	/*
	 * Rows of a round: one sequence's whole prompt chunk beside the decode
	 * token of every other, so the engine never cuts the chunk (which would
	 * change its logits' bits and add a round that reads every weight for
	 * a few rows); parallel - 1 rows more scratch.
	 */
	rc = ms_ctx_create(b->model, b->kernels, b->batch + b->parallel - 1, b->threads, &b->ctx, &err);
	if (rc < 0) {
		snprintf(errbuf, errlen, "%s", err.msg);
		goto fail;
	}
	if (b->model->arena->note[0])
		md_log(LOG_NOTICE, "memory: %s", b->model->arena->note);
	*out = b;
	return 0;
fail:
	md_bundle_free(b);
	return rc;
}

void md_bundle_free(struct md_bundle *b)
{
	if (!b)
		return;
	ms_ctx_free(b->ctx);
	ms_model_free(b->model);
	free(b->path);
	free(b);
}
