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
	O_MAX_TOKENS, O_TEMPERATURE, O_TOP_K, O_TOP_P, O_MIN_P, O_SEED, O_REP_PEN,
	O_FREQ_PEN, O_PRES_PEN, O_STOP, O_LOGPROBS, O_SYSTEM, O_STATS,
	O_RAW, O_NO_STREAM, O_TOKENS, O_NO_BOS, O_SPECIAL,
};

#define COMMON_OPTS \
	{ "socket", required_argument, NULL, O_SOCKET }, \
	{ "timeout", required_argument, NULL, O_TIMEOUT }, \
	{ "help", no_argument, NULL, O_HELP }

#define SAMPLING_OPTS \
	{ "max-tokens", required_argument, NULL, O_MAX_TOKENS }, \
	{ "temperature", required_argument, NULL, O_TEMPERATURE }, \
	{ "top-k", required_argument, NULL, O_TOP_K }, \
	{ "top-p", required_argument, NULL, O_TOP_P }, \
	{ "min-p", required_argument, NULL, O_MIN_P }, \
	{ "seed", required_argument, NULL, O_SEED }, \
	{ "repetition-penalty", required_argument, NULL, O_REP_PEN }, \
	{ "frequency-penalty", required_argument, NULL, O_FREQ_PEN }, \
	{ "presence-penalty", required_argument, NULL, O_PRES_PEN }, \
	{ "stop", required_argument, NULL, O_STOP }, \
	{ "logprobs", required_argument, NULL, O_LOGPROBS }, \
	{ "system", required_argument, NULL, O_SYSTEM }, \
	{ "stats", no_argument, NULL, O_STATS }

/*
 * Handles the options all commands share; returns 1 when handled, 0 when
 * not one of them, -1 on a usage error, 2 for --help (printed).
 */
int common_opt(const struct cmd *cmd, int o);
/* Sampling options shared by generate and chat: 1 handled, 0 not one, -1 usage error. */
int sampling_opt(struct req *r, int o, bool *stats);

/* The chat command (chat.c). */
int cmd_chat(int argc, char **argv);

#endif
