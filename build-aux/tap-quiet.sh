#! /bin/sh
# LOG_DRIVER for `make check`: automake's tap-driver.sh does the work (the .log keeps
# the whole TAP stream and every result, the .trs every result for the summary), but its
# one console line per result (some 24,000 of them) is replaced by one line per test
# file -- name, counts, seconds -- followed by every failed result in full: the "not ok"
# line and the diagnostics after it (a daemon's log, a traceback), and any "Bail out!".
# Arguments: exactly those of tap-driver.sh (--test-name, --log-file, --trs-file, ...).
name= log= trs=
prev=
for a in "$@"; do
	case $prev in
	--test-name) name=$a ;;
	--log-file) log=$a ;;
	--trs-file) trs=$a ;;
	esac
	[ "$a" = -- ] && break
	prev=$a
done

t0=$(date +%s.%N)
${SHELL:-/bin/sh} "$(dirname "$0")/tap-driver.sh" "$@" >/dev/null
rc=$?
t1=$(date +%s.%N)

# The counts from the .trs (what the testsuite summary counts too) and the time; on a
# failure, the failed results with their diagnostics from the log.
awk=${AM_TAP_AWK:-awk}
$awk -v name="$name" -v t0="$t0" -v t1="$t1" '
	$1 == ":test-result:" {
		if ($2 == "PASS" || $2 == "XFAIL") p++
		else if ($2 == "SKIP") s++
		else f++
	}
	END { printf "%s %s: %d passed, %d failed, %d skipped (%.1f s)\n", f ? "FAIL" : "ok  ", name, p, f, s, t1 - t0 }
' "$trs"
if grep -q '^:test-result: \(FAIL\|XPASS\|ERROR\)' "$trs" 2>/dev/null; then
	$awk '
		/^not ok / || /^Bail out!/ || /^ERROR: / { show = 1; print "    " $0; next }
		/^(PASS|FAIL|XFAIL|XPASS|SKIP): / { next }   # the driver'"'"'s copy of each result
		show && /^#/ { print "    " $0; next }
		{ show = 0 }
	' "$log"
fi
exit $rc
