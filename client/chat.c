/* mistralctl chat: the interactive conversation, one turn per line of input. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <histedit.h>
#include <msgpack.h>

#include "kvmap.h"
#include "mistralctl.h"
#include "output.h"
#include "proto.h"
#include "rpc.h"

#define MAX_LINE_BYTES   ((size_t)1 << 20)

struct chat_msg {
	const char *role;
	char *content;
	size_t len;
};

struct chat {
	struct chat_msg *m;
	size_t n, cap;
};

static int chat_push(struct chat *h, const char *role, const char *s, size_t len)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return -ENOMEM;
	if (h->n == h->cap) {
		size_t ncap = h->cap ? h->cap * 2 : 16;
		struct chat_msg *nm = realloc(h->m, ncap * sizeof(*nm));

		if (!nm) {
			free(copy);
			return -ENOMEM;
		}
		h->m = nm;
		h->cap = ncap;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	h->m[h->n].role = role;
	h->m[h->n].content = copy;
	h->m[h->n].len = len;
	h->n++;
	return 0;
}

static void chat_truncate(struct chat *h, size_t n)
{
	while (h->n > n)
		free(h->m[--h->n].content);
}

static void pack_messages(msgpack_packer *pk, const void *arg)
{
	const struct chat *h = arg;

	msgpack_pack_array(pk, (uint32_t)h->n);
	for (size_t i = 0; i < h->n; i++) {
		const struct proto_kv msg[] = {
			PROTO_KV_STR("role", h->m[i].role),
			PROTO_KV_STRN("content", h->m[i].content, h->m[i].len),
		};

		proto_pack_map(pk, msg, PROTO_KV_LEN(msg));
	}
}

/*
 * One chat turn: the whole history goes out, the answer streams to stdout.
 * Returns 0, 1 for a daemon error (the turn is undone), or a fatal exit
 * status. Ctrl-C cancels the answer; the partial answer stays in history.
 */
static int chat_turn(struct conn *c, struct chat *h, const struct req *r, bool stats, bool tty)
{
	struct stream_out so = { 0, 0 };
	struct reply rep;
	size_t before = h->n - 1;   /* the new user message is already pushed */
	const struct proto_kv messages = PROTO_KV_FN("messages", pack_messages, h);
	uint32_t id = 0;
	int ret, tries;

	for (tries = 0; tries < 2; tries++) {
		if (conn_stale(c)) {
			ret = conn_open(c);
			if (ret)
				return ret;
		}
		id = c->next_id++;
		memset(&rep, 0, sizeof(rep));
		ret = send_req(c, id, "chat", r, &messages);
		if (ret == 0 || ret == -EPIPE)
			ret = rpc_wait(c, id, on_chunk, &so, &rep);
		/* The daemon closed an idle connection just as we sent: one fresh try. */
		if ((ret == -ECONNRESET || ret == -EPIPE) && !rep.answered && tries == 0) {
			conn_close(c);
			continue;
		}
		break;
	}
	if (ret == -EINTR) {
		uint32_t cid = c->next_id++;
		struct req cr = { .n = 0 };
		int s;

		got_sigint = 0;
		req_set(&cr, "id", PK_UINT)->u = id;
		s = send_req(c, cid, "cancel", &cr, NULL);
		if (s < 0)
			return fail_status(c, s);
		/* The answer still comes: done_reason "cancelled", or error cancelled if it had not started. */
		ret = rpc_wait(c, id, on_chunk, &so, &rep);
		if (tty && ret >= 0) {
			fflush(stdout);
			fputs(so.bytes ? "\n[cancelled]" : "[cancelled]", stderr);
		}
	}
	if (ret < 0)
		return fail_status(c, ret);
	if (ret == 1) {
		if (so.bytes)
			end_text(&so);
		if (!error_is(rep.error, "cancelled"))
			print_daemon_error(rep.error);
		else if (tty)
			fputc('\n', stderr);
		chat_truncate(h, before);
		return error_is(rep.error, "cancelled") ? 0 : 1;
	}
	{
		const msgpack_object *t = map_str(rep.result, "response"), *dr = map_str(rep.result, "done_reason");
		bool cancelled = dr && dr->via.str.size == 9 && !memcmp(dr->via.str.ptr, "cancelled", 9);

		if (end_text(&so) < 0)
			return XS_DAEMON;
		if (stats)
			print_stats(rep.result);
		/*
		 * A normal empty answer is kept, as the roles must alternate; one
		 * cancelled before it said anything goes, with its question.
		 */
		if (!t || (cancelled && t->via.str.size == 0) ||
		    chat_push(h, "assistant", t->via.str.ptr, t->via.str.size) < 0)
			chat_truncate(h, before);
	}
	return 0;
}

