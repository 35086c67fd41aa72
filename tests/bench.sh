#!/bin/sh
# Black-box tests of mistral-bench: every figure present and consistent, never a speed asserted (TAP).
set -u
: "${srcdir:=.}" "${top_builddir:=.}"
: "${MISTRAL_BENCH:=$top_builddir/mistral-bench}" "${MKMODEL:=$top_builddir/mistral-mkmodel}"
: "${PYTHON3:=python3}"
export MKMODEL
data="$srcdir/tests/data"
model="$data/stories260K.gguf"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-bench.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
check() { desc=$1; shift; if "$@"; then ok 0 "$desc"; else ok 1 "$desc"; fi; }

if ! "$PYTHON3" -c 'import json' 2>/dev/null; then
	echo "1..0 # SKIP no python3 to read JSON"
	exit 0
fi

# py FILE EXPR: true when the Python expression over d (the parsed JSON) holds.
py() {
	"$PYTHON3" - "$1" "$2" <<'EOF'
import json, math, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("# bad JSON: %s" % e)
    sys.exit(1)
def pos(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
def close(a, b, rel=1e-4):
    return abs(a - b) <= rel * max(abs(a), abs(b))
def wbpt(d):
    # every layer matrix plus the output projection, all F32 in these models
    kv = d["dim"] * d["n_kv_heads"] // d["n_heads"]
    per = 2 * d["dim"] * d["dim"] + 2 * d["dim"] * kv + 3 * d["dim"] * d["ffn"]
    return (d["n_layers"] * per + d["vocab"] * d["dim"]) * 4
ok = eval(sys.argv[2])
if not ok:
    print("# failed: %s" % sys.argv[2])
    print("# JSON: %s" % json.dumps(d)[:2000])
sys.exit(0 if ok else 1)
EOF
}

keys='["load_s","pp64_tps","pp512_tps","tg_tps","tg4096_tps","weight_bytes_per_token","achieved_gbps","measured_gbps","bandwidth_ratio","page_kind","isa"]'

"$MISTRAL_BENCH" -m "$model" --quick --json >"$tmp/q.json" 2>"$tmp/q.err"
ok $? "mistral-bench --quick --json exits 0"
check "stdout is one line of JSON" [ "$(wc -l <"$tmp/q.json")" -eq 1 ]
check "every documented key is present" py "$tmp/q.json" "all(k in d for k in $keys)"
check "load, pp64, decode, long decode, bytes, bandwidths and ratio are positive numbers" \
	py "$tmp/q.json" 'all(pos(d[k]) for k in ["load_s","pp64_tps","tg_tps","tg4096_tps","weight_bytes_per_token","achieved_gbps","measured_gbps","bandwidth_ratio"])'
check "--quick skips pp512 (null)" py "$tmp/q.json" 'd["pp512_tps"] is None'
check "bandwidth_ratio = achieved_gbps / measured_gbps" \
	py "$tmp/q.json" 'close(d["bandwidth_ratio"], d["achieved_gbps"] / d["measured_gbps"])'
check "achieved_gbps = weight_bytes_per_token x tg_tps / 1e9" \
	py "$tmp/q.json" 'close(d["achieved_gbps"], d["weight_bytes_per_token"] * d["tg_tps"] / 1e9)'
check "weight_bytes_per_token is every layer matrix plus the output (1037312 for stories260K)" \
	py "$tmp/q.json" 'd["weight_bytes_per_token"] == wbpt(d) == 1037312'
check "page_kind is hugetlb, thp or normal" py "$tmp/q.json" 'd["page_kind"] in ("hugetlb","thp","normal")'
check "isa names a kernel set" py "$tmp/q.json" 'isinstance(d["isa"], str) and d["isa"] != ""'
check "the long decode has 4096 random positions cached and attends to 4097 keys" \
	py "$tmp/q.json" 'd["tg_long_cached"] == 4096 and d["tg_long_keys"] == 4097 and d["tg_long_fill"] == "random"'
check "KV bytes per token: keys and values of every layer (2 x 5 x 32 x element)" \
	py "$tmp/q.json" 'd["kv_bytes_per_token"] == 2 * 5 * 32 * {"F16": 2, "F32": 4}[d["kv_type"]] and d["kv_bytes_long"] == 4096 * d["kv_bytes_per_token"]'

"$MISTRAL_BENCH" -m "$model" --json --prompt 64,512,100 --repeat 2 --gen 4 --bw-mib 256 \
	--isa generic --pages none -t 1 >"$tmp/f.json" 2>"$tmp/f.err"
ok $? "mistral-bench with three prompt sizes, 2 runs, generic kernels, normal pages exits 0"
check "pp512 and the extra pp100 are measured" py "$tmp/f.json" 'pos(d["pp512_tps"]) and pos(d["pp100_tps"]) and pos(d["pp64_tps"])'
check "every figure is the median of its runs (2 runs: their mean)" \
	py "$tmp/f.json" 'd["repeat"] == 2 and all(len(d["runs"][k]) == 2 and close(d[k], sum(d["runs"][k]) / 2) for k in ["tg_tps","tg4096_tps","measured_gbps","pp512_tps"])'
check "each run's own ratio is its achieved over its measured bandwidth" \
	py "$tmp/f.json" 'all(close(r, d["weight_bytes_per_token"] * t / 1e9 / b) for r, t, b in zip(d["runs"]["bandwidth_ratio"], d["runs"]["tg_tps"], d["runs"]["measured_gbps"])) and len(d["runs"]["bandwidth_ratio"]) == 2'
check "--isa generic, --pages none and -t 1 are what was used" \
	py "$tmp/f.json" 'd["isa"] == "generic" and d["page_kind"] == "normal" and d["threads"] == 1 and d["tg_tokens"] == 4'

"$MISTRAL_BENCH" -m "$model" --quick --ctx 100 --kv-type f32 --json >"$tmp/c.json" 2>/dev/null
check "--ctx 100 --kv-type f32: 100 positions cached, F32 cache" \
	py "$tmp/c.json" 'd["tg_long_cached"] == 100 and d["tg_long_keys"] == 101 and d["kv_type"] == "F32" and pos(d["tg4096_tps"])'

"$MISTRAL_BENCH" -m "$model" --quick >"$tmp/t.out" 2>"$tmp/t.err"
ok $? "mistral-bench --quick (table) exits 0"
check "the table shows tok/s, GB/s, the ratio, the pages and the random cache" \
	sh -c "grep -q 'tok/s' '$tmp/t.out' && grep -q 'GB/s' '$tmp/t.out' && grep -q '^ratio' '$tmp/t.out' &&
	       grep -q '^pages' '$tmp/t.out' && grep -q 'random keys and values, not prefilled' '$tmp/t.out'"

"$MISTRAL_BENCH" >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "mistral-bench without -m exits 2"
"$MISTRAL_BENCH" -m "$model" --pages huge >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q pages "$tmp/err"; echo $?) "a bad --pages is a usage error naming the option"
"$MISTRAL_BENCH" -m "$model" --repeat 0 >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "--repeat 0 exits 2"
"$MISTRAL_BENCH" -m "$tmp/missing.gguf" --quick >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q missing.gguf "$tmp/err"; echo $?) "a missing model exits 1 naming it"
"$MISTRAL_BENCH" -m "$model" --attention all --vocab-from "$model" >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "-m together with --attention exits 2"
"$MISTRAL_BENCH" -m "$model" --layout x4 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q layout "$tmp/err"; echo $?) "a bad --layout is a usage error naming the option"

