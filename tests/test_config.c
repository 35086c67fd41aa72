/* Tests for mistrald's configuration: defaults, every key's values, the file syntax, the shipped file and manual, and the command line. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "conf.h"
#include "tap.h"

#define MIB ((size_t)1 << 20)

static char err[1024];

static const char *tmp_dir(void)
{
	const char *t = getenv("TEST_TMPDIR");

	if (!t || !*t)
		t = getenv("TMPDIR");
	return t && *t ? t : "/tmp";
}

static const char *src_dir(void)
{
	const char *s = getenv("srcdir");

	return s && *s ? s : ".";
}

/* Writes len bytes to a new temporary file; its name goes to path. */
static int write_tmp(const void *data, size_t len, char *path, size_t plen)
{
	const char *p = data;
	int fd;

	snprintf(path, plen, "%s/test_config.XXXXXX", tmp_dir());
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0) {
			close(fd);
			unlink(path);
			return -EIO;
		}
		p += n;
		len -= (size_t)n;
	}
	close(fd);
	return 0;
}

/* Loads text as a configuration file on top of c; path receives the file's name. */
static int load_text(struct md_config *c, const char *text, char *path, size_t plen)
{
	int r = write_tmp(text, strlen(text), path, plen);

	if (r)
		return r;
	err[0] = '\0';
	r = md_config_load(c, path, err, sizeof(err));
	unlink(path);
	return r;
}

/* needle in text as a whole word: followed by ',' or ' ' ("Q4_K," yes, "Q4_K_M" no). */
static bool lists_word(const char *text, const char *needle)
{
	size_t n = strlen(needle);

	for (const char *q = text; (q = strstr(q, needle)); q++)
		if (q[n] == ',' || q[n] == ' ')
			return true;
	return false;
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	if (buf)
		buf[n] = '\0';
	fclose(f);
	return buf;
}

static const char *get(const struct md_config *c, const char *key)
{
	static char buf[8][4096];
	static int next;
	char *b = buf[next++ % 8];

	if (md_config_get(c, key, b, sizeof(buf[0])) != 0)
		snprintf(b, sizeof(buf[0]), "<get failed>");
	return b;
}

/* The keys conf.h documents; the table in conf.c must hold exactly these. */
static const char *const all_keys[] = {
	"model", "threads", "context", "sliding_window", "parallel", "queue_depth",
	"batch", "kernels", "socket", "socket_mode", "socket_group", "hugepages",
	"mlock", "kv_cache", "prompt_cache", "prompt_cache_entries", "max_message_bytes", "max_nesting", "max_connections",
	"max_requests_per_connection", "max_tokens_limit", "output_buffer_bytes",
	"idle_timeout", "shutdown_timeout", "load_wait", "log_level",
	"http_listen", "http_api_key", "http_allow_remote", "http_max_body_bytes",
	"http_max_header_bytes", "http_timeout", "http_max_connections",
};
#define NKEYS (sizeof(all_keys) / sizeof(all_keys[0]))

/* ---- defaults ----------------------------------------------------------- */

static void test_defaults(void)
{
	struct md_config c;
	size_t i, n;
	bool same = true;

	md_config_defaults(&c);
	ok(c.model == NULL, "default model is unset");
	ok(c.threads == 0, "default threads 0 (auto)");
	ok(c.context == 4096, "default context 4096");
	ok(c.sliding_window == -1, "default sliding_window -1 (auto)");
	ok(c.parallel == 4, "default parallel 4");
	ok(c.queue_depth == 16, "default queue_depth 16");
	ok(c.batch == 256, "default batch 256");
	ok(c.kernels && strcmp(c.kernels, "auto") == 0, "default kernels auto");
	ok(c.socket_path && strcmp(c.socket_path, MD_DEFAULT_SOCKET) == 0, "default socket %s",
	   MD_DEFAULT_SOCKET);
	ok(c.socket_mode == 0660, "default socket_mode 0660");
	ok(c.socket_group == NULL, "default socket_group unset");
	ok(c.hugepages == MS_POLICY_THP, "default hugepages thp");
	ok(c.kv_cache == GGML_TYPE_F16, "default kv_cache f16");
	ok(c.prompt_cache == MD_PROMPT_CACHE_AUTO, "default prompt_cache auto");
	ok(c.prompt_cache_entries == 64, "default prompt_cache_entries 64");
	ok(!c.mlock && !c.mlock_required, "default mlock no");
	ok(c.max_message_bytes == 1 * MIB, "default max_message_bytes 1 MiB");
	ok(c.max_nesting == 16, "default max_nesting 16");
	ok(c.max_connections == 64, "default max_connections 64");
	ok(c.max_requests_per_connection == 32, "default max_requests_per_connection 32");
	ok(c.max_tokens_limit == 4096, "default max_tokens_limit 4096");
	ok(c.output_buffer_bytes == 4 * MIB, "default output_buffer_bytes 4 MiB");
	ok(c.idle_timeout == 300, "default idle_timeout 300");
	ok(c.shutdown_timeout == 10, "default shutdown_timeout 10");
	ok(c.load_wait == 600, "default load_wait 600");
	ok(c.log_level == LOG_INFO, "default log_level info");
	ok(c.n_http_listen == 0 && !c.http_api_key && !c.http_allow_remote, "default: no HTTP API, no key, loopback only");
	ok(c.http_max_body_bytes == MIB && c.http_max_header_bytes == 16 * 1024 && c.http_timeout == 30 &&
	   c.http_max_connections == 64, "default HTTP limits: 1 MiB body, 16 KiB headers, 30 s, 64 connections");

	for (n = 0; md_config_key(n); n++) {
		for (i = 0; i < NKEYS; i++)
			if (strcmp(md_config_key(n), all_keys[i]) == 0)
				break;
		if (i == NKEYS) {
			diag("unexpected key %s", md_config_key(n));
			same = false;
		}
	}
	ok(same && n == NKEYS, "md_config_key lists exactly the %zu documented keys (got %zu)",
	   NKEYS, n);

	ok(strcmp(get(&c, "max_message_bytes"), "1M") == 0 &&
	   strcmp(get(&c, "socket_mode"), "0660") == 0 &&
	   strcmp(get(&c, "threads"), "auto") == 0 &&
	   strcmp(get(&c, "sliding_window"), "auto") == 0 &&
	   strcmp(get(&c, "model"), "") == 0 && strcmp(get(&c, "log_level"), "info") == 0,
	   "md_config_get formats defaults as the file would write them");
	ok(md_config_get(&c, "bogus", err, sizeof(err)) == -EINVAL, "md_config_get: unknown key");
	ok(md_config_get(&c, "socket", err, 4) == -ENOSPC, "md_config_get: small buffer");
	md_config_free(&c);
	md_config_free(&c);
	md_config_free(NULL);
	ok(1, "md_config_free on defaults, twice, and on NULL");
}

