#!/bin/sh
# Runs the whole test suite the way CI does: installs what is missing,
# builds twice (a normal build, and one with AddressSanitizer and
# UndefinedBehaviorSanitizer) and runs every ctest test in both, then
# builds the libFuzzer targets with clang (build-fuzz/) and runs each for
# a bounded time after replaying its regression inputs (label fuzz).
#
# Usage: scripts/test.sh [ctest arguments...]
#   e.g. scripts/test.sh -L unit      only the unit tests
#        MW_SANITIZE_BUILD=0 scripts/test.sh   skip the sanitizer build
#        MW_FUZZ_BUILD=0 scripts/test.sh       skip the fuzzing build
#        MW_FORMAT_CHECK=0 scripts/test.sh     skip the formatting check
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scripts/install-deps.sh

# Formatting first, before minutes of building (MW_FORMAT_CHECK=0 skips it).
if [ "${MW_FORMAT_CHECK:-1}" != 0 ]; then
    echo "== formatting: scripts/check-format.sh"
    scripts/check-format.sh
fi

jobs=$(nproc 2>/dev/null || echo 2)

build_and_test()
{
    dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
    (cd "$dir" && ctest --output-on-failure -j "$jobs" $ctest_args)
}

ctest_args="$*"
# Six fuzz targets: about a minute on two cores (see fuzz/README.md).
MW_FUZZ_SECONDS=${MW_FUZZ_SECONDS:-20}
started=$(date +%s)
echo "== build and test: build/"
build_and_test build -DMW_SANITIZE=OFF
if [ "${MW_SANITIZE_BUILD:-1}" != 0 ]; then
    echo "== build and test with ASan and UBSan: build-sanitize/"
    ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        build_and_test build-sanitize -DMW_SANITIZE=ON
fi
if [ "${MW_FUZZ_BUILD:-1}" != 0 ]; then
    echo "== fuzz targets, $MW_FUZZ_SECONDS s each: build-fuzz/"
    build_and_test build-fuzz -DCMAKE_C_COMPILER=clang -DMW_FUZZ=ON \
        -DMW_FUZZ_SECONDS="$MW_FUZZ_SECONDS"
fi
echo "== test suite passed in $(( $(date +%s) - started )) s"