"$MISTRAL_BENCH" -m "$model" --streams 0 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q streams "$tmp/err"; echo $?) "--streams 0 is a usage error naming the option"
"$MISTRAL_BENCH" -m "$model" --streams 1,2,3,4,5,6,7,8,9 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q streams "$tmp/err"; echo $?) "more than 8 --streams sizes is a usage error"
"$MISTRAL_BENCH" -m "$model" --contend 65 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q contend "$tmp/err"; echo $?) "--contend 65 is a usage error naming the option"
"$MISTRAL_BENCH" -m "$model" --quick --json --streams 1,3 --contend 1 >"$tmp/sc.json" 2>/dev/null
ok $? "--streams 1,3 --contend 1 --json exits 0"
check "--streams and --contend put their runs in the JSON, every one a positive number" \
	py "$tmp/sc.json" 'all(k in d["runs"] and len(d["runs"][k]) == 1 and pos(d["runs"][k][0]) for k in ["streams1_tps","streams3_tps","contend_pp_tps","contend_tg_tps","probe_gbps","plain_loop_gbps"])'
check "the measured bandwidth is the faster of the kernel probe and the plain loop" \
	py "$tmp/sc.json" 'close(d["runs"]["measured_gbps"][0], max(d["runs"]["probe_gbps"][0], d["runs"]["plain_loop_gbps"][0]))'
