#!/bin/sh
# Tests of mistrald's systemd integration: unit files, socket activation, sd_notify, watchdog and reload (TAP).
#
# Needs the built daemon ($MISTRALD), client ($MISTRALCTL) and the bundled
# model; the parts that need systemd-analyze, systemd-socket-activate or
# python3 are skipped, with the reason, where those are missing. Every wait
# is bounded, and every process started here is killed by its pid on exit.
set -u
: "${srcdir:=.}" "${MISTRALD:=./mistrald}" "${MISTRALCTL:=./mistralctl}"
model="$srcdir/tests/data/stories260K.gguf"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-systemd.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do
		kill -KILL "$p" 2>/dev/null
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

n=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }
check() { desc=$1; shift; if "$@"; then ok 0 "$desc"; else ok 1 "$desc"; fi; }
skip() { count=$1; shift; i=0; while [ "$i" -lt "$count" ]; do n=$((n + 1)); echo "ok $n # SKIP $*"; i=$((i + 1)); done; }
diag() { sed 's/^/# /' "$@"; }
have() { command -v "$1" >/dev/null 2>&1; }
abspath() { case $1 in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }

MISTRALD=$(abspath "$MISTRALD")
MISTRALCTL=$(abspath "$MISTRALCTL")
model=$(abspath "$model")

# Waits up to $1 tenths of a second for the command to succeed.
wait_for() {
	tenths=$1; shift
	while [ "$tenths" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		tenths=$((tenths - 1))
	done
	"$@"
}

# True when process $1 is gone or a zombie (kill -0 succeeds on a zombie).
exited() {
	case $(ps -o stat= -p "$1" 2>/dev/null) in
	"" | Z*) return 0 ;;
	*) return 1 ;;
	esac
}

# Waits up to $2 tenths of a second for our child $1 to exit; its status in
# $rc (124 when it did not exit: it is then killed).
wait_exit() {
	if wait_for "$2" exited "$1"; then
		wait "$1"
		rc=$?
	else
		kill -KILL "$1" 2>/dev/null
		wait "$1" 2>/dev/null
		rc=124
	fi
}

ctl() { timeout 20 "$MISTRALCTL" --timeout 10 --socket "$@"; }

# A python3 for the notify listener (standard library only).
py=""
for p in "${PYTHON3:-}" python3 /usr/bin/python3; do
	if [ -n "$p" ] && "$p" -c 'import socket' >/dev/null 2>&1; then
		py=$p
		break
	fi
done

# ---- (a) the unit files -------------------------------------------------------

# As the Makefile does, but with ExecStart= pointing at the binary under
# test, since verify insists that the command exists.
if [ -x "$MISTRALD" ]; then
	sbindir=$(dirname "$MISTRALD")
else
	sbindir="$tmp/sbin"
	mkdir -p "$sbindir" && printf '#!/bin/sh\nexit 1\n' >"$sbindir/mistrald" && chmod +x "$sbindir/mistrald"
fi
mkdir -p "$tmp/units"
for f in mistrald.service mistrald.socket mistrald-sysusers.conf mistrald-tmpfiles.conf; do
	sed -e "s|@sbindir[@]|$sbindir|g" -e "s|@sysconfdir[@]|/etc|g" \
		-e "s|@bindir[@]|$(dirname "$MISTRALCTL")|g" \
		"$srcdir/systemd/$f.in" >"$tmp/units/$f"
done
check "generated units have no @placeholders@ left" sh -c "! grep -n '@[a-z]*@' '$tmp/units/'*"

