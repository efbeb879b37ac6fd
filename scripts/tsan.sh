#!/usr/bin/env bash
# ThreadSanitizer pass: configures a separate build dir with -DATTNKIT_SANITIZE_THREAD=ON, builds the
# C ABI concurrency test (tests/capi/threads_test.cc) and the C++ tests that use threads, and runs
# the test binaries directly (ctest would set OMP_NUM_THREADS=2). The objects that promise thread safety (attnkit_common.h:
# distinct objects independent, configs, tensor checks and status getters callable from any thread)
# are exercised there from several threads at once.
#   scripts/tsan.sh [extra GoogleTest args, e.g. --gtest_filter=Threads.*]
# Environment: ATTNKIT_TSAN_BUILD_DIR (default build-tsan/), ATTNKIT_JOBS, ATTNKIT_CMAKE_ARGS,
# ATTNKIT_TSAN_TARGETS (test binaries to build and run, default "capi_threads").
#
# libtorch and libgomp are not built with TSan: their OpenMP barriers and thread pools look like
# races to it. The run uses OMP_NUM_THREADS=1 (parallel regions run on the calling thread, so the
# races that matter, between the caller's threads through attnkit's own state, remain visible) and
# scripts/tsan.supp, which silences reports whose frames are all inside those libraries
# (called_from_lib), never attnkit's own code.
# Measured (2 cores under heavy load from other builds): build 2233 s from a cold cache, capi_threads
# 6/6 in about 1 s with no report, and none without the suppressions either.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${ATTNKIT_TSAN_BUILD_DIR:-$here/build-tsan}"
jobs="${ATTNKIT_JOBS:-$(nproc)}"
targets="${ATTNKIT_TSAN_TARGETS:-capi_threads}"

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=true
start=$(date +%s)
cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DATTNKIT_SANITIZE_THREAD=ON -DATTNKIT_BUILD_SAMPLES=OFF \
  "-DATTNKIT_SKIP_TEST_AREAS=bench;conformance;fuzz;format" \
  "${launcher[@]}" ${ATTNKIT_CMAKE_ARGS:-}
# shellcheck disable=SC2086
cmake --build "$build_dir" -j "$jobs" --target $targets
built=$(date +%s)

export OMP_NUM_THREADS=1
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$here/scripts/tsan.supp}"
status=0
for target in $targets; do
  binary="$(find "$build_dir/tests" -type f -name "$target" -perm -u+x | head -n 1)"
  if [ -z "$binary" ]; then
    echo "attnkit tsan: no binary $target under $build_dir/tests" >&2
    status=1
    continue
  fi
  echo "attnkit tsan: $binary"
  "$binary" "$@" || status=$?
done
done_at=$(date +%s)
echo "attnkit tsan: build $((built - start)) s, tests $((done_at - built)) s, total $((done_at - start)) s"
exit $status
