#!/bin/sh
# Black-box tests of mistralctl against the real daemon, and against a scripted fake one for faults and Ctrl-C (TAP).
set -u
: "${srcdir:=.}" "${MISTRALD:=./mistrald}" "${MISTRALCTL:=./mistralctl}" "${MISTRAL_RUN:=./mistral-run}"
model="$srcdir/tests/data/stories260K.gguf"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-client.XXXXXX") || exit 1
sock="$tmp/s.sock"
dpid= ipid= fpid= tmuxbase="$tmp/tmux"

cleanup() {
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null
	[ -n "$ipid" ] && kill "$ipid" 2>/dev/null
	[ -n "$fpid" ] && kill "$fpid" 2>/dev/null
	if command -v tmux >/dev/null 2>&1; then
		tmux -S "$tmuxbase-a" kill-server >/dev/null 2>&1
		tmux -S "$tmuxbase-b" kill-server >/dev/null 2>&1
	fi
	[ -n "$dpid" ] && wait "$dpid" 2>/dev/null
	[ -n "$ipid" ] && wait "$ipid" 2>/dev/null
	[ -n "$fpid" ] && wait "$fpid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
check() { desc=$1; shift; if "$@"; then ok 0 "$desc"; else ok 1 "$desc"; fi; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

# Every client run is bounded, so a hang fails the test instead of wedging it.
if command -v timeout >/dev/null 2>&1; then to="timeout 60"; else to=; fi
ctl() { $to "$MISTRALCTL" --socket "$sock" "$@"; }

# wait_for SECONDS COMMAND...: polls every 0.1 s.
wait_for() {
	w_left=$(($1 * 10)); shift
	while [ "$w_left" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		w_left=$((w_left - 1))
	done
	return 1
}

for f in "$MISTRALD" "$MISTRALCTL" "$MISTRAL_RUN"; do
	if [ ! -x "$f" ]; then
		echo "1..0 # SKIP $f not built"
		exit 0
	fi
done

"$MISTRALD" --config /dev/null --model "$model" --socket "$sock" --threads 2 2>"$tmp/daemon.log" &
dpid=$!
ready() { "$MISTRALCTL" --socket "${1:-$sock}" --timeout 5 status 2>/dev/null | grep -q '^state: ready$'; }
if ! wait_for 60 ready; then
	echo "Bail out! the daemon did not become ready within 60 s: $(tail -n 5 "$tmp/daemon.log")"
	exit 1
fi

golden_text=", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said"
golden="432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352 266 268 388 426 338 391 266 267 337 335 312 432 398 312 286 267 414 270 333 415 426 13 438 310 439 419 357 336"

# --- generate ------------------------------------------------------------------
"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 64 --temperature 0 >"$tmp/run.out" 2>/dev/null
printf '\n' >>"$tmp/run.out"
ctl generate --temperature 0 --raw --max-tokens 64 "Once upon a time" >"$tmp/gen.out" 2>"$tmp/gen.err"
ok $? "generate exits 0"
check "generate (streamed) prints what mistral-run prints, plus the trailing newline" cmp -s "$tmp/run.out" "$tmp/gen.out"
check "... and that is the golden text" [ "$(cat "$tmp/gen.out")" = "$golden_text" ]
check "generate writes nothing on stderr without --stats" [ ! -s "$tmp/gen.err" ]

printf 'Once upon a time' | ctl generate --temperature 0 --raw --max-tokens 64 - >"$tmp/stdin.out" 2>/dev/null
check "generate - reads the prompt from stdin" cmp -s "$tmp/run.out" "$tmp/stdin.out"

ctl generate --temperature 0 --raw --max-tokens 64 Once upon a time >"$tmp/join.out" 2>/dev/null
check "generate joins several prompt arguments with spaces" cmp -s "$tmp/run.out" "$tmp/join.out"

ctl generate --no-stream --temperature 0 --raw --max-tokens 64 "Once upon a time" >"$tmp/ns.out" 2>/dev/null
check "generate --no-stream prints the same text" cmp -s "$tmp/run.out" "$tmp/ns.out"

ctl generate --tokens 1,403,407,261,378 --temperature 0 --max-tokens 64 >"$tmp/tok.out" 2>/dev/null
check "generate --tokens feeds ids as they are" cmp -s "$tmp/run.out" "$tmp/tok.out"

ctl generate --json --temperature 0 --raw --max-tokens 64 "Once upon a time" >"$tmp/gen.json" 2>/dev/null
ok $? "generate --json exits 0"
check "generate --json prints one parseable JSON object" \
	python3 -c 'import json,sys; json.load(sys.stdin)' <"$tmp/gen.json"
check "generate --json: response, tokens, done_reason, usage are the greedy run's" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
want = open(sys.argv[2]).read()[:-1]
ids = [int(x) for x in sys.argv[3].split()]
assert r["response"] == want, r["response"]
assert r["tokens"] == ids, r["tokens"]
assert r["done_reason"] == "length", r["done_reason"]
assert r["usage"]["prompt_tokens"] == 5 and r["usage"]["completion_tokens"] == 64, r["usage"]
assert set(r["timings"]) >= {"queue_ms", "prompt_ms", "generate_ms"}, r["timings"]
' "$tmp/gen.json" "$tmp/run.out" "$golden"

ctl generate --json --temperature 0 --raw --max-tokens 4 --logprobs 3 "Once upon a time" >"$tmp/lp.json" 2>/dev/null
check "generate --json --logprobs 3: 4 entries with 3 alternatives each" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
lp = r["logprobs"]
assert len(lp) == 4 and all(len(e["top"]) == 3 for e in lp), lp
assert lp[0]["token"] == 432 and lp[0]["logprob"] <= 0, lp[0]
' "$tmp/lp.json"
ctl generate --temperature 0 --raw --max-tokens 4 --logprobs 2 "Once upon a time" >"$tmp/lp.out" 2>"$tmp/lp.err"
check "generate --logprobs in text mode: text on stdout, one logprob line per token on stderr" \
	sh -c "[ \$(grep -c '^logprob ' '$tmp/lp.err') -eq 4 ] && ! grep -q logprob '$tmp/lp.out'"

ctl generate --stats --temperature 0 --raw --max-tokens 64 "Once upon a time" >"$tmp/st.out" 2>"$tmp/st.err"
check "generate --stats leaves stdout unchanged" cmp -s "$tmp/run.out" "$tmp/st.out"
check "generate --stats writes timings to stderr ($(head -c 160 "$tmp/st.err"))" \
	grep -q 'prompt 5 tokens in .* tok/s.*generated 64 tokens' "$tmp/st.err"

ctl generate --temperature 0 --raw --max-tokens 64 --stop park "Once upon a time" >"$tmp/stop.out" 2>/dev/null
check "generate --stop ends before the stop string" \
	[ "$(cat "$tmp/stop.out")" = ", there was a little girl named Lily. She loved to play outside in the " ]

ctl generate --raw --max-tokens 40 --temperature 0.9 --seed 42 "Once upon a time" >"$tmp/s1" 2>/dev/null
ctl generate --raw --max-tokens 40 --temperature 0.9 --seed 42 "Once upon a time" >"$tmp/s2" 2>/dev/null
check "generate --seed: the same seed gives the same text" cmp -s "$tmp/s1" "$tmp/s2"

ctl generate --max-tokens 8 --temperature 0 --system "Be brief." "Hello" >/dev/null 2>&1
ok $? "generate with the instruct template and --system exits 0"

# --- tokenize / detokenize -----------------------------------------------------
check "tokenize 'Once upon a time' gives 1 403 407 261 378" [ "$(ctl tokenize "Once upon a time")" = "1 403 407 261 378" ]
check "tokenize --no-bos drops the 1" [ "$(ctl tokenize --no-bos "Once upon a time")" = "403 407 261 378" ]
check "tokenize - reads stdin" [ "$(printf 'Once upon a time' | ctl tokenize -)" = "1 403 407 261 378" ]
check "tokenize --special parses </s>" sh -c "ctl() { $to '$MISTRALCTL' --socket '$sock' \"\$@\"; }
	[ \"\$(ctl tokenize --no-bos --special '</s>')\" = 2 ] && [ \"\$(ctl tokenize --no-bos '</s>')\" != 2 ]"
ctl detokenize $golden >"$tmp/detok.out" 2>/dev/null
check "detokenize of the golden ids is the golden text (plus newline)" cmp -s "$tmp/run.out" "$tmp/detok.out"
check "detokenize accepts comma-separated ids" [ "$(ctl detokenize 432,383,286)" = "$(ctl detokenize 432 383 286)" ]
ctl detokenize 99999 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q 'invalid_params' "$tmp/err"; echo $?) "detokenize of an id out of the vocabulary is a daemon error (exit 1): $(head -c 120 "$tmp/err")"
ctl detokenize 12x >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "detokenize of a non-number is a usage error (exit 2)"

# --- info / status / metrics / cancel ------------------------------------------
ctl info >"$tmp/info" 2>&1
ok $? "info exits 0"
check "info prints key: value lines with dotted keys (hparams.vocab: 512, template: v1)" \
	sh -c "grep -qx 'hparams.vocab: 512' '$tmp/info' && grep -qx 'template: v1' '$tmp/info' && ! grep -qv '^[a-zA-Z0-9_.]*: ' '$tmp/info'"
check "info --json parses" sh -c "$to '$MISTRALCTL' --socket '$sock' info --json | python3 -c 'import json,sys; d = json.load(sys.stdin); assert d[\"hparams\"][\"vocab\"] == 512'"
ctl status >"$tmp/status" 2>&1
check "status says state: ready and counts requests" \
	sh -c "grep -qx 'state: ready' '$tmp/status' && grep -q '^requests_total: [1-9]' '$tmp/status'"
check "status --json parses" sh -c "$to '$MISTRALCTL' --socket '$sock' status --json | python3 -c 'import json,sys; json.load(sys.stdin)'"
ctl metrics >"$tmp/metrics" 2>&1
ok $? "metrics exits 0"
check "metrics lines are Prometheus text (name value, # HELP, # TYPE)" \
	sh -c "[ -s '$tmp/metrics' ] && ! grep -Ev '^(mistrald_[a-z_]+ [0-9.e+-]+|# HELP mistrald_[a-z_]+ .+|# TYPE mistrald_[a-z_]+ (counter|gauge))\$' '$tmp/metrics'"
check "metrics: counters end in _total, and requests_total is there" \
	sh -c "grep -q '^mistrald_requests_total [1-9]' '$tmp/metrics' && ! grep '^# TYPE' '$tmp/metrics' | grep ' counter\$' | grep -v '_total counter\$' | grep -q ."
check "metrics: every sample has a # TYPE line" sh -c "
	[ \$(grep -c '^mistrald_' '$tmp/metrics') -eq \$(grep -c '^# TYPE' '$tmp/metrics') ]"
check "cancel of a request not on its connection reports false" [ "$(ctl cancel 12345)" = "cancelled: false" ]

# --- chat from a pipe ------------------------------------------------------------
printf 'Hello there\nTell me a story\n' | ctl chat --temperature 0 --max-tokens 12 --stats >"$tmp/chat.out" 2>"$tmp/chat.err"
ok $? "chat from a pipe exits 0"
check "chat answers both turns ($(grep -c 'tok/s' "$tmp/chat.err") stats lines)" \
	sh -c "[ \$(grep -c 'generated [1-9][0-9]* tokens' '$tmp/chat.err') -eq 2 ] && [ -s '$tmp/chat.out' ]"
check "chat: the second turn carries the first (prompt grows)" sh -c "
	p1=\$(sed -n 's/.*prompt \\([0-9]*\\) tokens.*/\\1/p' '$tmp/chat.err' | sed -n 1p)
	p2=\$(sed -n 's/.*prompt \\([0-9]*\\) tokens.*/\\1/p' '$tmp/chat.err' | sed -n 2p)
	[ -n \"\$p1\" ] && [ -n \"\$p2\" ] && [ \"\$p2\" -gt \"\$p1\" ]"
check "chat --stats: the second turn's prompt reuses the first turn's (cached tokens shown)" sh -c "
	c2=\$(sed -n 's/.*tok\/s; \([0-9]*\) cached, \([0-9]*\) new.*/\1/p' '$tmp/chat.err' | sed -n 2p)
	p1=\$(sed -n 's/.*prompt \\([0-9]*\\) tokens.*/\\1/p' '$tmp/chat.err' | sed -n 1p)
	[ -n \"\$c2\" ] && [ \"\$c2\" -ge \"\$p1\" ]"
printf 'Hello there\n/reset\nTell me a story\n' | ctl chat --temperature 0 --max-tokens 12 --stats >/dev/null 2>"$tmp/chat2.err"
check "chat /reset forgets the conversation (second prompt as short as a first one)" sh -c "
	p=\$(sed -n 's/.*prompt \\([0-9]*\\) tokens.*/\\1/p' '$tmp/chat2.err' | sed -n 2p)
	q=\$(printf 'Tell me a story\n' | $to '$MISTRALCTL' --socket '$sock' chat --max-tokens 1 --stats 2>&1 >/dev/null | sed -n 's/.*prompt \\([0-9]*\\) tokens.*/\\1/p')
	[ -n \"\$p\" ] && [ \"\$p\" = \"\$q\" ]"
printf 'Hi\n/bogus\n' | ctl chat --max-tokens 2 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q "unknown command '/bogus'" "$tmp/err"; echo $?) "chat from a pipe: an unknown /command is reported and the exit status is 1"
printf '/quit\nHi\n' | ctl chat --max-tokens 2 --stats >/dev/null 2>"$tmp/err"
ok $([ $? -eq 0 ] && ! grep -q tok/s "$tmp/err"; echo $?) "chat /quit leaves before the next line"

# A daemon that closes idle connections after 1 s: chat reconnects for the next turn.
"$MISTRALD" --config /dev/null --model "$model" --socket "$tmp/i.sock" --threads 1 --idle-timeout 1 2>"$tmp/idle.log" &
ipid=$!
if wait_for 60 ready "$tmp/i.sock"; then
	(printf 'Hello there\n'; sleep 2.5; printf 'Tell me a story\n') |
		$to "$MISTRALCTL" --socket "$tmp/i.sock" chat --temperature 0 --max-tokens 4 --stats >/dev/null 2>"$tmp/err"
	ok $([ $? -eq 0 ] && [ "$(grep -c 'tok/s' "$tmp/err")" -eq 2 ]; echo $?) \
		"chat reconnects after the daemon closed the idle connection: $(tr '\n' '|' <"$tmp/err" | head -c 150)"
else
	ok 1 "a second daemon with --idle-timeout 1 did not start: $(tail -n 2 "$tmp/idle.log")"
fi
kill "$ipid" 2>/dev/null; wait "$ipid" 2>/dev/null; ipid=

# --- sockets, errors, usage ---------------------------------------------------
MISTRALD_SOCKET="$sock" $to "$MISTRALCTL" status >/dev/null 2>&1
ok $? "MISTRALD_SOCKET selects the socket"
MISTRALD_SOCKET="$tmp/nope.sock" $to "$MISTRALCTL" --socket "$sock" status >/dev/null 2>&1
ok $? "--socket overrides MISTRALD_SOCKET"
$to "$MISTRALCTL" --socket "$tmp/nope.sock" status >/dev/null 2>"$tmp/err"
ok $([ $? -eq 3 ] && grep -q "nope.sock" "$tmp/err"; echo $?) "a wrong socket exits 3 naming it: $(head -c 120 "$tmp/err")"
: >"$tmp/plain"
$to "$MISTRALCTL" --socket "$tmp/plain" status >/dev/null 2>&1
ok $([ $? -eq 3 ]; echo $?) "a socket path that is a plain file exits 3"
ctl generate --temperature -1 "x" >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q '^mistralctl: invalid_params: .*temperature' "$tmp/err"; echo $?) \
	"a daemon error exits 1 and prints code and message: $(head -c 120 "$tmp/err")"
ctl generate --temperature 0 --max-tokens 8 --raw "$(head -c 3000 /dev/zero | tr '\0' 'a' | sed 's/a/a b /g')" >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q 'context_overflow' "$tmp/err"; echo $?) "a prompt longer than the context is context_overflow (exit 1)"
head -c 2000000 /dev/zero | tr '\0' a | ctl generate - >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q '^mistralctl: too_large' "$tmp/err"; echo $?) \
	"a 2 MB prompt on stdin: the daemon's too_large is reported (exit 1): $(head -c 100 "$tmp/err")"
head -c 17000000 /dev/zero | tr '\0' a | ctl generate - >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q '16 MiB' "$tmp/err"; echo $?) "a prompt over 16 MiB on stdin is a usage error (exit 2)"
ctl generate >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "generate without a prompt exits 2"
ctl generate --temperature abc x >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q temperature "$tmp/err"; echo $?) "a non-numeric --temperature is a usage error (exit 2)"
ctl generate --temperature nan x >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "a NaN --temperature is a usage error (exit 2)"
ctl --bogus status >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "an unknown global option exits 2"
ctl frobnicate >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "an unknown command exits 2"
ctl status extra >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "an extra argument exits 2"
"$MISTRALCTL" >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "no command exits 2"
check "--help lists every command" sh -c "'$MISTRALCTL' --help | grep -q detokenize && '$MISTRALCTL' --help | grep -q metrics"
check "generate --help documents the sampling options" sh -c "'$MISTRALCTL' generate --help | grep -q -- --repetition-penalty"
check "--version prints the version" sh -c "'$MISTRALCTL' --version | grep -q '^mistralctl (mistrald) [0-9]'"

