/* The prompt cache: finished sequences' tokens and KV state in a bounded LRU pool, owned by the worker. */
#ifndef MD_PCACHE_H
#define MD_PCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"

/*
 * Ring slots each sequence's cache has beyond the attention window: a
 * windowed sequence can be rolled back MD_PCACHE_MARGIN + 1 positions
 * (forward.h), enough for a chat turn whose client re-tokenized the end of
 * the previous answer differently. 8 MiB a sequence on Mistral 7B.
 */
#define MD_PCACHE_MARGIN 64u
/* Most entries a pool may hold whatever its byte budget: matching scans them all. */
#define MD_PCACHE_MAX_ENTRIES 4096u

/* One kept sequence: the tokens of positions [0, n) and a snapshot of their keys and values. */
struct md_pentry {
	int32_t *toks;
	uint32_t n;
	struct ms_kv *kv;            /* ms_kv_snapshot: holds [kv->first, n) */
	size_t bytes;                /* what it costs: the snapshot's mapping and the tokens */
	uint64_t used;               /* LRU clock of its last insertion or reuse */
};

struct md_pcache {
	struct md_pentry *e;         /* [n], unordered */
	size_t n;
	size_t max_entries, max_bytes;   /* both nonzero when enabled */
	size_t bytes;
	uint64_t clock;
};

/* An empty pool with these limits; either 0 means off. */
void md_pcache_init(struct md_pcache *pc, size_t max_entries, size_t max_bytes);
bool md_pcache_enabled(const struct md_pcache *pc);
/* Frees every entry (a reload: entries never outlive their model). */
void md_pcache_clear(struct md_pcache *pc);

/*
 * Keeps a finished sequence: toks[0..kv->pos) with a snapshot of kv.
 * Evicts least recently used entries first so the limits hold at every
 * moment, memory included; an entry bigger than the whole budget is not
 * kept. Entries whose tokens the new one extends, and whose positions it
 * still holds all of, are dropped as redundant. 0, or -errno when nothing
 * was kept (the pool is unchanged then, apart from evictions).
 */
int md_pcache_put(struct md_pcache *pc, const int32_t *toks, const struct ms_kv *kv);

/*
 * The entry from which a sequence attending over `window` positions can
 * continue furthest into toks[0..limit): its index and in *p the position
 * to continue at (the common prefix, capped at limit, when the ring rule
 * allows it there). -1 when no entry beats `at_least` positions.
 */
long md_pcache_match(const struct md_pcache *pc, const int32_t *toks, uint32_t limit, uint32_t window,
		     uint32_t at_least, uint32_t *p);
/* Marks entry i as just used. */
void md_pcache_touch(struct md_pcache *pc, size_t i);

/*
 * The default budget beside the model: half of the memory still available
 * (MemAvailable) after reserving `reserve` bytes for the sequences' own
 * caches. 0 when that cannot be read or nothing is left.
 */
size_t md_pcache_auto_bytes(size_t reserve);

#endif
