#!/bin/sh
# Gives the engine's unprefixed exported functions the ms_ prefix, in code and docs.
#   sh scripts/rename-engine-symbols.sh              the names below
#   sh scripts/rename-engine-symbols.sh BUILDDIR     also any other global that nm finds
#                                                   in BUILDDIR's engine libraries
# Idempotent: \b does not match inside ms_gguf_open, so a second run (or a
# run after merging a branch written against the old names) changes only
# what still uses them. Types, enums and macros (struct gguf_file, GGUF_U8,
# GGML_TYPE_F16) are not link-visible and keep their names.
set -eu
cd "$(dirname "$0")/.."

names="dequantize_row quantize_row ggml_row_bytes ggml_type_get ggml_type_name
gguf_arr_f32 gguf_arr_i32 gguf_arr_str gguf_close gguf_find_kv gguf_find_tensor
gguf_get_arr gguf_get_bool gguf_get_f32 gguf_get_str gguf_get_u32 gguf_open
gguf_open_mem gguf_vtype_size"

if [ $# -gt 0 ]; then
	more=$(${NM:-nm} -g --defined-only "$1"/libmistral.a "$1"/libkernels_*.a 2>/dev/null |
		awk 'NF == 3 && $3 !~ /^(ms_|__)/ { print $3 }')
	names="$names $more"
fi
names=$(printf '%s\n' $names | sort -u)

expr=""
for n in $names; do
	expr="$expr -e s/\\b$n\\b/ms_$n/g"
done

# Every tracked source, test and document that can name an engine function.
git ls-files -z -- engine daemon tools client common tests man README.md BENCHMARKS.md \
	':!tests/data' | xargs -0 grep -lwE "$(echo $names | tr ' ' '|')" |
	while IFS= read -r f; do
		sed -i $expr "$f"
	done