# --- faults, with a scripted fake daemon -----------------------------------------
# A dependency-free msgpack codec: the test needs no Python package.
cat >"$tmp/fake.py" <<'EOF'
import json, os, select, socket, struct, sys, threading, time

class Incomplete(Exception):
    pass

def need(b, end):
    if end > len(b):
        raise Incomplete()

def unpack(b, i=0):
    need(b, i + 1)
    c = b[i]; i += 1
    if c <= 0x7f: return c, i
    if c >= 0xe0: return c - 256, i
    if 0x80 <= c <= 0x8f: return seq(b, i, c & 15, True)
    if 0x90 <= c <= 0x9f: return seq(b, i, c & 15, False)
    if 0xa0 <= c <= 0xbf: return raw(b, i, c & 31, True)
    if c == 0xc0: return None, i
    if c == 0xc2: return False, i
    if c == 0xc3: return True, i
    fixed = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h",
             0xd2: ">i", 0xd3: ">q", 0xca: ">f", 0xcb: ">d"}
    if c in fixed:
        n = struct.calcsize(fixed[c]); need(b, i + n)
        return struct.unpack_from(fixed[c], b, i)[0], i + n
    lens = {0xd9: 1, 0xda: 2, 0xdb: 4, 0xc4: 1, 0xc5: 2, 0xc6: 4, 0xdc: 2, 0xdd: 4, 0xde: 2, 0xdf: 4}
    if c in lens:
        ln = lens[c]; need(b, i + ln); n = int.from_bytes(b[i:i + ln], "big"); i += ln
        if c in (0xd9, 0xda, 0xdb): return raw(b, i, n, True)
        if c in (0xc4, 0xc5, 0xc6): return raw(b, i, n, False)
        return seq(b, i, n, c in (0xde, 0xdf))
    raise ValueError("unsupported byte 0x%02x" % c)