/* One line of stdin without libedit: 1 read, 0 EOF, -E2BIG (skipped), -EINTR. */
static int plain_line(char **buf, size_t *cap, size_t *len)
{
	size_t n = 0;
	bool toolong = false;
	int ch;

	for (;;) {
		ch = getc(stdin);
		if (ch == EOF) {
			if (ferror(stdin) && errno == EINTR) {
				clearerr(stdin);
				return -EINTR;
			}
			if (n == 0 && !toolong)
				return 0;
			break;
		}
		if (ch == '\n')
			break;
		if (n >= MAX_LINE_BYTES) {
			toolong = true;
			continue;
		}
		if (n + 1 >= *cap) {
			size_t ncap = *cap ? *cap * 2 : 256;
			char *nb = realloc(*buf, ncap);

			if (!nb)
				return -ENOMEM;
			*buf = nb;
			*cap = ncap;
		}
		(*buf)[n++] = (char)ch;
	}
	if (toolong)
		return -E2BIG;
	if (n + 1 > *cap) {
		char *nb = realloc(*buf, n + 1);

		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = n + 1;
	}
	(*buf)[n] = '\0';
	*len = n;
	return 1;
}

static char *chat_prompt(EditLine *el)
{
	(void)el;
	return (char *)"> ";
}

static const char chat_commands[] =
	"/reset  forget the conversation (the --system prompt stays)\n"
	"/quit   leave (so does Ctrl-D)\n"
	"/help   this list\n"
	"//...   send a line that starts with '/'\n"
	"Ctrl-C  cancel the answer being written\n";

/*
 * Negative values that the steps below return where an exit status (0 or
 * more) would end the command: go on, and what reading a line gave.
 */
enum { GO_ON = -1, LINE_READ = -2, LINE_AGAIN = -3, LINE_END = -4 };

/* One chat session: what every turn sends, the conversation so far, where the lines come from. */
struct session {
	struct req r;                /* the sampling options and stream: true */
	bool stats;
	struct chat h;
	size_t base;                 /* the messages /reset keeps: the system prompt */
	struct conn c;
	bool tty_in;                 /* a person is typing: prompts and notices */
	EditLine *el;                /* line editing when both ends are a terminal, else NULL */
	History *hist;
	char *line;                  /* the plain reader's buffer */
	size_t line_cap;
	bool failed;                 /* a turn or a line failed: a script's exit status says so */
};

static void session_init(struct session *s)
{
	memset(s, 0, sizeof(*s));
	conn_init(&s->c);
	s->tty_in = isatty(STDIN_FILENO);
}

static void session_free(struct session *s)
{
	if (s->el)
		el_end(s->el);
	if (s->hist)
		history_end(s->hist);
	conn_free(&s->c);
	chat_truncate(&s->h, 0);
	free(s->h.m);
	free(s->line);
	req_free(&s->r);
}

/* The command line: GO_ON, or the exit status (--help, a usage error). */
static int chat_options(struct session *s, int argc, char **argv)
{
	static const struct option opts[] = {
		COMMON_OPTS, SAMPLING_OPTS,
		{ NULL, 0, NULL, 0 }
	};
	const struct cmd *cmd = find_cmd("chat");
	int o, li = 0;

	s->r.stop = calloc((size_t)argc + 1, sizeof(*s->r.stop));
	if (!s->r.stop)
		return XS_DAEMON;
	while ((o = getopt_long(argc, argv, "s:t:h", opts, &li)) != -1) {
		int h = common_opt(cmd, o);

		if (h == 2)
			return XS_OK;
		if (h == 0)
			h = sampling_opt(&s->r, o, opts[li].name, &s->stats);
		if (h <= 0)
			return usage_error("chat");
	}
	if (optind != argc) {
		errmsg("chat: unexpected argument '%s'", argv[optind]);
		return usage_error("chat");
	}
	return GO_ON;
}

static int editor_open(struct session *s)
{
	HistEvent ev;

	s->el = el_init("mistralctl", stdin, stdout, stderr);
	s->hist = history_init();
	if (!s->el || !s->hist) {
		errmsg("cannot initialise line editing");
		return XS_DAEMON;
	}
	history(s->hist, &ev, H_SETSIZE, 1000);
	history(s->hist, &ev, H_SETUNIQUE, 1);
	el_set(s->el, EL_PROMPT, chat_prompt);
	el_set(s->el, EL_EDITOR, "emacs");
	el_set(s->el, EL_HIST, history, s->hist);
	el_source(s->el, NULL);
	fputs("Chatting with mistrald; /help for commands, Ctrl-D to leave.\n", stderr);
	return GO_ON;
}

