/* The worker's answers as msgpack: each packs one whole message (result or notification) into pk. */
#ifndef MD_REPLIES_H
#define MD_REPLIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "bundle.h"
#include "generate.h"

struct md_seq;

/* tokenize: {tokens}. */
void md_reply_tokens(msgpack_packer *pk, uint32_t msgid, const int32_t *ids, size_t n);
/* detokenize: {text}. */
void md_reply_text(msgpack_packer *pk, uint32_t msgid, const char *text, size_t len);
/* info: the serving model, its hyperparameters, memory and settings. */
void md_reply_info(msgpack_packer *pk, uint32_t msgid, const struct md_bundle *b);
/* generate.chunk: text the sequence added, with its newest token (and logprobs) when with_token. */
void md_reply_chunk(msgpack_packer *pk, const struct md_seq *s, const char *text, size_t n, bool with_token);
/* The generation's result: the whole response, tokens, reason, usage, timings (t_end: md_now()). */
void md_reply_final(msgpack_packer *pk, const struct md_seq *s, enum ms_finish reason, double t_end);

#endif
