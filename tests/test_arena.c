/* Tests for the weight arena: normal, THP and real hugetlb mappings, fallbacks, mlock limits and the bump allocator. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"
#include "../tests/tap.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#define MIB ((size_t)1 << 20)
#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

static long long meminfo(const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	long long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtoll(line + klen + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static long long read_ll(const char *path)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");
	long long v = -1;

	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f))
		v = strtoll(buf, NULL, 10);
	fclose(f);
	return v;
}

/* Free hugetlb pages nobody has reserved yet. */
static long long hugetlb_available(void)
{
	long long f = meminfo("HugePages_Free"), r = meminfo("HugePages_Rsvd");

	return f < 0 || r < 0 ? -1 : f - r;
}

/*
 * The pool size we found, restored at exit and from fatal signals (a
 * sanitizer abort or a crash must not leave the machine's hugepages taken).
 * The restore path only uses async-signal-safe calls.
 */
static char saved_nr[32];
static size_t saved_nr_len;
static volatile sig_atomic_t pool_changed;

static bool write_nr(const char *s, size_t n)
{
	int fd = open(NR_HUGEPAGES, O_WRONLY);
	bool okw;

	if (fd < 0)
		return false;
	okw = write(fd, s, n) == (ssize_t)n;
	close(fd);
	return okw;
}

static void restore_pool(void)
{
	if (pool_changed && write_nr(saved_nr, saved_nr_len))
		pool_changed = 0;
}

static const int fatal_sigs[] = { SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE,
				  SIGTERM, SIGINT, SIGHUP };
static struct sigaction old_act[sizeof(fatal_sigs) / sizeof(fatal_sigs[0])];

/* Restores the pool, then hands the signal to whoever had it (default, or a sanitizer). */
static void restore_on_signal(int sig)
{
	restore_pool();
	for (size_t i = 0; i < sizeof(fatal_sigs) / sizeof(fatal_sigs[0]); i++)
		if (fatal_sigs[i] == sig)
			sigaction(sig, &old_act[i], NULL);
	raise(sig);
}

static void install_restore(void)
{
	static bool done;
	struct sigaction sa;

	if (done)
		return;
	done = true;
	atexit(restore_pool);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = restore_on_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(fatal_sigs) / sizeof(fatal_sigs[0]); i++)
		sigaction(fatal_sigs[i], &sa, &old_act[i]);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_names(void)
{
	enum ms_page_policy pol = MS_POLICY_NONE;

	ok(strcmp(ms_page_kind_name(MS_PAGES_NORMAL), "normal") == 0 &&
	   strcmp(ms_page_kind_name(MS_PAGES_THP), "thp") == 0 &&
	   strcmp(ms_page_kind_name(MS_PAGES_HUGETLB), "hugetlb") == 0,
	   "page kind names");
	ok(ms_page_policy_parse("hugetlb", &pol) == 0 && pol == MS_POLICY_HUGETLB &&
	   ms_page_policy_parse("thp", &pol) == 0 && pol == MS_POLICY_THP &&
	   ms_page_policy_parse("none", &pol) == 0 && pol == MS_POLICY_NONE,
	   "policy names parse");
	ok(ms_page_policy_parse("huge", &pol) == -EINVAL &&
	   ms_page_policy_parse("", &pol) == -EINVAL &&
	   ms_page_policy_parse(NULL, &pol) == -EINVAL &&
	   ms_page_policy_parse("THP", &pol) == -EINVAL,
	   "unknown policy names are -EINVAL");
}

