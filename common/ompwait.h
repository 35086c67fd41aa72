/* How OpenMP threads wait in mistrald and the tools: a short spin, then sleep (see ompwait.c). */
#ifndef MISTRAL_OMPWAIT_H
#define MISTRAL_OMPWAIT_H

/*
 * GOMP_SPINCOUNT the programs run with unless the user chose a wait
 * policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment).
 */
#define MISTRAL_SPINCOUNT "10000"

/*
 * Call first thing in main. When the environment names no OpenMP wait
 * policy, sets GOMP_SPINCOUNT=MISTRAL_SPINCOUNT and re-executes the
 * program (same pid, arguments and open descriptors), because libgomp
 * reads its settings once, before main. Returns only when nothing was to
 * be done or the exec failed (the program then runs with libgomp's
 * default, which only costs speed on a shared CPU).
 */
void mistral_omp_wait_setup(char **argv);

#endif
