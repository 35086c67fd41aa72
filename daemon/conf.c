/* mistrald configuration: the key table, strict value parsing, the key = value file reader and the command-line overrides. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "conf.h"

/* Longest line (without its newline) and biggest file the reader accepts. */
#define MD_CONFIG_LINE_MAX 4096
#define MD_CONFIG_FILE_MAX ((size_t)1 << 20)

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)

/* Room for one reason; callers prefix it with the key, option or FILE:LINE. */
#define WHY_MAX 384

/*
 * Defaults of the string keys. md_config_defaults points at these instead
 * of allocating, so it cannot fail; md_config_free and the setters free a
 * string only when it is not one of them. (Not const only because the
 * struct's fields are char *; nothing writes through them.)
 */
static char default_kernels[] = "auto";
static char default_socket[] = MD_DEFAULT_SOCKET;

enum key_type {
	KT_PATH,        /* non-empty path */
	KT_SOCKET,      /* a path that fits sockaddr_un.sun_path */
	KT_GROUP,       /* a group name or number */
	KT_U32,         /* decimal in [min, max] */
	KT_SIZE,        /* bytes, K/M/G suffix (binary), in [min, max] */
	KT_MODE,        /* octal permission bits in [min, max] */
	KT_THREADS,     /* auto | N in [min, max]; 0 also means auto */
	KT_WINDOW,      /* auto | off | N in [min, max]; 0 also means off */
	KT_KERNELS,     /* auto | generic | avx2 | avx512 */
	KT_HUGEPAGES,   /* hugetlb | thp | none */
	KT_KVCACHE,     /* f16 | f32 */
	KT_PCACHE,      /* auto | off | bytes as KT_SIZE in [min, max]; 0 also means off */
	KT_MLOCK,       /* no | yes | required (and the other booleans) */
	KT_LOG_LEVEL,   /* error | warning | notice | info | debug */
	KT_BOOL,        /* yes | no (and the other spellings parse_bool takes) */
	KT_LISTEN,      /* http_listen: addresses, each appended; "none" empties the list */
};

struct key {
	const char *name;
	enum key_type type;
	size_t off;             /* of the field in struct md_config */
	uint64_t min, max;      /* for the numeric types */
	const char *arg;        /* placeholder in the usage text */
	const char *help;       /* one line of usage text */
};

#define F(field) offsetof(struct md_config, field)

/* Every key, in the order of the usage text, the shipped file and the manual. */
static const struct key keys[] = {
	{ "model", KT_PATH, F(model), 0, 0, "FILE",
	  "GGUF model to serve (required)" },
	{ "threads", KT_THREADS, F(threads), 1, 1024, "N|auto",
	  "threads running the maths; auto: one per online CPU" },
	{ "context", KT_U32, F(context), 0, 1048576, "N",
	  "tokens per sequence; 0: the model's own context length" },
	{ "sliding_window", KT_WINDOW, F(sliding_window), 1, 1048576, "N|auto|off",
	  "attention window in tokens; auto: the model's" },
	{ "parallel", KT_U32, F(parallel), 1, MD_MAX_PARALLEL, "N",
	  "sequences generating at once (each holds a KV cache)" },
	{ "queue_depth", KT_U32, F(queue_depth), 0, 4096, "N",
	  "requests waiting for a slot before new ones get 'busy'" },
	{ "batch", KT_U32, F(batch), 1, 4096, "N",
	  "prompt tokens a sequence evaluates per round" },
	{ "kernels", KT_KERNELS, F(kernels), 0, 0, "auto|generic|avx2|avx512",
	  "maths kernels; auto: the best the CPU has" },
	{ "socket", KT_SOCKET, F(socket_path), 0, 0, "PATH",
	  "socket to create unless socket-activated" },
	{ "socket_mode", KT_MODE, F(socket_mode), 0, 0777, "MODE",
	  "permissions of that socket, octal" },
	{ "socket_group", KT_GROUP, F(socket_group), 0, 0, "GROUP",
	  "group given that socket; unset: the daemon's group" },
	{ "hugepages", KT_HUGEPAGES, F(hugepages), 0, 0, "hugetlb|thp|none",
	  "page kind for the weights (falls back to the next one)" },
	{ "mlock", KT_MLOCK, F(mlock), 0, 0, "no|yes|required",
	  "lock the weights in RAM; required: fail if that fails" },
	{ "kv_cache", KT_KVCACHE, F(kv_cache), 0, 0, "f16|f32",
	  "KV cache element type; f32: twice the memory, exact" },
	{ "prompt_cache", KT_PCACHE, F(prompt_cache), 0, 1024 * GIB, "SIZE|auto|off",
	  "memory for finished sequences' prompt state; auto: half the free" },
	{ "prompt_cache_entries", KT_U32, F(prompt_cache_entries), 0, 4096, "N",
	  "finished sequences kept for prompt reuse; 0: none" },
	{ "max_message_bytes", KT_SIZE, F(max_message_bytes), KIB, 256 * MIB, "SIZE",
	  "largest request accepted (K, M, G suffixes)" },
	{ "max_nesting", KT_U32, F(max_nesting), 5, 32, "N",
	  "deepest array/map nesting accepted in a request" },
	{ "max_connections", KT_U32, F(max_connections), 1, 65536, "N",
	  "clients connected at once" },
	{ "max_requests_per_connection", KT_U32, F(max_requests_per_connection), 1, 1024, "N",
	  "requests in flight on one connection" },
	{ "max_tokens_limit", KT_U32, F(max_tokens_limit), 1, 1048576, "N",
	  "cap for a request's max_tokens" },
	{ "output_buffer_bytes", KT_SIZE, F(output_buffer_bytes), 64 * KIB, GIB, "SIZE",
	  "unread output per connection before it is dropped" },
	{ "idle_timeout", KT_U32, F(idle_timeout), 0, 86400, "SECONDS",
	  "close a connection idle this long; 0: never" },
	{ "shutdown_timeout", KT_U32, F(shutdown_timeout), 1, 3600, "SECONDS",
	  "how long SIGTERM waits for requests in flight" },
	{ "load_wait", KT_U32, F(load_wait), 0, 86400, "SECONDS",
	  "how long a request waits for the first model to load; 0: refused at once" },
	{ "log_level", KT_LOG_LEVEL, F(log_level), 0, 0, "LEVEL",
	  "error, warning, notice, info or debug" },
	{ "http_listen", KT_LISTEN, F(http_listen), 0, 0, "ADDR",
	  "HTTP API address (HOST:PORT, [V6]:PORT, unix:PATH); repeatable" },
	{ "http_api_key", KT_PATH, F(http_api_key), 0, 0, "FILE",
	  "file holding the bearer token every HTTP request must show" },
	{ "http_allow_remote", KT_BOOL, F(http_allow_remote), 0, 0, "no|yes",
	  "allow non-loopback http_listen addresses (needs http_api_key)" },
	{ "http_max_body_bytes", KT_SIZE, F(http_max_body_bytes), KIB, 256 * MIB, "SIZE",
	  "largest HTTP request body accepted" },
	{ "http_max_header_bytes", KT_SIZE, F(http_max_header_bytes), KIB, MIB, "SIZE",
	  "largest HTTP request line and headers accepted" },
	{ "http_timeout", KT_U32, F(http_timeout), 1, 3600, "SECONDS",
	  "time an HTTP request may take to arrive, idle time included" },
	{ "http_max_connections", KT_U32, F(http_max_connections), 1, 65536, "N",
	  "HTTP clients connected at once" },
};