static void test_normal_and_alloc(void)
{
	struct ms_arena_opts o = { .policy = MS_POLICY_NONE };
	struct ms_arena *a = NULL;
	ms_err err = { 0 };
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char *p1, *p2, *p3;
	int rc;

	rc = ms_arena_create(10000, &o, &a, &err);
	if (!ok(rc == 0 && a, "policy none: created (%d %s)", rc, err.msg))
		return;
	ok(a->kind == MS_PAGES_NORMAL && a->note[0] == '\0' && !a->locked &&
	   a->mlock_errno == 0, "policy none: normal pages, no note, not locked");
	ok(a->size == ((10000 + (size_t)ps - 1) / (size_t)ps) * (size_t)ps,
	   "size rounded up to the page size (%zu)", a->size);
	ok(((uintptr_t)a->base % (uintptr_t)ps) == 0, "base page-aligned");

	p1 = ms_arena_alloc(a, 3, 1);
	p2 = ms_arena_alloc(a, 100, 64);
	p3 = ms_arena_alloc(a, 1, 4096);
	ok(p1 == a->base && p2 && ((uintptr_t)p2 % 64) == 0 && p2 >= p1 + 3,
	   "alloc: aligned to 64, after the previous block");
	ok(p3 && ((uintptr_t)p3 % 4096) == 0 && p3 >= p2 + 100,
	   "alloc: aligned to 4096");
	ok(p2 && all_zero(p2, 100), "alloc: memory is zero");
	ok(ms_arena_alloc(a, 8, 3) == NULL && ms_arena_alloc(a, 8, 0) == NULL &&
	   ms_arena_alloc(a, 8, 8192) == NULL, "alloc: bad alignments are refused");
	ok(ms_arena_alloc(a, SIZE_MAX, 1) == NULL &&
	   ms_arena_alloc(a, SIZE_MAX - 4000, 4096) == NULL,
	   "alloc: SIZE_MAX does not wrap around");
	{
		size_t used = a->used;
		size_t left = a->size - used;
		unsigned char *q = ms_arena_alloc(a, left, 1);

		ok(q == a->base + used && a->used == a->size, "alloc: exactly the rest fits");
		ok(ms_arena_alloc(a, 1, 1) == NULL, "alloc: full arena returns NULL");
		ok(ms_arena_alloc(a, 0, 1) == a->base + a->size, "alloc: 0 bytes at the end is fine");
		if (q) {
			memset(q, 0xa5, left);   /* the whole tail is writable */
			ok(q[left - 1] == 0xa5, "alloc: tail writable");
		} else {
			ok(0, "alloc: tail writable");
		}
	}
	ms_arena_destroy(a);
	ms_arena_destroy(NULL);

	a = (struct ms_arena *)1;
	rc = ms_arena_create(0, &o, &a, &err);
	ok(rc == -EINVAL && a == NULL && err.code == -EINVAL, "size 0 is -EINVAL (%s)", err.msg);
}

static void test_huge_size(void)
{
	struct ms_arena *a = NULL;
	ms_err err = { 0 };
	int rc;

	rc = ms_arena_create((size_t)1 << 60, NULL, &a, &err);
	ok(rc == -ENOMEM && a == NULL, "1<<60 bytes: -ENOMEM (%d)", rc);
	ok(strstr(err.msg, "1152921504606846976") && strstr(err.msg, "MemAvailable"),
	   "message names the bytes and MemAvailable: %s", err.msg);

	ms_err_clear(&err);
	rc = ms_arena_create(SIZE_MAX - 5, NULL, &a, &err);
	ok(rc == -ENOMEM && a == NULL && err.msg[0], "SIZE_MAX-5 bytes: -ENOMEM: %s", err.msg);

	{
		struct ms_arena_opts o = { .policy = MS_POLICY_HUGETLB, .strict = true };

		ms_err_clear(&err);
		rc = ms_arena_create(SIZE_MAX - 5, &o, &a, &err);
		ok(rc == -ENOMEM && a == NULL && err.msg[0],
		   "SIZE_MAX-5 bytes, strict hugetlb: -ENOMEM: %s", err.msg);
	}
}

static void test_thp(void)
{
	struct ms_arena_opts o = { .policy = MS_POLICY_THP };
	struct ms_arena *a = NULL;
	ms_err err = { 0 };
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	bool have_thp = false;
	int rc;

	if (f) {
		have_thp = fgets(buf, sizeof(buf), f) && !strstr(buf, "[never]");
		fclose(f);
	}
	rc = ms_arena_create(3 * MIB + 5, &o, &a, &err);
	if (!ok(rc == 0 && a, "policy thp: created (%d %s)", rc, err.msg))
		return;
	if (have_thp) {
		ok(a->kind == MS_PAGES_THP && a->note[0] == '\0', "policy thp: kind thp (%s)",
		   ms_page_kind_name(a->kind));
		ok(((uintptr_t)a->base % (2 * MIB)) == 0 && a->size == 4 * MIB,
		   "thp region 2 MiB-aligned and rounded (%zu)", a->size);
		memset(a->base, 1, a->size);
		diag("AnonHugePages after touching 4 MiB: %lld kB", meminfo("AnonHugePages"));
	} else {
		skip("THP disabled or unsupported here (enabled: %s)", buf[0] ? buf : "absent\n");
		skip("THP alignment: THP unavailable");
		ok(a->kind == MS_PAGES_NORMAL && strstr(a->note, "thp"),
		   "THP unavailable: falls back to normal with a note: %s", a->note);
		ms_arena_destroy(a);
		a = NULL;
		o.strict = true;
		rc = ms_arena_create(MIB, &o, &a, &err);
		ok(rc < 0 && !a && strstr(err.msg, "thp"), "strict thp fails cleanly: %s", err.msg);
	}
	ms_arena_destroy(a);
}