def raw(b, i, n, text):
    need(b, i + n)
    return (b[i:i + n].decode() if text else bytes(b[i:i + n])), i + n

def seq(b, i, n, is_map):
    if is_map:
        d = {}
        for _ in range(n):
            k, i = unpack(b, i); v, i = unpack(b, i); d[k] = v
        return d, i
    a = []
    for _ in range(n):
        v, i = unpack(b, i); a.append(v)
    return a, i

def pack(o):
    if o is None: return b"\xc0"
    if o is True: return b"\xc3"
    if o is False: return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128: return bytes([o])
        if 0 <= o < 2 ** 32: return b"\xce" + struct.pack(">I", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float): return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        e = o.encode()
        if len(e) < 32: return bytes([0xa0 | len(e)]) + e
        return b"\xdb" + struct.pack(">I", len(e)) + e
    if isinstance(o, (list, tuple)):
        return b"\xdd" + struct.pack(">I", len(o)) + b"".join(pack(x) for x in o)
    if isinstance(o, dict):
        return b"\xdf" + struct.pack(">I", len(o)) + b"".join(pack(k) + pack(v) for k, v in o.items())
    raise TypeError(type(o))

def result(text, reason):
    return {"response": text, "tokens": [], "done_reason": reason,
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "timings": {"queue_ms": 0.0, "prompt_ms": 0.0, "generate_ms": 0.0,
                        "prompt_tokens_per_s": 0.0, "generate_tokens_per_s": 0.0}, "seed": 1}

