/* Typed errors for the engine: formatting the reason that goes with an errno. */
#include <stdarg.h>
#include <stdio.h>

#include "error.h"

int ms_errf(ms_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return code;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return code;
}

void ms_err_clear(ms_err *e)
{
	if (!e)
		return;
	e->code = 0;
	e->msg[0] = '\0';
}
