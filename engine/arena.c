/* Weight arena: maps one anonymous region in hugetlb, THP or normal pages, optionally locked, and bump-allocates from it. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "arena.h"

#define MIB ((size_t)1 << 20)

/* THP works at PMD granularity; 2 MiB on x86-64 and arm64 with 4 KiB pages. */
#define THP_SIZE_DEFAULT (2 * MIB)
#define HUGETLB_SIZE_DEFAULT (2 * MIB)

/*
 * Reads one "Key:   value kB" line of /proc/meminfo. Returns the number
 * (kB for sizes, a count for HugePages_*), or -1 when it is not there.
 */
static long long meminfo_value(const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	long long v = -1;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtoll(line + klen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/* Reads a small sysfs/procfs file into buf; false when it cannot be read. */
static bool read_small_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
	return n > 0;
}

static size_t hugetlb_page_size(void)
{
	long long kb = meminfo_value("Hugepagesize");

	if (kb <= 0 || (unsigned long long)kb > SIZE_MAX / 1024)
		return HUGETLB_SIZE_DEFAULT;
	return (size_t)kb * 1024;
}

static size_t thp_size(void)
{
	char buf[64];
	unsigned long long v;

	if (!read_small_file("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
			     buf, sizeof(buf)))
		return THP_SIZE_DEFAULT;
	v = strtoull(buf, NULL, 10);
	/* Must be a power of two for the alignment arithmetic below. */
	if (v == 0 || (v & (v - 1)) || v > SIZE_MAX / 2)
		return THP_SIZE_DEFAULT;
	return (size_t)v;
}

static size_t normal_page_size(void)
{
	long ps = sysconf(_SC_PAGESIZE);

	return ps > 0 ? (size_t)ps : 4096;
}

/* Rounds n up to a multiple of the power of two p; false on overflow. */
static bool round_up(size_t n, size_t p, size_t *out)
{
	if (n > SIZE_MAX - (p - 1))
		return false;
	*out = (n + p - 1) & ~(p - 1);
	return true;
}

/* Appends one reason to the arena's note, "; "-separated; truncates silently. */
__attribute__((format(printf, 2, 3)))
static void note_add(struct ms_arena *a, const char *fmt, ...)
{
	size_t len = strlen(a->note);
	va_list ap;

	if (len + 3 >= sizeof(a->note))
		return;
	if (len) {
		memcpy(a->note + len, "; ", 3);
		len += 2;
	}
	va_start(ap, fmt);
	vsnprintf(a->note + len, sizeof(a->note) - len, fmt, ap);
	va_end(ap);
}

/*
 * Hugetlb attempt. No MAP_NORESERVE: the kernel then reserves the pages at
 * mmap time, so a short pool fails here with ENOMEM instead of SIGBUS on a
 * later page fault in the middle of loading.
 */
static int try_hugetlb(struct ms_arena *a, size_t size, bool strict, ms_err *err)
{
	size_t hps = hugetlb_page_size();
	size_t len, pages;
	long long free_pages, rsvd;
	void *p;
	int e;

	if (!round_up(size, hps, &len)) {
		note_add(a, "hugetlb: %zu bytes cannot be rounded to %zu kB pages",
			 size, hps / 1024);
		return strict ? ms_errf(err, -ENOMEM, "%s", a->note) : 1;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (p != MAP_FAILED) {
		a->base = p;
		a->size = len;
		a->kind = MS_PAGES_HUGETLB;
		return 0;
	}
	e = errno;
	pages = len / hps;
	free_pages = meminfo_value("HugePages_Free");
	rsvd = meminfo_value("HugePages_Rsvd");
	if (strict)
		return ms_errf(err, -e,
			       "hugetlb: needed %zu pages of %zu kB for %zu bytes, HugePages_Free %lld (%lld reserved): %s; raise vm.nr_hugepages",
			       pages, hps / 1024, size, free_pages, rsvd, strerror(e));
	note_add(a, "hugetlb: needed %zu pages of %zu kB, HugePages_Free %lld (%lld reserved): %s",
		 pages, hps / 1024, free_pages, rsvd, strerror(e));
	return 1;
}

/* Why THP cannot be had, or NULL when the kernel offers it (always or madvise). */
static const char *thp_unavailable(void)
{
	char buf[128];

	if (!read_small_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)))
		return "not supported by this kernel";
	if (strstr(buf, "[never]"))
		return "disabled (transparent_hugepage/enabled is never)";
	return NULL;
}