def serve(mode, conn, log):
    buf = b""
    streaming = None      # [msgid, text so far] while a chat answer "ticks"
    try:
        if mode == "close":
            return
        while True:
            r, _, _ = select.select([conn], [], [], 0.05)
            if r:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            while True:
                try:
                    msg, used = unpack(buf)
                except Incomplete:
                    break
                buf = buf[used:]
                with open(log, "a") as f:
                    f.write(json.dumps(msg) + "\n")
                if mode == "silent":
                    continue
                if mode == "garbage":
                    conn.sendall(b"\xc1\xc1\xc1")
                    continue
                if mode == "oversize":       # a header claiming 4 GiB
                    conn.sendall(b"\xdb\xff\xff\xff\xff")
                    continue
                _, msgid, method, params = msg
                p = params[0] if params else {}
                if method == "status":     # mistralctl on a terminal asks before a chat
                    conn.sendall(pack([1, msgid, None, {"state": "ready"}]))
                elif method == "chat" and len(p["messages"]) == 1:
                    streaming = [msgid, ""]
                elif method == "chat":
                    conn.sendall(pack([2, "generate.chunk", [msgid, {"response": "done.", "tokens": [5]}]]))
                    conn.sendall(pack([1, msgid, None, result("done.", "stop")]))
                elif method == "cancel":
                    hit = streaming is not None and p.get("id") == streaming[0]
                    if hit:
                        conn.sendall(pack([1, streaming[0], None, result(streaming[1], "cancelled")]))
                        streaming = None
                    conn.sendall(pack([1, msgid, None, {"cancelled": hit}]))
                else:
                    conn.sendall(pack([1, msgid, {"code": "unknown_method", "message": "fake"}, None]))
            if streaming and not r:
                streaming[1] += "tick "
                conn.sendall(pack([2, "generate.chunk", [streaming[0], {"response": "tick ", "tokens": [7]}]]))
                if len(streaming[1]) > 5 * 600:     # 30 s without a cancel: give up
                    conn.sendall(pack([1, streaming[0], None, result(streaming[1], "length")]))
                    streaming = None
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()

