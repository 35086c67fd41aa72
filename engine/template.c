/* Mistral instruct prompt templates (V1, V3, raw), assembled from token ids so user text cannot inject control tokens. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"

enum ms_template ms_template_detect(const struct ms_tokenizer *t)
{
	int32_t a = ms_tok_find(t, "[INST]", 6);
	int32_t b = ms_tok_find(t, "[/INST]", 7);

	if (a >= 0 && b >= 0 && ms_tok_type(t, a) == MS_TOK_CONTROL &&
	    ms_tok_type(t, b) == MS_TOK_CONTROL)
		return MS_TEMPLATE_V3;
	return MS_TEMPLATE_V1;
}

const char *ms_template_name(enum ms_template k)
{
	switch (k) {
	case MS_TEMPLATE_RAW:
		return "raw";
	case MS_TEMPLATE_V1:
		return "v1";
	case MS_TEMPLATE_V3:
		return "v3";
	}
	return "unknown";
}

struct idbuf {
	int32_t *v;
	size_t n, cap;
};

static int put(struct idbuf *b, const int32_t *ids, size_t n, ms_err *err)
{
	if (!n)
		return 0;
	if (n > b->cap - b->n) {
		size_t cap = b->cap ? b->cap : 64;
		int32_t *v;

		while (cap - b->n < n) {
			if (cap > SIZE_MAX / 2 / sizeof(*v))
				return ms_errf(err, -ENOMEM, "template: prompt too large");
			cap *= 2;
		}
		v = realloc(b->v, cap * sizeof(*v));
		if (!v)
			return ms_errf(err, -ENOMEM, "template: out of memory for the prompt");
		b->v = v;
		b->cap = cap;
	}
	memcpy(b->v + b->n, ids, n * sizeof(*ids));
	b->n += n;
	return 0;
}

static int put1(struct idbuf *b, int32_t id, ms_err *err)
{
	return put(b, &id, 1, err);
}

/*
 * Appends enc(pre + m + post) as one text fragment, so the space prefix
 * applies once at its start; special-token parsing is off.
 */
static int put_text(struct idbuf *b, const struct ms_tokenizer *t,
		    const char *pre, size_t na, const char *m, size_t nm,
		    const char *post, size_t nc, ms_err *err)
{
	char *s = NULL;
	const char *text = m;
	size_t len = nm;
	int32_t *ids;
	size_t n;
	int r;

	if (na || nc) {
		if (nm > SIZE_MAX - na - nc - 1)
			return ms_errf(err, -ENOMEM, "template: message too large");
		len = na + nm + nc;
		s = malloc(len + 1);
		if (!s)
			return ms_errf(err, -ENOMEM, "template: out of memory for a message");
		if (na)
			memcpy(s, pre, na);
		if (nm)
			memcpy(s + na, m, nm);
		if (nc)
			memcpy(s + na + nm, post, nc);
		text = s;
	}
	r = ms_tokenize(t, text, len, false, false, &ids, &n, err);
	free(s);
	if (r)
		return r;
	r = put(b, ids, n, err);
	free(ids);
	return r;
}

static const char *role_name(enum ms_role r)
{
	switch (r) {
	case MS_ROLE_SYSTEM:
		return "system";
	case MS_ROLE_USER:
		return "user";
	case MS_ROLE_ASSISTANT:
		return "assistant";
	}
	return "unknown";
}

/* An optional system message, then user (assistant user)*; raw takes one user message. */
static int check_roles(enum ms_template k, const struct ms_chat_msg *msgs, size_t n, ms_err *err)
{
	size_t i, first;

	if (!n)
		return ms_errf(err, -EINVAL, "template: no messages");
	if (!msgs)
		return ms_errf(err, -EINVAL, "template: NULL message list");
	for (i = 0; i < n; i++) {
		if (msgs[i].role != MS_ROLE_SYSTEM && msgs[i].role != MS_ROLE_USER &&
		    msgs[i].role != MS_ROLE_ASSISTANT)
			return ms_errf(err, -EINVAL, "template: message %zu has an unknown role %d",
				       i, (int)msgs[i].role);
		if (!msgs[i].content && msgs[i].len)
			return ms_errf(err, -EINVAL, "template: message %zu has no content", i);
	}
	if (k == MS_TEMPLATE_RAW) {
		if (n != 1 || msgs[0].role != MS_ROLE_USER)
			return ms_errf(err, -EINVAL,
				       "template: raw mode takes exactly one user message (got %zu, the first with role %s)",
				       n, role_name(msgs[0].role));
		return 0;
	}
	first = msgs[0].role == MS_ROLE_SYSTEM;
	if (first == n)
		return ms_errf(err, -EINVAL, "template: a system message needs a user message after it");
	for (i = first; i < n; i++) {
		enum ms_role want = (i - first) % 2 ? MS_ROLE_ASSISTANT : MS_ROLE_USER;

		if (msgs[i].role != want)
			return ms_errf(err, -EINVAL,
				       "template: message %zu has role %s where %s belongs (roles must be: optional system, then user and assistant alternating, starting and ending with user)",
				       i, role_name(msgs[i].role), role_name(want));
	}
	if (msgs[n - 1].role != MS_ROLE_USER)
		return ms_errf(err, -EINVAL, "template: the conversation must end with a user message");
	return 0;
}

