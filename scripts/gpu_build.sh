#!/usr/bin/env bash
# The GPU build (issue 10): on the GPU machine (Ubuntu 24.04, PyTorch 2.x with CUDA, nvcc, cmake,
# ninja, protobuf 3.21, GoogleTest; no Abseil, no dlpack, no network) builds the core, the C ABI,
# the C/C++ tests and the benchmarks against PyTorch's libtorch with -DATTNKIT_CUDA=ON, then runs
# the CUDA tests. Abseil and dlpack come from Debian .deb files carried in .gpu-debs/ (ignored by
# git), unpacked with dpkg -x into a prefix. Prepare them once on a Debian machine with network:
#   echo /.gpu-debs/ >> .git/info/exclude; mkdir -p .gpu-debs; cd .gpu-debs
#   apt-get download libabsl-dev libabsl20220623 libdlpack-dev libgtest-dev libgmock-dev
# (the GoogleTest .debs are used only where the machine has no GoogleTest), and pass
# carry: [".gpu-debs"] to the device tool.
#
#   scripts/gpu_build.sh [build|test|bench|all]   (default: all = build + CUDA tests)
# Environment: ATTNKIT_BUILD_DIR (default build-gpu), ATTNKIT_GPU_PREFIX (default
# /tmp/attnkit-gpu-prefix), ATTNKIT_GPU_TARGETS (ninja targets; default everything),
# ATTNKIT_GPU_ARCH (TORCH_CUDA_ARCH_LIST, default 9.0a), ATTNKIT_CMAKE_ARGS (extra cmake args).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
debs="${ATTNKIT_GPU_DEBS:-$here/.gpu-debs}"
prefix="${ATTNKIT_GPU_PREFIX:-/tmp/attnkit-gpu-prefix}"
build="${ATTNKIT_BUILD_DIR:-$here/build-gpu}"
what="${1:-all}"

unpack() {
  mkdir -p "$prefix"
  local have_gtest=0
  if [ -e /usr/include/gtest/gtest.h ] || [ -e /usr/local/include/gtest/gtest.h ]; then have_gtest=1; fi
  local f
  for f in "$debs"/*.deb; do
    [ -e "$f" ] || { echo "gpu_build: no .deb files in $debs" >&2; exit 1; }
    case "$(basename "$f")" in
      libgtest-dev_*|libgmock-dev_*) [ "$have_gtest" = 1 ] && continue ;;
    esac
    dpkg -x "$f" "$prefix"
  done
  echo "gpu_build: unpacked $(ls "$debs" | tr '\n' ' ')into $prefix (system GoogleTest: $have_gtest)"
}

configure_and_build() {
  unpack
  local torch_prefix
  torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  export TORCH_CUDA_ARCH_LIST="${ATTNKIT_GPU_ARCH:-9.0a}"
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DATTNKIT_CUDA=ON -DATTNKIT_BUILD_SAMPLES=OFF -DATTNKIT_BUILD_PYTHON=OFF \
    -DATTNKIT_BUILD_CSHARP=OFF -DATTNKIT_BUILD_JAVA=OFF -DATTNKIT_BUILD_GO=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" \
    -DCMAKE_CUDA_FLAGS="-Xptxas=-v" ${ATTNKIT_CMAKE_ARGS:-}
  # shellcheck disable=SC2086
  cmake --build "$build" -j "$(nproc)" -- -k 0 ${ATTNKIT_GPU_TARGETS:-}
}

run_tests() {
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  ctest --test-dir "$build" -L cuda --output-on-failure
}

run_bench() {
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  "$build/tests/bench/attnkit-bench" gpu "$@"
}

case "$what" in
  build) configure_and_build ;;
  test) run_tests ;;
  bench) shift; run_bench "$@" ;;
  all) configure_and_build; run_tests ;;
  *) echo "usage: $0 [build|test|bench|all]" >&2; exit 2 ;;
esac
