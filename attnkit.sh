#!/usr/bin/env bash
# attnkit's one entry point: installs what the build needs from Debian, builds, runs.
#   ./attnkit.sh deps        install missing Debian packages (apt-get update first)
#   ./attnkit.sh build       configure + build (build/ by default, ATTNKIT_BUILD_DIR overrides)
#   ./attnkit.sh generate    the main job: the C sample over stories260k (extra args pass through)
#   ./attnkit.sh test        everything: deps, build, the sanitizer pass, ctest (all labels but bench and open)
#   ./attnkit.sh docs        the C API reference (Doxygen, builds nothing) into build/docs/html
#   ./attnkit.sh package     build, then into dist/: the Debian packages libattnkit1 and libattnkit-dev,
#                            the NuGet package, the jars and pom, the Python wheel
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="${ATTNKIT_BUILD_DIR:-$here/build}"
jobs="${ATTNKIT_JOBS:-$(nproc)}"

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread libopenblas0-openmp
  libprotobuf-dev protobuf-compiler libabsl-dev libdlpack-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev clang-format clang-tidy
  swig doxygen file dpkg-dev
  python3-dev python3-numpy python3-protobuf python3-venv python3-setuptools python3-wheel python3-pip
  default-jdk-headless junit5 libprotobuf-java
  golang-go protoc-gen-go golang-google-protobuf-dev
)

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

deps() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "attnkit: installing missing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -q
    DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  use_openblas
}

# Debian's libtorch links libblas.so.3/liblapack.so.3, which update-alternatives resolves. OpenBLAS
# wins in auto mode, but an alternative left in manual mode on the reference BLAS (about 5 GFLOP/s
# instead of about 285 for an fp32 matmul here) would stay: point both at OpenBLAS when they do not.
use_openblas() {
  # The OpenMP build of OpenBLAS, not the pthread one: attnkit and ATen run their parallel work in
  # OpenMP regions, whose threads spin after each region; a pthread OpenBLAS then fights them for
  # the cores (measured here: CDPruner's kernel build 2x slower). The OpenMP build shares the pool.
  local arch lib target current
  arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)"
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    target="/usr/lib/$arch/openblas-openmp/$lib"
    [ -e "$target" ] || continue
    current="$(readlink -f "/etc/alternatives/$lib-$arch" 2>/dev/null || true)"
    if [ "$current" != "$(readlink -f "$target")" ]; then
      echo "attnkit: pointing the $lib-$arch alternative at OpenBLAS ($target)"
      sudo_if_needed update-alternatives --set "$lib-$arch" "$target"
    fi
  done
}

configure() {
  # ccache keyed on paths relative to the checkout, so clones elsewhere (CI) reuse its entries.
  export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=true
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  # Every language binding whose toolchain is here is built and tested by default (the deps step
  # installs the Debian ones; the .NET SDK comes with the machine).
  local csharp=OFF
  command -v dotnet >/dev/null && csharp=ON
  cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${ATTNKIT_BUILD_TYPE:-Release}" \
    -DATTNKIT_BUILD_PYTHON=ON -DATTNKIT_BUILD_JAVA=ON -DATTNKIT_BUILD_GO=ON \
    -DATTNKIT_BUILD_CSHARP="$csharp" \
    "${launcher[@]}" ${ATTNKIT_CMAKE_ARGS:-}
}

build() { deps; configure; cmake --build "$build_dir" -j "$jobs"; }

case "${1:-}" in
  deps) deps ;;
  build) build ;;
  generate) shift; deps; configure; cmake --build "$build_dir" -j "$jobs" --target attnkit_generate; "$build_dir/samples/c/attnkit_generate" "$@" ;;
  test)
    shift
    build
    # The ASan+UBSan pass over the C++ and C ABI tests first (its own build dir), then every test of
    # the main build, whose summary closes the output. ATTNKIT_SANITIZE_PASS=0 skips the former.
    if [ "${ATTNKIT_SANITIZE_PASS:-1}" != 0 ]; then
      ATTNKIT_SANITIZE_BUILD_DIR="${build_dir}-sanitize" "$here/tests/sanitize.sh"
    fi
    ctest --test-dir "$build_dir" --output-on-failure -LE "bench|open" -j "$jobs" "$@"
    ;;
  docs) deps; ATTNKIT_DOCS_DIR="${ATTNKIT_DOCS_DIR:-$build_dir/docs}" "$here/scripts/docs.sh" ;;
  package)
    # The normal build, then cpack (cmake/AttnkitPackage.cmake) into dist/, which holds only the
    # .debs of the last run (CPack's staging folder is removed), then scripts/package_bindings.sh.
    build
    dist="${ATTNKIT_DIST_DIR:-$here/dist}"
    rm -f "$dist"/libattnkit*.deb
    cpack --config "$build_dir/CPackConfig.cmake" -B "$dist"
    rm -rf "$dist/_CPack_Packages"
    for deb in "$dist"/*.deb; do echo "$deb: $(dpkg-deb -f "$deb" Depends)"; done
    # The language packages: NuGet, the jars and pom, the Python wheel (a language this build
    # has no tools for is reported and left out).
    bash "$here/scripts/package_bindings.sh" "$build_dir" "$here" "$dist"
    ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