if have systemd-analyze; then
	# --man=no: the manual pages named in Documentation= are not installed yet.
	cp "$srcdir/systemd/mistrald-http.socket" "$tmp/units/"
	(cd "$tmp/units" && timeout 60 systemd-analyze verify --man=no ./mistrald.service ./mistrald.socket \
		./mistrald-http.socket) >"$tmp/verify" 2>&1
	rc=$?
	ok $([ $rc -eq 0 ] && [ ! -s "$tmp/verify" ]; echo $?) \
		"systemd-analyze verify: mistrald.service, mistrald.socket and mistrald-http.socket are clean"
	ok $(grep -q '^FileDescriptorName=http$' "$tmp/units/mistrald-http.socket" &&
		grep -q '^Service=mistrald.service$' "$tmp/units/mistrald-http.socket" &&
		grep -q '^ListenStream=127\.0\.0\.1:' "$tmp/units/mistrald-http.socket"; echo $?) \
		"mistrald-http.socket: loopback, named http, for mistrald.service"
	diag "$tmp/verify"

	timeout 60 systemd-analyze security --offline=yes "$tmp/units/mistrald.service" >"$tmp/security" 2>&1
	level=$(sed -n 's/.*Overall exposure level for mistrald.service: \([0-9.]*\).*/\1/p' "$tmp/security")
	ok $(awk -v l="$level" 'BEGIN { exit !(l != "" && l + 0 <= 2.0) }'; echo $?) \
		"systemd-analyze security --offline: exposure ${level:-unknown} <= 2.0"
	[ -n "$level" ] || diag "$tmp/security"
	grep '✗' "$tmp/security" | sed 's/^/# /'
else
	skip 3 "systemd-analyze not installed"
fi

if [ "$(id -u)" = 0 ] && have systemd-sysusers && have systemd-tmpfiles; then
	root="$tmp/root"
	mkdir -p "$root/etc"
	timeout 30 systemd-sysusers --root="$root" "$tmp/units/mistrald-sysusers.conf" >"$tmp/sysusers" 2>&1
	uid=$(awk -F: '$1 == "mistral" && $6 == "/var/lib/mistrald" { print $3 }' "$root/etc/passwd" 2>/dev/null)
	gid=$(awk -F: '$1 == "mistral" { print $3 }' "$root/etc/group" 2>/dev/null)
	ok $([ -n "$uid" ] && [ -n "$gid" ]; echo $?) "sysusers.d snippet creates user and group mistral (uid ${uid:-none})"
	diag "$tmp/sysusers"
	timeout 30 systemd-tmpfiles --root="$root" --create "$tmp/units/mistrald-tmpfiles.conf" >"$tmp/tmpfiles" 2>&1
	st=$(stat -c '%a %u %g' "$root/var/lib/mistrald" 2>/dev/null)
	ok $([ "$st" = "750 $uid $gid" ]; echo $?) "tmpfiles.d snippet creates /var/lib/mistrald 0750 mistral:mistral (${st:-missing})"
	diag "$tmp/tmpfiles"
else
	skip 2 "sysusers/tmpfiles checks need root and systemd-sysusers, systemd-tmpfiles"
fi

if [ ! -x "$MISTRALD" ] || [ ! -x "$MISTRALCTL" ]; then
	skip 22 "$MISTRALD or $MISTRALCTL not built"
	echo "1..$n"
	exit 0
fi

# ---- (b) socket activation ------------------------------------------------------

if have systemd-socket-activate; then
	sock="$tmp/act.sock"
	# A free loopback port for the HTTP API's socket, named "http" as mistrald-http.socket names it.
	port=
	[ -n "$py" ] && port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	# It listens, and execs the daemon in its own place on the first connection.
	systemd-socket-activate -l "$sock" ${port:+-l 127.0.0.1:$port --fdname=rpc:http} \
		"$MISTRALD" --config /dev/null --model "$model" \
		--threads 2 --log-level info >"$tmp/act.out" 2>"$tmp/act.log" &
	apid=$!
	pids="$pids $apid"
	wait_for 100 test -S "$sock"
	# The connection that starts the daemon asks for the model at once: it
	# waits for the load (load_wait) instead of being told "loading".
	ctl "$sock" tokenize "Once upon a time" >"$tmp/act.first" 2>&1
	ok $(grep -qx '1 403 407 261 378' "$tmp/act.first"; echo $?) \
		"socket activation: the first connection starts the daemon and its tokenize is served"
	diag "$tmp/act.first"
	ctl "$sock" status >"$tmp/act.status" 2>&1
	ok $(grep -q '^state: \(loading\|ready\)' "$tmp/act.status"; echo $?) \
		"socket activation: a second connection gets a status"
	wait_for 200 sh -c "'$MISTRALCTL' --timeout 5 --socket '$sock' status 2>/dev/null | grep -q '^state: ready'"
	ok $? "socket activation: the daemon becomes ready on the inherited socket"
	ok $(grep -q 'socket-activated' "$tmp/act.log" && [ ! -e "$sock.lock" ]; echo $?) \
		"socket activation: sd_listen_fds used, no socket or lock file of its own"
	ctl "$sock" info >"$tmp/act.info" 2>&1
	ok $(grep -q "^path: $model\$" "$tmp/act.info"; echo $?) "socket activation: info names the model"
	if [ -n "$port" ]; then
		"$py" - "$port" >"$tmp/act.http" 2>&1 <<'EOF'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