/* The conversation's first message, the connection, the line editor: GO_ON or an exit status. */
static int chat_start(struct session *s)
{
	const struct param *sys = req_get(&s->r, "system");
	int ret;

	/* The system prompt is the first message, not a chat parameter. */
	if (sys) {
		unsigned i = (unsigned)(sys - s->r.p);

		if (chat_push(&s->h, "system", sys->s, sys->len) < 0) {
			errmsg("out of memory");
			return XS_DAEMON;
		}
		memmove(&s->r.p[i], &s->r.p[i + 1], (s->r.n - i - 1) * sizeof(s->r.p[0]));
		s->r.n--;
	}
	s->base = s->h.n;
	req_bool(&s->r, "stream", true);
	ret = conn_open(&s->c);
	if (!ret)
		ret = await_model(&s->c, false);
	if (ret)
		return ret;
	return s->tty_in && isatty(STDOUT_FILENO) ? editor_open(s) : GO_ON;
}

/* A line from libedit without its line end, kept in the history: LINE_READ, LINE_AGAIN or LINE_END. */
static int read_edited(struct session *s, const char **text, size_t *len)
{
	HistEvent ev;
	int count = 0;

	*text = el_gets(s->el, &count);
	if (!*text) {
		fputc('\n', stdout);
		/* Ctrl-C at the prompt abandons the line, as in a shell. */
		return count < 0 && got_sigint ? LINE_AGAIN : LINE_END;
	}
	*len = (size_t)count;
	if (*len > MAX_LINE_BYTES) {
		errmsg("line longer than %zu bytes ignored", MAX_LINE_BYTES);
		return LINE_AGAIN;
	}
	while (*len && ((*text)[*len - 1] == '\n' || (*text)[*len - 1] == '\r'))
		(*len)--;
	if (*len)
		history(s->hist, &ev, H_ENTER, *text);
	return LINE_READ;
}

/* A line of plain standard input: LINE_READ, LINE_AGAIN, LINE_END or an exit status. */
static int read_plain(struct session *s, const char **text, size_t *len)
{
	int lr;

	/* A prompt only for a person typing, and never into a pipe. */
	if (s->tty_in) {
		FILE *pf = isatty(STDOUT_FILENO) ? stdout : stderr;

		fputs("> ", pf);
		fflush(pf);
	}
	lr = plain_line(&s->line, &s->line_cap, len);
	if (lr == -EINTR) {
		if (!s->tty_in)
			return XS_INTR;
		fputc('\n', stdout);
		return LINE_AGAIN;
	}
	if (lr == -E2BIG) {
		errmsg("line longer than %zu bytes ignored", MAX_LINE_BYTES);
		s->failed = true;
		return LINE_AGAIN;
	}
	if (lr < 0) {
		errmsg("standard input: %s", strerror(-lr));
		return XS_DAEMON;
	}
	if (lr == 0)
		return LINE_END;
	*text = s->line;
	return LINE_READ;
}

/* A line that starts with '/' (not "//"): true to leave. */
static bool chat_command(struct session *s, const char *text, size_t len)
{
	if ((len == 5 && !memcmp(text, "/quit", 5)) || (len == 5 && !memcmp(text, "/exit", 5)))
		return true;
	if (len == 6 && !memcmp(text, "/reset", 6)) {
		chat_truncate(&s->h, s->base);
		if (s->tty_in)
			fputs("(conversation cleared)\n", stderr);
		return false;
	}
	if (len == 5 && !memcmp(text, "/help", 5)) {
		fputs(chat_commands, stderr);
		return false;
	}
	errmsg("unknown command '%.*s'; /help lists them", (int)(len > 40 ? 40 : len), text);
	if (!s->tty_in)
		s->failed = true;
	return false;
}

/* A turn per line until the end of input or /quit; returns the exit status. */
static int chat_loop(struct session *s)
{
	for (;;) {
		const char *text = NULL;
		size_t len = 0;
		int ret;

		got_sigint = 0;
		ret = s->el ? read_edited(s, &text, &len) : read_plain(s, &text, &len);
		if (ret == LINE_END)
			break;
		if (ret == LINE_AGAIN || (ret == LINE_READ && len == 0))
			continue;
		if (ret != LINE_READ)
			return ret;
		if (text[0] == '/' && !(len > 1 && text[1] == '/')) {
			if (chat_command(s, text, len))
				break;
			continue;
		}
		if (text[0] == '/') {   /* "//...": the line less its escape */
			text++;
			len--;
		}
		if (chat_push(&s->h, "user", text, len) < 0) {
			errmsg("out of memory");
			return XS_DAEMON;
		}
		ret = chat_turn(&s->c, &s->h, &s->r, s->stats, s->tty_in);
		if (ret == 1)
			s->failed = true;
		else if (ret)
			return ret;
	}
	/* Interactive sessions end well; a script learns whether any turn failed. */
	return (!s->tty_in && s->failed) ? XS_DAEMON : XS_OK;
}

int cmd_chat(int argc, char **argv)
{
	struct session s;
	int ret;

	session_init(&s);
	ret = chat_options(&s, argc, argv);
	if (ret == GO_ON)
		ret = chat_start(&s);
	if (ret == GO_ON)
		ret = chat_loop(&s);
	session_free(&s);
	return ret;
}