/* What ms_arena_map_bytes promises: never less than ms_arena_create maps, exact for the kind asked. */
static void test_map_bytes(void)
{
	static const enum ms_page_policy pol[] = { MS_POLICY_NONE, MS_POLICY_THP, MS_POLICY_HUGETLB };
	static const size_t sizes[] = { 1, 10000, 2 * MIB, 3 * MIB + 5 };
	const size_t ps = (size_t)sysconf(_SC_PAGESIZE);

	ok(ms_arena_map_bytes(10000, MS_POLICY_NONE) == (10000 + ps - 1) / ps * ps &&
	   ms_arena_map_bytes(3 * MIB + 5, MS_POLICY_THP) % (2 * MIB) == 0 &&
	   ms_arena_map_bytes(3 * MIB + 5, MS_POLICY_THP) >= 4 * MIB &&
	   ms_arena_map_bytes(3 * MIB + 5, MS_POLICY_HUGETLB) >= ms_arena_map_bytes(3 * MIB + 5, MS_POLICY_THP),
	   "map bytes: page-rounded for none, 2 MiB-rounded for thp, at least that for hugetlb");
	ok(ms_arena_map_bytes(SIZE_MAX - 5, MS_POLICY_NONE) == 0 && ms_arena_map_bytes(SIZE_MAX - 5, MS_POLICY_THP) == 0,
	   "map bytes: a size that cannot be rounded is 0");
	for (size_t i = 0; i < sizeof(pol) / sizeof(pol[0]); i++) {
		for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
			struct ms_arena_opts o = { .policy = pol[i] };
			struct ms_arena *a = NULL;
			ms_err err = { 0 };
			size_t promised = ms_arena_map_bytes(sizes[j], pol[i]);

			if (ms_arena_create(sizes[j], &o, &a, &err) < 0) {
				ok(0, "map bytes: policy %d, %zu bytes: created (%s)", (int)pol[i], sizes[j], err.msg);
				continue;
			}
			/* the promise is exact when the policy's first choice was had, an upper bound otherwise */
			ok(a->size <= promised && (a->kind != MS_PAGES_THP || pol[i] != MS_POLICY_THP || a->size == promised),
			   "map bytes: policy %d, %zu bytes: maps %zu (%s), promised %zu", (int)pol[i], sizes[j], a->size,
			   ms_page_kind_name(a->kind), promised);
			ms_arena_destroy(a);
		}
	}
}

/* Requests one page more than the pool has free: fallback with a note, or a strict error. */
static void test_hugetlb_short_pool(void)
{
	struct ms_arena_opts o = { .policy = MS_POLICY_HUGETLB };
	struct ms_arena *a = NULL;
	ms_err err = { 0 };
	long long avail = hugetlb_available();
	long long overcommit = read_ll("/proc/sys/vm/nr_overcommit_hugepages");
	long long hps_kb = meminfo("Hugepagesize");
	size_t size;
	char want[64];
	int rc;

	if (avail < 0 || hps_kb <= 0 || avail > 64 || overcommit != 0) {
		skip("short hugetlb pool: pool state unusable (avail %lld, overcommit %lld)",
		     avail, overcommit);
		skip("short hugetlb pool, strict");
		return;
	}
	size = (size_t)(avail + 1) * (size_t)hps_kb * 1024;
	snprintf(want, sizeof(want), "needed %lld pages", avail + 1);
	rc = ms_arena_create(size, &o, &a, &err);
	ok(rc == 0 && a && a->kind != MS_PAGES_HUGETLB && strstr(a->note, "HugePages_Free") &&
	   strstr(a->note, want),
	   "hugetlb with %lld free pages, %lld wanted: falls back to %s: %s", avail, avail + 1,
	   a ? ms_page_kind_name(a->kind) : "-", a ? a->note : err.msg);
	ms_arena_destroy(a);
	a = NULL;

	o.strict = true;
	rc = ms_arena_create(size, &o, &a, &err);
	ok(rc == -ENOMEM && !a && strstr(err.msg, want) && strstr(err.msg, "HugePages_Free"),
	   "strict hugetlb with a short pool: -ENOMEM naming needed vs free: %s", err.msg);
}