#undef F

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const struct {
	const char *name;
	int level;
} log_levels[] = {
	{ "error", LOG_ERR },
	{ "warning", LOG_WARNING },
	{ "notice", LOG_NOTICE },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
};

static const char *const kernel_names[] = { "auto", "generic", "avx2", "avx512" };

/* ---- small helpers ------------------------------------------------------ */

__attribute__((format(printf, 3, 4)))
static int fail(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (buf && len) {
		va_start(ap, fmt);
		vsnprintf(buf, len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/*
 * A value as it may appear in an error message: at most 40 bytes, control
 * bytes escaped, so that a hostile file or argument cannot put escape
 * sequences or newlines into the log.
 */
static const char *shown(const char *s, char *buf, size_t len)
{
	size_t i, o = 0;

	for (i = 0; s[i] && o + 8 < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (i == 40) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o] = '\0';
	return buf;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* Key names are written with '_' in the file and '-' or '_' on the command line. */
static const struct key *find_key(const char *name, size_t len)
{
	size_t i, j;

	for (i = 0; i < NKEYS; i++) {
		const char *k = keys[i].name;

		if (strlen(k) != len)
			continue;
		for (j = 0; j < len; j++)
			if (k[j] != name[j] && !(k[j] == '_' && name[j] == '-'))
				break;
		if (j == len)
			return &keys[i];
	}
	return NULL;
}

static void *field(struct md_config *c, const struct key *k)
{
	return (char *)c + k->off;
}

static const void *cfield(const struct md_config *c, const struct key *k)
{
	return (const char *)c + k->off;
}

static bool is_default_string(const char *s)
{
	return s == default_kernels || s == default_socket;
}

static void replace_string(char **dst, char *s)
{
	if (!is_default_string(*dst))
		free(*dst);
	*dst = s;
}

/* "1G", "256M", "64K" or plain bytes: the shortest exact form. */
static void format_size(uint64_t v, char *buf, size_t len)
{
	if (v && v % GIB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(v / GIB));
	else if (v && v % MIB == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v / MIB));
	else if (v && v % KIB == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(v / KIB));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
}

static void format_range(const struct key *k, char *buf, size_t len)
{
	char lo[24], hi[24];

	if (k->type == KT_SIZE || k->type == KT_PCACHE) {
		format_size(k->min, lo, sizeof(lo));
		format_size(k->max, hi, sizeof(hi));
		snprintf(buf, len, "%s..%s", lo, hi);
	} else if (k->type == KT_MODE) {
		snprintf(buf, len, "%04llo..%04llo", (unsigned long long)k->min,
			 (unsigned long long)k->max);
	} else {
		snprintf(buf, len, "%llu..%llu", (unsigned long long)k->min,
			 (unsigned long long)k->max);
	}
}

/* ---- value parsers: each returns 0 or -EINVAL with a reason in why ------ */

/*
 * Decimal digits only. strtoul would also take leading blanks, a sign
 * (wrapping "-1" to ULONG_MAX) and, with base 0, "0x" or octal; none of
 * that belongs in a configuration value. Returns the position after the
 * digits, or NULL when there are none; *overflow when it exceeds 2^64-1.
 */
static const char *scan_digits(const char *s, unsigned base, uint64_t *out, bool *overflow)
{
	const char *p = s;
	uint64_t v = 0;

	*overflow = false;
	while (*p >= '0' && *p < (char)('0' + base)) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / base)
			*overflow = true;
		else
			v = v * base + d;
		p++;
	}
	if (p == s)
		return NULL;
	*out = v;
	return p;
}

static int range_error(const struct key *k, const char *value, char *why, size_t wlen)
{
	char r[64], v[64];

	format_range(k, r, sizeof(r));
	if (k->type == KT_THREADS)
		return fail(why, wlen, "'%s' is out of range (auto or %s)",
			    shown(value, v, sizeof(v)), r);
	if (k->type == KT_WINDOW)
		return fail(why, wlen, "'%s' is out of range (auto, off or %s)",
			    shown(value, v, sizeof(v)), r);
	return fail(why, wlen, "'%s' is out of range (%s)", shown(value, v, sizeof(v)), r);
}

static int not_a_number(const struct key *k, const char *value, char *why, size_t wlen)
{
	char r[64], v[64];
	const char *what = k->type == KT_MODE ? "an octal mode" :
			   k->type == KT_SIZE || k->type == KT_PCACHE ? "a size" : "a number";

	format_range(k, r, sizeof(r));
	if (value[0] == '-' && value[1] >= '0' && value[1] <= '9')
		return fail(why, wlen, "'%s' is negative (expected %s)",
			    shown(value, v, sizeof(v)), r);
	return fail(why, wlen, "'%s' is not %s (expected %s%s)", shown(value, v, sizeof(v)),
		    what, k->type == KT_THREADS ? "auto or " :
		    k->type == KT_WINDOW || k->type == KT_PCACHE ? "auto, off or " : "", r);
}

static int parse_number(const struct key *k, const char *value, uint64_t *out,
			char *why, size_t wlen)
{
	uint64_t v;
	bool overflow;
	const char *end = scan_digits(value, 10, &v, &overflow);

	if (!end || *end)
		return not_a_number(k, value, why, wlen);
	if (overflow || v < k->min || v > k->max)
		return range_error(k, value, why, wlen);
	*out = v;
	return 0;
}

/* Bytes: digits, then optionally K, M or G (powers of 1024), optionally followed by "iB". */
static int parse_size(const struct key *k, const char *value, uint64_t *out,
		      char *why, size_t wlen)
{
	uint64_t v, mult = 1;
	bool overflow;
	const char *end = scan_digits(value, 10, &v, &overflow);

	if (!end)
		return not_a_number(k, value, why, wlen);
	if (*end) {
		switch (*end) {
		case 'K': case 'k':
			mult = KIB;
			break;
		case 'M': case 'm':
			mult = MIB;
			break;
		case 'G': case 'g':
			mult = GIB;
			break;
		default:
			return not_a_number(k, value, why, wlen);
		}
		end++;
		if (*end && strcmp(end, "iB") != 0)
			return not_a_number(k, value, why, wlen);
	}
	if (overflow || v > UINT64_MAX / mult)
		return range_error(k, value, why, wlen);
	v *= mult;
	if (v < k->min || v > k->max || v > SIZE_MAX)
		return range_error(k, value, why, wlen);
	*out = v;
	return 0;
}

static int parse_mode(const struct key *k, const char *value, uint64_t *out,
		      char *why, size_t wlen)
{
	uint64_t v;
	bool overflow;
	const char *end = scan_digits(value, 8, &v, &overflow);

	if (!end || *end)
		return not_a_number(k, value, why, wlen);
	if (overflow || v < k->min || v > k->max)
		return range_error(k, value, why, wlen);
	*out = v;
	return 0;
}

/* yes/true/on/1 and no/false/off/0, in any case; -1 for anything else. */
static int parse_bool(const char *s)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	}
	return -1;
}

