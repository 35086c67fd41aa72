/* Daemon logging: one line per event on stderr (sd-daemon priority prefixes unless it is a terminal), rate-limited, never blocking. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static atomic_int log_level = LOG_INFO;

/*
 * Rate limit for warnings and worse: a client that triggers an error per
 * request must not be able to flood the journal. A token bucket of BURST
 * lines refilled at RATE per second; what it drops is counted and reported
 * with the next line that gets through. Debug/info lines are opt-in and
 * not limited.
 */
#define BURST 200
#define RATE  50

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static double tokens = BURST, last_refill;
static unsigned long suppressed;

void md_log_set_level(int level)
{
	atomic_store(&log_level, level);
}

int md_log_level(void)
{
	return atomic_load(&log_level);
}

/*
 * "<3>" prefixes tell the journal (or syslog) the priority; on a terminal
 * they are noise. So, like sd-daemon programs: prefixes when stderr is not
 * a terminal (a file, a pipe, the journal's socket) or $JOURNAL_STREAM
 * says systemd set it up. Decided once; 1 yes, 0 no, -1 not yet.
 */
static atomic_int prefix = -1;

static bool use_prefix(void)
{
	int p = atomic_load_explicit(&prefix, memory_order_relaxed);

	if (p < 0) {
		p = !isatty(STDERR_FILENO) || getenv("JOURNAL_STREAM") != NULL;
		atomic_store_explicit(&prefix, p, memory_order_relaxed);
	}
	return p;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Under systemd stderr is the journal's stream socket; when the journal is
 * slow a blocking write would stall the event loop, so a socket is written
 * with MSG_DONTWAIT and a line that does not fit is dropped. A terminal or
 * file is written normally.
 */
static void emit(const char *buf, size_t n)
{
	ssize_t r = send(STDERR_FILENO, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);

	if (r < 0 && errno == ENOTSOCK)
		r = write(STDERR_FILENO, buf, n);
	(void)r;
}

void md_log(int prio, const char *fmt, ...)
{
	char buf[2048];
	unsigned long dropped = 0;
	va_list ap;
	int n;

	if (prio > atomic_load(&log_level))
		return;
	if (prio <= LOG_WARNING) {
		double t = now();

		pthread_mutex_lock(&lock);
		tokens += (t - last_refill) * RATE;
		if (tokens > BURST)
			tokens = BURST;
		last_refill = t;
		if (tokens < 1) {
			suppressed++;
			pthread_mutex_unlock(&lock);
			return;
		}
		tokens -= 1;
		dropped = suppressed;
		suppressed = 0;
		pthread_mutex_unlock(&lock);
	}
	n = use_prefix() ? snprintf(buf, sizeof(buf), "<%d>", prio) : 0;
	if (dropped)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "(%lu earlier messages suppressed) ", dropped);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(buf) - 1)
		n = (int)sizeof(buf) - 2;
	/* One line per message, no terminal escapes: text a client chose (a
	 * method name, a path) must not forge entries or control a terminal. */
	for (int i = 0; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = ' ';
	buf[n++] = '\n';
	emit(buf, (size_t)n);
}
