#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test suite of an ASan+UBSan build (-DPKIVA_ASAN=ON) with leak checks, where any
# AddressSanitizer, LeakSanitizer or UBSan report from any process fails the run. DESIGN: a report's
# exit status is lost twice over: criterion runs each test in a child whose exit status it ignores
# (a leaking test still counts as passing), and the pkiva servers and helpers the tests start write
# to logs nobody reads. So every process writes any report to a file of its own instead (log_path,
# one file per reporting process named PROGRAM.PID; a clean process writes none), the tests start
# their programs with the inherited environment, and the run fails if any file exists, printing
# each. scripts/test's asan pass runs exactly this.
# Usage: tests/asan-ctest.sh BUILD_DIR [CTEST_ARGS...]   (e.g. -R test_tsa for a subset)
set -euo pipefail
build=$(cd "$1" && pwd)
shift
src=$(cd "$(dirname "$0")/.." && pwd)
reports="$build/sanitizer"
rm -rf "$reports"
mkdir -p "$reports"
# test_package runs the installed pkiva as the pkiva user: it must be able to write a report too.
chmod 1777 "$reports"
# Options already in the environment come first, so that a run by hand can add some, e.g.
# ASAN_OPTIONS=fast_unwind_on_malloc=0 for whole allocation stacks through OpenSSL and the PKCS#11
# modules (built without frame pointers: the default unwinder stops at their first frame).
log="log_path=$reports/report:log_exe_name=1"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:$log"
# print_suppressions=0: a process whose leaks were all suppressed writes no file.
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$src/tests/lsan.supp:print_suppressions=0:$log"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:$log"
status=0
ctest --test-dir "$build" --output-on-failure "$@" || status=$?
shopt -s nullglob
files=("$reports"/report.*)
if [ ${#files[@]} -eq 0 ]; then
  echo "asan-ctest: no AddressSanitizer, LeakSanitizer or UBSan report from any process"
  exit "$status"
fi
# The first few in full (one leak often repeats in every server a suite starts), then names only.
shown=0
for f in "${files[@]}"; do
  if [ $shown -lt 4 ]; then
    echo "==== ${f##*/report.} (PROGRAM.PID): $(wc -l <"$f") lines, the first 60"
    head -n 60 "$f"
  else
    echo "==== ${f##*/report.} (PROGRAM.PID): $(grep -c 'leak of\|ERROR:\|runtime error' "$f") findings"
  fi
  shown=$((shown + 1))
done
echo "asan-ctest: FAIL: ${#files[@]} process(es) wrote a sanitizer report; all of them in $reports/" >&2
exit 1
