/* Process-wide request counters and the monotonic clock. */
#include <time.h>

#include "counters.h"

struct md_counters md_counters;

double md_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