/* ---- valid values --------------------------------------------------------- */

static const struct {
	const char *key, *value, *expect;   /* expect: md_config_get afterwards */
} valid[] = {
	{ "model", "/var/lib/mistrald/model.gguf", "/var/lib/mistrald/model.gguf" },
	{ "model", "relative/model file.gguf", "relative/model file.gguf" },
	{ "threads", "auto", "auto" },
	{ "threads", "AUTO", "auto" },
	{ "threads", "0", "auto" },
	{ "threads", "1", "1" },
	{ "threads", "1024", "1024" },
	{ "threads", "008", "8" },
	{ "context", "0", "0" },
	{ "context", "128", "128" },
	{ "context", "1048576", "1048576" },
	{ "sliding_window", "auto", "auto" },
	{ "sliding_window", "off", "off" },
	{ "sliding_window", "0", "off" },
	{ "sliding_window", "4096", "4096" },
	{ "sliding_window", "1048576", "1048576" },
	{ "parallel", "1", "1" },
	{ "parallel", "64", "64" },
	{ "queue_depth", "0", "0" },
	{ "queue_depth", "4096", "4096" },
	{ "batch", "1", "1" },
	{ "batch", "4096", "4096" },
	{ "kernels", "generic", "generic" },
	{ "kernels", "avx2", "avx2" },
	{ "kernels", "AVX2", "avx2" },
	{ "kernels", "avx512", "avx512" },
	{ "kernels", "auto", "auto" },
	{ "socket", "/tmp/x.sock", "/tmp/x.sock" },
	{ "socket", "rel.sock", "rel.sock" },
	{ "socket_mode", "0600", "0600" },
	{ "socket_mode", "666", "0666" },
	{ "socket_mode", "0", "0000" },
	{ "socket_mode", "0777", "0777" },
	{ "socket_group", "mistral", "mistral" },
	{ "socket_group", "1234", "1234" },
	{ "hugepages", "hugetlb", "hugetlb" },
	{ "hugepages", "none", "none" },
	{ "hugepages", "THP", "thp" },
	{ "kv_cache", "f16", "f16" },
	{ "kv_cache", "F32", "f32" },
	{ "prompt_cache", "auto", "auto" },
	{ "prompt_cache", "off", "off" },
	{ "prompt_cache", "0", "off" },
	{ "prompt_cache", "2G", "2G" },
	{ "prompt_cache", "1536M", "1536M" },
	{ "prompt_cache", "4096", "4K" },
	{ "prompt_cache_entries", "0", "0" },
	{ "prompt_cache_entries", "4096", "4096" },
	{ "mlock", "yes", "yes" },
	{ "mlock", "no", "no" },
	{ "mlock", "required", "required" },
	{ "mlock", "true", "yes" },
	{ "mlock", "false", "no" },
	{ "mlock", "on", "yes" },
	{ "mlock", "off", "no" },
	{ "mlock", "1", "yes" },
	{ "mlock", "0", "no" },
	{ "mlock", "Yes", "yes" },
	{ "max_message_bytes", "1K", "1K" },
	{ "max_message_bytes", "1024", "1K" },
	{ "max_message_bytes", "1500", "1500" },
	{ "max_message_bytes", "16M", "16M" },
	{ "max_message_bytes", "16MiB", "16M" },
	{ "max_message_bytes", "2m", "2M" },
	{ "max_message_bytes", "256M", "256M" },
	{ "max_nesting", "5", "5" },
	{ "max_nesting", "32", "32" },
	{ "max_connections", "1", "1" },
	{ "max_connections", "65536", "65536" },
	{ "max_requests_per_connection", "1", "1" },
	{ "max_requests_per_connection", "1024", "1024" },
	{ "max_tokens_limit", "1", "1" },
	{ "max_tokens_limit", "1048576", "1048576" },
	{ "output_buffer_bytes", "64K", "64K" },
	{ "output_buffer_bytes", "65536", "64K" },
	{ "output_buffer_bytes", "1G", "1G" },
	{ "output_buffer_bytes", "1GiB", "1G" },
	{ "output_buffer_bytes", "1024M", "1G" },
	{ "idle_timeout", "0", "0" },
	{ "idle_timeout", "86400", "86400" },
	{ "shutdown_timeout", "1", "1" },
	{ "shutdown_timeout", "3600", "3600" },
	{ "load_wait", "0", "0" },
	{ "load_wait", "86400", "86400" },
	{ "log_level", "error", "error" },
	{ "log_level", "warning", "warning" },
	{ "log_level", "notice", "notice" },
	{ "log_level", "info", "info" },
	{ "log_level", "debug", "debug" },
	{ "log_level", "DEBUG", "debug" },
	/* http_listen appends; none empties the list */
	{ "http_listen", "127.0.0.1:8080", "127.0.0.1:8080" },
	{ "http_listen", "[::1]:8081", "127.0.0.1:8080 [::1]:8081" },
	{ "http_listen", "none", "" },
	{ "http_listen", "unix:/run/mistrald/http.sock localhost:80", "unix:/run/mistrald/http.sock localhost:80" },
	{ "http_listen", "NONE", "" },
	{ "http_listen", "0.0.0.0:65535", "0.0.0.0:65535" },
	{ "http_api_key", "/etc/mistrald/key", "/etc/mistrald/key" },
	{ "http_allow_remote", "yes", "yes" },
	{ "http_allow_remote", "off", "no" },
	{ "http_max_body_bytes", "1K", "1K" },
	{ "http_max_body_bytes", "256M", "256M" },
	{ "http_max_header_bytes", "1K", "1K" },
	{ "http_max_header_bytes", "1M", "1M" },
	{ "http_timeout", "1", "1" },
	{ "http_timeout", "3600", "3600" },
	{ "http_max_connections", "1", "1" },
	{ "http_max_connections", "65536", "65536" },
};

