/* mistral-bench --chat: an N-turn conversation with the prompt cache on and off, time to first token per turn. */
#ifndef MS_BENCH_CHAT_H
#define MS_BENCH_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"

#define BENCH_CHAT_MAX_REPEAT 100

struct bench_chat_opts {
	const char *model;
	const char *isa;
	long threads;
	long turns;
	long system;             /* tokens of the system prompt before the first user turn */
	long user;               /* tokens each user turn adds */
	long answer;             /* tokens each answer adds */
	long retok;              /* last answer tokens the next prompt spells differently */
	long batch;
	long repeat;             /* runs of the cached and new-only timings per turn (median) */
	uint32_t kv_type;
	enum ms_page_policy pages;
	bool mlock, plain_rows;
};

/* Prints one line per turn on stdout; 0, or -errno after a message on stderr. */
int bench_chat(const struct bench_chat_opts *o);

#endif
