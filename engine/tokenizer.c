/* SentencePiece BPE tokenizer over a GGUF vocabulary, and the UTF-8-safe incremental detokenizer. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

/* U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's stand-in for ' '. */
#define SPACE_MARK	"\xe2\x96\x81"
#define SPACE_MARK_LEN	3

/* More tokens than any real vocabulary; keeps every index in an int32_t. */
#define MAX_VOCAB	(1u << 24)

/* Longest text ms_tokenize accepts: symbol offsets stay in 32 bits after escaping. */
#define MAX_TEXT	((size_t)1 << 29)

struct tok {
	uint32_t off;		/* text in blob, NUL-terminated there */
	uint16_t len;
	uint8_t type;		/* enum ms_tok_type, 0 (undefined) treated as normal */
	uint8_t byte;		/* the byte a BYTE token stands for */
	float score;
};

/*
 * Trie of the special tokens (control, unknown, user-defined) so that
 * splitting them out of a text costs one walk per text position instead of
 * one scan of the text per special token.
 */
struct trie_node {
	int32_t child;		/* first child, -1 none */
	int32_t sibling;	/* next child of the same parent, -1 none */
	int32_t id_any;		/* special token ending here, -1 none */
	int32_t id_user;	/* user-defined token ending here, -1 none */
	unsigned char c;
};

/* The full hash rides along so that most probes that miss touch one cache line. */
struct hslot {
	uint32_t h;
	int32_t id;		/* -1: empty */
};

struct ms_tokenizer {
	uint32_t n_vocab;
	struct tok *tok;
	char *blob;		/* every token text, each followed by a NUL */
	struct hslot *hash;	/* open addressing on the token texts */
	uint32_t hmask;
	uint32_t max_len;	/* longest token text: bounds every lookup */
	int32_t bos, eos, unk;	/* unk -1 when the vocabulary has none */
	bool add_bos, add_space;
	bool has_unused;	/* resegmenting merges is needed only then */
	uint64_t *pairs;	/* bitmap: character pairs some mergeable piece contains */
	int32_t byte_id[256];	/* byte fallback token, -1 none */
	int32_t root[256];	/* trie children of the root, by first byte */
	struct trie_node *trie;
	uint32_t n_trie;
	uint32_t n_special;	/* control + unknown + user-defined */
	uint32_t n_user;	/* user-defined only */
};

/* ---- vocabulary lookups ------------------------------------------------ */