static void test_valid(void)
{
	struct md_config c;
	size_t i, j;
	bool covered;

	md_config_defaults(&c);
	for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		int r = md_config_set(&c, valid[i].key, valid[i].value, err, sizeof(err));

		ok(r == 0 && strcmp(get(&c, valid[i].key), valid[i].expect) == 0,
		   "%s = %s -> %s (got %d %s; %s)", valid[i].key, valid[i].value,
		   valid[i].expect, r, get(&c, valid[i].key), r ? err : "");
	}
	for (j = 0; j < NKEYS; j++) {
		covered = false;
		for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
			covered |= strcmp(valid[i].key, all_keys[j]) == 0;
		if (!covered)
			break;
	}
	ok(j == NKEYS, "every key has valid values in the table");
	md_config_free(&c);

	/* The struct fields themselves, for the keys that map to two of them or to a type. */
	md_config_defaults(&c);
	md_config_set(&c, "mlock", "required", err, sizeof(err));
	ok(c.mlock && c.mlock_required, "mlock = required sets mlock and mlock_required");
	md_config_set(&c, "mlock", "yes", err, sizeof(err));
	ok(c.mlock && !c.mlock_required, "mlock = yes after required clears mlock_required");
	md_config_set(&c, "log_level", "debug", err, sizeof(err));
	ok(c.log_level == LOG_DEBUG, "log_level = debug is LOG_DEBUG");
	md_config_set(&c, "log_level", "error", err, sizeof(err));
	ok(c.log_level == LOG_ERR, "log_level = error is LOG_ERR");
	md_config_set(&c, "hugepages", "hugetlb", err, sizeof(err));
	ok(c.hugepages == MS_POLICY_HUGETLB, "hugepages = hugetlb is MS_POLICY_HUGETLB");
	md_config_set(&c, "max_message_bytes", "16M", err, sizeof(err));
	ok(c.max_message_bytes == 16 * MIB, "max_message_bytes = 16M is 16 MiB");
	md_config_set(&c, "socket_mode", "0640", err, sizeof(err));
	ok(c.socket_mode == 0640, "socket_mode = 0640 is octal");
	md_config_set(&c, "sliding_window", "off", err, sizeof(err));
	ok(c.sliding_window == 0, "sliding_window = off is 0");
	md_config_set(&c, "socket", "/a/b.sock", err, sizeof(err));
	ok(strcmp(c.socket_path, "/a/b.sock") == 0, "socket sets socket_path");
	md_config_set(&c, "model", "/first", err, sizeof(err));
	md_config_set(&c, "model", "/second", err, sizeof(err));
	ok(strcmp(c.model, "/second") == 0, "setting a key twice: the last value wins");
	md_config_free(&c);
	ok(c.model == NULL && c.socket_path == NULL, "md_config_free clears the strings");
}

/* ---- invalid values --------------------------------------------------------- */

/* A value fit for a TAP description: one line, at most 40 bytes. */
static const char *printable(const char *s)
{
	static char buf[200];
	size_t i, o = 0;

	for (i = 0; s[i] && i < 40; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o] = '\0';
	return buf;
}

static void expect_invalid(const char *key, const char *value, const char *reason)
{
	struct md_config c;
	char before[4096];
	int r;

	md_config_defaults(&c);
	md_config_set(&c, "model", "/m", err, sizeof(err));
	snprintf(before, sizeof(before), "%s", get(&c, key));
	err[0] = '\0';
	r = md_config_set(&c, key, value, err, sizeof(err));
	ok(r == -EINVAL && strstr(err, key) == err && (!reason || strstr(err, reason)) &&
	   strcmp(get(&c, key), before) == 0,
	   "%s = '%s' rejected naming the key%s%s, value unchanged (%d: %s)", key, printable(value),
	   reason ? " and saying " : "", reason ? reason : "", r, err);
	md_config_free(&c);
}

struct bad_kind {
	const char *key;
	const char *below, *above;  /* just outside the range; NULL when there is none */
};