/*
 * THP attempt: over-maps by one huge page and trims both ends so the region
 * starts on a 2 MiB boundary (otherwise the first and last partial 2 MiB
 * ranges can never be huge), then asks for huge pages with madvise.
 * Returns 0 with the mapping, 1 to fall back (note written), <0 on error.
 */
static int try_thp(struct ms_arena *a, size_t size, bool strict, ms_err *err)
{
	size_t hps = thp_size();
	size_t len, map_len, head, tail;
	const char *why = thp_unavailable();
	uintptr_t start, aligned;
	void *p;
	int e;

	if (why) {
		note_add(a, "thp: %s", why);
		return strict ? ms_errf(err, -EOPNOTSUPP, "%s", a->note) : 1;
	}
	if (!round_up(size, hps, &len) || len > SIZE_MAX - hps) {
		note_add(a, "thp: %zu bytes is too large to align", size);
		return strict ? ms_errf(err, -ENOMEM, "%s", a->note) : 1;
	}
	map_len = len + hps;
	p = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		e = errno;
		note_add(a, "thp: mmap of %zu bytes: %s", map_len, strerror(e));
		return strict ? ms_errf(err, -e, "%s", a->note) : 1;
	}
	start = (uintptr_t)p;
	aligned = (start + hps - 1) & ~(uintptr_t)(hps - 1);
	head = aligned - start;
	tail = map_len - head - len;
	/* Trimming a private anonymous mapping cannot fail for valid ranges. */
	if (head)
		munmap(p, head);
	if (tail)
		munmap((void *)(aligned + len), tail);
	a->base = (unsigned char *)aligned;
	a->size = len;
	if (madvise(a->base, len, MADV_HUGEPAGE) == 0) {
		a->kind = MS_PAGES_THP;
		return 0;
	}
	/* The mapping is still good memory, just in normal pages. */
	e = errno;
	note_add(a, "thp: madvise(MADV_HUGEPAGE): %s", strerror(e));
	if (strict) {
		munmap(a->base, a->size);
		a->base = NULL;
		a->size = 0;
		return ms_errf(err, -e, "%s", a->note);
	}
	a->kind = MS_PAGES_NORMAL;
	return 0;
}

static int map_normal(struct ms_arena *a, size_t size, ms_err *err)
{
	size_t len;
	void *p;
	int e;

	if (!round_up(size, normal_page_size(), &len))
		return ms_errf(err, -ENOMEM, "arena: %zu bytes is larger than the address space",
			       size);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		e = errno;
		if (e == ENOMEM)
			return ms_errf(err, -ENOMEM,
				       "arena: needed %zu bytes (%zu MiB), MemAvailable %lld kB",
				       size, (size + MIB - 1) / MIB,
				       meminfo_value("MemAvailable"));
		return ms_errf(err, -e, "arena: mmap of %zu bytes: %s", len, strerror(e));
	}
	a->base = p;
	a->size = len;
	a->kind = MS_PAGES_NORMAL;
	return 0;
}

static void format_limit(rlim_t v, char *buf, size_t cap)
{
	if (v == RLIM_INFINITY)
		snprintf(buf, cap, "unlimited");
	else
		snprintf(buf, cap, "%llu bytes", (unsigned long long)v);
}

/*
 * Locks the whole arena (which also faults it in: for a model that is the
 * full load cost up front, not later on the first tokens).
 */
static int lock_arena(struct ms_arena *a, bool required, ms_err *err)
{
	struct rlimit rl;
	char lim[48] = "unknown";
	int e;

	if (mlock(a->base, a->size) == 0) {
		a->locked = true;
		return 0;
	}
	e = errno;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0)
		format_limit(rl.rlim_cur, lim, sizeof(lim));
	if (required)
		return ms_errf(err, -e,
			       "mlock of %zu bytes failed: %s; RLIMIT_MEMLOCK is %s (raise LimitMEMLOCK)",
			       a->size, strerror(e), lim);
	a->mlock_errno = e;
	note_add(a, "mlock of %zu bytes: %s; RLIMIT_MEMLOCK is %s", a->size, strerror(e), lim);
	return 0;
}

