/* Weight arena: one anonymous mapping in hugetlb pages, transparent huge pages or normal pages. */
#ifndef MS_ARENA_H
#define MS_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

enum ms_page_kind {
	MS_PAGES_NORMAL = 0,
	MS_PAGES_THP = 1,       /* MADV_HUGEPAGE accepted */
	MS_PAGES_HUGETLB = 2,   /* MAP_HUGETLB from the pool */
};

/* Which kinds to try, best first: hugetlb -> thp -> normal. */
enum ms_page_policy {
	MS_POLICY_HUGETLB = 0,  /* try hugetlb, then thp, then normal */
	MS_POLICY_THP = 1,      /* try thp, then normal */
	MS_POLICY_NONE = 2,     /* normal pages only */
};

struct ms_arena_opts {
	enum ms_page_policy policy;
	bool strict;            /* fail instead of falling back below the policy's first kind */
	bool mlock;             /* try mlock() the whole arena */
	bool mlock_required;    /* a failing mlock is an error instead of a warning */
};

struct ms_arena {
	unsigned char *base;    /* mapping start */
	size_t size;            /* mapped bytes (rounded up to the page size used) */
	size_t used;            /* bump pointer */
	enum ms_page_kind kind; /* what was obtained */
	bool locked;            /* mlock succeeded */
	int mlock_errno;        /* errno of a failed (non-required) mlock, else 0 */
	char note[256];         /* why a better kind was not obtained (fallback reason), "" if none */
};

/*
 * Maps size bytes following opts (NULL: MS_POLICY_THP, no mlock). On
 * failure (-ENOMEM ...) the reason says how much was needed and, for
 * hugetlb, how many pages were free.
 */
int ms_arena_create(size_t size, const struct ms_arena_opts *opts,
		    struct ms_arena **out, ms_err *err);

/*
 * The most bytes ms_arena_create(size, policy) maps: size rounded up to
 * the biggest page the policy may obtain (exactly what it maps when it gets
 * that kind; less when it falls back). 0 when size cannot be rounded.
 */
size_t ms_arena_map_bytes(size_t size, enum ms_page_policy policy);

/* Bump allocation, zeroed, aligned to align (a power of two <= 4096); NULL when full. */
void *ms_arena_alloc(struct ms_arena *a, size_t n, size_t align);

/* Unmaps; accepts NULL. */
void ms_arena_destroy(struct ms_arena *a);

const char *ms_page_kind_name(enum ms_page_kind k);   /* "normal", "thp", "hugetlb" */

/* Parses "hugetlb" / "thp" / "none"; -EINVAL otherwise. */
int ms_page_policy_parse(const char *s, enum ms_page_policy *out);

#endif