static void test_invalid(void)
{
	static const struct bad_kind numbers[] = {
		{ "threads", NULL, "1025" },
		{ "context", NULL, "1048577" },
		{ "sliding_window", NULL, "1048577" },
		{ "parallel", "0", "65" },
		{ "queue_depth", NULL, "4097" },
		{ "batch", "0", "4097" },
		{ "max_nesting", "4", "33" },
		{ "max_connections", "0", "65537" },
		{ "max_requests_per_connection", "0", "1025" },
		{ "max_tokens_limit", "0", "1048577" },
		{ "idle_timeout", NULL, "86401" },
		{ "shutdown_timeout", "0", "3601" },
		{ "load_wait", NULL, "86401" },
		{ "max_message_bytes", "1023", "268435457" },
		{ "output_buffer_bytes", "65535", "1073741825" },
		{ "http_max_body_bytes", "1023", "268435457" },
		{ "http_max_header_bytes", "1023", "1048577" },
		{ "http_timeout", "0", "3601" },
		{ "http_max_connections", "0", "65537" },
	};
	static const struct { const char *value, *reason; } listen_bad[] = {
		{ "8080", "HOST:PORT" }, { "127.0.0.1", "HOST:PORT" }, { "127.0.0.1:0", "port" },
		{ "127.0.0.1:65536", "port" }, { "127.0.0.1:80x", "port" }, { ":80", "no host" },
		{ "::1:80", "IPv4" }, { "[::1:80", "brackets" }, { "[nope]:80", "IPv6" },
		{ "example.com:80", "not resolved" }, { "unix:relative.sock", "absolute" },
		{ "127.0.0.1:80 bogus", "HOST:PORT" }, { "unix:/a\x01b", "control" },
	};
	static const char *const garbage[] = {
		"abc", "12abc", " 5", "5 ", "+5", "0x10", "1.5", "1e3", "\t",
	};
	static const char *const enums[] = {
		"kernels", "hugepages", "mlock", "log_level", "kv_cache",
	};
	struct md_config c;
	size_t i, j;
	char big[300];

	for (i = 0; i < NKEYS; i++)
		expect_invalid(all_keys[i], "", "empty value");

	for (i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		const char *k = numbers[i].key;

		if (numbers[i].below)
			expect_invalid(k, numbers[i].below, "out of range");
		expect_invalid(k, numbers[i].above, "out of range");
		expect_invalid(k, "99999999999999999999", "out of range");
		expect_invalid(k, "-1", "negative");
		for (j = 0; j < sizeof(garbage) / sizeof(garbage[0]); j++)
			expect_invalid(k, garbage[j], NULL);
	}
	expect_invalid("max_message_bytes", "1T", NULL);
	for (i = 0; i < sizeof(listen_bad) / sizeof(listen_bad[0]); i++)
		expect_invalid("http_listen", listen_bad[i].value, listen_bad[i].reason);
	expect_invalid("http_allow_remote", "maybe", "no, yes");
	{
		char many[512] = "";

		for (i = 0; i < MD_HTTP_LISTEN_MAX + 1; i++)
			snprintf(many + strlen(many), sizeof(many) - strlen(many), "127.0.0.1:%zu ", 8000 + i);
		expect_invalid("http_listen", many, "more than");
	}
	expect_invalid("max_message_bytes", "1KB", NULL);
	expect_invalid("max_message_bytes", "K", NULL);
	expect_invalid("max_message_bytes", "-1K", "negative");
	expect_invalid("max_message_bytes", "257M", "out of range");
	expect_invalid("max_message_bytes", "18014398509481984K", "out of range");
	expect_invalid("max_message_bytes", "99999999999999999999G", "out of range");
	expect_invalid("output_buffer_bytes", "63K", "out of range");
	expect_invalid("output_buffer_bytes", "2G", "out of range");
	expect_invalid("threads", "automatic", NULL);
	expect_invalid("sliding_window", "on", NULL);

	expect_invalid("socket_mode", "01000", "out of range");
	expect_invalid("socket_mode", "0778", "octal");
	expect_invalid("socket_mode", "8", "octal");
	expect_invalid("socket_mode", "rw-rw----", "octal");
	expect_invalid("socket_mode", "-1", "negative");
	expect_invalid("socket_mode", "0x1ff", NULL);
	expect_invalid("socket_mode", "7777777777777777777777777", "out of range");

	for (i = 0; i < sizeof(enums) / sizeof(enums[0]); i++) {
		expect_invalid(enums[i], "bogus", "not one of");
		expect_invalid(enums[i], "-1", NULL);
		expect_invalid(enums[i], "99999999999999999999", NULL);
		expect_invalid(enums[i], "yes ", NULL);
	}
	expect_invalid("kernels", "avx1024", "not one of");
	expect_invalid("hugepages", "yes", "not one of");
	expect_invalid("hugepages", "thpthpthpthpthpthp", "not one of");
	expect_invalid("mlock", "maybe", "not one of");
	expect_invalid("kv_cache", "q8_0", "not one of");
	expect_invalid("prompt_cache", "1025G", "out of range");
	expect_invalid("prompt_cache", "lots", "not a size");
	expect_invalid("prompt_cache_entries", "4097", "out of range");
	expect_invalid("log_level", "crit", "not one of");

	expect_invalid("model", "a\nb", "control character");
	expect_invalid("socket", "/tmp/\x1b[31m", "control character");
	expect_invalid("socket_group", "a b", "group name");
	expect_invalid("socket_group", "a:b", "group name");
	memset(big, 'a', sizeof(big) - 1);
	big[0] = '/';
	big[sizeof(big) - 1] = '\0';
	expect_invalid("socket", big, "shorter than");
	big[108] = '\0';
	expect_invalid("socket", big, "shorter than");
	big[107] = '\0';
	md_config_defaults(&c);
	ok(md_config_set(&c, "socket", big, err, sizeof(err)) == 0,
	   "a socket path of 107 bytes fits sun_path");
	md_config_free(&c);

	{
		char *huge = malloc(5000);

		memset(huge, 'x', 4999);
		huge[0] = '/';
		huge[4999] = '\0';
		expect_invalid("model", huge, "too long");
		free(huge);
	}

	md_config_defaults(&c);
	ok(md_config_set(&c, "bogus", "1", err, sizeof(err)) == -EINVAL && strstr(err, "bogus"),
	   "unknown key rejected naming it (%s)", err);
	ok(md_config_set(&c, "queue-depth", "1", err, sizeof(err)) == -EINVAL,
	   "the file API takes keys with '_' only (%s)", err);
	ok(md_config_set(&c, "Model", "/x", err, sizeof(err)) == -EINVAL,
	   "key names are case-sensitive");
	ok(md_config_set(&c, "model", NULL, err, sizeof(err)) == -EINVAL, "NULL value rejected");
	ok(md_config_set(&c, "threads", "x", NULL, 0) == -EINVAL, "no error buffer is fine");
	ok(md_config_set(&c, "model", "/tmp/\x01\x1b", err, sizeof(err)) == -EINVAL &&
	   !strchr(err, '\x1b') && strstr(err, "\\x1b"),
	   "control bytes are escaped in error messages (%s)", err);
	md_config_free(&c);
}

/* ---- the shipped file and the manual ----------------------------------------- */