int ms_template_apply(const struct ms_tokenizer *t, enum ms_template k,
		      const struct ms_chat_msg *msgs, size_t n,
		      int32_t **ids, size_t *n_ids, ms_err *err)
{
	static const char sep[] = "\n\n";
	struct idbuf b = { NULL, 0, 0 };
	const struct ms_chat_msg *sys = NULL;
	int32_t inst = -1, inst_end = -1;
	size_t i;
	int r;

	*ids = NULL;
	*n_ids = 0;
	if (k != MS_TEMPLATE_RAW && k != MS_TEMPLATE_V1 && k != MS_TEMPLATE_V3)
		return ms_errf(err, -EINVAL, "template: unknown template %d", (int)k);
	if ((r = check_roles(k, msgs, n, err)))
		return r;
	if (k == MS_TEMPLATE_V3) {
		/* Looked up by text: the ids differ between vocabularies. */
		inst = ms_tok_find(t, "[INST]", 6);
		inst_end = ms_tok_find(t, "[/INST]", 7);
		if (inst < 0 || inst_end < 0 || ms_tok_type(t, inst) != MS_TOK_CONTROL ||
		    ms_tok_type(t, inst_end) != MS_TOK_CONTROL)
			return ms_errf(err, -EINVAL,
				       "template: v3 needs [INST] and [/INST] control tokens, which this vocabulary lacks");
	}
	if ((r = put1(&b, ms_tok_bos(t), err)))
		goto fail;
	if (k == MS_TEMPLATE_RAW) {
		r = put_text(&b, t, NULL, 0, msgs[0].content, msgs[0].len, NULL, 0, err);
		goto done;
	}

	i = 0;
	if (msgs[0].role == MS_ROLE_SYSTEM) {
		sys = &msgs[0];
		i = 1;
	}
	for (; i < n; i++) {
		const struct ms_chat_msg *m = &msgs[i];
		const char *text = m->content;
		size_t len = m->len;
		char *folded = NULL;

		if (m->role == MS_ROLE_ASSISTANT) {
			if ((r = put_text(&b, t, NULL, 0, m->content, m->len, NULL, 0, err)) ||
			    (r = put1(&b, ms_tok_eos(t), err)))
				goto fail;
			continue;
		}
		/*
		 * The system prompt goes in front of the first user message, a
		 * blank line between; an empty one adds nothing, not even the line.
		 */
		if (sys && sys->len) {
			if (sys->len > SIZE_MAX - sizeof(sep) - len) {
				r = ms_errf(err, -ENOMEM, "template: system message too large");
				goto fail;
			}
			folded = malloc(sys->len + 2 + len + 1);
			if (!folded) {
				r = ms_errf(err, -ENOMEM, "template: out of memory for the system message");
				goto fail;
			}
			memcpy(folded, sys->content, sys->len);
			memcpy(folded + sys->len, sep, 2);
			if (len)
				memcpy(folded + sys->len + 2, text, len);
			text = folded;
			len += sys->len + 2;
		}
		sys = NULL;
		if (k == MS_TEMPLATE_V1) {
			r = put_text(&b, t, "[INST] ", 7, text, len, " [/INST]", 8, err);
		} else {
			if (!(r = put1(&b, inst, err)) &&
			    !(r = put_text(&b, t, NULL, 0, text, len, NULL, 0, err)))
				r = put1(&b, inst_end, err);
		}
		free(folded);
		if (r)
			goto fail;
	}
	r = 0;
done:
	if (r)
		goto fail;
	*ids = b.v;
	*n_ids = b.n;
	return 0;
fail:
	free(b.v);
	return r;
}
