#!/bin/sh
# build-aux/tap-quiet.sh, the test driver: one console line per test file, failures in full,
# every result still in the .log and .trs (TAP).
set -u
: "${srcdir:=.}"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-driver.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }

# a test file with two passes, a skip and a failure with two diagnostic lines
cat >"$tmp/fake.sh" <<'FAKE'
#!/bin/sh
echo "ok 1 - first"
echo "not ok 2 - second broke"
echo "# why: the answer was 41"
echo "# daemon log: line"
echo "ok 3 # SKIP no such tool"
echo "ok 4 - fourth"
echo "1..4"
FAKE
chmod +x "$tmp/fake.sh"
drive() {
	(cd "$tmp" && AM_TAP_AWK=${AWK:-awk} ${SHELL:-/bin/sh} "$srcdir/build-aux/tap-quiet.sh" --test-name "$1" \
		--log-file "$1.log" --trs-file "$1.trs" --color-tests no --enable-hard-errors yes \
		--expect-failure no -- "./$1.sh") >"$tmp/$1.out" 2>&1
}
drive fake
out="$tmp/fake.out"
ok $(head -n 1 "$out" | grep -q '^FAIL fake: 2 passed, 1 failed, 1 skipped ([0-9.]* s)$'; echo $?) \
	"one summary line with the counts and the time: $(head -n 1 "$out")"
ok $(sed -n 2,4p "$out" | tr '\n' '|' | grep -qx '    not ok 2 - second broke|    # why: the answer was 41|    # daemon log: line|'
	echo $?) "the failed result follows in full, with its diagnostics"
ok $([ "$(wc -l <"$out")" -eq 4 ] && ! grep -q '^PASS\|^ok 1' "$out"; echo $?) "and nothing else: no line per passing result"
ok $([ "$(grep -c '^:test-result:' "$tmp/fake.trs")" -eq 4 ] && grep -q '^ok 4 - fourth' "$tmp/fake.log"; echo $?) \
	"the .trs keeps every result for the summary, the .log the whole stream"

# a passing file: its one line only
printf '#!/bin/sh\necho "ok 1 - a"\necho "ok 2 # SKIP b"\necho "ok 3 - c"\necho "1..3"\n' >"$tmp/good.sh"
chmod +x "$tmp/good.sh"
drive good
ok $([ "$(wc -l <"$tmp/good.out")" -eq 1 ] && grep -q '^ok   good: 2 passed, 0 failed, 1 skipped' "$tmp/good.out"; echo $?) \
	"a passing file prints one line: $(cat "$tmp/good.out")"
echo "1..$n"
[ "$fails" -eq 0 ]
