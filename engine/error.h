/* Typed errors for the engine: a negative errno plus one sentence saying why. */
#ifndef MS_ERROR_H
#define MS_ERROR_H

/*
 * The engine never logs, prints or exits. Every fallible call returns 0 (or
 * a count) on success and a negative errno on failure, and when the caller
 * passed an ms_err it also gets a human-readable reason, which the caller
 * (daemon, tool) reports once. ms_err may be NULL everywhere.
 */
typedef struct ms_err {
	int code;       /* negative errno, 0 when no error was recorded */
	char msg[256];  /* NUL-terminated reason, "" when none */
} ms_err;

/* Records code and a printf-style reason in e (if not NULL); returns code. */
int ms_errf(ms_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Clears e (if not NULL). */
void ms_err_clear(ms_err *e);

#endif