static int parse_string(const struct key *k, const char *value, char **out,
			char *why, size_t wlen)
{
	char v[64];
	size_t len = strlen(value);

	if (has_control(value))
		return fail(why, wlen, "'%s' contains a control character",
			    shown(value, v, sizeof(v)));
	if (k->type == KT_SOCKET) {
		struct sockaddr_un sun;

		if (len >= sizeof(sun.sun_path))
			return fail(why, wlen,
				    "the path is %zu bytes long; a socket path must be shorter than %zu",
				    len, sizeof(sun.sun_path));
	} else if (k->type == KT_GROUP) {
		/* Names as groupadd(8) and sysusers.d(5) make them, or a number. */
		if (len > 255 || strpbrk(value, " \t:/,"))
			return fail(why, wlen, "'%s' is not a valid group name",
				    shown(value, v, sizeof(v)));
	} else if (len >= PATH_MAX) {
		return fail(why, wlen, "path too long (%zu bytes; the limit is %d)",
			    len, PATH_MAX - 1);
	}
	*out = strdup(value);
	if (!*out)
		return fail(why, wlen, "out of memory");
	return 0;
}

/* ---- http_listen addresses ------------------------------------------------ */

int md_listen_parse(const char *spec, struct md_listen_addr *out, char *why, size_t wlen)
{
	struct md_listen_addr a;
	char host[64], v[64];
	const char *colon, *h = spec;
	size_t hl;
	uint64_t port;
	bool overflow;
	const char *end;

	memset(&a, 0, sizeof(a));
	if (strncmp(spec, "unix:", 5) == 0) {
		if (spec[5] != '/')
			return fail(why, wlen, "'%s': a unix: address needs an absolute path", shown(spec, v, sizeof(v)));
		if (strlen(spec + 5) >= sizeof(a.path))
			return fail(why, wlen, "'%s': the path is longer than %zu bytes", shown(spec, v, sizeof(v)),
				    sizeof(a.path) - 1);
		a.is_unix = true;
		a.loopback = true;
		memcpy(a.path, spec + 5, strlen(spec + 5) + 1);
		*out = a;
		return 0;
	}
	colon = strrchr(spec, ':');
	if (!colon)
		return fail(why, wlen, "'%s' is not HOST:PORT, [V6]:PORT or unix:PATH", shown(spec, v, sizeof(v)));
	hl = (size_t)(colon - spec);
	if (spec[0] == '[') {
		if (hl < 2 || colon[-1] != ']')
			return fail(why, wlen, "'%s': an IPv6 address goes in brackets: [::1]:8080",
				    shown(spec, v, sizeof(v)));
		h = spec + 1;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return fail(why, wlen, "'%s': no host, or a host longer than %zu bytes", shown(spec, v, sizeof(v)),
			    sizeof(host) - 1);
	memcpy(host, h, hl);
	host[hl] = '\0';
	end = scan_digits(colon + 1, 10, &port, &overflow);
	if (!end || *end || overflow || port == 0 || port > 65535)
		return fail(why, wlen, "'%s': the port must be 1..65535", shown(spec, v, sizeof(v)));
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	/* Numeric only: a name would be resolved again on every start, to whatever it means then. */
	if (spec[0] != '[') {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.addr;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return fail(why, wlen, "'%s': '%s' is not an IPv4 address (names other than localhost are not resolved)",
				    shown(spec, v, sizeof(v)), host);
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		a.addr_len = sizeof(*sin);
		a.loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.addr;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return fail(why, wlen, "'%s': '%s' is not an IPv6 address", shown(spec, v, sizeof(v)), host);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		a.addr_len = sizeof(*sin6);
		a.loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	*out = a;
	return 0;
}

static void clear_listen(struct md_config *c)
{
	for (uint32_t i = 0; i < c->n_http_listen; i++) {
		free(c->http_listen[i]);
		c->http_listen[i] = NULL;
	}
	c->n_http_listen = 0;
}

/* Appends every blank-separated address in value; all or none. */
static int add_listen(struct md_config *c, const char *value, char *why, size_t wlen)
{
	char *copy, *save = NULL, *tok;
	char *added[MD_HTTP_LISTEN_MAX];
	uint32_t n = 0;
	struct md_listen_addr a;
	int r = 0;

	if (strcasecmp(value, "none") == 0) {
		clear_listen(c);
		return 0;
	}
	for (const char *p = value; *p; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
			return fail(why, wlen, "control character in the value");
	copy = strdup(value);
	if (!copy)
		return fail(why, wlen, "out of memory");
	for (tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if ((r = md_listen_parse(tok, &a, why, wlen)) < 0)
			break;
		if (c->n_http_listen + n >= MD_HTTP_LISTEN_MAX) {
			r = fail(why, wlen, "more than %d addresses", MD_HTTP_LISTEN_MAX);
			break;
		}
		if (!(added[n] = strdup(tok))) {
			r = fail(why, wlen, "out of memory");
			break;
		}
		n++;
	}
	free(copy);
	if (r < 0) {
		while (n)
			free(added[--n]);
		return r;
	}
	for (uint32_t i = 0; i < n; i++)
		c->http_listen[c->n_http_listen++] = added[i];
	return 0;
}

/*
 * Parses value for k and stores it. Nothing changes on failure, so a bad
 * override leaves the previous value in place.
 */
static int set_key(struct md_config *c, const struct key *k, const char *value,
		   char *why, size_t wlen)
{
	char v[64];
	uint64_t n = 0;
	char *s;
	size_t i;
	int r;

	if (!value || !*value)
		return fail(why, wlen, "empty value");

	switch (k->type) {
	case KT_PATH:
	case KT_SOCKET:
	case KT_GROUP:
		r = parse_string(k, value, &s, why, wlen);
		if (r)
			return r;
		replace_string(field(c, k), s);
		return 0;
	case KT_U32:
		r = parse_number(k, value, &n, why, wlen);
		if (r)
			return r;
		*(uint32_t *)field(c, k) = (uint32_t)n;
		return 0;
	case KT_SIZE:
		r = parse_size(k, value, &n, why, wlen);
		if (r)
			return r;
		*(size_t *)field(c, k) = (size_t)n;
		return 0;
	case KT_MODE:
		r = parse_mode(k, value, &n, why, wlen);
		if (r)
			return r;
		*(mode_t *)field(c, k) = (mode_t)n;
		return 0;
	case KT_THREADS:
		if (strcasecmp(value, "auto") == 0 || strcmp(value, "0") == 0) {
			c->threads = 0;
			return 0;
		}
		r = parse_number(k, value, &n, why, wlen);
		if (r)
			return r;
		c->threads = (uint32_t)n;
		return 0;
	case KT_WINDOW:
		if (strcasecmp(value, "auto") == 0) {
			c->sliding_window = -1;
			return 0;
		}
		if (strcasecmp(value, "off") == 0 || strcmp(value, "0") == 0) {
			c->sliding_window = 0;
			return 0;
		}
		r = parse_number(k, value, &n, why, wlen);
		if (r)
			return r;
		c->sliding_window = (int32_t)n;
		return 0;
	case KT_KERNELS:
		for (i = 0; i < sizeof(kernel_names) / sizeof(kernel_names[0]); i++)
			if (strcasecmp(value, kernel_names[i]) == 0)
				break;
		if (i == sizeof(kernel_names) / sizeof(kernel_names[0]))
			return fail(why, wlen, "'%s' is not one of auto, generic, avx2, avx512",
				    shown(value, v, sizeof(v)));
		s = strdup(kernel_names[i]);
		if (!s)
			return fail(why, wlen, "out of memory");
		replace_string(&c->kernels, s);
		return 0;
	case KT_HUGEPAGES: {
		enum ms_page_policy p;
		char lower[16];

		for (i = 0; i < sizeof(lower) - 1 && value[i]; i++)
			lower[i] = (char)(value[i] >= 'A' && value[i] <= 'Z' ?
					  value[i] - 'A' + 'a' : value[i]);
		lower[i] = '\0';
		if (value[i] || ms_page_policy_parse(lower, &p) != 0)
			return fail(why, wlen, "'%s' is not one of hugetlb, thp, none",
				    shown(value, v, sizeof(v)));
		c->hugepages = p;
		return 0;
	}
	case KT_PCACHE:
		if (strcasecmp(value, "auto") == 0) {
			c->prompt_cache = MD_PROMPT_CACHE_AUTO;
			return 0;
		}
		if (strcasecmp(value, "off") == 0) {
			c->prompt_cache = 0;
			return 0;
		}
		r = parse_size(k, value, &n, why, wlen);
		if (r)
			return r;
		c->prompt_cache = (size_t)n;
		return 0;
	case KT_KVCACHE:
		if (ms_kv_type_parse(value, &c->kv_cache) < 0)
			return fail(why, wlen, "'%s' is not one of f16, f32", shown(value, v, sizeof(v)));
		return 0;
	case KT_MLOCK:
		if (strcasecmp(value, "required") == 0) {
			c->mlock = true;
			c->mlock_required = true;
			return 0;
		}
		r = parse_bool(value);
		if (r < 0)
			return fail(why, wlen, "'%s' is not one of no, yes, required",
				    shown(value, v, sizeof(v)));
		c->mlock = r == 1;
		c->mlock_required = false;
		return 0;
	case KT_LOG_LEVEL:
		for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
			if (strcasecmp(value, log_levels[i].name) == 0) {
				c->log_level = log_levels[i].level;
				return 0;
			}
		return fail(why, wlen, "'%s' is not one of error, warning, notice, info, debug",
			    shown(value, v, sizeof(v)));
	case KT_BOOL:
		r = parse_bool(value);
		if (r < 0)
			return fail(why, wlen, "'%s' is not one of no, yes", shown(value, v, sizeof(v)));
		*(bool *)field(c, k) = r == 1;
		return 0;
	case KT_LISTEN:
		return add_listen(c, value, why, wlen);
	}
	return fail(why, wlen, "internal error: key type %d", (int)k->type);
}

/* ---- the public setters and getters -------------------------------------- */

void md_config_defaults(struct md_config *c)
{
	memset(c, 0, sizeof(*c));
	c->model = NULL;
	c->threads = 0;
	c->context = 4096;
	c->sliding_window = -1;
	c->parallel = 4;
	c->queue_depth = 16;
	c->batch = 256;
	c->kernels = default_kernels;
	c->socket_path = default_socket;
	c->socket_mode = 0660;
	c->socket_group = NULL;
	c->hugepages = MS_POLICY_THP;
	c->kv_cache = GGML_TYPE_F16;
	c->prompt_cache = MD_PROMPT_CACHE_AUTO;
	c->prompt_cache_entries = 64;
	c->mlock = false;
	c->mlock_required = false;
	c->max_message_bytes = 1 * MIB;
	c->max_nesting = 16;
	c->max_connections = 64;
	c->max_requests_per_connection = 32;
	c->max_tokens_limit = 4096;
	c->output_buffer_bytes = 4 * MIB;
	c->idle_timeout = 300;
	c->shutdown_timeout = 10;
	c->load_wait = 600;
	c->log_level = LOG_INFO;
	c->http_max_body_bytes = 1 * MIB;
	c->http_max_header_bytes = 16 * KIB;
	c->http_timeout = 30;
	c->http_max_connections = 64;
}

void md_config_free(struct md_config *c)
{
	if (!c)
		return;
	replace_string(&c->model, NULL);
	replace_string(&c->kernels, NULL);
	replace_string(&c->socket_path, NULL);
	replace_string(&c->socket_group, NULL);
	replace_string(&c->http_api_key, NULL);
	clear_listen(c);
}

int md_config_copy(struct md_config *dst, const struct md_config *src)
{
	char **strs[] = { &dst->model, &dst->kernels, &dst->socket_path, &dst->socket_group, &dst->http_api_key };
	bool short_of_memory = false;

	*dst = *src;
	/* dst's strings still point at src's: each is replaced by its own copy */
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		if (*strs[i] && !is_default_string(*strs[i])) {
			*strs[i] = strdup(*strs[i]);
			short_of_memory |= !*strs[i];
		}
	}
	for (uint32_t i = 0; i < src->n_http_listen; i++) {
		dst->http_listen[i] = strdup(src->http_listen[i]);
		short_of_memory |= !dst->http_listen[i];
	}
	if (short_of_memory) {
		md_config_free(dst);
		md_config_defaults(dst);
		return -ENOMEM;
	}
	return 0;
}

int md_config_set(struct md_config *c, const char *key, const char *value, char *err, size_t errlen)
{
	char why[WHY_MAX], v[64];
	const struct key *k;

	if (!key)
		return fail(err, errlen, "no key");
	/* The file spells keys with '_' only; the command line maps '-' first. */
	k = strchr(key, '-') ? NULL : find_key(key, strlen(key));
	if (!k)
		return fail(err, errlen, "unknown key '%s'", shown(key, v, sizeof(v)));
	if (set_key(c, k, value, why, sizeof(why)))
		return fail(err, errlen, "%s: %s", k->name, why);
	return 0;
}

const char *md_config_key(size_t i)
{
	return i < NKEYS ? keys[i].name : NULL;
}

int md_config_get(const struct md_config *c, const char *key, char *buf, size_t len)
{
	const struct key *k = key && !strchr(key, '-') ? find_key(key, strlen(key)) : NULL;
	const char *s;
	size_t i;
	int n = 0;

	if (!k || !buf || !len)
		return -EINVAL;
	switch (k->type) {
	case KT_PATH:
	case KT_SOCKET:
	case KT_GROUP:
	case KT_KERNELS:
		s = *(char *const *)cfield(c, k);
		n = snprintf(buf, len, "%s", s ? s : "");
		break;
	case KT_U32:
		n = snprintf(buf, len, "%u", *(const uint32_t *)cfield(c, k));
		break;
	case KT_SIZE:
		format_size(*(const size_t *)cfield(c, k), buf, len);
		break;
	case KT_MODE:
		n = snprintf(buf, len, "%04o", (unsigned)*(const mode_t *)cfield(c, k));
		break;
	case KT_THREADS:
		if (c->threads == 0)
			n = snprintf(buf, len, "auto");
		else
			n = snprintf(buf, len, "%u", c->threads);
		break;
	case KT_WINDOW:
		if (c->sliding_window < 0)
			n = snprintf(buf, len, "auto");
		else if (c->sliding_window == 0)
			n = snprintf(buf, len, "off");
		else
			n = snprintf(buf, len, "%d", (int)c->sliding_window);
		break;
	case KT_HUGEPAGES:
		n = snprintf(buf, len, "%s", c->hugepages == MS_POLICY_HUGETLB ? "hugetlb" :
			     c->hugepages == MS_POLICY_NONE ? "none" : "thp");
		break;
	case KT_KVCACHE:
		n = snprintf(buf, len, "%s", c->kv_cache == GGML_TYPE_F32 ? "f32" : "f16");
		break;
	case KT_PCACHE:
		if (c->prompt_cache == MD_PROMPT_CACHE_AUTO)
			n = snprintf(buf, len, "auto");
		else if (c->prompt_cache == 0)
			n = snprintf(buf, len, "off");
		else
			format_size(c->prompt_cache, buf, len);
		break;
	case KT_MLOCK:
		n = snprintf(buf, len, "%s", c->mlock_required ? "required" :
			     c->mlock ? "yes" : "no");
		break;
	case KT_LOG_LEVEL:
		s = "?";
		for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
			if (log_levels[i].level == c->log_level)
				s = log_levels[i].name;
		n = snprintf(buf, len, "%s", s);
		break;
	case KT_BOOL:
		n = snprintf(buf, len, "%s", *(const bool *)cfield(c, k) ? "yes" : "no");
		break;
	case KT_LISTEN: {
		size_t o = 0;

		buf[0] = '\0';
		for (i = 0; i < c->n_http_listen; i++) {
			n = snprintf(buf + o, len - o, "%s%s", i ? " " : "", c->http_listen[i]);
			if (n < 0 || (size_t)n >= len - o)
				return -ENOSPC;
			o += (size_t)n;
		}
		n = 0;
		break;
	}
	}
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return 0;
}

/* ---- the file ------------------------------------------------------------ */

/*
 * Reads the whole file, refusing more than MD_CONFIG_FILE_MAX bytes. The
 * size is not taken from fstat: /dev/null, a pipe or /proc files report
 * none, and a file may grow while it is read.
 */
static int read_all(const char *path, char **out, size_t *outlen)
{
	size_t cap = 4096, len = 0;
	struct stat st;
	char *buf, *nbuf;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return -EISDIR;
	}
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (len == cap) {
			/* cap stops at MAX + 1, and len > MAX returned below. */
			cap = cap * 2 > MD_CONFIG_FILE_MAX + 1 ? MD_CONFIG_FILE_MAX + 1 : cap * 2;
			nbuf = realloc(buf, cap);
			if (!nbuf) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nbuf;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			free(buf);
			close(fd);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > MD_CONFIG_FILE_MAX) {
			free(buf);
			close(fd);
			return -EFBIG;
		}
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/*
 * Parses one line (NUL-terminated, newline removed) in place: blank,
 * comment, or key = value. Sets *key and *value to NULL for lines without a
 * setting.
 */
static int parse_line(char *line, char **key, char **value, char *why, size_t wlen)
{
	char *p = line, *k, *kend, *v, *w, *end;
	char shownbuf[64];

	*key = *value = NULL;
	while (is_blank(*p))
		p++;
	if (!*p || *p == '#')
		return 0;

	k = p;
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
	       (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')
		p++;
	kend = p;
	if (kend == k)
		return fail(why, wlen, "expected a key at '%s'", shown(k, shownbuf, sizeof(shownbuf)));
	while (is_blank(*p))
		p++;
	if (*p != '=') {
		*kend = '\0';
		return fail(why, wlen, "expected '=' after '%s'", shown(k, shownbuf, sizeof(shownbuf)));
	}
	p++;
	*kend = '\0';
	while (is_blank(*p))
		p++;

	if (*p == '"') {
		/* Unescaping only shortens, so the value is rewritten in place. */
		v = w = p;
		for (p++;; p++) {
			if (!*p)
				return fail(why, wlen, "unterminated quoted value");
			if (*p == '"')
				break;
			if (*p == '\\') {
				p++;
				if (!*p)
					return fail(why, wlen, "unterminated quoted value");
				if (*p != '"' && *p != '\\')
					return fail(why, wlen,
						    "unknown escape '\\%s' in a quoted value (only \\\" and \\\\)",
						    shown((char[2]){ *p, '\0' }, shownbuf, sizeof(shownbuf)));
			}
			*w++ = *p;
		}
		p++;
		while (is_blank(*p))
			p++;
		if (*p && *p != '#')
			return fail(why, wlen, "unexpected '%s' after the closing quote",
				    shown(p, shownbuf, sizeof(shownbuf)));
		*w = '\0';
	} else {
		/* '#' starts a comment at the start of the value or after a blank. */
		v = p;
		for (end = p; *end; end++)
			if (*end == '#' && (end == v || is_blank(end[-1])))
				break;
		while (end > v && is_blank(end[-1]))
			end--;
		*end = '\0';
	}
	*key = k;
	*value = v;
	return 0;
}

static int errno_message(int e, char *buf, size_t len)
{
	/* The GNU strerror_r: thread-safe, unlike strerror, for a reload thread. */
	const char *s = strerror_r(e, buf, len);

	if (s != buf)
		snprintf(buf, len, "%s", s);
	return 0;
}

/*
 * Lines are applied as they are read, so on failure c holds the settings
 * up to the bad line: a caller that must keep a working configuration (a
 * reload) loads into a fresh struct and swaps only on success.
 */
int md_config_load(struct md_config *c, const char *path, char *err, size_t errlen)
{
	char line[MD_CONFIG_LINE_MAX + 1], why[WHY_MAX], pshown[256], es[128];
	char *buf = NULL, *key, *value;
	size_t len = 0, pos = 0, n;
	unsigned lineno = 0;
	const struct key *k;
	int r;

	if (!path || !*path)
		return fail(err, errlen, "empty configuration file name");
	shown(path, pshown, sizeof(pshown));
	r = read_all(path, &buf, &len);
	if (r == -EFBIG) {
		fail(err, errlen, "%s: larger than %zu bytes", pshown, MD_CONFIG_FILE_MAX);
		return -EFBIG;
	}
	if (r < 0) {
		errno_message(-r, es, sizeof(es));
		fail(err, errlen, "%s: %s", pshown, es);
		return r;
	}

	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);

		n = nl ? (size_t)(nl - (buf + pos)) : len - pos;
		lineno++;
		if (n && buf[pos + n - 1] == '\r')
			n--;
		if (n > MD_CONFIG_LINE_MAX) {
			r = fail(err, errlen, "%s:%u: line longer than %d bytes", pshown, lineno,
				 MD_CONFIG_LINE_MAX);
			goto out;
		}
		memcpy(line, buf + pos, n);
		line[n] = '\0';
		pos += (nl ? (size_t)(nl - (buf + pos)) + 1 : len - pos);
		if (memchr(line, '\0', n)) {
			r = fail(err, errlen, "%s:%u: NUL byte in the line", pshown, lineno);
			goto out;
		}
		r = parse_line(line, &key, &value, why, sizeof(why));
		if (r) {
			fail(err, errlen, "%s:%u: %s", pshown, lineno, why);
			goto out;
		}
		if (!key)
			continue;
		k = strchr(key, '-') ? NULL : find_key(key, strlen(key));
		if (!k) {
			r = fail(err, errlen, "%s:%u: unknown key '%s'", pshown, lineno,
				 shown(key, why, sizeof(why)));
			goto out;
		}
		r = set_key(c, k, value, why, sizeof(why));
		if (r) {
			fail(err, errlen, "%s:%u: %s: %s", pshown, lineno, k->name, why);
			goto out;
		}
	}
	r = 0;
out:
	free(buf);
	return r;
}

/* ---- validation -------------------------------------------------------- */

int md_config_validate(const struct md_config *c, char *err, size_t errlen)
{
	char v[64], why[WHY_MAX];
	uint64_t n = 0;
	size_t i;

	if (!c->model || !*c->model)
		return fail(err, errlen,
			    "model: no model configured (set \"model = FILE\" in the configuration file or pass --model FILE)");
	if (!c->socket_path || !*c->socket_path)
		return fail(err, errlen, "socket: no socket path");
	if (!c->kernels || !*c->kernels)
		return fail(err, errlen, "kernels: not set");
	/* A struct filled in by code gets the same limits as a parsed one. */
	for (i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];

		switch (k->type) {
		case KT_U32:
		case KT_THREADS:
			n = *(const uint32_t *)cfield(c, k);
			if (k->type == KT_THREADS && n == 0)
				continue;
			break;
		case KT_SIZE:
			n = *(const size_t *)cfield(c, k);
			break;
		case KT_PCACHE:
			if (c->prompt_cache == MD_PROMPT_CACHE_AUTO)
				continue;
			n = c->prompt_cache;
			break;
		case KT_MODE:
			n = *(const mode_t *)cfield(c, k);
			break;
		case KT_WINDOW:
			if (c->sliding_window <= 0) {
				if (c->sliding_window < -1)
					return fail(err, errlen, "sliding_window: %d is out of range",
						    (int)c->sliding_window);
				continue;
			}
			n = (uint64_t)c->sliding_window;
			break;
		default:
			continue;
		}
		if (n < k->min || n > k->max) {
			snprintf(v, sizeof(v), "%llu", (unsigned long long)n);
			range_error(k, v, why, sizeof(why));
			return fail(err, errlen, "%s: %s", k->name, why);
		}
	}
	if (c->mlock_required && !c->mlock)
		return fail(err, errlen, "mlock: required but not enabled");
	if (c->log_level < LOG_ERR || c->log_level > LOG_DEBUG)
		return fail(err, errlen, "log_level: %d is not a syslog level from error to debug",
			    c->log_level);
	if (c->hugepages != MS_POLICY_HUGETLB && c->hugepages != MS_POLICY_THP &&
	    c->hugepages != MS_POLICY_NONE)
		return fail(err, errlen, "hugepages: unknown policy %d", (int)c->hugepages);
	if (c->http_allow_remote && !c->http_api_key)
		return fail(err, errlen, "http_allow_remote: remote HTTP clients need an http_api_key");
	for (i = 0; i < c->n_http_listen; i++) {
		struct md_listen_addr a;

		if (md_listen_parse(c->http_listen[i], &a, why, sizeof(why)) < 0)
			return fail(err, errlen, "http_listen: %s", why);
		if (!a.loopback && !c->http_allow_remote)
			return fail(err, errlen,
				    "http_listen: %s is not a loopback address; serving it needs http_allow_remote = yes and an http_api_key",
				    shown(c->http_listen[i], v, sizeof(v)));
	}
	return 0;
}

