#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Builds the clang libFuzzer build (ASan + UBSan, every library instrumented for coverage) and runs
# one fuzz target for a given time.
#
#   tests/fuzz/run-fuzz.sh TARGET SECONDS [libFuzzer options...]
#
# TARGET: fuzz_NAME for any tests/fuzz/fuzz_NAME.c (fuzz_http, fuzz_admin_json, fuzz_config,
# fuzz_ocsp_request, fuzz_ocsp_get, fuzz_tsa_request, fuzz_directory). The build goes to $PKIVA_FUZZ_BUILD
# (default build-fuzz/ in the source tree); PKIVA_MODULES narrows it like the normal build. The
# committed seeds are copied into a work corpus (build-fuzz/corpus/TARGET) that keeps what the
# fuzzer finds between runs; crashes land in build-fuzz/artifacts/TARGET/. A crash makes this exit
# non-zero: minimise it, commit it under tests/fuzz/corpus/NAME/crash-<expected outcome>-WHAT,
# and fix the bug (the replay test then keeps it fixed).
set -eu

if [ $# -lt 2 ]; then
    sed -n '3,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
target=$1
seconds=$2
shift 2

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${PKIVA_FUZZ_BUILD:-$root/build-fuzz}
jobs=${PKIVA_FUZZ_JOBS:-2}

modules_arg=
if [ -n "${PKIVA_MODULES:-}" ]; then
    modules_arg="-DPKIVA_MODULES=$PKIVA_MODULES"
fi
# fuzzer-no-link instruments every library for coverage; only the targets link libFuzzer itself.
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPKIVA_FUZZ=ON -DPKIVA_ASAN=ON -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link $modules_arg >/dev/null
cmake --build "$build" -j "$jobs" --target "$target"

binary=$(find "$build/tests" -type f -perm -u+x -name "$target" | head -n 1)
if [ -z "$binary" ]; then
    echo "run-fuzz.sh: no fuzz target named $target in $build" >&2
    exit 2
fi

# Seeds: this target's committed corpus (fuzz_NAME: tests/fuzz/corpus/NAME).
seeds=$root/tests/fuzz/corpus/${target#fuzz_}
work=$build/corpus/$target
artifacts=$build/artifacts/$target
mkdir -p "$work" "$artifacts"
if [ -n "$seeds" ] && [ -d "$seeds" ]; then
    cp -n "$seeds"/* "$work"/ 2>/dev/null || true # an empty seed folder is fine
fi

# The server target runs threads of its own; leaks are checked per input by libFuzzer only for
# the others (the in-process server's buffers outlive single inputs by design).
detect_leaks=1
[ "$target" = fuzz_http ] && detect_leaks=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=$detect_leaks}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$binary" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@" "$work"