"$MISTRAL_BENCH" -m "$model" --quick --streams 1,2 --contend 1 >"$tmp/sc.out" 2>/dev/null
check "the table shows each --streams size and the contended figures" \
	sh -c "grep -q '^streams 1 ' '$tmp/sc.out' && grep -q '^streams 2 .*x the 1-stream figure' '$tmp/sc.out' && grep -q '^contended    1 busy loops beside it: pp64 .* of idle' '$tmp/sc.out'"
if pgrep -f "^$MISTRAL_BENCH" >/dev/null 2>&1; then ok 1 "no busy-loop process outlives mistral-bench --contend"; else ok 0 "no busy-loop process outlives mistral-bench --contend"; fi

# --trace: each decode token's records end with its round record (what 0, a = 1 row), matmul regions (what 7, 8)
# carry each timed thread's times in order
"$MISTRAL_BENCH" -m "$model" --quick --json --trace "$tmp/trace.txt" >/dev/null 2>&1
ok $? "--trace FILE exits 0"
check "--trace writes a round record for each of the --quick run's 8 decode tokens, and ordered thread times" \
	"$PYTHON3" -c '
import sys
rounds = 0; good = True
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    f = [int(x) for x in line.split()]
    if f[0] == 0:
        rounds += f[2] == 1
    good = good and f[5] >= f[4] and len(f) == 6 + 4 * f[1]
    for j in range(f[1]):
        i, c, dn = f[6 + 4 * j:9 + 4 * j]
        good = good and f[4] <= i <= c <= dn <= f[5]
sys.exit(0 if good and rounds == 8 else 1)' "$tmp/trace.txt"
"$MISTRAL_BENCH" -m "$model" --quick --trace "$tmp/no/such/dir/t.txt" >/dev/null 2>"$tmp/err"
ok $([ $? -ne 0 ] && grep -q 'no/such/dir' "$tmp/err"; echo $?) "--trace to an unwritable path fails naming it"

# --layout on a Q4_0 model: every matrix interleaved by default, none with rows.
if [ -x "$MKMODEL" ] && "$MKMODEL" --out "$tmp/q4.gguf" --type Q4_0 --vocab-from "$model" --dim 64 \
	--layers 2 --heads 4 --kv-heads 2 --ffn 128 >/dev/null 2>&1; then
	"$MISTRAL_BENCH" -m "$tmp/q4.gguf" --quick --json >"$tmp/x8.json" 2>/dev/null
	check "Q4_0 model: every matrix byte interleaved (x8_bytes_per_token = weight_bytes_per_token)" \
		py "$tmp/x8.json" 'd["x8_bytes_per_token"] == d["weight_bytes_per_token"] > 0 and pos(d["tg_tps"])'
	"$MISTRAL_BENCH" -m "$tmp/q4.gguf" --quick --layout rows --json >"$tmp/rows.json" 2>/dev/null
	check "--layout rows: nothing interleaved, same bytes per token" \
		py "$tmp/rows.json" 'd["x8_bytes_per_token"] == 0 and d["weight_bytes_per_token"] > 0 and pos(d["tg_tps"])'
	"$MISTRAL_BENCH" -m "$tmp/q4.gguf" --quick >"$tmp/x8.out" 2>/dev/null
	check "the table says how much is interleaved" grep -q '100% of the matrix bytes interleaved' "$tmp/x8.out"