/* ---- the command line ---------------------------------------------------- */

/*
 * One pass over argv. Without apply it checks the shape (known options,
 * values present, no operands) and fills in cli; with apply it sets the
 * keys, in order, so that a later option wins. Hand-rolled rather than
 * getopt_long: getopt keeps global state (a SIGHUP reload parses argv
 * again), permutes argv, and would need every key spelled twice.
 */
static int scan_args(struct md_config *c, struct md_cli *cli, int argc, char **argv,
		     bool apply, char *err, size_t errlen)
{
	char why[WHY_MAX], opt[80];
	const struct key *k;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *value;
		size_t nlen;

		if (strcmp(a, "-h") == 0) {
			cli->help = true;
			continue;
		}
		if (strcmp(a, "-V") == 0) {
			cli->version = true;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			if (i + 1 < argc)
				return fail(err, errlen, "unexpected argument '%s'",
					    shown(argv[i + 1], opt, sizeof(opt)));
			break;
		}
		if (a[0] != '-')
			return fail(err, errlen, "unexpected argument '%s'", shown(a, opt, sizeof(opt)));
		if (a[1] != '-')
			return fail(err, errlen, "unknown option '%s'", shown(a, opt, sizeof(opt)));

		name = a + 2;
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
		snprintf(opt, sizeof(opt), "--%.*s", nlen > 60 ? 60 : (int)nlen, name);
		if (has_control(opt))
			shown(a, opt, sizeof(opt));

		if ((nlen == 4 && strncmp(name, "help", 4) == 0) ||
		    (nlen == 7 && strncmp(name, "version", 7) == 0) ||
		    (nlen == 12 && (strncmp(name, "check-config", 12) == 0 ||
				    strncmp(name, "check_config", 12) == 0))) {
			if (eq)
				return fail(err, errlen, "option %s takes no value", opt);
			if (name[0] == 'h')
				cli->help = true;
			else if (name[0] == 'v')
				cli->version = true;
			else
				cli->check_config = true;
			continue;
		}

		k = NULL;
		if (!(nlen == 6 && strncmp(name, "config", 6) == 0)) {
			k = find_key(name, nlen);
			if (!k)
				return fail(err, errlen, "unknown option '%s'", opt);
		}
		if (eq) {
			value = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail(err, errlen, "option %s requires a value", opt);
			value = argv[++i];
		}
		if (!k) {
			if (!*value)
				return fail(err, errlen, "option %s: empty file name", opt);
			cli->config_path = value;
			cli->config_explicit = true;
			continue;
		}
		if (apply && set_key(c, k, value, why, sizeof(why)))
			return fail(err, errlen, "%s: %s", opt, why);
	}
	return 0;
}