static void test_shipped(void)
{
	struct md_config c, d;
	char path[4096], tpath[4096], *text, *man, *p, *out;
	size_t i, o;
	int r;
	bool same = true;

	snprintf(path, sizeof(path), "%s/etc/mistrald.conf", src_dir());
	md_config_defaults(&c);
	md_config_defaults(&d);
	r = md_config_load(&c, path, err, sizeof(err));
	ok(r == 0, "the shipped %s parses (%s)", path, r ? err : "");
	for (i = 0; i < NKEYS; i++)
		if (strcmp(get(&c, all_keys[i]), get(&d, all_keys[i])) != 0) {
			diag("%s: %s", all_keys[i], get(&c, all_keys[i]));
			same = false;
		}
	ok(same, "the shipped file changes nothing (every key commented out)");
	md_config_free(&c);

	/*
	 * Uncomment every "#key = value" line: the result must parse and set
	 * every key to its real default, so the documented defaults cannot
	 * drift from the code.
	 */
	text = read_text(path);
	ok(text != NULL, "read %s", path);
	same = true;
	if (!text)
		return;
	out = malloc(strlen(text) + 1);
	o = 0;
	for (p = text; *p;) {
		char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
		size_t klen = strspn(p + 1, "abcdefghijklmnopqrstuvwxyz_");

		if (p[0] == '#' && klen && strncmp(p + 1 + klen, " = ", 3) == 0) {
			memcpy(out + o, p + 1, n - 1);
			o += n - 1;
		} else {
			/* Commented prose stays a comment. */
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
	}
	out[o] = '\0';
	for (i = 0; i < NKEYS; i++) {
		char needle[64];

		snprintf(needle, sizeof(needle), "\n%s = ", all_keys[i]);
		if (!strstr(out, needle)) {
			diag("no '#%s = ' line", all_keys[i]);
			same = false;
		}
	}
	ok(same, "the shipped file has a commented-out line for every key");
	md_config_defaults(&c);
	r = load_text(&c, out, tpath, sizeof(tpath));
	ok(r == 0, "the shipped file with every key uncommented parses (%s)", r ? err : "");
	ok(c.model && strcmp(c.model, "/var/lib/mistrald/model.gguf") == 0,
	   "its example model is /var/lib/mistrald/model.gguf");
	same = true;
	for (i = 0; i < NKEYS; i++)
		/* Keys without a default (model, socket_group) show an example instead. */
		if (get(&d, all_keys[i])[0] &&
		    strcmp(get(&c, all_keys[i]), get(&d, all_keys[i])) != 0) {
			diag("%s: file says %s, the default is %s", all_keys[i],
			     get(&c, all_keys[i]), get(&d, all_keys[i]));
			same = false;
		}
	ok(same, "every value in the shipped file is the real default");
	ok(md_config_validate(&c, err, sizeof(err)) == 0, "and it validates (%s)", err);
	md_config_free(&c);
	free(out);
	free(text);

	snprintf(path, sizeof(path), "%s/man/mistrald.conf.5.in", src_dir());
	man = read_text(path);
	ok(man != NULL, "read %s", path);
	if (man) {
		same = true;
		for (i = 0; i < NKEYS; i++) {
			char needle[64];

			snprintf(needle, sizeof(needle), ".It Cm %s ", all_keys[i]);
			if (!strstr(man, needle)) {
				diag("no '%s' in the manual", needle);
				same = false;
			}
		}
		ok(same, "mistrald.conf(5) documents every key");
		free(man);
	}

	/* mistrald(8) lists every weight type the engine loads, in its "Weight types:" sentence */
	snprintf(path, sizeof(path), "%s/man/mistrald.8.in", src_dir());
	man = read_text(path);
	ok(man != NULL, "read %s", path);
	if (man) {
		char *types = strstr(man, "Weight types:"), *end = types ? strstr(types, "in any mix") : NULL;
		unsigned listed = 0;

		same = types && end;
		if (end)
			*end = '\0';
		for (uint32_t t = 0; same && t < 64; t++) {
			const struct ggml_type_info *ti = ms_ggml_type_get(t);
			char needle[32];

			if (!ti || !ti->supported)
				continue;
			snprintf(needle, sizeof(needle), " %s", ti->name);
			if (lists_word(types, needle)) {
				listed++;
			} else {
				diag("mistrald(8) does not list weight type %s", ti->name);
				same = false;
			}
		}
		ok(same && listed >= 8, "mistrald(8) lists every weight type the engine supports (%u)", listed);
		free(man);
	}

	{
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);

		md_config_usage(f);
		fclose(f);
		same = buf != NULL;
		for (i = 0; buf && i < NKEYS; i++) {
			char needle[64], *q;

			snprintf(needle, sizeof(needle), "  --%s ", all_keys[i]);
			for (q = needle; *q; q++)
				if (*q == '_')
					*q = '-';
			if (!strstr(buf, needle)) {
				diag("usage lacks '%s'", needle);
				same = false;
			}
		}
		ok(same && strstr(buf, "--config FILE") && strstr(buf, "--check-config") &&
		   strstr(buf, "--help") && strstr(buf, "--version") && strstr(buf, "[16]") &&
		   strstr(buf, "[1M]") && strstr(buf, "[" MD_DEFAULT_SOCKET "]"),
		   "usage lists every option with its default");
		free(buf);
	}
	md_config_free(&d);
}

/* ---- file syntax ------------------------------------------------------------ */

static const struct {
	const char *text;
	unsigned line;
	const char *reason;
} syntax_errors[] = {
	{ "threads 4\n", 1, "expected '=' after 'threads'" },
	{ "# ok\n\nthreads\n", 3, "expected '='" },
	{ "= 4\n", 1, "expected a key" },
	{ "model = /m\n[section]\n", 2, "expected a key" },
	{ "\n\n\nbogus = 1\n", 4, "unknown key 'bogus'" },
	{ "queue-depth = 1\n", 1, "unknown key 'queue-depth'" },
	{ "threads = abc\n", 1, "threads: 'abc' is not a number" },
	{ "threads = 4 5\n", 1, "threads:" },
	{ "threads =\n", 1, "threads: empty value" },
	{ "threads = # nothing\n", 1, "threads: empty value" },
	{ "model = \"\"\n", 1, "model: empty value" },
	{ "model = \"/unterminated\n", 1, "unterminated quoted value" },
	{ "model = \"/ends in backslash\\\n", 1, "unterminated quoted value" },
	{ "model = \"/a\\qb\"\n", 1, "unknown escape '\\q'" },
	{ "model = \"/a\" junk\n", 1, "unexpected 'junk' after the closing quote" },
	{ "model = \"/a\"\"b\"\n", 1, "after the closing quote" },
	{ "parallel = 1\r\nparallel = 0\r\n", 2, "parallel: '0' is out of range (1..64)" },
	{ "max_message_bytes = 512M\n", 1, "max_message_bytes: '512M' is out of range (1K..256M)" },
	{ "model = /m\nthreads = 2\nsocket_mode = 999\n", 3, "socket_mode:" },
};

static void test_syntax(void)
{
	struct md_config c;
	char path[4096], expect[4200];
	size_t i;
	int r;

	for (i = 0; i < sizeof(syntax_errors) / sizeof(syntax_errors[0]); i++) {
		md_config_defaults(&c);
		r = load_text(&c, syntax_errors[i].text, path, sizeof(path));
		snprintf(expect, sizeof(expect), "%s:%u: ", path, syntax_errors[i].line);
		ok(r == -EINVAL && strncmp(err, expect, strlen(expect)) == 0 &&
		   strstr(err, syntax_errors[i].reason),
		   "syntax error %zu reported as FILE:%u: ...%s (%s)", i, syntax_errors[i].line,
		   syntax_errors[i].reason, err);
		md_config_free(&c);
	}

	/* NUL bytes: the line number still counts. */
	{
		static const char nul[] = "threads = 2\nmodel = /a\0b\n";

		md_config_defaults(&c);
		r = write_tmp(nul, sizeof(nul) - 1, path, sizeof(path));
		if (r == 0) {
			r = md_config_load(&c, path, err, sizeof(err));
			unlink(path);
		}
		snprintf(expect, sizeof(expect), "%s:2: ", path);
		ok(r == -EINVAL && strncmp(err, expect, strlen(expect)) == 0 && strstr(err, "NUL"),
		   "a NUL byte is rejected with its line (%s)", err);
		md_config_free(&c);
	}
}