def main():
    d = sys.argv[1]
    socks = {}
    for mode in ("silent", "garbage", "oversize", "close", "chat"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(d, "fake-%s.sock" % mode))
        s.listen(8)
        socks[s] = mode
    open(os.path.join(d, "fake.ready"), "w").close()
    while True:
        r, _, _ = select.select(list(socks), [], [])
        for s in r:
            c, _ = s.accept()
            m = socks[s]
            threading.Thread(target=serve, args=(m, c, os.path.join(d, "fake-%s.log" % m)), daemon=True).start()

main()
EOF

if command -v python3 >/dev/null 2>&1; then
	python3 "$tmp/fake.py" "$tmp" 2>"$tmp/fake.err" &
	fpid=$!
	wait_for 10 test -e "$tmp/fake.ready"
fi
if [ -e "$tmp/fake.ready" ]; then
	start=$(date +%s)
	$to "$MISTRALCTL" --socket "$tmp/fake-silent.sock" --timeout 0.5 status >/dev/null 2>"$tmp/err"
	st=$? el=$(($(date +%s) - start))
	ok $([ $st -eq 4 ] && [ $el -le 5 ] && grep -q 'no reply' "$tmp/err"; echo $?) \
		"--timeout 0.5 against a silent daemon exits 4 after ${el} s: $(head -c 100 "$tmp/err")"
	$to "$MISTRALCTL" --socket "$tmp/fake-garbage.sock" status >/dev/null 2>"$tmp/err"
	ok $([ $? -eq 4 ] && grep -q 'protocol error' "$tmp/err"; echo $?) "a reply that is not msgpack exits 4: $(head -c 100 "$tmp/err")"
	$to "$MISTRALCTL" --socket "$tmp/fake-oversize.sock" --timeout 5 status >/dev/null 2>"$tmp/err"
	ok $([ $? -eq 4 ] && grep -q 'too large' "$tmp/err"; echo $?) "a reply claiming 4 GiB is refused at once (exit 4): $(head -c 100 "$tmp/err")"
	$to "$MISTRALCTL" --socket "$tmp/fake-close.sock" status >/dev/null 2>"$tmp/err"
	ok $([ $? -eq 4 ] && grep -q 'connection to the daemon lost' "$tmp/err"; echo $?) "a daemon that hangs up exits 4"
