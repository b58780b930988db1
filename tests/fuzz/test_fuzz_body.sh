#!/usr/bin/env bash
# Proves body_parse() keeps the invariants of fuzz_body.c under fuzzing.
#
# 1. The gcc-built driver (fuzz_body, with fuzz_main.c): every corpus file,
#    then a fixed set of deterministic mutations of them.
# 2. When clang links -fsanitize=fuzzer: the real libFuzzer target, built
#    here with ASan and UBSan from fuzz_body.c and the engine sources
#    body.c needs, run for FUZZ_SECONDS (default 20) on a copy of the
#    corpus. Without it this half is skipped, saying why, and the result
#    is the first half's.
set -u

: "${abs_top_builddir:?run through make check}"
: "${abs_top_srcdir:?run through make check}"
corpus="$abs_top_srcdir/tests/fuzz/corpus_body"
seconds=${FUZZ_SECONDS:-20}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fuzz_body.XXXXXX") || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT

# 1. The gcc driver, in $tmp: a crashing input lands there, shown below.
if ! (cd "$tmp" && "$abs_top_builddir/tests/fuzz/fuzz_body" "$corpus"); then
	if [ -f "$tmp/fuzz_body.crash" ]; then
		echo "the input (base64):" >&2
		base64 "$tmp/fuzz_body.crash" | head -20 >&2
	fi
	fail "fuzz_body (gcc driver) broke an invariant"
fi

# 2. libFuzzer.
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "libFuzzer half skipped: no $cc"
	exit 0
fi

cat >"$tmp/probe.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return (int)(data == NULL && size);
}
EOF
if ! "$cc" -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" \
	>"$tmp/probe.log" 2>&1; then
	echo "libFuzzer half skipped: $cc -fsanitize=fuzzer does not link" \
		"(install libclang-rt-14-dev):"
	sed 's/^/  /' "$tmp/probe.log" | head -5
	exit 0
fi
if ! deps=$(pkg-config --cflags --libs json-c libxxhash libcrypto 2>&1); then
	echo "libFuzzer half skipped: pkg-config: $deps"
	exit 0
fi

engine="$abs_top_srcdir/engine"
# shellcheck disable=SC2086 # deps is a list of flags
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	-DBARREL_LIBFUZZER -D_GNU_SOURCE \
	-I"$abs_top_srcdir" -I"$abs_top_builddir" \
	-include "$abs_top_srcdir/engine/banned.h" \
	"$abs_top_srcdir/tests/fuzz/fuzz_body.c" \
	"$engine/body.c" "$engine/bodyscan.c" "$engine/revtree.c" \
	"$engine/error.c" \
	"$engine/log.c" \
	$deps -o "$tmp/fuzz_body" >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log" >&2; fail "building the libFuzzer target"; }

mkdir "$tmp/corpus" "$tmp/artifacts" || fail "mkdir in $tmp"
cp "$corpus"/* "$tmp/corpus/" || fail "copying the corpus"
echo "libFuzzer: ${seconds}s on a copy of the corpus"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
	"$tmp/fuzz_body" -max_total_time="$seconds" -rss_limit_mb=2048 \
	-timeout=10 -print_final_stats=1 \
	-artifact_prefix="$tmp/artifacts/" "$tmp/corpus" \
	>"$tmp/fuzz.log" 2>&1
rc=$?
grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|Done [0-9]+ runs)' \
	"$tmp/fuzz.log"
if [ "$rc" -ne 0 ] || ls "$tmp/artifacts/"* >/dev/null 2>&1; then
	tail -n 60 "$tmp/fuzz.log" >&2
	for a in "$tmp/artifacts/"*; do
		[ -f "$a" ] || continue
		echo "crashing input $(basename "$a") (base64):" >&2
		base64 "$a" | head -20 >&2
	done
	fail "libFuzzer found a crash (exit $rc)"
fi
echo "PASS: fuzz_body under gcc and libFuzzer"