static void test_quotes_comments(void)
{
	struct md_config c;
	char path[4096];
	int r;

	md_config_defaults(&c);
	r = load_text(&c,
		      "# a comment\n"
		      "   # an indented comment\n"
		      "\n"
		      " \t \n"
		      "model = \"/path with # hash, \\\"quotes\\\" and \\\\ backslash\"   # trailing\n"
		      "socket=/no/spaces.sock\n"
		      "\tthreads\t=\t3\t# tab comment\n"
		      "socket_group = grp#1\n"
		      "kernels = generic # comment\n"
		      "log_level = \"debug\"\n"
		      "queue_depth = 7\r\n"
		      "queue_depth = 8\n"
		      "parallel = 2",
		      path, sizeof(path));
	ok(r == 0, "a file with comments, quotes, tabs, CRLF and no final newline parses (%s)",
	   r ? err : "");
	ok(c.model && strcmp(c.model, "/path with # hash, \"quotes\" and \\ backslash") == 0,
	   "quoted value: '#' kept, \\\" and \\\\ unescaped, trailing comment dropped (%s)",
	   c.model ? c.model : "NULL");
	ok(c.socket_path && strcmp(c.socket_path, "/no/spaces.sock") == 0, "key=value without blanks");
	ok(c.threads == 3, "tabs around '=' and before a comment");
	ok(c.socket_group && strcmp(c.socket_group, "grp#1") == 0,
	   "'#' inside an unquoted word is part of the value");
	ok(c.kernels && strcmp(c.kernels, "generic") == 0, "comment after a blank ends the value");
	ok(c.log_level == LOG_DEBUG, "a quoted keyword");
	ok(c.queue_depth == 8, "duplicate key: the last one wins");
	ok(c.parallel == 2, "the last line needs no newline");
	md_config_free(&c);

	md_config_defaults(&c);
	r = load_text(&c, "", path, sizeof(path));
	ok(r == 0, "an empty file parses");
	md_config_free(&c);

	md_config_defaults(&c);
	r = md_config_load(&c, "/dev/null", err, sizeof(err));
	ok(r == 0 && c.model == NULL, "/dev/null parses as an empty file (%s)", r ? err : "");
	md_config_free(&c);
}

static void test_limits(void)
{
	struct md_config c;
	char path[4096], expect[4200];
	char *buf;
	size_t n, size;
	int r;

	/* A comment line of exactly 4096 bytes is fine; one more byte is not. */
	buf = malloc(6000);
	memset(buf, '#', 4096);
	memcpy(buf + 4096, "\nthreads = 2\n", 14);
	md_config_defaults(&c);
	r = load_text(&c, buf, path, sizeof(path));
	ok(r == 0 && c.threads == 2, "a 4096-byte line is accepted (%s)", r ? err : "");
	md_config_free(&c);

	memset(buf, '#', 4097);
	memcpy(buf + 4097, "\nthreads = 2\n", 14);
	md_config_defaults(&c);
	r = load_text(&c, buf, path, sizeof(path));
	snprintf(expect, sizeof(expect), "%s:1: ", path);
	ok(r == -EINVAL && strncmp(err, expect, strlen(expect)) == 0 && strstr(err, "longer than"),
	   "a 4097-byte line is rejected (%s)", err);
	md_config_free(&c);

	memcpy(buf, "model = \"", 9);
	memset(buf + 9, 'a', 5000);
	memcpy(buf + 5009, "\"\n", 3);
	md_config_defaults(&c);
	r = load_text(&c, buf, path, sizeof(path));
	ok(r == -EINVAL && strstr(err, ":1: line longer than"), "a long value is rejected (%s)", err);
	md_config_free(&c);
	free(buf);

	/* Just under 1 MiB of comments loads; just over is refused. */
	for (size = (1 << 20) - 100; size <= (1 << 20) + 1; size += 101) {
		buf = malloc(size + 1);
		for (n = 0; n < size; n++)
			buf[n] = n % 64 == 63 ? '\n' : '#';
		buf[size] = '\0';
		md_config_defaults(&c);
		r = load_text(&c, buf, path, sizeof(path));
		if (size <= (1 << 20))
			ok(r == 0, "a file of %zu bytes is accepted (%s)", size, r ? err : "");
		else
			ok(r == -EFBIG && strstr(err, path) && strstr(err, "larger than"),
			   "a file of %zu bytes is refused (%d %s)", size, r, err);
		md_config_free(&c);
		free(buf);
	}

	md_config_defaults(&c);
	r = md_config_load(&c, "/nonexistent/mistrald.conf", err, sizeof(err));
	ok(r == -ENOENT && strstr(err, "/nonexistent/mistrald.conf"),
	   "a missing file: -ENOENT naming it (%s)", err);
	r = md_config_load(&c, tmp_dir(), err, sizeof(err));
	ok(r == -EISDIR && strstr(err, tmp_dir()), "a directory: -EISDIR (%s)", err);
	r = md_config_load(&c, "", err, sizeof(err));
	ok(r == -EINVAL, "an empty file name is rejected");
	md_config_free(&c);
}

/* ---- validation ------------------------------------------------------------- */

