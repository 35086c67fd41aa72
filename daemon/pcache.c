/* The prompt cache: finished sequences' tokens and KV state in a bounded LRU pool, owned by the worker. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"
#include "pcache.h"

void md_pcache_init(struct md_pcache *pc, size_t max_entries, size_t max_bytes)
{
	memset(pc, 0, sizeof(*pc));
	if (max_entries && max_bytes) {
		pc->max_entries = max_entries < MD_PCACHE_MAX_ENTRIES ? max_entries : MD_PCACHE_MAX_ENTRIES;
		pc->max_bytes = max_bytes;
	}
}

bool md_pcache_enabled(const struct md_pcache *pc)
{
	return pc->max_entries != 0;
}

static void publish(const struct md_pcache *pc)
{
	atomic_store(&md_counters.prompt_cache_entries, pc->n);
	atomic_store(&md_counters.prompt_cache_bytes, pc->bytes);
}

/* Drops entry i (the last one takes its place). */
static void drop(struct md_pcache *pc, size_t i)
{
	struct md_pentry *e = &pc->e[i];

	pc->bytes -= e->bytes;
	ms_kv_free(e->kv);
	free(e->toks);
	pc->e[i] = pc->e[--pc->n];
}

void md_pcache_clear(struct md_pcache *pc)
{
	while (pc->n)
		drop(pc, pc->n - 1);
	free(pc->e);
	pc->e = NULL;
	publish(pc);
}

static void evict_lru(struct md_pcache *pc)
{
	size_t lru = 0;

	for (size_t i = 1; i < pc->n; i++)
		if (pc->e[i].used < pc->e[lru].used)
			lru = i;
	drop(pc, lru);
	atomic_fetch_add(&md_counters.prompt_cache_evictions_total, 1);
}

int md_pcache_put(struct md_pcache *pc, const int32_t *toks, const struct ms_kv *kv)
{
	const uint32_t n = kv->pos;
	size_t need;
	struct md_pentry e = { 0 };
	ms_err err = { 0 };
	int r;

	if (!md_pcache_enabled(pc) || n == 0)
		return -ENOSPC;
	/* Already covered: an entry that extends these tokens and holds all of them. */
	for (size_t i = 0; i < pc->n; i++) {
		const struct md_pentry *o = &pc->e[i];

		if (o->n >= n && o->kv->first == 0 && ms_common_prefix(o->toks, o->n, toks, n) == n) {
			md_pcache_touch(pc, i);
			return -EEXIST;
		}
	}
	need = ms_kv_snapshot_bytes(kv, n) + n * sizeof(int32_t);
	if (need > pc->max_bytes)
		return -E2BIG;
	/* Redundant entries go first, then the least recently used, before allocating. */
	for (size_t i = 0; i < pc->n;) {
		const struct md_pentry *o = &pc->e[i];

		if (o->n <= n && kv->first == 0 && ms_common_prefix(o->toks, o->n, toks, n) == o->n)
			drop(pc, i);
		else
			i++;
	}
	while (pc->n && (pc->n >= pc->max_entries || pc->bytes + need > pc->max_bytes))
		evict_lru(pc);
	if (!pc->e) {
		pc->e = calloc(pc->max_entries, sizeof(*pc->e));
		if (!pc->e) {
			publish(pc);
			return -ENOMEM;
		}
	}
	e.toks = malloc(n * sizeof(int32_t));
	if (!e.toks || (r = ms_kv_snapshot(kv, n, &e.kv, &err)) < 0) {
		free(e.toks);
		publish(pc);
		return -ENOMEM;
	}
	memcpy(e.toks, toks, n * sizeof(int32_t));
	e.n = n;
	e.bytes = ms_kv_mapped_bytes(e.kv) + n * sizeof(int32_t);
	e.used = ++pc->clock;
	pc->e[pc->n++] = e;
	/* e.bytes <= need: the room made above was enough (ms_kv_snapshot_bytes) */
	pc->bytes += e.bytes;
	publish(pc);
	return 0;
}

long md_pcache_match(const struct md_pcache *pc, const int32_t *toks, uint32_t limit, uint32_t window,
		     uint32_t at_least, uint32_t *p)
{
	long best = -1;
	uint32_t best_p = at_least;

	for (size_t i = 0; i < pc->n; i++) {
		const struct md_pentry *e = &pc->e[i];
		uint32_t c = (uint32_t)ms_common_prefix(e->toks, e->n, toks, limit);

		if (c > best_p && ms_kv_resumable(e->kv, window, c)) {
			best = (long)i;
			best_p = c;
		}
	}
	if (best >= 0)
		*p = best_p;
	return best;
}

void md_pcache_touch(struct md_pcache *pc, size_t i)
{
	pc->e[i].used = ++pc->clock;
}

size_t md_pcache_auto_bytes(size_t reserve)
{
	FILE *f = fopen("/proc/meminfo", "re");
	unsigned long long kb = 0;
	char line[256];
	size_t avail;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	if (kb > (unsigned long long)(SIZE_MAX >> 11))
		kb = SIZE_MAX >> 11;
	avail = (size_t)kb << 10;
	return avail > reserve ? (avail - reserve) / 2 : 0;
}
