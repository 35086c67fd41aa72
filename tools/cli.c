/* Command-line helpers shared by mistral-run, mistral-bench and mistral-mkmodel. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli.h"

const char *cli_prog;

void cli_die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cli_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", cli_prog);
	exit(2);
}

bool cli_parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

long cli_long(const char *opt, const char *s, long lo, long hi)
{
	long v;

	if (!cli_parse_long(s, lo, hi, &v))
		cli_die_usage("bad %s '%s' (an integer from %ld to %ld)", opt, s, lo, hi);
	return v;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	/* strtoull accepts "-1" as 2^64-1; a count never starts with a sign */
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

uint32_t cli_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi)
{
	uint64_t v;

	if (!parse_u64(s, &v) || v < lo || v > hi)
		cli_die_usage("bad %s '%s' (an integer from %" PRIu32 " to %" PRIu32 ")",
			      opt, s, lo, hi);
	return (uint32_t)v;
}

uint64_t cli_u64(const char *opt, const char *s)
{
	uint64_t v;

	if (!parse_u64(s, &v))
		cli_die_usage("bad %s '%s' (an integer from 0 to 2^64-1)", opt, s);
	return v;
}

/*
 * strtod, then a float: a value past the float range becomes an infinity,
 * which the caller's own range checks then refuse by name.
 */
float cli_float(const char *opt, const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end)
		cli_die_usage("bad %s '%s' (a number)", opt, s);
	return (float)v;
}

/* strtof, not strtod: its ERANGE also refuses values that would become 0 or a subnormal float. */
float cli_pos_float(const char *opt, const char *s)
{
	char *end;
	float v;

	errno = 0;
	v = strtof(s, &end);
	if (errno || *end || end == s || !isfinite(v) || !(v > 0.0f))
		cli_die_usage("bad %s '%s' (a positive finite number)", opt, s);
	return v;
}

double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const struct ms_kernels *cli_pick_kernels(const char *name)
{
	const struct ms_kernels *k;
	enum ms_isa want;

	if (ms_kernels_choose(name, &k, &want) < 0)
		cli_die_usage("unknown kernel set '%s' from --isa or MISTRAL_ISA (generic, avx2, avx512 or auto)", name);
	if (k->isa != want)
		fprintf(stderr, "%s: this CPU cannot run %s kernels; using %s\n", cli_prog,
			ms_isa_name(want), ms_isa_name(k->isa));
	return k;
}
