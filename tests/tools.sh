#!/bin/sh
# Black-box tests of mistral-run and mistral-mkmodel, as a user runs them (TAP).
set -u
: "${srcdir:=.}" "${MISTRAL_RUN:=./mistral-run}" "${MKMODEL:=./mistral-mkmodel}"
data="$srcdir/tests/data"
model="$data/stories260K.gguf"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-tools.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
check() { desc=$1; shift; if "$@"; then ok 0 "$desc"; else ok 1 "$desc"; fi; }

golden="432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352 266 268 388 426 338 391 266 267 337 335 312 432 398 312 286 267 414 270 333 415 426 13 438 310 439 419 357 336"
golden_text=", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said"

"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 64 --temperature 0 --print-tokens \
	>"$tmp/ids" 2>"$tmp/err"
check "mistral-run --print-tokens: greedy ids equal the 64 golden ids" [ "$(cat "$tmp/ids")" = "$golden" ]

"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 64 --temperature 0 >"$tmp/text" 2>"$tmp/err"
check "mistral-run: stdout carries exactly the golden text" [ "$(cat "$tmp/text")" = "$golden_text" ]
check "mistral-run: timings go to stderr" grep -q "tok/s" "$tmp/err"

"$MISTRAL_RUN" -m "$model" --prompt-tokens 1,403,407,261,378 -n 64 --temperature 0 --print-tokens \
	>"$tmp/ids2" 2>/dev/null
check "mistral-run --prompt-tokens feeds ids as they are" [ "$(cat "$tmp/ids2")" = "$golden" ]

"$MISTRAL_RUN" -m "$model" --prompt-tokens 1,403,407,261,378 -n 8 --temperature 0 \
	--logits "$tmp/logits" >/dev/null 2>&1
size=$(wc -c <"$tmp/logits")
check "mistral-run --logits writes (5 prompt + 7 generated) x 512 float32 ($size bytes)" [ "$size" -eq $(( (5 + 7) * 512 * 4 )) ]

for isa in generic avx2 avx512; do
	MISTRAL_ISA=$isa "$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 64 --temperature 0 \
		--print-tokens >"$tmp/ids-$isa" 2>"$tmp/err-$isa"
	check "MISTRAL_ISA=$isa gives the golden ids ($(grep -o 'kernels [a-z0-9]*' "$tmp/err-$isa"))" \
		[ "$(cat "$tmp/ids-$isa")" = "$golden" ]
done

"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 40 --temperature 0.9 --seed 42 >"$tmp/s1" 2>/dev/null
"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 40 --temperature 0.9 --seed 42 >"$tmp/s2" 2>/dev/null
"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 40 --temperature 0.9 --seed 43 >"$tmp/s3" 2>/dev/null
check "mistral-run: the same seed gives the same text" cmp -s "$tmp/s1" "$tmp/s2"
check "mistral-run: another seed gives other text" sh -c "! cmp -s '$tmp/s1' '$tmp/s3'"

"$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 64 --temperature 0 --stop "park" >"$tmp/stop" 2>/dev/null
check "mistral-run --stop ends before the stop string" \
	[ "$(cat "$tmp/stop")" = ", there was a little girl named Lily. She loved to play outside in the " ]

"$MISTRAL_RUN" -m "$model" -p "Once upon a time" -n 4 --temperature 0 >/dev/null 2>&1
ok $? "mistral-run applies the instruct template without --raw"

"$MISTRAL_RUN" -m "$model" --raw -p "x" --temperature nan >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -qi temperature "$tmp/err"; echo $?) "mistral-run: NaN temperature is a usage error naming the field"
"$MISTRAL_RUN" -p "x" >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "mistral-run without -m exits 2"
"$MISTRAL_RUN" --bogus >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q "unknown option '--bogus'" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 2 ]; echo $?) \
	"mistral-run: an unknown option is named in two lines, exit 2"
"$MISTRAL_RUN" -m >/dev/null 2>"$tmp/err"
ok $([ $? -eq 2 ] && grep -q "option '-m' needs an argument" "$tmp/err"; echo $?) \
	"mistral-run: a missing option argument is named, exit 2"
"$MISTRAL_RUN" -m "$tmp/missing.gguf" -p "x" >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && grep -q "missing.gguf" "$tmp/err"; echo $?) "mistral-run on a missing file exits 1 naming it"
"$MISTRAL_RUN" -m "$model" --prompt-tokens 1,99999 >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "mistral-run rejects out-of-vocabulary prompt ids"
head -c 1000 "$model" >"$tmp/trunc.gguf"
"$MISTRAL_RUN" -m "$tmp/trunc.gguf" -p "x" >/dev/null 2>"$tmp/err"
ok $([ $? -eq 1 ] && [ -s "$tmp/err" ]; echo $?) "mistral-run on a truncated model fails cleanly: $(head -c 150 "$tmp/err")"
"$MISTRAL_RUN" --help | grep -q -- "--prompt-tokens"
ok $? "mistral-run --help documents the options"

# mistral-mkmodel: shapes, window key, determinism.
"$MKMODEL" --out "$tmp/a.gguf" --type Q8_0 --vocab-from "$model" --dim 64 --layers 2 --heads 4 \
	--kv-heads 1 --ffn 96 --window 16 --seed 3 >/dev/null 2>&1
ok $? "mistral-mkmodel writes an MQA Q8_0 model"
"$MKMODEL" --out "$tmp/b.gguf" --type Q8_0 --vocab-from "$model" --dim 64 --layers 2 --heads 4 \
	--kv-heads 1 --ffn 96 --window 16 --seed 3 >/dev/null 2>&1
check "mistral-mkmodel is deterministic for a seed" cmp -s "$tmp/a.gguf" "$tmp/b.gguf"
"$MISTRAL_RUN" -m "$tmp/a.gguf" --raw -p "Once upon a time" -n 20 --temperature 0 >/dev/null 2>"$tmp/err"
check "mistral-run runs the written model and reads its window ($(grep -o 'window [0-9]* ([a-z]*)' "$tmp/err"))" \
	grep -q "window 16 (file)" "$tmp/err"
"$MISTRAL_RUN" -m "$tmp/a.gguf" --raw -p "Once upon a time" -n 20 --temperature 0 --sliding-window off >/dev/null 2>"$tmp/err"
check "--sliding-window off overrides the file" grep -q "window 0 (none" "$tmp/err"
"$MKMODEL" --out "$tmp/c.gguf" --type Q8_0 --vocab-from "$model" --dim 60 --heads 4 >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "mistral-mkmodel rejects a dim that is not a multiple of the Q8_0 block"
"$MKMODEL" --out "$tmp/c.gguf" --type F32 --vocab-from "$model" --heads 4 --kv-heads 3 >/dev/null 2>&1
ok $([ $? -eq 2 ]; echo $?) "mistral-mkmodel rejects kv heads that do not divide heads"
"$MKMODEL" --help | grep -q -- "--vocab-from"
ok $? "mistral-mkmodel --help documents the options"

echo "1..$n"
[ "$fails" -eq 0 ]
