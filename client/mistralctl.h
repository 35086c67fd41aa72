/* What the files of mistralctl share: exit statuses, the command table, the options of several commands. */
#ifndef MCTL_MISTRALCTL_H
#define MCTL_MISTRALCTL_H

#include <stdbool.h>
#include <stdio.h>

#include "rpc.h"

/* Exit statuses, documented in mistralctl(1). */
enum {
	XS_OK = 0,
	XS_DAEMON = 1,    /* the daemon answered with an error (or output could not be written) */
	XS_USAGE = 2,
	XS_CONNECT = 3,
	XS_PROTO = 4,     /* protocol error, connection lost, timeout */
	XS_INTR = 130,
};

struct cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *synopsis;
	const char *help;
};

const struct cmd *find_cmd(const char *name);
/* "Try 'mistralctl CMD --help'." on stderr; returns XS_USAGE. */
int usage_error(const char *cmd);

/* Options every command takes. */
enum {
	O_SOCKET = 1000, O_TIMEOUT, O_HELP, O_JSON,
	O_STOP, O_SYSTEM, O_STATS,
	O_RAW, O_NO_STREAM, O_TOKENS, O_NO_BOS, O_SPECIAL,
	O_SAMPLING,       /* O_SAMPLING + PS_*: the sampling parameters of proto.h */
};

#define COMMON_OPTS \
	{ "socket", required_argument, NULL, O_SOCKET }, \
	{ "timeout", required_argument, NULL, O_TIMEOUT }, \
	{ "help", no_argument, NULL, O_HELP }

#define SAMPLING_OPTS \
	{ "max-tokens", required_argument, NULL, O_SAMPLING + PS_MAX_TOKENS }, \
	{ "temperature", required_argument, NULL, O_SAMPLING + PS_TEMPERATURE }, \
	{ "top-k", required_argument, NULL, O_SAMPLING + PS_TOP_K }, \
	{ "top-p", required_argument, NULL, O_SAMPLING + PS_TOP_P }, \
	{ "min-p", required_argument, NULL, O_SAMPLING + PS_MIN_P }, \
	{ "seed", required_argument, NULL, O_SAMPLING + PS_SEED }, \
	{ "repetition-penalty", required_argument, NULL, O_SAMPLING + PS_REPETITION_PENALTY }, \
	{ "frequency-penalty", required_argument, NULL, O_SAMPLING + PS_FREQUENCY_PENALTY }, \
	{ "presence-penalty", required_argument, NULL, O_SAMPLING + PS_PRESENCE_PENALTY }, \
	{ "stop", required_argument, NULL, O_STOP }, \
	{ "logprobs", required_argument, NULL, O_SAMPLING + PS_LOGPROBS }, \
	{ "system", required_argument, NULL, O_SYSTEM }, \
	{ "stats", no_argument, NULL, O_STATS }

/*
 * Handles the options all commands share; returns 1 when handled, 0 when
 * not one of them, -1 on a usage error, 2 for --help (printed).
 */
int common_opt(const struct cmd *cmd, int o);
/*
 * Sampling options shared by generate and chat: 1 handled, 0 not one, -1
 * usage error. name is the long option getopt_long matched, for messages.
 */
int sampling_opt(struct req *r, int o, const char *name, bool *stats);

/* The chat command (chat.c). */
int cmd_chat(int argc, char **argv);

struct conn;
/* Until the daemon's first model serves (a progress line on stderr when show; limit_s > 0 bounds it,
 * limit_s < 0 means the daemon's load_wait). */
int await_ready(struct conn *c, bool show, double limit_s);
/* await_ready with the line, only when stderr is a terminal and the output is not JSON. */
int await_model(struct conn *c, bool json);

#endif
