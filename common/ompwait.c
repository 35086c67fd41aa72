/*
 * OpenMP threads that wait for work spin, by default for about 300,000
 * iterations (GOMP_SPINCOUNT), before sleeping on a futex. On an idle
 * machine that makes the hundreds of barriers per decoded token cheap; on
 * two cores shared with other work it is a collapse: a thread spins on the
 * core its descheduled partner needs, and decode fell to 7-23% of the idle
 * figure with two busy loops beside it (issue 9). A bounded spin keeps
 * short waits cheap and gives the core away on long ones.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "ompwait.h"

void mistral_omp_wait_setup(char **argv)
{
	/* MISTRAL_OMP_WAIT marks the re-executed process: never loop */
	if (!argv || !argv[0] || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") ||
	    getenv("MISTRAL_OMP_WAIT"))
		return;
	if (setenv("GOMP_SPINCOUNT", MISTRAL_SPINCOUNT, 1) < 0 || setenv("MISTRAL_OMP_WAIT", "1", 1) < 0)
		return;
	execv("/proc/self/exe", argv);
	/* no /proc, or no exec: run as we are; the variables say nothing of this process now */
	unsetenv("GOMP_SPINCOUNT");
}
