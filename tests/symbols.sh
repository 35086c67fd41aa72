#!/bin/sh
# Every global the engine libraries define carries the ms_ prefix, so a program
# linking them can have its own gguf_open or quantize_row (TAP).
set -u
: "${top_builddir:=.}"
n=0 fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }

for lib in "$top_builddir"/libmistral.a "$top_builddir"/libkernels_*.a; do
	[ -f "$lib" ] || continue
	name=${lib##*/}
	# nm -g lists one "ADDR TYPE NAME" line per defined global (and object
	# headers, which have no third field). Names starting with __ are the
	# compiler's, e.g. ASan's __odr_asan.ms_kernels_generic per global.
	if ! syms=$(${NM:-nm} -g --defined-only "$lib"); then
		ok 1 "$name: nm reads it"
		continue
	fi
	bad=$(printf '%s\n' "$syms" | awk 'NF == 3 && $3 !~ /^(ms_|__)/ { print $3 }')
	[ -z "$bad" ]
	ok $? "$name: every defined global starts with ms_"
	for s in $bad; do
		echo "# $name: $s"
	done
done
[ "$n" -gt 0 ]
ok $? "found the engine libraries in $top_builddir"

echo "1..$n"
[ "$fails" -eq 0 ]
