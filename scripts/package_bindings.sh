#!/usr/bin/env bash
# The language packages of a build, written into DIST (`./attnkit.sh package` calls this after the
# Debian packages; the newcomer tests in tests/install call it into a temporary folder):
#   AttnKit.<v>.nupkg                      NuGet: the managed assembly, its XML docs, and
#                                          runtimes/linux-x64/native/{libattnkit.so.1, shim}
#   attnkit-<v>.jar, attnkit-<v>.pom       the jar with its native libraries; Maven description
#   attnkit-<v>-sources.jar, -javadoc.jar  the hand-written sources and the javadoc HTML
#   attnkit-<v>-*.whl                      the Python wheel (libattnkit.so.1 inside the package)
# The Go module is source only: bindings/go with the cgo flags from `pkg-config attnkit` of the
# -dev package (bindings/go/README.md).
#
#   scripts/package_bindings.sh BUILD_DIR SOURCE_DIR DIST [csharp] [java] [python]   (default: all)
# A language whose build outputs are missing (e.g. no .NET SDK, so no nupkg) is reported and left
# out; the exit status is then 3 when it was asked for by name.
set -euo pipefail
build="$(cd "$1" && pwd)"
source="$(cd "$2" && pwd)"
mkdir -p "$3"
dist="$(cd "$3" && pwd)"
shift 3
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(csharp java python)
named=$#
version="$(sed -n 's/^project(attnkit VERSION \([0-9.]*\).*/\1/p' "$source/CMakeLists.txt")"
missing=0
skip() {
  echo "package_bindings: $1: $2 (left out)" >&2
  missing=$((missing + 1))
}

for lang in "${langs[@]}"; do
  case "$lang" in
    csharp)
      nupkg="$(ls "$build"/bindings/csharp/nupkg/AttnKit.*.nupkg 2> /dev/null | head -1 || true)"
      if [ -z "$nupkg" ]; then
        skip csharp "no $build/bindings/csharp/nupkg/AttnKit.*.nupkg (a build with the .NET SDK)"
        continue
      fi
      rm -f "$dist"/AttnKit.*.nupkg
      cp "$nupkg" "$dist/"
      echo "$dist/$(basename "$nupkg")"
      ;;
    java)
      java_dir="$build/bindings/java"
      if [ ! -e "$java_dir/attnkit.jar" ]; then
        skip java "no $java_dir/attnkit.jar (a build with a JDK)"
        continue
      fi
      cp "$java_dir/attnkit.jar" "$dist/attnkit-$version.jar"
      cp "$java_dir/attnkit-$version.pom" "$dist/attnkit-$version.pom"
      jar_tool="$(command -v jar)"
      (cd "$source/bindings/java/src" && "$jar_tool" cf "$dist/attnkit-$version-sources.jar" .)
      cmake --build "$build" --target attnkit_java_docs > /dev/null
      (cd "$build/docs/java" && "$jar_tool" cf "$dist/attnkit-$version-javadoc.jar" .)
      for f in "attnkit-$version.jar" "attnkit-$version.pom" "attnkit-$version-sources.jar" \
        "attnkit-$version-javadoc.jar"; do
        echo "$dist/$f"
      done
      ;;
    python)
      python="${ATTNKIT_PYTHON:-/usr/bin/python3}"
      if ! "$python" -c 'import setuptools, wheel' 2> /dev/null; then
        skip python "$python has no setuptools and wheel (Debian: python3-setuptools python3-wheel)"
        continue
      fi
      if [ ! -e "$build/capi/libattnkit.so.1" ]; then
        skip python "no $build/capi/libattnkit.so.1"
        continue
      fi
      rm -f "$dist"/attnkit-*.whl
      # setup.py copies the build's library into the package; nothing is downloaded. pip builds
      # in the folder it is given: a copy, so the checkout stays clean.
      tmp="$(mktemp -d)"
      cp -r "$source/bindings/python" "$tmp/python"
      rm -rf "$tmp/python/build" "$tmp/python"/*.egg-info
      if ! ATTNKIT_BUILD_DIR="$build" ATTNKIT_SOURCE_DIR="$source" PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$python" -m pip wheel --no-build-isolation --no-index --no-deps --wheel-dir "$dist" \
        "$tmp/python" > "$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        rm -rf "$tmp"
        echo "package_bindings: pip wheel failed" >&2
        exit 1
      fi
      rm -rf "$tmp"
      ls "$dist"/attnkit-*.whl
      ;;
    *)
      echo "package_bindings: unknown language $lang (csharp, java, python)" >&2
      exit 2
      ;;
  esac
done
if [ "$missing" -gt 0 ] && [ "$named" -gt 0 ]; then exit 3; fi
exit 0