c.request("GET", "/health")
r = c.getresponse()
body = r.read()
print(r.status, body)
sys.exit(0 if r.status == 200 and json.loads(body) == {"status": "ready"} else 1)
EOF
		ok $? "socket activation: the fd named http serves the HTTP API (GET /health: 200 ready)"
		diag "$tmp/act.http"
		ok $(grep -q 'socket-activated sockets (1 HTTP)' "$tmp/act.log"; echo $?) \
			"socket activation: the daemon logs one of its two inherited sockets as HTTP"
	else
		skip 2 "no python3 to pick a port"
	fi

	# The byte-level example of mistrald-protocol(7), sent as it is printed.
	if [ -n "$py" ]; then
		"$py" - "$srcdir/man/mistrald-protocol.7" "$sock" >"$tmp/example" 2>&1 <<'EOF'
import re, socket, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8") if re.match(r"000000[01]0  ", l)]
dumps = [bytes.fromhex(" ".join(l.split()[1:])) for l in lines]
assert len(dumps) == 4, "expected 4 hex dump lines in the page, found %d" % len(dumps)
request, expected = dumps[0] + dumps[1], dumps[2] + dumps[3]
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[2])
s.sendall(request)
got = b""
while len(got) < len(expected):
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
print("sent     ", request.hex(" "))
print("expected ", expected.hex(" "))
print("got      ", got.hex(" "))
sys.exit(0 if got == expected else 1)
EOF
		ok $? "mistrald-protocol(7) EXAMPLES: the daemon answers the printed request with the printed bytes"
		diag "$tmp/example"
	else
		skip 1 "no python3"
	fi

	kill -TERM "$apid"
	wait_exit "$apid" 200
	ok $([ $rc -eq 0 ]; echo $?) "socket activation: SIGTERM ends the daemon with status 0 (got $rc)"
	diag "$tmp/act.log"
else
	skip 9 "systemd-socket-activate not installed"
fi

# ---- (c) sd_notify and the watchdog ------------------------------------------------

if [ -z "$py" ]; then
	skip 14 "no python3 for the notify socket"
	echo "1..$n"
	exit 0
fi

# The notify socket: one line per datagram, fields joined with '|'.
notify="$tmp/notify.sock"
nlog="$tmp/notify.log"
: >"$nlog"
"$py" - "$notify" "$nlog" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1)
end = time.monotonic() + 180
with open(sys.argv[2], "a", buffering=1) as log:
    while time.monotonic() < end:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        log.write(data.decode("utf-8", "replace").strip("\n").replace("\n", "|") + "\n")
EOF
lpid=$!
pids="$pids $lpid"
wait_for 100 test -S "$notify"

cp "$model" "$tmp/model.gguf"
cp "$model" "$tmp/model2.gguf"
# A truncated download: the header and metadata are intact, the tensor data is not.
head -c $(( $(wc -c <"$model") / 2 )) "$model" >"$tmp/bad.gguf"
sock="$tmp/md.sock"
conf="$tmp/md.conf"
writeconf() {
	printf 'model = %s\nsocket = %s\nthreads = 2\nlog_level = info\n' "$1" "$sock" >"$conf.new" &&
		mv "$conf.new" "$conf"
}
writeconf "$tmp/model.gguf"

# exec keeps the shell's pid, so WATCHDOG_PID names the daemon.
NOTIFY_SOCKET="$notify" WATCHDOG_USEC=2000000 \
	sh -c 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"' sh \
	"$MISTRALD" --config "$conf" >"$tmp/md.out" 2>"$tmp/md.log" &
dpid=$!
pids="$pids $dpid"