int md_config_from_args(struct md_config *c, struct md_cli *cli, int argc, char **argv,
			char *err, size_t errlen)
{
	int r;

	md_config_defaults(c);
	memset(cli, 0, sizeof(*cli));
	cli->config_path = MD_DEFAULT_CONFIG;
	if (!argv)
		argc = 0;

	r = scan_args(c, cli, argc, argv, false, err, errlen);
	if (r) {
		cli->usage_error = true;
		return r;
	}
	if (cli->help || cli->version)
		return 0;

	r = md_config_load(c, cli->config_path, err, errlen);
	if (r == -ENOENT && !cli->config_explicit)
		r = 0;
	if (!r) {
		r = scan_args(c, cli, argc, argv, true, err, errlen);
		/* a value an option gives is the command line's fault */
		cli->usage_error = r != 0;
	}
	if (!r)
		r = md_config_validate(c, err, errlen);
	if (r) {
		/* Nothing allocated survives a failure; md_config_free is still safe. */
		md_config_free(c);
		md_config_defaults(c);
		return -EINVAL;
	}
	return 0;
}

/* ---- usage ------------------------------------------------------------- */

void md_config_usage(FILE *f)
{
	struct md_config d;
	char opt[64], def[PATH_MAX];
	size_t i, j;

	md_config_defaults(&d);
	fprintf(f,
		"Usage: mistrald [--config FILE] [--check-config] [--KEY VALUE | --KEY=VALUE ...]\n"
		"       mistrald --help | --version\n"
		"Serves a Mistral-family GGUF model to local programs over a Unix socket.\n"
		"\n"
		"  --config FILE\n"
		"      configuration file [%s]; a missing default file is\n"
		"      no error; --config /dev/null reads none\n"
		"  --check-config\n"
		"      check the configuration and that the model file opens and parses,\n"
		"      then exit 0 or 1\n"
		"  -h, --help\n"
		"      print this help and exit\n"
		"  -V, --version\n"
		"      print the version and exit\n"
		"\n"
		"Configuration keys, as in mistrald.conf(5). Options override the file, and a\n"
		"later option an earlier one. --queue-depth 8 and --queue_depth=8 are the same.\n",
		MD_DEFAULT_CONFIG);
	for (i = 0; i < NKEYS; i++) {
		for (j = 0; j < sizeof(opt) - 1 && keys[i].name[j]; j++)
			opt[j] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
		opt[j] = '\0';
		if (md_config_get(&d, keys[i].name, def, sizeof(def)) != 0 || !def[0])
			snprintf(def, sizeof(def), "%s", "none");
		fprintf(f, "  --%s %s\n      %s [%s]\n", opt, keys[i].arg, keys[i].help, def);
	}
	md_config_free(&d);
}
