/* SentencePiece BPE tokenizer built from GGUF metadata, and an incremental UTF-8-safe detokenizer. */
#ifndef MS_TOKENIZER_H
#define MS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

/* tokenizer.ggml.token_type values */
enum ms_tok_type {
	MS_TOK_NORMAL = 1, MS_TOK_UNKNOWN = 2, MS_TOK_CONTROL = 3,
	MS_TOK_USER_DEFINED = 4, MS_TOK_UNUSED = 5, MS_TOK_BYTE = 6,
};

#define MS_TOK_MAX_PIECE 256   /* longer token texts are rejected at load */

struct ms_tokenizer;

/*
 * Builds the tokenizer from tokenizer.ggml.* keys (model must be "llama").
 * Copies what it needs: the result does not reference g afterwards.
 * Validates array element types and lengths, token text, byte tokens
 * ("<0xNN>", uppercase or lowercase hex, exactly two digits) and the
 * bos/eos/unk ids; optional ids stored as 4294967295 mean "none".
 */
int ms_tokenizer_load(const struct gguf *g, struct ms_tokenizer **out, ms_err *err);
void ms_tokenizer_free(struct ms_tokenizer *t);

uint32_t ms_tok_n_vocab(const struct ms_tokenizer *t);
int32_t ms_tok_bos(const struct ms_tokenizer *t);
int32_t ms_tok_eos(const struct ms_tokenizer *t);
bool ms_tok_add_bos(const struct ms_tokenizer *t);        /* tokenizer.ggml.add_bos_token */
/* Token text as stored (U+2581 for spaces); *len set; NULL for an out-of-range id. */
const char *ms_tok_piece(const struct ms_tokenizer *t, int32_t id, size_t *len);
int ms_tok_type(const struct ms_tokenizer *t, int32_t id);  /* enum ms_tok_type, -1 out of range */
/* Id of the token whose text is exactly s[0..n); -1 when none. */
int32_t ms_tok_find(const struct ms_tokenizer *t, const char *s, size_t n);

/*
 * Encodes text[0..len) (need not be NUL-terminated; invalid UTF-8 bytes go
 * through byte fallback). add_bos prepends BOS. parse_special splits out
 * control tokens by their text; user-defined tokens are always split out.
 * *ids is malloc()ed (caller frees), *n_ids its length. -ENOMEM, -EINVAL.
 */
int ms_tokenize(const struct ms_tokenizer *t, const char *text, size_t len,
		bool add_bos, bool parse_special, int32_t **ids, size_t *n_ids, ms_err *err);

/*
 * Incremental detokenizer. Control tokens print nothing, byte tokens their
 * byte, normal tokens their text with U+2581 as ' '. Output is always valid
 * UTF-8: a character cut across tokens is held until it completes; bytes
 * that can never form valid UTF-8 become U+FFFD. With strip_leading_space
 * the first space of the first non-empty output is dropped (chat answers).
 */
struct ms_detok {
	const struct ms_tokenizer *t;
	unsigned char pend[4];   /* incomplete UTF-8 sequence held back */
	unsigned npend;
	bool strip_space;        /* still to strip one leading space */
};

void ms_detok_init(struct ms_detok *d, const struct ms_tokenizer *t, bool strip_leading_space);
/* Appends the complete UTF-8 text id adds to out (capacity cap >= MS_DETOK_MAX_OUT).
 * Returns bytes written, or -EINVAL for an out-of-range id. */
#define MS_DETOK_MAX_OUT (3 * MS_TOK_MAX_PIECE + 16)
int ms_detok_push(struct ms_detok *d, int32_t id, char *out, size_t cap);
/* End of stream: held bytes that never completed become U+FFFD. Returns bytes written. */
int ms_detok_flush(struct ms_detok *d, char *out, size_t cap);

/* Whole-sequence convenience: malloc()ed NUL-terminated text. */
int ms_detokenize(const struct ms_tokenizer *t, const int32_t *ids, size_t n,
		  char **text, size_t *len, ms_err *err);

#endif
