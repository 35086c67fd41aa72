/* Process-wide request counters and the monotonic clock, shared by the event loop and the worker. */
#ifndef MD_COUNTERS_H
#define MD_COUNTERS_H

#include <stdatomic.h>

/* Updated by the worker and the loop with relaxed increments, read for status and metrics. */
struct md_counters {
	atomic_ullong requests_total, requests_failed_total, requests_cancelled_total;
	atomic_ullong busy_rejections_total, prompt_tokens_total, tokens_generated_total;
	atomic_ullong connections_total, protocol_errors_total;
	atomic_ullong prompt_us_total, generate_us_total;
	atomic_ullong http_requests_total, http_errors_total, http_connections_total;
	/* the prompt cache: requests that reused a prefix or did not, entries
	 * evicted, prompt tokens not evaluated thanks to it; pool gauges */
	atomic_ullong prompt_cache_hits_total, prompt_cache_misses_total;
	atomic_ullong prompt_cache_evictions_total, prompt_cache_tokens_total;
	atomic_ullong prompt_cache_entries, prompt_cache_bytes;
};
extern struct md_counters md_counters;

double md_now(void);   /* monotonic seconds */

#endif