else
	for t in timeout garbage oversize close; do skip "fake daemon ($t): python3 unavailable"; done
fi

# --- a daemon still loading: status --wait and the progress line ----------------
# The model is a FIFO, so the load blocks in open() until this test lets it fail.
mkfifo "$tmp/fifo.gguf"
"$MISTRALD" --config /dev/null --model "$tmp/fifo.gguf" --socket "$tmp/l.sock" --load-wait 2 \
	2>"$tmp/l.log" &
ipid=$!
wait_for 60 test -S "$tmp/l.sock"
$to "$MISTRALCTL" --socket "$tmp/l.sock" --timeout 1 status --wait >"$tmp/l.out" 2>"$tmp/l.err"
ok $([ $? -eq 4 ] && grep -q 'still loading after 1 s' "$tmp/l.err" && [ ! -s "$tmp/l.out" ]; echo $?) \
	"status --wait --timeout 1 while the model loads: exit 4, saying so: $(head -c 100 "$tmp/l.err")"
ctl status --wait >"$tmp/w.out" 2>"$tmp/w.err"
ok $([ $? -eq 0 ] && grep -qx 'state: ready' "$tmp/w.out" && grep -q '^load_total_bytes: [1-9]' "$tmp/w.out" \
	&& [ ! -s "$tmp/w.err" ]; echo $?) "status --wait on a ready daemon prints its status and load_total_bytes"