int ms_arena_create(size_t size, const struct ms_arena_opts *opts,
		    struct ms_arena **out, ms_err *err)
{
	struct ms_arena_opts def = { .policy = MS_POLICY_THP };
	struct ms_arena *a;
	int rc = 1;

	if (!out)
		return ms_errf(err, -EINVAL, "arena: no output pointer");
	*out = NULL;
	if (!opts)
		opts = &def;
	if (size == 0)
		return ms_errf(err, -EINVAL, "arena: size 0");
	if (opts->policy != MS_POLICY_HUGETLB && opts->policy != MS_POLICY_THP &&
	    opts->policy != MS_POLICY_NONE)
		return ms_errf(err, -EINVAL, "arena: unknown page policy %d", (int)opts->policy);
	a = calloc(1, sizeof(*a));
	if (!a)
		return ms_errf(err, -ENOMEM, "arena: out of memory for the descriptor");

	/* rc: 0 mapped, 1 fall back to the next kind, < 0 error (strict). */
	if (opts->policy == MS_POLICY_HUGETLB)
		rc = try_hugetlb(a, size, opts->strict, err);
	if (rc == 1 && opts->policy != MS_POLICY_NONE)
		rc = try_thp(a, size, opts->strict && opts->policy == MS_POLICY_THP, err);
	if (rc == 1)
		rc = map_normal(a, size, err);
	if (rc < 0)
		goto fail;

	if (opts->mlock || opts->mlock_required) {
		rc = lock_arena(a, opts->mlock_required, err);
		if (rc < 0)
			goto fail;
	}
	*out = a;
	return 0;
fail:
	ms_arena_destroy(a);
	return rc;
}

size_t ms_arena_map_bytes(size_t size, enum ms_page_policy policy)
{
	size_t normal, thp, tlb;

	if (!round_up(size, normal_page_size(), &normal) || !round_up(size, thp_size(), &thp))
		return 0;
	if (policy == MS_POLICY_NONE)
		return normal;
	/* try_thp keeps its rounded length even when madvise is refused */
	thp = thp > normal ? thp : normal;
	if (policy == MS_POLICY_THP)
		return thp;
	if (!round_up(size, hugetlb_page_size(), &tlb))
		return 0;
	return tlb > thp ? tlb : thp;
}

void *ms_arena_alloc(struct ms_arena *a, size_t n, size_t align)
{
	size_t off;

	if (!a || align == 0 || (align & (align - 1)) || align > 4096)
		return NULL;
	/* used <= size and size is far below SIZE_MAX, but check anyway. */
	if (a->used > SIZE_MAX - (align - 1))
		return NULL;
	off = (a->used + align - 1) & ~(align - 1);
	if (off > a->size || n > a->size - off)
		return NULL;
	a->used = off + n;
	/* Fresh anonymous memory is zero and the bump pointer never reuses it. */
	return a->base + off;
}

void ms_arena_destroy(struct ms_arena *a)
{
	if (!a)
		return;
	if (a->base)
		munmap(a->base, a->size);   /* also drops the mlock */
	free(a);
}

const char *ms_page_kind_name(enum ms_page_kind k)
{
	switch (k) {
	case MS_PAGES_NORMAL:
		return "normal";
	case MS_PAGES_THP:
		return "thp";
	case MS_PAGES_HUGETLB:
		return "hugetlb";
	}
	return "unknown";
}

int ms_page_policy_parse(const char *s, enum ms_page_policy *out)
{
	if (!s || !out)
		return -EINVAL;
	if (strcmp(s, "hugetlb") == 0)
		*out = MS_POLICY_HUGETLB;
	else if (strcmp(s, "thp") == 0)
		*out = MS_POLICY_THP;
	else if (strcmp(s, "none") == 0)
		*out = MS_POLICY_NONE;
	else
		return -EINVAL;
	return 0;
}
