/* Daemon logging: one line per event on stderr with sd-daemon priority prefixes, rate-limited, never blocking. */
#ifndef MD_LOG_H
#define MD_LOG_H

#include <syslog.h>

/* Messages less important than level (LOG_ERR .. LOG_DEBUG) are dropped. */
void md_log_set_level(int level);
int md_log_level(void);
/*
 * "<3>mistrald: text\n" in one write ("mistrald: text\n" on a terminal
 * outside systemd); safe from any thread.
 */
void md_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