if command -v script >/dev/null 2>&1; then
	# stderr a terminal: the progress line; the request itself waits load_wait (2 s) and fails
	TERM=dumb $to script -qec "'$MISTRALCTL' --socket '$tmp/l.sock' tokenize hello" /dev/null >"$tmp/l.tty" 2>&1
	ok $(grep -q 'loading the model' "$tmp/l.tty" && grep -q 'still loading' "$tmp/l.tty"; echo $?) \
		"on a terminal, tokenize shows a loading line while it waits: $(tr '\r' '\n' <"$tmp/l.tty" | grep -v '^ *$' | tail -n 1 | head -c 100)"
else
	skip "progress line: script(1) is not installed"
fi
$to "$MISTRALCTL" --socket "$tmp/l.sock" tokenize hello >"$tmp/l.out" 2>"$tmp/l.err"
ok $([ $? -eq 1 ] && grep -q 'loading: the model is still loading after 2 s' "$tmp/l.err" && \
	! grep -q 'loading the model' "$tmp/l.err"; echo $?) \
	"piped, tokenize shows no progress line and gets the daemon's loading error after load_wait"
kill "$ipid" 2>/dev/null
wait "$ipid" 2>/dev/null
ipid=

# --- Ctrl-C in an interactive chat, in a tmux pane ----------------------------------
# One tmux server per scenario: reusing a name races with the old server's exit.
tmuxsock="$tmuxbase-a"
pane() { tmux -S "$tmuxsock" capture-pane -p -t t 2>/dev/null; }
pane_has() { pane | grep -q "$1"; }
log_has() { [ -f "$tmp/fake-chat.log" ] && grep -q "$1" "$tmp/fake-chat.log"; }
if ! command -v tmux >/dev/null 2>&1; then
	skip "Ctrl-C in chat: tmux is not installed"
	skip "Ctrl-C in generate: tmux is not installed"