/* Grows the hugetlb pool by a few pages for a real MAP_HUGETLB arena, then restores it. */
static void test_hugetlb_real(void)
{
	const size_t want = 8 * MIB;
	struct ms_arena_opts o = { .policy = MS_POLICY_HUGETLB, .strict = true };
	struct ms_arena *a = NULL;
	ms_err err = { 0 };
	long long hps_kb = meminfo("Hugepagesize"), old, pages, avail, rsvd0;
	char buf[32];
	FILE *f;
	int n, rc;

	if (geteuid() != 0) {
		skip("real hugetlb: not root, cannot grow vm.nr_hugepages");
		return;
	}
	f = fopen(NR_HUGEPAGES, "r");
	if (!f || !fgets(saved_nr, sizeof(saved_nr), f) || hps_kb <= 0) {
		if (f)
			fclose(f);
		skip("real hugetlb: cannot read " NR_HUGEPAGES " or Hugepagesize");
		return;
	}
	fclose(f);
	saved_nr_len = strlen(saved_nr);
	old = strtoll(saved_nr, NULL, 10);
	pages = (long long)((want + (size_t)hps_kb * 1024 - 1) / ((size_t)hps_kb * 1024));
	avail = hugetlb_available();

	install_restore();
	n = snprintf(buf, sizeof(buf), "%lld\n", old + pages);
	pool_changed = 1;
	if (!write_nr(buf, (size_t)n)) {
		restore_pool();
		skip("real hugetlb: writing " NR_HUGEPAGES " failed (%s)", strerror(errno));
		return;
	}
	if (hugetlb_available() < avail + pages) {
		long long got = hugetlb_available();

		restore_pool();
		skip("real hugetlb: pool did not grow (%lld available, wanted %lld more)",
		     got, pages);
		return;
	}
	diag("grew vm.nr_hugepages %lld -> %lld (%lld kB pages)", old, old + pages, hps_kb);
	rsvd0 = meminfo("HugePages_Rsvd");

	rc = ms_arena_create(want - 1, &o, &a, &err);
	if (ok(rc == 0 && a && a->kind == MS_PAGES_HUGETLB,
	       "hugetlb arena of %zu bytes: kind %s (%d %s)", want - 1,
	       a ? ms_page_kind_name(a->kind) : "-", rc, err.msg)) {
		ok(a->size == want && a->note[0] == '\0',
		   "hugetlb size rounded to whole huge pages (%zu)", a->size);
		ok(meminfo("HugePages_Rsvd") >= rsvd0 + pages,
		   "pages were reserved at mmap time (no MAP_NORESERVE): Rsvd %lld -> %lld",
		   rsvd0, meminfo("HugePages_Rsvd"));
		ok(all_zero(a->base, a->size), "hugetlb memory reads as zero");
		memset(a->base, 0x5a, a->size);
		ok(a->base[0] == 0x5a && a->base[a->size - 1] == 0x5a,
		   "all %zu bytes writable", a->size);
	}
	ms_arena_destroy(a);
	restore_pool();
	ok(!pool_changed && read_ll(NR_HUGEPAGES) == old,
	   "vm.nr_hugepages restored to %lld", old);
}

struct child_result {
	int rc1, rc2;
	bool locked1;
	int mlock_errno1;
	char note1[256];
	char msg2[256];
	int setup;   /* 0 ok, else errno of the failing setup step */
};

/*
 * In a child (the limit and the dropped uid must not leak into the rest of
 * the tests): lowers RLIMIT_MEMLOCK below the arena and, as root, drops to
 * an unprivileged uid, since CAP_IPC_LOCK ignores the limit.
 */