/* FNV-1a: token texts are short, so a simple byte loop is as fast as anything. */
static uint32_t hash_bytes(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

static int32_t lookup(const struct ms_tokenizer *t, const char *s, size_t n)
{
	uint32_t h, i;

	if (n > t->max_len)
		return -1;
	h = hash_bytes(s, n);
	for (i = h & t->hmask; t->hash[i].id >= 0; i = (i + 1) & t->hmask) {
		const struct tok *k;

		if (t->hash[i].h != h)
			continue;
		k = &t->tok[t->hash[i].id];
		if (k->len == n && memcmp(t->blob + k->off, s, n) == 0)
			return t->hash[i].id;
	}
	return -1;
}

/* A later duplicate replaces an earlier one, as llama.cpp's text-to-id map does. */
static void hash_insert(struct ms_tokenizer *t, int32_t id)
{
	const struct tok *k = &t->tok[id];
	uint32_t h = hash_bytes(t->blob + k->off, k->len), i;

	for (i = h & t->hmask; t->hash[i].id >= 0; i = (i + 1) & t->hmask) {
		const struct tok *o = &t->tok[t->hash[i].id];

		if (t->hash[i].h == h && o->len == k->len &&
		    memcmp(t->blob + o->off, t->blob + k->off, k->len) == 0)
			break;
	}
	t->hash[i] = (struct hslot){ h, id };
}

/*
 * Pieces BPE may merge into. Like SentencePiece, never control, unknown or
 * byte tokens: typed "</s>" or "<0x41>" stays plain text.
 */
static bool mergeable(unsigned type)
{
	return type != MS_TOK_CONTROL && type != MS_TOK_UNKNOWN && type != MS_TOK_BYTE;
}

/* Pieces emitted as they are; unused ones are split back into their merge pair. */
static bool emittable(unsigned type)
{
	return type == MS_TOK_NORMAL || type == MS_TOK_USER_DEFINED || type == 0;
}

/* Length of the valid UTF-8 character at s; a byte that starts none is a character of its own. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
	size_t k = utf8_seq(s, n);

	return k ? k : 1;
}

/*
 * Character-pair filter. If no mergeable piece contains the characters a b
 * side by side, no merge can ever join across them, so the text splits
 * there into parts that BPE may process separately with the same result
 * (merges in different parts never interact). Small parts keep the merge
 * queue in cache: on ordinary text this is several times faster. A
 * collision only costs a missed split, never a wrong result.
 */
#define PAIR_BITS 21	/* 256 KiB bitmap */

/* A character's bytes as one number: distinct for distinct characters. */
static uint32_t char_pack(const unsigned char *s, size_t n)
{
	uint32_t v = 0;
	size_t i;

	for (i = 0; i < n; i++)
		v = v << 8 | s[i];
	return v;
}

static uint32_t pair_slot(uint32_t a, uint32_t b)
{
	uint64_t h = ((uint64_t)a << 32 | b) * 0x9E3779B97F4A7C15ull;

	return (uint32_t)(h >> (64 - PAIR_BITS));
}

static bool pair_may_merge(const struct ms_tokenizer *t, uint32_t a, uint32_t b)
{
	uint32_t k = pair_slot(a, b);

	return t->pairs[k / 64] >> (k % 64) & 1;
}

uint32_t ms_tok_n_vocab(const struct ms_tokenizer *t)
{
	return t->n_vocab;
}

int32_t ms_tok_bos(const struct ms_tokenizer *t)
{
	return t->bos;
}

int32_t ms_tok_eos(const struct ms_tokenizer *t)
{
	return t->eos;
}

bool ms_tok_add_bos(const struct ms_tokenizer *t)
{
	return t->add_bos;
}

const char *ms_tok_piece(const struct ms_tokenizer *t, int32_t id, size_t *len)
{
	if (id < 0 || (uint32_t)id >= t->n_vocab) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = t->tok[id].len;
	return t->blob + t->tok[id].off;
}

int ms_tok_type(const struct ms_tokenizer *t, int32_t id)
{
	if (id < 0 || (uint32_t)id >= t->n_vocab)
		return -1;
	return t->tok[id].type ? t->tok[id].type : MS_TOK_NORMAL;
}

int32_t ms_tok_find(const struct ms_tokenizer *t, const char *s, size_t n)
{
	if (!s && n)
		return -1;
	return lookup(t, s ? s : "", n);
}

/* ---- loading ----------------------------------------------------------- */

void ms_tokenizer_free(struct ms_tokenizer *t)
{
	if (!t)
		return;
	free(t->tok);
	free(t->blob);
	free(t->hash);
	free(t->trie);
	free(t->pairs);
	free(t);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "<0xNN>" with exactly two hex digits of either case. */
static bool parse_byte_token(const char *s, size_t n, uint8_t *b)
{
	int hi, lo;

	if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
		return false;
	hi = hexval(s[3]);
	lo = hexval(s[4]);
	if (hi < 0 || lo < 0)
		return false;
	*b = (uint8_t)(hi << 4 | lo);
	return true;
}

/* Array under key with the given element type; a missing key is a corrupt vocabulary. */
static int get_arr(const struct gguf *g, const char *key, uint32_t type,
		   struct gguf_arr *a, ms_err *err)
{
	int r = ms_gguf_get_arr(g, key, type, a, err);

	if (r == -ENOENT)
		return ms_errf(err, -EINVAL, "tokenizer: %s is missing", key);
	return r;
}

/*
 * Reads a token id. Stored as 4294967295 (or -1) it means "none", which
 * only optional ids may be; anything else must lie inside the vocabulary.
 */
static int get_id(const struct gguf *g, const char *key, int64_t def, bool optional,
		  uint32_t n_vocab, int32_t *out, ms_err *err)
{
	const struct gguf_kv *kv = ms_gguf_find_kv(g, key);
	int64_t v = def;

	if (kv) {
		switch (kv->val.type) {
		case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64:
			v = kv->val.v.u > UINT32_MAX ? INT64_MAX : (int64_t)kv->val.v.u;
			break;
		case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
			v = kv->val.v.i;
			break;
		default:
			return ms_errf(err, -EINVAL, "tokenizer: %s is not an integer", key);
		}
	}
	if (v == -1 || v == (int64_t)UINT32_MAX) {
		if (!optional)
			return ms_errf(err, -EINVAL, "tokenizer: %s is unset (%" PRId64 ")", key, v);
		*out = -1;
		return 0;
	}
	if (v < 0 || v >= (int64_t)n_vocab)
		return ms_errf(err, -EINVAL,
			       "tokenizer: %s = %" PRId64 " is out of range (vocabulary has %" PRIu32 " tokens)",
			       key, v, n_vocab);
	*out = (int32_t)v;
	return 0;
}

static int get_flag(const struct gguf *g, const char *key, bool def, bool *out, ms_err *err)
{
	int r = ms_gguf_get_bool(g, key, out, err);

	if (r == -ENOENT) {
		ms_err_clear(err);
		*out = def;
		return 0;
	}
	return r;
}

static void trie_insert(struct ms_tokenizer *t, int32_t id)
{
	const struct tok *k = &t->tok[id];
	const unsigned char *s = (const unsigned char *)t->blob + k->off;
	int32_t *link = &t->root[s[0]];
	int32_t node = -1;
	size_t i;

	for (i = 0; i < k->len; i++) {
		node = *link;
		while (node >= 0 && t->trie[node].c != s[i])
			node = t->trie[node].sibling;
		if (node < 0) {
			node = (int32_t)t->n_trie++;
			t->trie[node] = (struct trie_node){ -1, *link, -1, -1, s[i] };
			*link = node;
		}
		link = &t->trie[node].child;
	}
	/* The lowest id wins when two special tokens share a text. */
	if (t->trie[node].id_any < 0)
		t->trie[node].id_any = id;
	if (k->type == MS_TOK_USER_DEFINED && t->trie[node].id_user < 0)
		t->trie[node].id_user = id;
}

static bool is_special(unsigned type)
{
	return type == MS_TOK_CONTROL || type == MS_TOK_UNKNOWN || type == MS_TOK_USER_DEFINED;
}

static int build_specials(struct ms_tokenizer *t, ms_err *err)
{
	size_t nodes = 0;
	uint32_t i;

	for (i = 0; i < 256; i++)
		t->root[i] = -1;
	for (i = 0; i < t->n_vocab; i++)
		if (is_special(t->tok[i].type) && t->tok[i].len)
			nodes += t->tok[i].len;
	if (!nodes)
		return 0;
	t->trie = calloc(nodes, sizeof(*t->trie));
	if (!t->trie)
		return ms_errf(err, -ENOMEM, "tokenizer: out of memory for the special-token trie");
	for (i = 0; i < t->n_vocab; i++) {
		if (!is_special(t->tok[i].type) || !t->tok[i].len)
			continue;
		trie_insert(t, (int32_t)i);
		t->n_special++;
		if (t->tok[i].type == MS_TOK_USER_DEFINED)
			t->n_user++;
	}
	return 0;
}

static int build_pairs(struct ms_tokenizer *t, ms_err *err)
{
	uint32_t i;

	t->pairs = calloc((1u << PAIR_BITS) / 64, sizeof(*t->pairs));
	if (!t->pairs)
		return ms_errf(err, -ENOMEM, "tokenizer: out of memory for the pair filter");
	for (i = 0; i < t->n_vocab; i++) {
		const unsigned char *s = (const unsigned char *)t->blob + t->tok[i].off;
		size_t n = t->tok[i].len, p = 0, len;
		uint32_t prev = 0;

		if (!mergeable(t->tok[i].type))
			continue;
		while (p < n) {
			uint32_t c;

			len = utf8_char_len(s + p, n - p);
			c = char_pack(s + p, len);
			if (p) {
				uint32_t k = pair_slot(prev, c);

				t->pairs[k / 64] |= (uint64_t)1 << (k % 64);
			}
			prev = c;
			p += len;
		}
	}
	return 0;
}

static int load_tokens(struct ms_tokenizer *t, const struct gguf *g, ms_err *err)
{
	struct gguf_arr toks, scores, types;
	const uint8_t *cur;
	size_t blob_size = 0, pos = 0;
	uint64_t i;
	int r;

	if ((r = get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &toks, err)) ||
	    (r = get_arr(g, "tokenizer.ggml.scores", GGUF_F32, &scores, err)) ||
	    (r = get_arr(g, "tokenizer.ggml.token_type", GGUF_I32, &types, err)))
		return r;
	if (toks.n == 0 || toks.n > MAX_VOCAB)
		return ms_errf(err, -EINVAL,
			       "tokenizer: tokenizer.ggml.tokens has %" PRIu64 " entries (expected 1 to %u)",
			       toks.n, MAX_VOCAB);
	if (scores.n != toks.n)
		return ms_errf(err, -EINVAL,
			       "tokenizer: tokenizer.ggml.scores has %" PRIu64 " entries for %" PRIu64 " tokens",
			       scores.n, toks.n);
	if (types.n != toks.n)
		return ms_errf(err, -EINVAL,
			       "tokenizer: tokenizer.ggml.token_type has %" PRIu64 " entries for %" PRIu64 " tokens",
			       types.n, toks.n);
	t->n_vocab = (uint32_t)toks.n;

	/* First pass: check lengths and size the blob. */
	cur = toks.data;
	for (i = 0; i < toks.n; i++) {
		struct gguf_str s = ms_gguf_arr_str(&cur);

		if (s.n > MS_TOK_MAX_PIECE)
			return ms_errf(err, -EINVAL,
				       "tokenizer: token %" PRIu64 " is %" PRIu64 " bytes long (limit %d)",
				       i, s.n, MS_TOK_MAX_PIECE);
		blob_size += (size_t)s.n + 1;
	}
	if (blob_size > UINT32_MAX)
		return ms_errf(err, -EINVAL, "tokenizer: token texts total %zu bytes", blob_size);

	t->tok = calloc(toks.n, sizeof(*t->tok));
	t->blob = malloc(blob_size);
	if (!t->tok || !t->blob)
		return ms_errf(err, -ENOMEM, "tokenizer: out of memory for %" PRIu64 " tokens", toks.n);

	cur = toks.data;
	for (i = 0; i < toks.n; i++) {
		struct gguf_str s = ms_gguf_arr_str(&cur);
		struct tok *k = &t->tok[i];
		int32_t type = ms_gguf_arr_i32(&types, i);
		float score = ms_gguf_arr_f32(&scores, i);

		if (type < 0 || type > MS_TOK_BYTE)
			return ms_errf(err, -EINVAL, "tokenizer: token %" PRIu64 " has unknown type %" PRId32,
				       i, type);
		/* A NaN would make the merge order depend on the heap's layout. */
		if (isnan(score))
			return ms_errf(err, -EINVAL, "tokenizer: token %" PRIu64 " has a NaN score", i);
		k->off = (uint32_t)pos;
		k->len = (uint16_t)s.n;
		k->type = (uint8_t)type;
		k->score = score;
		memcpy(t->blob + pos, s.p, (size_t)s.n);
		t->blob[pos + s.n] = '\0';
		pos += (size_t)s.n + 1;
		if (k->len > t->max_len)
			t->max_len = k->len;
		if (type == MS_TOK_UNUSED)
			t->has_unused = true;
		if (type == MS_TOK_BYTE && !parse_byte_token(s.p, (size_t)s.n, &k->byte)) {
			char shown[16];
			size_t j, n = s.n < 12 ? (size_t)s.n : 12;

			/* Show the text safely: it may hold anything. */
			for (j = 0; j < n; j++)
				shown[j] = s.p[j] >= 0x20 && s.p[j] < 0x7f ? s.p[j] : '?';
			shown[n] = '\0';
			return ms_errf(err, -EINVAL,
				       "tokenizer: byte token %" PRIu64 " has text \"%s%s\", expected <0xNN>",
				       i, shown, s.n > n ? "..." : "");
		}
	}
	return 0;
}

int ms_tokenizer_load(const struct gguf *g, struct ms_tokenizer **out, ms_err *err)
{
	struct ms_tokenizer *t;
	struct gguf_str model;
	uint32_t i, cap;
	int r;

	r = ms_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
	if (r == -ENOENT)
		return ms_errf(err, -EINVAL, "tokenizer: tokenizer.ggml.model is missing");
	if (r)
		return r;
	if (model.n != 5 || memcmp(model.p, "llama", 5) != 0) {
		char shown[33];
		size_t j, n = model.n < 32 ? (size_t)model.n : 32;

		for (j = 0; j < n; j++)
			shown[j] = model.p[j] >= 0x20 && model.p[j] < 0x7f ? model.p[j] : '?';
		shown[n] = '\0';
		return ms_errf(err, -EINVAL,
			       "tokenizer: tokenizer.ggml.model is \"%s\"; only \"llama\" (SentencePiece BPE) is supported",
			       shown);
	}

	t = calloc(1, sizeof(*t));
	if (!t)
		return ms_errf(err, -ENOMEM, "tokenizer: out of memory");
	if ((r = load_tokens(t, g, err)))
		goto fail;

	/* Load factor <= 1/2 keeps probe chains short. */
	for (cap = 2; cap < 2 * t->n_vocab; cap <<= 1)
		;
	t->hash = malloc((size_t)cap * sizeof(*t->hash));
	if (!t->hash) {
		r = ms_errf(err, -ENOMEM, "tokenizer: out of memory for the token index");
		goto fail;
	}
	for (i = 0; i < cap; i++)
		t->hash[i] = (struct hslot){ 0, -1 };
	t->hmask = cap - 1;
	for (i = 0; i < t->n_vocab; i++)
		hash_insert(t, (int32_t)i);

	/* Byte fallback: the first <0xNN> token, else a one-byte normal token. */
	for (i = 0; i < 256; i++)
		t->byte_id[i] = -1;
	for (i = 0; i < t->n_vocab; i++)
		if (t->tok[i].type == MS_TOK_BYTE && t->byte_id[t->tok[i].byte] < 0)
			t->byte_id[t->tok[i].byte] = (int32_t)i;
	for (i = 0; i < 128; i++) {
		char c = (char)i;
		int32_t id;

		if (t->byte_id[i] >= 0)
			continue;
		id = lookup(t, &c, 1);
		if (id >= 0 && emittable(t->tok[id].type))
			t->byte_id[i] = id;
	}

	if ((r = get_id(g, "tokenizer.ggml.bos_token_id", 1, false, t->n_vocab, &t->bos, err)) ||
	    (r = get_id(g, "tokenizer.ggml.eos_token_id", 2, false, t->n_vocab, &t->eos, err)) ||
	    (r = get_id(g, "tokenizer.ggml.unknown_token_id", 0, true, t->n_vocab, &t->unk, err)))
		goto fail;
	{
		/* Unused here, but a corrupt value still means a corrupt file. */
		static const char *const optional[] = {
			"tokenizer.ggml.padding_token_id", "tokenizer.ggml.seperator_token_id",
			"tokenizer.ggml.separator_token_id", "tokenizer.ggml.cls_token_id",
			"tokenizer.ggml.mask_token_id",
		};
		int32_t dummy;

		for (i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
			if (ms_gguf_find_kv(g, optional[i]) &&
			    (r = get_id(g, optional[i], -1, true, t->n_vocab, &dummy, err)))
				goto fail;
	}
	if ((r = get_flag(g, "tokenizer.ggml.add_bos_token", true, &t->add_bos, err)) ||
	    (r = get_flag(g, "tokenizer.ggml.add_space_prefix", true, &t->add_space, err)))
		goto fail;
	if ((r = build_specials(t, err)) || (r = build_pairs(t, err)))
		goto fail;
	*out = t;
	return 0;
fail:
	ms_tokenizer_free(t);
	return r;
}

/* ---- encoding ---------------------------------------------------------- */

struct sym {
	uint32_t off, n;	/* bytes of the escaped text; n = 0 once merged away */
	int32_t prev, next;	/* live neighbours, -1 at the ends */
	int32_t id;		/* token of a merged symbol; -1 for a character (looked up at the end) */
};

/* One merge: left and right are the merge-tree nodes it joined (-1 for a character). */
struct mnode {
	uint32_t off, n;
	int32_t left, right;
};

/*
 * A queued pair: symbol left and its right neighbour at queue time. key
 * orders the heap: the piece's score in its high half (mapped so that
 * unsigned order is float order), ~left in the low half (ties go to the
 * leftmost pair, SentencePiece's rule), so one integer compare decides.
 */
struct bigram {
	uint64_t key;
	uint32_t size;		/* bytes of the pair when queued: detects stale entries */
	int32_t id;		/* the piece the pair forms */
};

struct enc {
	const struct ms_tokenizer *t;
	char *buf;		/* escaped fragment */
	size_t buf_cap;
	struct sym *sym;
	size_t sym_cap;
	int32_t *sym_node;	/* merge-tree node of each symbol (only with unused tokens) */
	size_t sym_node_cap;
	struct mnode *node;
	size_t n_node, node_cap;
	struct bigram *heap;
	size_t n_heap, heap_cap;
	int32_t *ids;
	size_t n_ids, ids_cap;
	ms_err *err;
};

/*
 * Grows the array *pp points to (any object pointer, passed as its address)
 * to hold at least need elements, doubling; -ENOMEM on overflow or failure.
 * The pointer goes through memcpy so that no int32_t * is accessed as a void *.
 */
static int grow(void *pp, size_t *cap, size_t need, size_t elsize)
{
	size_t ncap = *cap ? *cap : 16;
	void *p, *q;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -ENOMEM;
		ncap *= 2;
	}
	if (ncap > SIZE_MAX / elsize)
		return -ENOMEM;
	memcpy(&p, pp, sizeof(p));
	q = realloc(p, ncap * elsize);
	if (!q)
		return -ENOMEM;
	memcpy(pp, &q, sizeof(q));
	*cap = ncap;
	return 0;
}

static int push_id(struct enc *e, int32_t id)
{
	if (e->n_ids == e->ids_cap &&
	    grow(&e->ids, &e->ids_cap, e->n_ids + 1, sizeof(*e->ids)))
		return ms_errf(e->err, -ENOMEM, "tokenizer: out of memory for token ids");
	e->ids[e->n_ids++] = id;
	return 0;
}

static uint64_t bigram_key(float score, int32_t left)
{
	uint32_t u;

	if (score == 0.0f)
		score = 0.0f;	/* -0 and +0 are one score */
	memcpy(&u, &score, 4);
	u = u & 0x80000000u ? ~u : u | 0x80000000u;
	return (uint64_t)u << 32 | (uint32_t)~(uint32_t)left;
}

static int32_t bigram_left(const struct bigram *b)
{
	return (int32_t)~(uint32_t)b->key;
}

/*
 * Max-heap on key, 4-ary: half the levels of a binary heap, with the four
 * children side by side in memory, which matters once a long text's queue
 * outgrows the cache.
 */
static void sift_down(struct bigram *h, size_t n, size_t i)
{
	struct bigram x = h[i];

	for (;;) {
		size_t c = 4 * i + 1, best, k, end;

		if (c >= n)
			break;
		best = c;
		end = c + 4 < n ? c + 4 : n;
		for (k = c + 1; k < end; k++)
			if (h[k].key > h[best].key)
				best = k;
		if (h[best].key <= x.key)
			break;
		h[i] = h[best];
		i = best;
	}
	h[i] = x;
}

static int heap_push(struct enc *e, struct bigram b)
{
	size_t i;

	if (e->n_heap == e->heap_cap &&
	    grow(&e->heap, &e->heap_cap, e->n_heap + 1, sizeof(*e->heap)))
		return ms_errf(e->err, -ENOMEM, "tokenizer: out of memory for the merge queue");
	i = e->n_heap++;
	while (i > 0) {
		size_t up = (i - 1) / 4;

		if (e->heap[up].key >= b.key)
			break;
		e->heap[i] = e->heap[up];
		i = up;
	}
	e->heap[i] = b;
	return 0;
}

static struct bigram heap_pop(struct enc *e)
{
	struct bigram top = e->heap[0];

	e->heap[0] = e->heap[--e->n_heap];
	if (e->n_heap)
		sift_down(e->heap, e->n_heap, 0);
	return top;
}

/*
 * The pair (left, its next symbol) as a heap entry if their concatenation
 * is a piece BPE may produce; returns false otherwise.
 */
static bool make_bigram(const struct enc *e, int32_t left, struct bigram *b)
{
	const struct ms_tokenizer *t = e->t;
	const struct sym *l, *r;
	size_t size;
	int32_t id;

	if (left < 0 || e->sym[left].next < 0)
		return false;
	l = &e->sym[left];
	r = &e->sym[l->next];
	size = (size_t)l->n + r->n;
	/* Live neighbours are contiguous in buf, so the pair needs no copy. */
	id = lookup(t, e->buf + l->off, size);
	if (id < 0 || !mergeable(t->tok[id].type))
		return false;
	b->key = bigram_key(t->tok[id].score, left);
	b->size = (uint32_t)size;
	b->id = id;
	return true;
}

static int try_bigram(struct enc *e, int32_t left)
{
	struct bigram b;

	return make_bigram(e, left, &b) ? heap_push(e, b) : 0;
}

/* One token per byte; without byte tokens the whole piece becomes unknown. */
static int byte_fallback(struct enc *e, uint32_t off, uint32_t n)
{
	const struct ms_tokenizer *t = e->t;
	uint32_t i;
	int r;

	for (i = 0; i < n; i++)
		if (t->byte_id[(unsigned char)e->buf[off + i]] < 0)
			break;
	if (i < n) {
		if (t->unk < 0)
			return ms_errf(e->err, -EINVAL,
				       "tokenizer: byte 0x%02X has no byte token and the vocabulary no unknown token",
				       (unsigned char)e->buf[off + i]);
		return push_id(e, t->unk);
	}
	for (i = 0; i < n; i++)
		if ((r = push_id(e, t->byte_id[(unsigned char)e->buf[off + i]])))
			return r;
	return 0;
}

/*
 * Emits a final symbol: its token, or (for an unused piece) the two pieces it
 * was merged from, recursively, or its bytes. The recursion depth is bounded
 * by the number of merges inside one piece, so by MS_TOK_MAX_PIECE.
 */
static int emit(struct enc *e, uint32_t off, uint32_t n, int32_t id, int32_t node)
{
	const struct ms_tokenizer *t = e->t;
	int r;

	if (id < 0)
		id = lookup(t, e->buf + off, n);
	if (id >= 0 && emittable(t->tok[id].type))
		return push_id(e, id);
	if (node >= 0 && e->node[node].left >= 0) {
		const struct mnode *l = &e->node[e->node[node].left];
		const struct mnode *rt = &e->node[e->node[node].right];

		if ((r = emit(e, l->off, l->n, -1, e->node[node].left)))
			return r;
		return emit(e, rt->off, rt->n, -1, e->node[node].right);
	}
	return byte_fallback(e, off, n);
}

/*
 * Merges the linked symbols first..end-1 (one part of a fragment, links cut
 * at both ends) and emits the result. Each merge removes a symbol and
 * queues at most two pairs, so the heap sees at most 3n entries: O(n log n).
 */
static int bpe_run(struct enc *e, size_t first, size_t end)
{
	bool track = e->t->has_unused;
	size_t i, n = end - first;
	int32_t j;
	int r;

	if (n > 1) {
		/* Seed with every adjacent pair, heapified in O(n). */
		if (grow(&e->heap, &e->heap_cap, n, sizeof(*e->heap)))
			return ms_errf(e->err, -ENOMEM, "tokenizer: out of memory for the merge queue");
		e->n_heap = 0;
		for (i = first; i + 1 < end; i++)
			if (make_bigram(e, (int32_t)i, &e->heap[e->n_heap]))
				e->n_heap++;
		for (i = e->n_heap / 4 + 1; i-- > 0; )
			if (i < e->n_heap)
				sift_down(e->heap, e->n_heap, i);
	}
	while (n > 1 && e->n_heap) {
		struct bigram b = heap_pop(e);
		int32_t left = bigram_left(&b), right;
		struct sym *l = &e->sym[left], *rs;

		/*
		 * Stale: either side was merged since. Sizes only grow and a
		 * symbol is only absorbed by its left neighbour, so unchanged
		 * sizes mean the same two adjacent symbols (and l->next is
		 * still the right one).
		 */
		if (!l->n || l->next < 0)
			continue;
		right = l->next;
		rs = &e->sym[right];
		if (l->n + rs->n != b.size)
			continue;
		if (track) {
			e->node[e->n_node] = (struct mnode){ l->off, b.size,
							     e->sym_node[left], e->sym_node[right] };
			e->sym_node[left] = (int32_t)e->n_node++;
		}
		l->n += rs->n;
		l->id = b.id;
		rs->n = 0;
		l->next = rs->next;
		if (rs->next >= 0)
			e->sym[rs->next].prev = left;
		if ((r = try_bigram(e, l->prev)) || (r = try_bigram(e, left)))
			return r;
	}
	for (j = (int32_t)first; j >= 0; j = e->sym[j].next)
		if ((r = emit(e, e->sym[j].off, e->sym[j].n, e->sym[j].id,
			      track ? e->sym_node[j] : -1)))
			return r;
	return 0;
}

/* SentencePiece BPE over one text fragment (numerics.md section 4, steps 3-6). */
static int encode_fragment(struct enc *e, const char *s, size_t n, bool prefix)
{
	const struct ms_tokenizer *t = e->t;
	bool track = t->has_unused;
	size_t spaces = 0, m, i, nsym = 0;
	uint32_t prev = 0;
	char *o;
	int r;

	for (i = 0; i < n; i++)
		spaces += s[i] == ' ';
	m = n + 2 * spaces + (prefix ? SPACE_MARK_LEN : 0);
	if (grow(&e->buf, &e->buf_cap, m, 1))
		return ms_errf(e->err, -ENOMEM, "tokenizer: out of memory for %zu bytes of text", m);
	o = e->buf;
	if (prefix) {
		memcpy(o, SPACE_MARK, SPACE_MARK_LEN);
		o += SPACE_MARK_LEN;
	}
	for (i = 0; i < n; i++) {
		if (s[i] == ' ') {
			memcpy(o, SPACE_MARK, SPACE_MARK_LEN);
			o += SPACE_MARK_LEN;
		} else {
			*o++ = s[i];
		}
	}

	/* Characters: m is an upper bound on their count. */
	if (grow(&e->sym, &e->sym_cap, m, sizeof(*e->sym)))
		return ms_errf(e->err, -ENOMEM, "tokenizer: out of memory for %zu symbols", m);
	if (track && (grow(&e->sym_node, &e->sym_node_cap, m, sizeof(*e->sym_node)) ||
		      grow(&e->node, &e->node_cap, 2 * m, sizeof(*e->node))))
		return ms_errf(e->err, -ENOMEM, "tokenizer: out of memory for %zu symbols", m);
	e->n_node = 0;
	for (i = 0; i < m; ) {
		size_t len = utf8_char_len((const unsigned char *)e->buf + i, m - i);
		uint32_t c = char_pack((const unsigned char *)e->buf + i, len);
		/* Cut the links where no merge can cross: each part is its own run. */
		bool cut = !nsym || !pair_may_merge(t, prev, c);

		e->sym[nsym] = (struct sym){ (uint32_t)i, (uint32_t)len,
					     cut ? -1 : (int32_t)nsym - 1, (int32_t)nsym + 1, -1 };
		if (cut && nsym)
			e->sym[nsym - 1].next = -1;
		if (track) {
			e->node[e->n_node] = (struct mnode){ (uint32_t)i, (uint32_t)len, -1, -1 };
			e->sym_node[nsym] = (int32_t)e->n_node++;
		}
		prev = c;
		nsym++;
		i += len;
	}
	if (!nsym)
		return 0;
	e->sym[nsym - 1].next = -1;
	for (i = 0; i < nsym; ) {
		size_t end = i + 1;

		while (end < nsym && e->sym[end].prev >= 0)
			end++;
		if ((r = bpe_run(e, i, end)))
			return r;
		i = end;
	}
	return 0;
}

struct smatch {
	uint32_t pos, len;
	int32_t id;
};

/* Longest first, then leftmost: the order llama.cpp splits special tokens in. */
static int cmp_match(const void *a, const void *b)
{
	const struct smatch *x = a, *y = b;

	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_pos(const void *a, const void *b)
{
	const struct smatch *x = a, *y = b;

	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/*
 * Finds the special tokens to split out of text, as llama.cpp does: the
 * longest special token first takes every non-overlapping occurrence, left
 * to right, then the next longest within what is left. One trie walk per
 * position collects the candidates; taking them in (length desc, position)
 * order and checking only both ends of each against the bytes already
 * taken is exact, because everything taken earlier is at least as long.
 * Returns the accepted matches sorted by position in *out (count in *n_out).
 */
static int find_specials(const struct ms_tokenizer *t, const char *text, size_t len,
			 bool parse_special, struct smatch **out, size_t *n_out, ms_err *err)
{
	const unsigned char *s = (const unsigned char *)text;
	struct smatch *m = NULL;
	size_t n = 0, cap = 0, i, kept = 0;
	unsigned char *taken = NULL;

	for (i = 0; i < len; i++) {
		int32_t node = t->root[s[i]];
		size_t j = i;

		while (node >= 0) {
			const struct trie_node *nd = &t->trie[node];
			int32_t id = parse_special ? nd->id_any : nd->id_user;

			if (id >= 0) {
				if (n == cap && grow(&m, &cap, n + 1, sizeof(*m))) {
					free(m);
					return ms_errf(err, -ENOMEM, "tokenizer: out of memory for special tokens");
				}
				m[n++] = (struct smatch){ (uint32_t)i, (uint32_t)(j - i + 1), id };
			}
			if (++j >= len)
				break;
			for (node = nd->child; node >= 0 && t->trie[node].c != s[j];
			     node = t->trie[node].sibling)
				;
		}
	}
	*out = NULL;
	*n_out = 0;
	if (!n)
		return 0;
	taken = calloc(len, 1);
	if (!taken) {
		free(m);
		return ms_errf(err, -ENOMEM, "tokenizer: out of memory for special tokens");
	}
	qsort(m, n, sizeof(*m), cmp_match);
	for (i = 0; i < n; i++) {
		if (taken[m[i].pos] || taken[m[i].pos + m[i].len - 1])
			continue;
		memset(taken + m[i].pos, 1, m[i].len);
		m[kept++] = m[i];
	}
	free(taken);
	qsort(m, kept, sizeof(*m), cmp_pos);
	*out = m;
	*n_out = kept;
	return 0;
}

static void enc_free(struct enc *e)
{
	free(e->buf);
	free(e->sym);
	free(e->sym_node);
	free(e->node);
	free(e->heap);
}

int ms_tokenize(const struct ms_tokenizer *t, const char *text, size_t len,
		bool add_bos, bool parse_special, int32_t **ids, size_t *n_ids, ms_err *err)
{
	struct enc e = { .t = t, .err = err };
	struct smatch *sp = NULL;
	size_t n_sp = 0, k, pos = 0;
	bool prev_special = true;	/* the first fragment gets the space prefix */
	int r = 0;

	*ids = NULL;
	*n_ids = 0;
	if (!text && len)
		return ms_errf(err, -EINVAL, "tokenizer: NULL text");
	if (len > MAX_TEXT)
		return ms_errf(err, -EINVAL, "tokenizer: text of %zu bytes exceeds the limit of %zu",
			       len, MAX_TEXT);
	/* Never NULL on success, even for an empty result. */
	if (grow(&e.ids, &e.ids_cap, len / 2 + 8, sizeof(*e.ids)))
		return ms_errf(err, -ENOMEM, "tokenizer: out of memory for token ids");
	if (add_bos && (r = push_id(&e, t->bos)))
		goto out;
	if (len && (parse_special ? t->n_special : t->n_user) &&
	    (r = find_specials(t, text, len, parse_special, &sp, &n_sp, err)))
		goto out;
	for (k = 0; k <= n_sp; k++) {
		size_t end = k < n_sp ? sp[k].pos : len;

		if (end > pos) {
			if ((r = encode_fragment(&e, text + pos, end - pos,
						 t->add_space && prev_special)))
				goto out;
			prev_special = false;
		}
		if (k < n_sp) {
			if ((r = push_id(&e, sp[k].id)))
				goto out;
			prev_special = true;
			pos = sp[k].pos + sp[k].len;
		}
	}
out:
	free(sp);
	enc_free(&e);
	if (r) {
		free(e.ids);
		return r;
	}
	*ids = e.ids;
	*n_ids = e.n_ids;
	return 0;
}

/* ---- decoding ---------------------------------------------------------- */

void ms_detok_init(struct ms_detok *d, const struct ms_tokenizer *t, bool strip_leading_space)
{
	memset(d, 0, sizeof(*d));
	d->t = t;
	d->strip_space = strip_leading_space;
}

static size_t put_fffd(char *o)
{
	memcpy(o, "\xef\xbf\xbd", 3);
	return 3;
}

/*
 * Feeds one byte through the UTF-8 validator: writes complete characters,
 * holds a started one, and replaces each maximal invalid subpart by U+FFFD
 * (Unicode's recommended practice). Writes at most 6 bytes.
 */
static size_t detok_byte(struct ms_detok *d, unsigned char c, char *o)
{
	unsigned char lo, hi;
	size_t w = 0, need;

	if (d->npend) {
		need = utf8_lead(d->pend[0], &lo, &hi);
		if (d->npend > 1) {	/* the lead's range is the second byte's only */
			lo = 0x80;
			hi = 0xbf;
		}
		if (c >= lo && c <= hi) {
			d->pend[d->npend++] = c;
			if (d->npend < need)
				return 0;
			memcpy(o, d->pend, d->npend);
			w = d->npend;
			d->npend = 0;
			return w;
		}
		/* The held prefix can never complete; c starts afresh. */
		w = put_fffd(o);
		d->npend = 0;
	}
	need = utf8_lead(c, &lo, &hi);
	if (need == 1) {
		o[w++] = (char)c;
	} else if (need) {
		d->pend[0] = c;
		d->npend = 1;
	} else {
		w += put_fffd(o + w);
	}
	return w;
}

/* The bytes a token stands for, before UTF-8 validation; at most MS_TOK_MAX_PIECE. */
static size_t token_bytes(const struct ms_tokenizer *t, int32_t id, char *dst)
{
	const struct tok *k = &t->tok[id];
	const char *s = t->blob + k->off;
	size_t i, n = 0;

	switch (k->type) {
	case MS_TOK_CONTROL:
	case MS_TOK_UNUSED:
		return 0;
	case MS_TOK_BYTE:
		dst[0] = (char)k->byte;
		return 1;
	case MS_TOK_USER_DEFINED:
	case MS_TOK_UNKNOWN:
		/* As llama.cpp prints them: the text verbatim. */
		memcpy(dst, s, k->len);
		return k->len;
	default:
		for (i = 0; i < k->len; ) {
			if (i + SPACE_MARK_LEN <= k->len && memcmp(s + i, SPACE_MARK, SPACE_MARK_LEN) == 0) {
				dst[n++] = ' ';
				i += SPACE_MARK_LEN;
			} else {
				dst[n++] = s[i++];
			}
		}
		return n;
	}
}

/* Drops the first space of the first non-empty output when asked to. */
static size_t strip_space(struct ms_detok *d, char *out, size_t w)
{
	if (!d->strip_space || !w)
		return w;
	d->strip_space = false;
	if (out[0] != ' ')
		return w;
	memmove(out, out + 1, w - 1);
	return w - 1;
}

int ms_detok_push(struct ms_detok *d, int32_t id, char *out, size_t cap)
{
	char raw[MS_TOK_MAX_PIECE];
	size_t n, i, w = 0;

	if (id < 0 || (uint32_t)id >= d->t->n_vocab)
		return -EINVAL;
	/* Worst case: a held prefix's U+FFFD plus three bytes per piece byte. */
	if (cap < MS_DETOK_MAX_OUT)
		return -EINVAL;
	n = token_bytes(d->t, id, raw);
	for (i = 0; i < n; i++)
		w += detok_byte(d, (unsigned char)raw[i], out + w);
	return (int)strip_space(d, out, w);
}

int ms_detok_flush(struct ms_detok *d, char *out, size_t cap)
{
	size_t w;

	if (!d->npend)
		return 0;
	if (cap < 3)
		return -EINVAL;
	d->npend = 0;
	w = put_fffd(out);
	return (int)strip_space(d, out, w);
}

int ms_detokenize(const struct ms_tokenizer *t, const int32_t *ids, size_t n,
		  char **text, size_t *len, ms_err *err)
{
	struct ms_detok d;
	char chunk[MS_DETOK_MAX_OUT];
	char *buf = NULL;
	size_t used = 0, cap = 0, i;
	int w;

	*text = NULL;
	if (len)
		*len = 0;
	ms_detok_init(&d, t, false);
	for (i = 0; i <= n; i++) {
		if (i < n) {
			w = ms_detok_push(&d, ids[i], chunk, sizeof(chunk));
			if (w < 0) {
				free(buf);
				return ms_errf(err, -EINVAL,
					       "tokenizer: token id %" PRId32 " at position %zu is out of range (vocabulary has %" PRIu32 " tokens)",
					       ids[i], i, t->n_vocab);
			}
		} else {
			w = ms_detok_flush(&d, chunk, sizeof(chunk));
		}
		if (grow(&buf, &cap, used + (size_t)w + 1, 1)) {
			free(buf);
			return ms_errf(err, -ENOMEM, "tokenizer: out of memory detokenizing %zu ids", n);
		}
		memcpy(buf + used, chunk, (size_t)w);
		used += (size_t)w;
	}
	buf[used] = '\0';
	*text = buf;
	if (len)
		*len = used;
	return 0;
}
