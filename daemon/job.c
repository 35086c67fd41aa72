/* Requests that need the model, and the messages the worker answers them with: their lifetimes. */
#include <stdlib.h>

#include "counters.h"
#include "job.h"

struct md_job *md_job_new(enum md_job_kind kind)
{
	struct md_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	atomic_init(&j->refs, 1);
	j->kind = kind;
	j->t_submit = md_now();
	ms_sampler_params_default(&j->sp);
	j->cache_prompt = true;
	return j;
}

void md_job_ref(struct md_job *j)
{
	atomic_fetch_add(&j->refs, 1);
}

void md_job_unref(struct md_job *j)
{
	if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	free(j->prompt);
	free(j->tokens);
	free(j->system);
	for (size_t i = 0; i < j->n_msgs; i++)
		free((char *)j->msgs[i].content);
	free(j->msgs);
	for (size_t i = 0; i < j->n_stops; i++)
		free(j->stops[i]);
	free(j->stops);
	free(j->stop_lens);
	free(j->text);
	free(j);
}

void md_out_free(struct md_out *o)
{
	if (!o)
		return;
	md_job_unref(o->job);
	free(o->data);
	free(o);
}
