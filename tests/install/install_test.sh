#!/usr/bin/env bash
# The Debian packages as a newcomer gets them: cpack makes libattnkit1 and libattnkit-dev from the
# build, both are unpacked with `dpkg -x` into a temporary root outside the source and build trees,
# and a C program (use_attnkit.c) is compiled there with `pkg-config --cflags --libs attnkit` and,
# once more, through find_package(attnkit), then run with LD_LIBRARY_PATH naming that root only.
# Also checks what each package holds (every public header, the library split, no file in both, no
# build-tree RUNPATH) and their control fields.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
# ATTNKIT_DEBS_DIR=DIR tests the .debs already in DIR (e.g. dist/ of `./attnkit.sh package`) instead
# of running cpack; they must come from this build.
set -euo pipefail  # (so no `producer | grep -q`: grep quitting early would fail the producer)
build_dir="$(cd "$1" && pwd)"
source_dir="$(cd "$2" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cc="${CC:-cc}"
cpack="${CPACK:-cpack}"
for tool in dpkg-deb dpkg pkg-config "$cpack" "$cc" cmake readelf file; do
  command -v "$tool" > /dev/null || { echo "install test skipped: no $tool"; exit 77; }
done
work="$(mktemp -d "${TMPDIR:-/tmp}/attnkit-install-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
case "$work/" in
  "$source_dir"/* | "$build_dir"/*) echo "FAIL: temporary folder $work is inside the tree"; exit 1 ;;
esac
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# 1. The packages.
if [ -n "${ATTNKIT_DEBS_DIR:-}" ]; then
  debs="$(cd "$ATTNKIT_DEBS_DIR" && pwd)"
else
  debs="$work/dist"
  echo "\$ cpack --config $build_dir/CPackConfig.cmake -B \$TMP/dist"
  "$cpack" --config "$build_dir/CPackConfig.cmake" -B "$debs" > "$work/cpack.log" 2>&1 ||
    { cat "$work/cpack.log"; echo "FAIL: cpack"; exit 1; }
fi
version="$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build_dir/CPackConfig.cmake")"
runtime_deb="$(ls "$debs"/libattnkit1_"$version"_*.deb 2>/dev/null || true)"
dev_deb="$(ls "$debs"/libattnkit-dev_"$version"_*.deb 2>/dev/null || true)"
if [ -z "$runtime_deb" ] || [ -z "$dev_deb" ]; then
  ls -l "$debs"
  echo "FAIL: libattnkit1_${version}_*.deb and libattnkit-dev_${version}_*.deb expected in $debs"
  exit 1
fi
for deb in "$runtime_deb" "$dev_deb"; do
  echo "== $(basename "$deb") ($(stat -c %s "$deb") bytes)"
  dpkg-deb -f "$deb" Package Version Depends | sed 's/^/    /'
done

# 2. Control fields: -dev pins the runtime package's exact version; the runtime package has
# Depends (from dpkg-shlibdeps) and declares its shlibs.
dev_depends="$(dpkg-deb -f "$dev_deb" Depends)"
grep -qF "libattnkit1 (= $version)" <<< "$dev_depends" ||
  fail "libattnkit-dev Depends lacks 'libattnkit1 (= $version)': $dev_depends"
for p in libdlpack-dev libtorch-dev libabsl-dev libprotobuf-dev; do
  grep -qw "$p" <<< "$dev_depends" || fail "libattnkit-dev Depends lacks $p"
done
runtime_depends="$(dpkg-deb -f "$runtime_deb" Depends)"
grep -q "libc6" <<< "$runtime_depends" || fail "libattnkit1 Depends looks empty: '$runtime_depends'"
control_files="$(dpkg-deb --ctrl-tarfile "$runtime_deb" | tar -t)"
grep -q '^\./shlibs$' <<< "$control_files" ||
  fail "libattnkit1 has no shlibs control file"

# 3. Contents.
dpkg-deb -c "$runtime_deb" | awk '{print $6}' | sed 's|^\./|/|' | sort > "$work/runtime.list"
dpkg-deb -c "$dev_deb" | awk '{print $6}' | sed 's|^\./|/|' | sort > "$work/dev.list"
has() { grep -Eq "$2" "$work/$1.list" || fail "$1 package: nothing matches $2"; }
lacks() { ! grep -Eq "$2" "$work/$1.list" || fail "$1 package holds $(grep -E "$2" "$work/$1.list" | head -1)"; }
has runtime '/libattnkit\.so\.1$'
has runtime "/libattnkit\\.so\\.${version//./\\.}\$"
has runtime '^/usr/bin/attnkit$'
lacks runtime '\.h$|/libattnkit\.so$|\.pc$|\.cmake$'
has dev '/libattnkit\.so$'
has dev '/pkgconfig/attnkit\.pc$'
has dev '/cmake/attnkit/attnkitConfig\.cmake$'
has dev '/cmake/attnkit/attnkitConfigVersion\.cmake$'
has dev '/cmake/attnkit/attnkitTargets\.cmake$'
lacks dev '/libattnkit\.so\.|^/usr/bin/'
for header in "$source_dir"/capi/include/attnkit/*.h; do
  has dev "^/usr/include/attnkit/$(basename "$header")\$"
done
both="$(comm -12 <(grep -v '/$' "$work/runtime.list") <(grep -v '/$' "$work/dev.list"))"
[ -z "$both" ] || fail "files in both packages: $both"

# 4. Unpack both into a root of their own.
root="$work/root"
dpkg -x "$runtime_deb" "$root"
dpkg -x "$dev_deb" "$root"
pc="$(find "$root" -name attnkit.pc -path '*/pkgconfig/*' -print -quit)"
[ -n "$pc" ] || { fail "no attnkit.pc unpacked"; exit 1; }
libdir="$(dirname "$(dirname "$pc")")"
[ -e "$libdir/libattnkit.so.1" ] || fail "libattnkit.so.1 is not beside pkgconfig/ in $libdir"
# No packaged ELF file may look into the build or source tree at run time.
while IFS= read -r -d '' f; do
  if [[ "$(file -b "$f")" == ELF* ]]; then
    rpath="$(readelf -d "$f" | grep -E 'RUNPATH|RPATH' || true)"
    case "$rpath" in
      *"$build_dir"* | *"$source_dir"*) fail "${f#"$root"} has a build-tree run path: $rpath" ;;
    esac
  fi
done < <(find "$root" -type f -print0)

# 5. Compile with pkg-config, looking at this root only (PKG_CONFIG_LIBDIR replaces the default
# search path; the .pc file finds its prefix from its own folder), and check that every attnkit
# header the compiler read came from the root, not from a copy installed elsewhere.
export PKG_CONFIG_LIBDIR="$libdir/pkgconfig" PKG_CONFIG_PATH=""
flags="$(pkg-config --cflags --libs attnkit)" || { fail "pkg-config --cflags --libs attnkit"; exit 1; }
echo "\$ pkg-config --cflags --libs attnkit  ->  ${flags//$work/\$TMP}"
# shellcheck disable=SC2086
"$cc" -std=c99 -Wall -Wextra -Werror -MMD -MF "$work/use_attnkit.d" "$here/use_attnkit.c" \
  -o "$work/use_attnkit" $flags -lm || { fail "compiling use_attnkit.c against the packages"; exit 1; }
if grep -o '[^ ]*attnkit/attnkit[a-z_]*\.h' "$work/use_attnkit.d" | grep -v "^$root/"; then
  fail "headers above were read from outside the unpacked packages"
fi

run_program() {
  local program="$1"
  local resolved
  resolved="$(env -u LD_PRELOAD LD_LIBRARY_PATH="$libdir" ldd "$program" | grep 'libattnkit\.so' || true)"
  echo "    $resolved"
  grep -qF "$libdir/libattnkit.so.1" <<< "$resolved" ||
    fail "$(basename "$program") does not load libattnkit.so.1 from the unpacked root: $resolved"
  env -u LD_PRELOAD LD_LIBRARY_PATH="$libdir" OMP_NUM_THREADS=2 "$program" ||
    fail "$(basename "$program") exited $?"
}
echo "\$ LD_LIBRARY_PATH=\$TMP${libdir#"$work"} use_attnkit"
run_program "$work/use_attnkit"

# 6. The same program through find_package(attnkit) (attnkitConfig.cmake of -dev).
mkdir -p "$work/cmake-src"
cat > "$work/cmake-src/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(use_attnkit C)
find_package(attnkit REQUIRED)
add_executable(use_attnkit "$here/use_attnkit.c")
target_link_libraries(use_attnkit PRIVATE attnkit::attnkit m)
EOF
echo "\$ cmake -DCMAKE_PREFIX_PATH=\$TMP/root/usr (find_package(attnkit)) && build"
if cmake -S "$work/cmake-src" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$root/usr" \
     -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
     > "$work/cmake.log" 2>&1 &&
   cmake --build "$work/cmake-build" >> "$work/cmake.log" 2>&1; then
  run_program "$work/cmake-build/use_attnkit"
else
  cat "$work/cmake.log"
  fail "find_package(attnkit) build against the packages"
fi

# 7. The attnkit command of libattnkit1 runs from the root.
echo "\$ attnkit validate --shape 5,8,4,8 snapkv.textproto (packaged CLI)"
env LD_LIBRARY_PATH="$libdir" "$root/usr/bin/attnkit" validate --shape 5,8,4,8 \
  "$source_dir/samples/configs/snapkv.textproto" || fail "packaged attnkit validate exited $?"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "install test: OK"
