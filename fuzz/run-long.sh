#!/bin/sh
# Fuzzes one target for a long time, offline (not part of the test
# suite): builds build-fuzz/ with clang if needed, then runs TARGET for
# SECONDS from its committed corpus and regression inputs, keeping what
# it finds in build-fuzz/fuzz-long/TARGET/ (the growing corpus, reused by
# the next run) and crashes in build-fuzz/fuzz-long/artifacts/.  One job;
# prefix with nice on a shared machine.  Prints libFuzzer's final stats.
#
# Usage: fuzz/run-long.sh TARGET SECONDS [libFuzzer options...]
#   e.g. nice -n 15 fuzz/run-long.sh decode_single 3600
#        fuzz/run-long.sh config 600 -runs=10000000
# Targets: decode_single decode_confluent produce_json registry_answer
#          config rules
set -eu

if [ $# -lt 2 ]; then
    sed -n '9,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
target=$1
seconds=$2
shift 2
top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build-fuzz
if [ ! -f "$top/fuzz/$target.c" ]; then
    echo "run-long.sh: no fuzz target $target (fuzz/$target.c)" >&2
    exit 2
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_COMPILER=clang -DMW_FUZZ=ON >/dev/null
fi
cmake --build "$build" -j 1 --target "fuzz_$target" >/dev/null

export LSAN_OPTIONS="use_unaligned=1${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

out=$build/fuzz-long
mkdir -p "$out/$target" "$out/artifacts"
set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$target-" "$@"
if [ -f "$top/fuzz/$target.dict" ]; then
    set -- "$@" -dict="$top/fuzz/$target.dict"
fi
set -- "$@" "$out/$target" "$top/fuzz/corpus/$target"
if [ -d "$top/fuzz/regressions/$target" ]; then
    set -- "$@" "$top/fuzz/regressions/$target"
fi
exec "$build/fuzz/fuzz_$target" "$@"