elif [ ! -e "$tmp/fake.ready" ]; then
	skip "Ctrl-C in chat: the fake daemon (python3) is unavailable"
	skip "Ctrl-C in generate: the fake daemon (python3) is unavailable"
else
	tmux -S "$tmuxsock" -f /dev/null new-session -d -s t -x 150 -y 40 \
		"TERM=xterm '$MISTRALCTL' --socket '$tmp/fake-chat.sock' chat; echo EXIT=\$?; sleep 60"
	r=0
	wait_for 10 pane_has '^>' || r=1
	[ $r = 0 ] && tmux -S "$tmuxsock" send-keys -t t 'hello' Enter
	[ $r = 0 ] && { wait_for 10 pane_has 'tick tick tick' || r=2; }
	[ $r = 0 ] && tmux -S "$tmuxsock" send-keys -t t C-c
	# msgid 1 is the status call that checks for a load in progress, 2 the chat
	[ $r = 0 ] && { wait_for 10 log_has '"cancel", \[{"id": 2}\]' || r=3; }
	[ $r = 0 ] && { wait_for 10 pane_has 'cancelled' || r=4; }
	[ $r = 0 ] && tmux -S "$tmuxsock" send-keys -t t 'again' Enter
	[ $r = 0 ] && { wait_for 10 pane_has '^done\.' || r=5; }
	ok $r "chat: Ctrl-C sends cancel for the answer's msgid and the session goes on (step $r): $(pane | tr '\n' '|' | tail -c 200)"
	check "chat: the partial answer stays in the conversation sent next" python3 -c '
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
chats = [m for m in msgs if m[2] == "chat"]
assert len(chats) == 2, chats
m = chats[1][3][0]["messages"]
assert [x["role"] for x in m] == ["user", "assistant", "user"], m
assert m[1]["content"].startswith("tick tick") and m[2]["content"] == "again", m
' "$tmp/fake-chat.log"
	tmux -S "$tmuxsock" send-keys -t t C-d
	wait_for 10 pane_has 'EXIT=0'
	ok $? "chat: Ctrl-D at the prompt leaves with status 0"
	tmux -S "$tmuxsock" kill-server >/dev/null 2>&1

	# generate: Ctrl-C stops it with status 130 (the hang-up is the daemon's cancel).
	tmuxsock="$tmuxbase-b"
	tmux -S "$tmuxsock" -f /dev/null new-session -d -s t -x 150 -y 40 \
		"'$MISTRALCTL' --socket '$tmp/fake-silent.sock' generate x; echo EXIT=\$?; sleep 60"
	wait_for 10 grep -q '"generate"' "$tmp/fake-silent.log"
	tmux -S "$tmuxsock" send-keys -t t C-c
	wait_for 10 pane_has 'EXIT=130'
	ok $? "generate: Ctrl-C exits 130: $(pane | tr '\n' '|' | tail -c 100)"
	tmux -S "$tmuxsock" kill-server >/dev/null 2>&1
fi

# --- the daemon is still healthy -------------------------------------------------
check "the daemon is still running and ready after all that" sh -c "kill -0 $dpid && '$MISTRALCTL' --socket '$sock' status | grep -qx 'state: ready'"

echo "1..$n"
[ "$fails" -eq 0 ]