static void test_mlock_limited(void)
{
	struct child_result r;
	int fds[2], st;
	pid_t pid;
	ssize_t got;

#ifdef UNDER_ASAN
	/* The sanitizer runtime intercepts mlock() as a no-op that succeeds. */
	skip("mlock limit: AddressSanitizer turns mlock into a no-op");
	skip("mlock limit, required: AddressSanitizer turns mlock into a no-op");
	return;
#endif
	if (pipe(fds)) {
		skip("mlock limit: pipe failed");
		skip("mlock limit: required");
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		skip("mlock limit: fork failed");
		skip("mlock limit: required");
		return;
	}
	if (pid == 0) {
		struct rlimit rl = { 64 * 1024, 64 * 1024 };
		struct ms_arena_opts o = { .policy = MS_POLICY_NONE, .mlock = true };
		struct ms_arena *a = NULL;
		ms_err err = { 0 };

		memset(&r, 0, sizeof(r));
		close(fds[0]);
		if (setrlimit(RLIMIT_MEMLOCK, &rl))
			r.setup = errno;
		else if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			r.setup = errno;
		if (!r.setup) {
			r.rc1 = ms_arena_create(MIB, &o, &a, &err);
			if (a) {
				r.locked1 = a->locked;
				r.mlock_errno1 = a->mlock_errno;
				memcpy(r.note1, a->note, sizeof(r.note1));
			}
			ms_arena_destroy(a);
			a = NULL;
			o.mlock_required = true;
			r.rc2 = ms_arena_create(MIB, &o, &a, &err);
			memcpy(r.msg2, err.msg, sizeof(r.msg2));
			if (a)
				r.rc2 = 1;   /* must not have succeeded */
			ms_arena_destroy(a);
		}
		if (write(fds[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(2);
		_exit(0);
	}
	close(fds[1]);
	got = read(fds[0], &r, sizeof(r));
	close(fds[0]);
	waitpid(pid, &st, 0);
	if (got != (ssize_t)sizeof(r) || r.setup) {
		skip("mlock limit: child setup failed (%s)", strerror(r.setup));
		skip("mlock limit: required");
		return;
	}
	ok(r.rc1 == 0 && !r.locked1 && r.mlock_errno1 != 0 && strstr(r.note1, "RLIMIT_MEMLOCK") &&
	   strstr(r.note1, "65536"),
	   "mlock over the limit, not required: arena ok, mlock_errno %d, note: %s",
	   r.mlock_errno1, r.note1);
	ok(r.rc2 < 0 && strstr(r.msg2, "RLIMIT_MEMLOCK") && strstr(r.msg2, "65536") &&
	   strstr(r.msg2, "1048576"),
	   "mlock over the limit, required: error %d naming bytes and limit: %s", r.rc2, r.msg2);
}

static void test_mlock_ok(void)
{
	struct ms_arena_opts o = { .policy = MS_POLICY_NONE, .mlock = true,
				   .mlock_required = true };
	struct ms_arena *a = NULL;
	ms_err err = { 0 };
	struct rlimit rl;
	int rc;

	if (geteuid() != 0 &&
	    (getrlimit(RLIMIT_MEMLOCK, &rl) || (rl.rlim_cur != RLIM_INFINITY &&
						rl.rlim_cur < 2 * MIB))) {
		skip("mlock: not root and RLIMIT_MEMLOCK below 2 MiB");
		return;
	}
	rc = ms_arena_create(MIB, &o, &a, &err);
	ok(rc == 0 && a && a->locked && a->mlock_errno == 0 && a->note[0] == '\0',
	   "mlock of 1 MiB within the limit succeeds (%d %s)", rc, err.msg);
	ms_arena_destroy(a);
}

int main(void)
{
	long long before = read_ll(NR_HUGEPAGES);

	test_names();
	test_normal_and_alloc();
	test_huge_size();
	test_thp();
	test_map_bytes();
	test_mlock_ok();
	test_mlock_limited();
	test_hugetlb_real();
	test_hugetlb_short_pool();
	ok(read_ll(NR_HUGEPAGES) == before, "vm.nr_hugepages unchanged at the end (%lld)", before);
	return done_testing();
}
