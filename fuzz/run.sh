#!/bin/sh
# Runs one fuzz target the way the test suite does: every committed
# regression input of fuzz/regressions/NAME/ once, then fuzzing from the
# committed corpus fuzz/corpus/NAME/ (read-only: new inputs go to a
# temporary directory) for SECONDS.  A crash, a leak, undefined behaviour
# or a broken property fails the test; the input is saved in ARTIFACTS.
#
# Usage: fuzz/run.sh BINARY NAME SECONDS ARTIFACTS
set -eu

bin=$1
name=$2
seconds=$3
artifacts=$4
here=$(cd "$(dirname "$0")" && pwd)

# avro-c keeps pointers at unaligned offsets inside generic values:
# without use_unaligned LeakSanitizer misses them and reports false leaks.
export LSAN_OPTIONS="use_unaligned=1${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

set -- -artifact_prefix="$artifacts/$name-" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1
if [ -f "$here/$name.dict" ]; then
    set -- "$@" -dict="$here/$name.dict"
fi

regressions="$here/regressions/$name"
if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    echo "== $name: replaying $(ls "$regressions" | wc -l) regression inputs"
    "$bin" "$@" -runs=0 "$regressions"
fi

echo "== $name: fuzzing for $seconds s from fuzz/corpus/$name"
mkdir "$work/corpus"
"$bin" "$@" -max_total_time="$seconds" "$work/corpus" "$here/corpus/$name"
