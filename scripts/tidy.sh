#!/usr/bin/env bash
# clang-tidy (the repository's .clang-tidy) over core/ and capi/ sources, using the compile
# commands of a build tree. Usage:
#   scripts/tidy.sh [-B build-dir] [file ...]     (default: every .cc under core/src and capi/src)
# The build tree needs compile_commands.json: configure it with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
# (this script re-runs cmake on an existing build tree with that option when the file is missing).
# Exit status: 0 when clang-tidy reports no warning, 1 otherwise. Debian package: clang-tidy.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [[ ${1:-} == -B ]]; then
  build=$2
  shift 2
fi
tidy=${CLANG_TIDY:-$(command -v clang-tidy || true)}
if [[ -z $tidy ]]; then
  echo "tidy.sh: clang-tidy not found (Debian package clang-tidy, or set CLANG_TIDY)" >&2
  exit 2
fi
if [[ ! -f $build/compile_commands.json ]]; then
  if [[ ! -f $build/CMakeCache.txt ]]; then
    echo "tidy.sh: $build is not a configured build tree (./attnkit.sh build first)" >&2
    exit 2
  fi
  cmake -S . -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
fi
if [[ $# -gt 0 ]]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files 'core/src/*.cc' 'capi/src/*.cc')
fi
status=0
for file in "${files[@]}"; do
  # Units the build does not compile (e.g. CUDA-only ones in a CPU build) have no compile command.
  if ! grep -q "\"file\": \"[^\"]*/${file}\"" "$build/compile_commands.json"; then
    echo "tidy.sh: skipped $file (not in $build/compile_commands.json)"
    continue
  fi
  out=$("$tidy" -p "$build" --quiet "$file" 2>/dev/null || true)
  if grep -q 'warning:' <<<"$out"; then
    printf '%s\n' "$out"
    status=1
  fi
done
exit $status