static void test_validate(void)
{
	struct md_config c;

	md_config_defaults(&c);
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "model"),
	   "validate fails without a model (%s)", err);
	md_config_set(&c, "model", "/m.gguf", err, sizeof(err));
	ok(md_config_validate(&c, err, sizeof(err)) == 0, "defaults plus a model validate");
	c.parallel = 0;
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "parallel"),
	   "parallel 0 set in code is caught (%s)", err);
	c.parallel = 4;
	c.max_tokens_limit = 0;
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "max_tokens_limit"),
	   "max_tokens_limit 0 set in code is caught (%s)", err);
	c.max_tokens_limit = 4096;
	c.max_message_bytes = 10;
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "max_message_bytes"),
	   "max_message_bytes 10 set in code is caught (%s)", err);
	c.max_message_bytes = MIB;
	c.sliding_window = -5;
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "sliding_window"),
	   "sliding_window -5 set in code is caught (%s)", err);
	c.sliding_window = -1;
	c.mlock_required = true;
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "mlock"),
	   "mlock_required without mlock is caught (%s)", err);
	c.mlock_required = false;
	c.log_level = 42;
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "log_level"),
	   "a log level that is not one of the five is caught (%s)", err);
	c.log_level = LOG_INFO;
	ok(md_config_validate(&c, err, sizeof(err)) == 0, "and valid again");
	md_config_set(&c, "http_listen", "127.0.0.1:8080 [::1]:8080 unix:/tmp/h.sock", err, sizeof(err));
	ok(md_config_validate(&c, err, sizeof(err)) == 0, "loopback and unix: HTTP addresses validate");
	md_config_set(&c, "http_listen", "192.168.1.2:8080", err, sizeof(err));
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "http_allow_remote"),
	   "a non-loopback HTTP address needs http_allow_remote (%s)", err);
	md_config_set(&c, "http_allow_remote", "yes", err, sizeof(err));
	ok(md_config_validate(&c, err, sizeof(err)) == -EINVAL && strstr(err, "http_api_key"),
	   "http_allow_remote needs an http_api_key (%s)", err);
	md_config_set(&c, "http_api_key", "/k", err, sizeof(err));
	ok(md_config_validate(&c, err, sizeof(err)) == 0, "with both, a remote address validates");
	{
		struct md_config copy;

		ok(md_config_copy(&copy, &c) == 0 && copy.n_http_listen == 4 && copy.http_listen[3] != c.http_listen[3] &&
		   strcmp(copy.http_listen[3], "192.168.1.2:8080") == 0 && copy.http_api_key != c.http_api_key &&
		   strcmp(copy.http_api_key, "/k") == 0 && copy.model != c.model && strcmp(copy.model, c.model) == 0,
		   "md_config_copy duplicates every string, the HTTP addresses too");
		md_config_free(&copy);
	}
	md_config_free(&c);
	{
		struct md_listen_addr a;
		char why[256];

		ok(md_listen_parse("127.8.9.10:80", &a, why, sizeof(why)) == 0 && a.loopback && !a.is_unix,
		   "127.8.9.10 is loopback");
		ok(md_listen_parse("[::1]:80", &a, why, sizeof(why)) == 0 && a.loopback && a.addr.ss_family == AF_INET6,
		   "[::1] is loopback IPv6");
		ok(md_listen_parse("[::]:80", &a, why, sizeof(why)) == 0 && !a.loopback, "[::] is not loopback");
		ok(md_listen_parse("localhost:80", &a, why, sizeof(why)) == 0 && a.loopback, "localhost is 127.0.0.1");
		ok(md_listen_parse("unix:/run/x", &a, why, sizeof(why)) == 0 && a.is_unix && a.loopback &&
		   strcmp(a.path, "/run/x") == 0, "unix:/run/x is local");
	}
}

/* ---- the command line ---------------------------------------------------------- */

static int from_args(struct md_config *c, struct md_cli *cli, const char *const *args)
{
	char *argv[32];
	int argc = 0;

	argv[argc++] = (char *)"mistrald";
	while (*args && argc < 31)
		argv[argc++] = (char *)*args++;
	argv[argc] = NULL;
	err[0] = '\0';
	return md_config_from_args(c, cli, argc, argv, err, sizeof(err));
}