else
	ok 1 "mistral-mkmodel writes a Q4_0 model"
fi

# --attention on a tiny shape: 8 query heads, so 8, 2 and 1 key/value heads.
if [ -x "$MKMODEL" ]; then
	mkdir "$tmp/att"
	TMPDIR="$tmp/att" "$MISTRAL_BENCH" --attention all --vocab-from "$model" --dim 64 --layers 2 \
		--heads 8 --ffn 128 --type F32 --quick --json >"$tmp/a.json" 2>"$tmp/a.err"
	ok $? "mistral-bench --attention all on a tiny shape exits 0"
	check "three variants, mha gqa mqa, with 8, 2 and 1 key/value heads" \
		py "$tmp/a.json" '[(v["variant"], v["n_kv_heads"]) for v in d["variants"]] == [("mha",8),("gqa",2),("mqa",1)]'
	check "KV bytes per token scale with the key/value heads (8:2:1) and nothing else differs" \
		py "$tmp/a.json" '[v["kv_bytes_per_token"] // d["variants"][2]["kv_bytes_per_token"] for v in d["variants"]] == [8,2,1] and len({(v["dim"], v["n_layers"], v["n_heads"], v["ffn"], v["window"]) for v in d["variants"]}) == 1'
	check "each variant has decode figures at short and long context" \
		py "$tmp/a.json" 'all(pos(v["tg_tps"]) and pos(v["tg4096_tps"]) and pos(v["measured_gbps"]) for v in d["variants"])'
	check "the written models are gone afterwards" [ -z "$(ls -A "$tmp/att")" ]
	TMPDIR="$tmp/att" "$MISTRAL_BENCH" --attention mha,mqa --vocab-from "$model" --dim 64 --layers 2 \
		--heads 8 --ffn 128 --type F32 --quick >"$tmp/a.out" 2>/dev/null
	check "--attention mha,mqa prints a side-by-side table of those two" \
		sh -c "grep -q '^mha ' '$tmp/a.out' && grep -q '^mqa ' '$tmp/a.out' && ! grep -q '^gqa ' '$tmp/a.out'"
	MKMODEL="$tmp/no-such-mkmodel" TMPDIR="$tmp/att" "$MISTRAL_BENCH" --attention gqa \
		--vocab-from "$model" --quick >/dev/null 2>"$tmp/err"
	ok $([ $? -eq 1 ] && grep -q no-such-mkmodel "$tmp/err"; echo $?) "--attention without a mistral-mkmodel exits 1 naming it"
else
	for i in 1 2 3 4 5 6 7; do
		n=$((n + 1)); echo "ok $n # SKIP no mistral-mkmodel at $MKMODEL"
	done
fi

# --chat: stories260K has no window; every turn after the first reuses the
# previous one but for the re-tokenized answer tokens.
"$MISTRAL_BENCH" -m "$model" --chat 4 --chat-system 10 --chat-user 8 --chat-answer 6 --chat-retok 2 >"$tmp/chat.out" 2>"$tmp/err"
ok $? "--chat 4 exits 0"
check "--chat prints one line per turn: prompt = cached + new, turn 1 all new, later turns reuse all but the last answer's tokens" \
	awk '$1 ~ /^[0-9]+$/ { n++; if ($2 != $3 + $4) bad = 1
		if ($1 == 1 && $3 != 0) bad = 1
		if ($1 > 1 && $3 != prev + 6 - 2) bad = 1
		prev = $2 }
		END { exit !(n == 4 && !bad) }' "$tmp/chat.out"
"$MISTRAL_BENCH" -m "$model" --chat 2 --chat-answer 2 --chat-retok 2 >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q 'chat-retok' "$tmp/err"; echo $?) "--chat-retok not below --chat-answer is a usage error"

echo "1..$n"
[ "$fails" -eq 0 ]
