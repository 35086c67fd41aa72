/* Mistral instruct prompt templates (V1 and V3), built at the token level. */
#ifndef MS_TEMPLATE_H
#define MS_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

enum ms_template {
	MS_TEMPLATE_RAW = 0,   /* no template: BOS + text */
	MS_TEMPLATE_V1 = 1,    /* v0.1/v0.2: "[INST] ... [/INST]" as plain text */
	MS_TEMPLATE_V3 = 2,    /* v0.3: [INST]/[/INST] control tokens */
};

/* V3 when the vocabulary has [INST] and [/INST] as control tokens, else V1. */
enum ms_template ms_template_detect(const struct ms_tokenizer *t);
const char *ms_template_name(enum ms_template k);   /* "raw", "v1", "v3" */

enum ms_role { MS_ROLE_SYSTEM, MS_ROLE_USER, MS_ROLE_ASSISTANT };

struct ms_chat_msg {
	enum ms_role role;
	const char *content;   /* UTF-8, need not be NUL-terminated */
	size_t len;
};

/*
 * Token ids for a conversation: an optional leading system message (folded
 * into the first user message followed by a blank line), then alternating
 * user / assistant messages starting and ending with user. Message text is
 * tokenized with special-token parsing off, so "[INST]" typed by a user is
 * plain text. Completed assistant turns end with EOS.
 *   V1: BOS enc("[INST] u1 [/INST]") enc("a1") EOS enc("[INST] u2 [/INST]") ...
 *   V3: BOS [INST] enc(u1) [/INST] enc(a1) EOS [INST] enc(u2) [/INST] ...
 * RAW: BOS enc(content of the single user message).
 * -EINVAL with a reason for a malformed conversation.
 */
int ms_template_apply(const struct ms_tokenizer *t, enum ms_template k,
		      const struct ms_chat_msg *msgs, size_t n,
		      int32_t **ids, size_t *n_ids, ms_err *err);

#endif
