/* mistrald configuration: defaults, the key = value file, command-line overrides, validation. */
#ifndef MD_CONF_H
#define MD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "arena.h"
#include "quant.h"   /* GGML_TYPE_F16, GGML_TYPE_F32 for kv_cache */

#ifdef SYSCONFDIR
#define MD_DEFAULT_CONFIG SYSCONFDIR "/mistrald.conf"   /* from configure's --sysconfdir */
#else
#define MD_DEFAULT_CONFIG "/etc/mistrald.conf"
#endif
#define MD_DEFAULT_SOCKET "/run/mistrald/mistrald.sock"

/* Sequences generating at once: the worker batches them all into one step's fixed arrays. */
#define MD_MAX_PARALLEL 64

/* http_listen addresses at most (the key repeats). */
#define MD_HTTP_LISTEN_MAX 8
/* prompt_cache = auto: sized at load time to the memory beside the model. */
#define MD_PROMPT_CACHE_AUTO SIZE_MAX

struct md_config {
	char *model;                  /* model = PATH (required) */
	uint32_t threads;             /* threads = N | auto (0 = online CPUs) */
	uint32_t context;             /* context = N tokens per sequence (default 4096; 0 = the model's) */
	int32_t sliding_window;       /* sliding_window = N | off | auto (-1 auto, 0 off) */
	uint32_t parallel;            /* parallel = N sequences generating at once (default 4, at most MD_MAX_PARALLEL) */
	uint32_t queue_depth;         /* queue_depth = N requests waiting (default 16) */
	uint32_t batch;               /* batch = N prompt tokens per evaluation round (default 256) */
	char *kernels;                /* kernels = auto | generic | avx2 | avx512 */
	char *socket_path;            /* socket = PATH */
	mode_t socket_mode;           /* socket_mode = octal (default 0660) */
	char *socket_group;           /* socket_group = NAME (NULL: leave as created) */
	enum ms_page_policy hugepages;/* hugepages = hugetlb | thp | none (default thp) */
	uint32_t kv_cache;            /* kv_cache = f16 | f32: GGML_TYPE_F16 (default) or _F32 */
	size_t prompt_cache;          /* prompt_cache = auto | off | SIZE: bytes kept (MD_PROMPT_CACHE_AUTO, 0 = off) */
	uint32_t prompt_cache_entries;/* prompt_cache_entries = N finished sequences kept at most (default 64, 0 = off) */
	bool mlock;                   /* mlock = no | yes | required */
	bool mlock_required;
	size_t max_message_bytes;     /* default 1 MiB; range 1 KiB .. 256 MiB */
	uint32_t max_nesting;         /* default 16; range 4 .. 64 */
	uint32_t max_connections;     /* default 64 */
	uint32_t max_requests_per_connection;  /* default 32 */
	uint32_t max_tokens_limit;    /* default 4096: cap for a request's max_tokens */
	size_t output_buffer_bytes;   /* default 4 MiB: unread output per connection */
	uint32_t idle_timeout;        /* seconds, default 300; 0 = none */
	uint32_t shutdown_timeout;    /* seconds SIGTERM waits for in-flight requests, default 10 */
	uint32_t load_wait;           /* seconds a request waits for the first model, default 600; 0 = refuse */
	int log_level;                /* log_level = error|warning|notice|info|debug (syslog LOG_*) */
	/* The HTTP API (off while http_listen is empty and no socket named "http" is passed in) */
	char *http_listen[MD_HTTP_LISTEN_MAX];  /* http_listen = HOST:PORT | [V6]:PORT | unix:PATH, repeatable */
	uint32_t n_http_listen;
	char *http_api_key;           /* http_api_key = FILE holding the bearer token (NULL: no key) */
	bool http_allow_remote;       /* http_allow_remote = no: only loopback and unix: addresses */
	size_t http_max_body_bytes;   /* default 1 MiB */
	size_t http_max_header_bytes; /* default 16 KiB: request line and headers together */
	uint32_t http_timeout;        /* seconds a request may take to arrive in full, default 30 */
	uint32_t http_max_connections;/* default 64 */
};

/*
 * One parsed http_listen value. For TCP, addr holds the address and port;
 * for unix:PATH, path is set and addr unused. loopback: 127.0.0.0/8, ::1
 * or a unix socket, the only kinds served without http_allow_remote.
 */
struct md_listen_addr {
	bool is_unix;
	bool loopback;
	char path[108];               /* sun_path's size */
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* Parses "127.0.0.1:8080", "[::1]:8080", "localhost:8080" or "unix:/run/x.sock". 0 or -EINVAL with a reason. */
int md_listen_parse(const char *spec, struct md_listen_addr *out, char *why, size_t wlen);

/* Command-line things that are not configuration keys. */
struct md_cli {
	const char *config_path;      /* --config FILE (default MD_DEFAULT_CONFIG) */
	bool config_explicit;         /* given with --config: a missing file is an error */
	bool check_config;            /* --check-config */
	bool help, version;
	bool usage_error;             /* the failure was in the options themselves (exit 2), not the configuration */
};

void md_config_defaults(struct md_config *c);
void md_config_free(struct md_config *c);          /* frees strings; accepts NULL */
/* A deep copy (strings duplicated), for a thread that outlives a reload. 0 or -ENOMEM. */
int md_config_copy(struct md_config *dst, const struct md_config *src);

/*
 * Sets one key from its text value, as in the file. Returns 0, or -EINVAL
 * (unknown key, bad value) with a reason in err.
 */
int md_config_set(struct md_config *c, const char *key, const char *value, char *err, size_t errlen);

/*
 * Parses a file of "key = value" lines ('#' comments, blank lines, values
 * may be double-quoted). Errors name the file and line. -ENOENT when the
 * file does not exist.
 */
int md_config_load(struct md_config *c, const char *path, char *err, size_t errlen);

/* Cross-field checks (model given, limits consistent). */
int md_config_validate(const struct md_config *c, char *err, size_t errlen);

/*
 * The whole start-up sequence: defaults, then the config file (--config or
 * the default, whose absence is not an error), then every long option named
 * like a key (--queue-depth 8, --queue_depth=8, --socket PATH, --model FILE,
 * --threads N, --parallel N, ...) overriding it, then validation (skipped
 * for --help/--version). Returns 0 or -EINVAL with a reason.
 */
int md_config_from_args(struct md_config *c, struct md_cli *cli, int argc, char **argv,
			char *err, size_t errlen);

/* Writes the usage text. */
void md_config_usage(FILE *f);

/* The i-th configuration key name ("model", "threads", ...), NULL past the last. */
const char *md_config_key(size_t i);

/*
 * Formats a key's current value as the file would accept it ("auto",
 * "4M", "0660", "" for an unset string). 0, -EINVAL for an unknown key,
 * -ENOSPC when buf is too small.
 */
int md_config_get(const struct md_config *c, const char *key, char *buf, size_t len);

#endif
