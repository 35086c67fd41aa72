/* Command-line helpers shared by mistral-run, mistral-bench and mistral-mkmodel. */
#ifndef MS_CLI_H
#define MS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels.h"

/*
 * Every message starts with this name; main sets it before anything here
 * runs. The helpers cannot use a tool's PROG macro: they are compiled once.
 */
extern const char *cli_prog;

/* "PROG: message" and a pointer to --help on stderr, then exit status 2 (bad usage). */
__attribute__((format(printf, 1, 2), noreturn))
void cli_die_usage(const char *fmt, ...);

/*
 * Option values; each dies with "bad OPT 'S' (what it must be)" where S is
 * not one. opt is the option as the help text spells it, e.g. "--threads".
 */

/* A decimal integer from lo to hi. */
long cli_long(const char *opt, const char *s, long lo, long hi);
/* The same test without the exit, for options that also take words. */
bool cli_parse_long(const char *s, long lo, long hi, long *out);
/* An unsigned integer (decimal, 0x hex or 0 octal) from lo to hi. */
uint32_t cli_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi);
/* Any unsigned 64-bit integer, written as for cli_u32: seeds. */
uint64_t cli_u64(const char *opt, const char *s);
/*
 * A number strtod reads without a range error (NaN and "inf" included: the
 * caller's own checks judge them; 1e400 or 1e-320 are refused here).
 */
float cli_float(const char *opt, const char *s);
/* A finite number above zero. */
float cli_pos_float(const char *opt, const char *s);

/* Monotonic clock, in seconds: for timing, not for dates. */
double cli_now(void);

/*
 * The kernel table for --isa / $MISTRAL_ISA (NULL or "auto": the best this
 * CPU runs). An unknown name is a usage error; a set this CPU lacks falls
 * back to the best it has, with a warning.
 */
const struct ms_kernels *cli_pick_kernels(const char *name);

#endif