static void test_args(void)
{
	struct md_config c;
	struct md_cli cli;
	char path[4096], badpath[4096], opt[4200];
	int r;

	r = write_tmp("model = /models/file.gguf\nthreads = 2\nqueue_depth = 3\nparallel = 5\n",
		      strlen("model = /models/file.gguf\nthreads = 2\nqueue_depth = 3\nparallel = 5\n"),
		      path, sizeof(path));
	ok(r == 0, "temporary config %s", path);
	snprintf(opt, sizeof(opt), "--config=%s", path);

	{
		const char *a[] = { "--config", path, "--queue-depth", "8", "--parallel=6",
				    "--max_tokens_limit=100", "--socket-mode", "0600", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0, "--config FILE plus overrides (%s)", err);
		ok(c.model && strcmp(c.model, "/models/file.gguf") == 0 && c.threads == 2,
		   "values from the file stay");
		ok(c.queue_depth == 8 && c.parallel == 6 && c.max_tokens_limit == 100 &&
		   c.socket_mode == 0600,
		   "the command line overrides the file (--key value, --key=value, - and _)");
		ok(cli.config_explicit && strcmp(cli.config_path, path) == 0 && !cli.help &&
		   !cli.version && !cli.check_config, "cli: explicit config, no flags");
		md_config_free(&c);
	}
	{
		/* exit 2 for the command line, 1 for the configuration (mistrald(8) EXIT STATUS) */
		const char *unknown[] = { "--model", "/m", "--bogus", NULL };
		const char *badval[] = { "--model", "/m", "--parallel", "many", NULL };
		const char *nomodel[] = { "--config", "/dev/null", NULL };
		const char *absent[] = { "--config", "/nonexistent/mistrald.conf", "--model", "/m", NULL };

		ok(from_args(&c, &cli, unknown) < 0 && cli.usage_error, "an unknown option is a usage error");
		ok(from_args(&c, &cli, badval) < 0 && cli.usage_error, "a bad option value is a usage error");
		ok(from_args(&c, &cli, nomodel) < 0 && !cli.usage_error, "no model: a configuration failure (%s)", err);
		ok(from_args(&c, &cli, absent) < 0 && !cli.usage_error,
		   "a missing --config file: a configuration failure (%s)", err);
		md_config_free(&c);
	}
	{
		const char *a[] = { opt, "--threads", "3", "--threads=5", "--model", "/other",
				    "--queue_depth", "9", "--check-config", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && c.threads == 5 && c.queue_depth == 9 && c.model &&
		   strcmp(c.model, "/other") == 0 && cli.check_config && cli.config_explicit,
		   "--config=FILE; a later option wins; --model overrides the file; --check-config (%s)",
		   err);
		md_config_free(&c);
	}
	{
		const char *a[] = { "--config", "/dev/null", "--model", "/m", "--log-level", "debug",
				    "--mlock=required", "--max-message-bytes", "16M",
				    "--sliding-window=off", "--socket-group", "mistral", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && c.log_level == LOG_DEBUG && c.mlock_required &&
		   c.max_message_bytes == 16 * MIB && c.sliding_window == 0 && c.socket_group &&
		   strcmp(c.socket_group, "mistral") == 0,
		   "--config /dev/null reads nothing; keyword and size options (%s)", err);
		md_config_free(&c);
	}

	snprintf(badpath, sizeof(badpath), "%s/test_config.missing.%d", tmp_dir(), (int)getpid());
	{
		const char *a[] = { "--config", badpath, "--model", "/m", NULL };

		r = from_args(&c, &cli, a);
		ok(r == -EINVAL && strstr(err, badpath) && c.model == NULL,
		   "a missing explicit --config is an error naming it (%s)", err);
		md_config_free(&c);
	}
	if (access(MD_DEFAULT_CONFIG, F_OK) != 0 && errno == ENOENT) {
		const char *a[] = { "--model", "/m", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && !cli.config_explicit && strcmp(cli.config_path, MD_DEFAULT_CONFIG) == 0,
		   "a missing default %s is fine (%s)", MD_DEFAULT_CONFIG, err);
		md_config_free(&c);
	} else {
		skip("%s exists here", MD_DEFAULT_CONFIG);
	}

	{
		static const struct {
			const char *args[8];
			const char *reason;
		} bad[] = {
			{ { "--config", "/dev/null", "--bogus", "1", NULL }, "unknown option '--bogus'" },
			{ { "--config", "/dev/null", "--bogus=1", NULL }, "unknown option '--bogus'" },
			{ { "--config", "/dev/null", "-x", NULL }, "unknown option '-x'" },
			{ { "--config", "/dev/null", "-", NULL }, "unknown option '-'" },
			{ { "--config", "/dev/null", "stray", NULL }, "unexpected argument 'stray'" },
			{ { "--config", "/dev/null", "--", "stray", NULL }, "unexpected argument 'stray'" },
			{ { "--config", "/dev/null", "--model", NULL }, "--model requires a value" },
			{ { "--config", NULL }, "--config requires a value" },
			{ { "--config=", NULL }, "empty file name" },
			{ { "--help=yes", NULL }, "--help takes no value" },
			{ { "--check-config=1", NULL }, "--check-config takes no value" },
			{ { "--config", "/dev/null", "--model", "/m", "--threads", "abc" },
			  "--threads: 'abc' is not a number" },
			{ { "--config", "/dev/null", "--model", "/m", "--queue-depth=99999999999999999999" },
			  "--queue-depth: '99999999999999999999' is out of range" },
			{ { "--config", "/dev/null", "--model", "", NULL }, "--model: empty value" },
			{ { "--config", "/dev/null", NULL }, "model: no model configured" },
			{ { "--config", "/dev/null", "--check-config", NULL }, "model: no model" },
		};
		size_t i;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			r = from_args(&c, &cli, bad[i].args);
			ok(r == -EINVAL && strstr(err, bad[i].reason) && c.model == NULL,
			   "bad command line %zu: %s (%s)", i, bad[i].reason, err);
			md_config_free(&c);
		}
	}
	{
		FILE *f = fopen(path, "we");

		if (f) {
			fputs("model = /m\n\nthreads = many\n", f);
			fclose(f);
		}
		{
			const char *a[] = { "--config", path, "--threads", "4", NULL };
			char expect[4200];

			snprintf(expect, sizeof(expect), "%s:3: threads:", path);
			r = from_args(&c, &cli, a);
			ok(r == -EINVAL && strstr(err, expect),
			   "an error in the file is reported even when the option overrides it (%s)", err);
			md_config_free(&c);
		}
	}
	{
		const char *a[] = { "--config", badpath, "--help", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && cli.help, "--help needs no model and reads no file (%s)", err);
		md_config_free(&c);
	}
	{
		const char *a[] = { "-h", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && cli.help && !cli.version, "-h");
		md_config_free(&c);
	}
	{
		const char *a[] = { "--version", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && cli.version && !cli.help, "--version");
		md_config_free(&c);
	}
	{
		const char *a[] = { "-V", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && cli.version, "-V");
		md_config_free(&c);
	}
	{
		const char *a[] = { "--config", "/dev/null", "--model", "/m", "--check_config", NULL };

		r = from_args(&c, &cli, a);
		ok(r == 0 && cli.check_config, "--check_config with an underscore (%s)", err);
		md_config_free(&c);
	}
	unlink(path);
}

static void test_http_args(void)
{
	struct md_config c;
	struct md_cli cli;
	static const char *const twice[] = { "--config", "/dev/null", "--model", "/m", "--http-listen", "127.0.0.1:1",
					     "--http_listen=unix:/tmp/h.sock", NULL };
	static const char *const reset[] = { "--config", "/dev/null", "--model", "/m", "--http-listen", "127.0.0.1:1",
					     "--http-listen", "none", "--http-listen", "[::1]:2", NULL };
	static const char *const remote[] = { "--config", "/dev/null", "--model", "/m", "--http-listen", "10.0.0.1:80",
					      NULL };

	ok(from_args(&c, &cli, twice) == 0 && c.n_http_listen == 2 && strcmp(c.http_listen[1], "unix:/tmp/h.sock") == 0,
	   "--http-listen given twice: both addresses (%s)", err);
	md_config_free(&c);
	ok(from_args(&c, &cli, reset) == 0 && c.n_http_listen == 1 && strcmp(c.http_listen[0], "[::1]:2") == 0,
	   "--http-listen none drops the earlier ones (%s)", err);
	md_config_free(&c);
	ok(from_args(&c, &cli, remote) == -EINVAL && strstr(err, "http_allow_remote") && !cli.usage_error,
	   "a remote address without http_allow_remote fails as configuration (%s)", err);
	md_config_free(&c);
}

int main(void)
{
	test_defaults();
	test_valid();
	test_invalid();
	test_shipped();
	test_syntax();
	test_quotes_comments();
	test_limits();
	test_validate();
	test_args();
	test_http_args();
	return done_testing();
}