# Line number of the first line after line $2 matching pattern $1, or nothing.
after() { awk -v p="$1" -v from="${2:-0}" 'NR > from && $0 ~ p { print NR; exit }' "$nlog"; }
seen() { [ -n "$(after "$@")" ]; }

wait_for 300 seen '(^|[|])READY=1($|[|])'
ok $? "sd_notify: READY=1 arrives"
ready=$(after '(^|[|])READY=1($|[|])')
load=$(after '(^|[|])STATUS=[^|]*[Ll]oading')
ok $([ -n "$load" ] && [ -n "$ready" ] && [ "$load" -lt "$ready" ]; echo $?) \
	"sd_notify: a STATUS= with loading progress comes before READY=1"
ctl "$sock" status >"$tmp/status" 2>&1
ok $(grep -q '^state: ready' "$tmp/status"; echo $?) "sd_notify: after READY=1 the model is resident (status: ready)"

# WATCHDOG_USEC=2 s: a ping every second while both threads make progress.
wait_for 50 sh -c "[ \$(grep -c '^WATCHDOG=1\$' '$nlog') -ge 2 ]"
ok $? "watchdog: WATCHDOG=1 arrives repeatedly with WATCHDOG_USEC=2000000 and WATCHDOG_PID set"

# ---- (d) SIGHUP: reload, then a reload with a corrupt model ----------------------------

mark=$(wc -l <"$nlog")
writeconf "$tmp/model2.gguf"
kill -HUP "$dpid"
wait_for 300 sh -c "r=\$(awk -v from=$mark 'NR > from && /(^|[|])RELOADING=1/ { print NR; exit }' '$nlog');
	[ -n \"\$r\" ] && awk -v from=\"\$r\" 'NR >= from && /(^|[|])READY=1($|[|])/ { f = 1 } END { exit !f }' '$nlog'"
ok $? "SIGHUP: RELOADING=1, then READY=1"
wait_for 100 sh -c "'$MISTRALCTL' --timeout 5 --socket '$sock' info 2>/dev/null | grep -q '^path: $tmp/model2.gguf\$'"
ok $? "SIGHUP: the model named by the new configuration serves"

mark=$(wc -l <"$nlog")
writeconf "$tmp/bad.gguf"
kill -HUP "$dpid"
wait_for 300 sh -c "r=\$(awk -v from=$mark 'NR > from && /(^|[|])RELOADING=1/ { print NR; exit }' '$nlog');
	[ -n \"\$r\" ] && awk -v from=\"\$r\" 'NR >= from && /(^|[|])READY=1($|[|])/ { f = 1 } END { exit !f }' '$nlog'"
ok $? "SIGHUP with a truncated model: RELOADING=1, then READY=1 again"
ok $(grep -q '^<[0-3]>.*bad.gguf' "$tmp/md.log"; echo $?) "SIGHUP with a truncated model: an error naming the file is logged"
ctl "$sock" status >"$tmp/status" 2>&1
ok $(grep -q '^state: ready' "$tmp/status"; echo $?) "SIGHUP with a truncated model: status still answers ready"
ctl "$sock" info >"$tmp/info" 2>&1
ok $(grep -q "^path: $tmp/model2.gguf\$" "$tmp/info" && grep -q '^name: llama$' "$tmp/info"; echo $?) \
	"SIGHUP with a truncated model: info still shows the old model"
ctl "$sock" tokenize Hi >"$tmp/tok" 2>&1
ok $(grep -q '320' "$tmp/tok" && grep -q '417' "$tmp/tok"; echo $?) \
	"SIGHUP with a truncated model: the old model still serves requests"

# ---- SIGTERM ---------------------------------------------------------------------------

mark=$(wc -l <"$nlog")
kill -TERM "$dpid"
wait_exit "$dpid" 200
ok $([ $rc -eq 0 ]; echo $?) "SIGTERM: exit status 0 (got $rc)"
ok $(awk -v from="$mark" 'NR > from && /(^|[|])STOPPING=1($|[|])/ { f = 1 } END { exit !f }' "$nlog"; echo $?) \
	"SIGTERM: STOPPING=1 is sent"
ok $([ ! -e "$sock" ]; echo $?) "SIGTERM: the daemon's own socket is removed"
diag "$tmp/md.log"
echo "# notify messages:"
diag "$nlog"

echo "1..$n"
