#!/usr/bin/env bash
# The language packages as a newcomer uses them: in a temporary folder outside the source and build
# trees, with no build-tree path in the environment, a fresh project of the language takes attnkit
# from the packages alone and runs the stories260k generation sample (the full cache, 100 tokens),
# which must print reference.json's text ("reference: 100 of 100 generated ids match").
#   python  a venv (Debian's numpy and protobuf) that pip-installs the wheel, then generate.py
#   java    generate.java compiled and run with attnkit-<v>.jar and protobuf-java on the class path
#   csharp  `dotnet new console` restoring AttnKit from a local feed of the .nupkg (its own packages
#           folder, so NuGet's global cache cannot stand in for the package under test)
#   go      a new module with samples/go/generate's main.go and replaces to the checkout's bindings/go
#           and samples/go (its llama2c package; source only, as published), cgo flags from
#           `pkg-config attnkit` of the unpacked libattnkit-dev .deb
# The packages come from ATTNKIT_DIST_DIR (e.g. dist/ of `./attnkit.sh package`), else they are made
# from this build into the temporary folder (scripts/package_bindings.sh; cpack for go).
# Usage: bindings_test.sh LANG BUILD_DIR SOURCE_DIR. Exit 77 (skipped) when the language's tools
# or the model folder are absent, saying which.
set -euo pipefail
lang="$1"
build_dir="$(cd "$2" && pwd)"
source_dir="$(cd "$3" && pwd)"
skip() {
  echo "install test skipped: $*"
  exit 77
}
models="${ATTNKIT_MODELS_DIR:-${ATTNKIT_SHARED_DIR:+$ATTNKIT_SHARED_DIR/models}}"
models="${models:-$source_dir/../shared/models}"
[ -e "$models/stories260k/stories260K.bin" ] || skip "no stories260k under $models"
model="$(cd "$models/stories260k" && pwd)"
version="$(sed -n 's/^project(attnkit VERSION \([0-9.]*\).*/\1/p' "$source_dir/CMakeLists.txt")"

work="$(mktemp -d "${TMPDIR:-/tmp}/attnkit-newcomer-$lang.XXXXXX")"
trap 'rm -rf "$work"' EXIT
case "$work/" in
  "$source_dir"/* | "$build_dir"/*) echo "FAIL: temporary folder $work is inside the tree"; exit 1 ;;
esac
config="$work/full_cache.textproto"
cp "$source_dir/samples/configs/full_cache.textproto" "$config"

dist_for() {  # the packages of $1: ATTNKIT_DIST_DIR, else made into $work/dist
  if [ -n "${ATTNKIT_DIST_DIR:-}" ]; then
    (cd "$ATTNKIT_DIST_DIR" && pwd)
    return
  fi
  local rc=0
  bash "$source_dir/scripts/package_bindings.sh" "$build_dir" "$source_dir" "$work/dist" "$1" \
    > "$work/package.log" 2>&1 || rc=$?
  if [ "$rc" -eq 3 ]; then
    cat "$work/package.log" >&2
    echo 3
    return
  fi
  [ "$rc" -eq 0 ] || { cat "$work/package.log" >&2; echo "FAIL: package_bindings.sh $1" >&2; exit 1; }
  echo "$work/dist"
}

# Nothing from the build tree may be found: the environment loses every path into it.
clean_env=(env -u PYTHONPATH -u LD_LIBRARY_PATH -u ATTNKIT_BUILD_DIR -u ATTNKIT_SOURCE_DIR
  -u ATTNKIT_JAVA_NATIVE_DIR -u PKG_CONFIG_PATH -u CLASSPATH OMP_NUM_THREADS=2
  "ATTNKIT_MODELS_DIR=$models")
check_output() {  # $1: the run's log
  cat "$1"
  if grep -q '<0x[0-9A-Fa-f][0-9A-Fa-f]>' "$1"; then
    echo "FAIL: a byte token was printed raw"
    exit 1
  fi
  if ! grep -q "reference: 100 of 100 generated ids match" "$1"; then
    echo "FAIL: the generated text is not reference.json's"
    exit 1
  fi
  if grep -F "$build_dir" "$1" > /dev/null; then
    echo "FAIL: the run names the build tree"
    exit 1
  fi
  echo "install test ($lang): OK"
}

case "$lang" in
  python)
    python="${ATTNKIT_PYTHON:-/usr/bin/python3}"
    "$python" -c 'import numpy, google.protobuf, setuptools, wheel, venv' 2> /dev/null ||
      skip "$python lacks numpy, protobuf, setuptools, wheel or venv"
    dist="$(dist_for python)"
    [ "$dist" != 3 ] || skip "no wheel could be made from this build"
    wheel="$(ls "$dist"/attnkit-"$version"-*.whl)"
    echo "\$ python3 -m venv --system-site-packages venv && venv/bin/pip install $(basename "$wheel")"
    "$python" -m venv --system-site-packages "$work/venv"
    "${clean_env[@]}" PIP_DISABLE_PIP_VERSION_CHECK=1 "$work/venv/bin/python" -m pip install \
      --no-index --no-deps "$wheel" > "$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
    cp "$source_dir/samples/python/generate.py" "$work/generate.py"
    (cd "$work" && "${clean_env[@]}" "$work/venv/bin/python" generate.py --model "$model" \
      --config "$config" --tokens 100) > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
    location="$(cd "$work" && "${clean_env[@]}" "$work/venv/bin/python" -c \
      'import attnkit, os; print(os.path.dirname(attnkit.__file__))')"
    case "$location" in
      "$work/venv/"*) ;;
      *) echo "FAIL: attnkit was imported from $location, not the venv"; exit 1 ;;
    esac
    check_output "$work/run.log"
    ;;
  java)
    for tool in javac java; do command -v "$tool" > /dev/null || skip "no $tool"; done
    protobuf_jar="${ATTNKIT_PROTOBUF_JAR:-/usr/share/java/protobuf.jar}"
    [ -e "$protobuf_jar" ] || skip "no protobuf-java ($protobuf_jar; Debian: libprotobuf-java)"
    dist="$(dist_for java)"
    [ "$dist" != 3 ] || skip "no jar in this build"
    jar="$dist/attnkit-$version.jar"
    for f in "$jar" "$dist/attnkit-$version.pom" "$dist/attnkit-$version-sources.jar" \
      "$dist/attnkit-$version-javadoc.jar"; do
      [ -s "$f" ] || { echo "FAIL: $f is missing"; exit 1; }
    done
    grep -q "<artifactId>protobuf-java</artifactId>" "$dist/attnkit-$version.pom" ||
      { echo "FAIL: the pom does not declare protobuf-java"; exit 1; }
    mkdir -p "$work/src" "$work/classes"
    cp "$source_dir/samples/java/Generate.java" "$work/src/"
    echo "\$ javac -cp attnkit-$version.jar:protobuf.jar Generate.java && java ... Generate"
    "${clean_env[@]}" javac -cp "$jar:$protobuf_jar" -d "$work/classes" "$work/src/Generate.java"
    (cd "$work" && "${clean_env[@]}" java -cp "$jar:$protobuf_jar:$work/classes" \
      dev.attnkit.samples.Generate --model "$model" --config "$config" --tokens 100) \
      > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
    check_output "$work/run.log"
    ;;
  csharp)
    dotnet="${ATTNKIT_DOTNET:-$(command -v dotnet || true)}"
    [ -n "$dotnet" ] || skip "no dotnet"
    dist="$(dist_for csharp)"
    [ "$dist" != 3 ] || skip "no NuGet package in this build"
    nupkg="$(ls "$dist"/AttnKit.*.nupkg | head -1)"
    package_version="$(basename "$nupkg" .nupkg)"
    package_version="${package_version#AttnKit.}"
    project="$work/Newcomer"
    export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
    echo "\$ dotnet new console -o Newcomer && dotnet add package AttnKit --version $package_version"
    "$dotnet" new console -o "$project" > "$work/new.log" 2>&1 || { cat "$work/new.log"; exit 1; }
    rm -f "$project/Program.cs"
    cp "$source_dir/samples/csharp/Generate/Program.cs" "$source_dir/samples/csharp/Generate/Llama2.cs" \
      "$project/"
    # The local feed, then whatever the machine already uses for Google.Protobuf.
    sources=""
    if [ -n "${ATTNKIT_NUGET_EXTRA_SOURCE:-}" ]; then
      sources="    <add key=\"extra\" value=\"$ATTNKIT_NUGET_EXTRA_SOURCE\" />"
    fi
    cat > "$project/nuget.config" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="attnkit-local" value="$dist" />
$sources
  </packageSources>
</configuration>
EOF
    (cd "$project" && "${clean_env[@]}" "$dotnet" add package AttnKit --version "$package_version" \
      --package-directory "$work/packages") > "$work/add.log" 2>&1 ||
      { cat "$work/add.log"; exit 1; }
    (cd "$project" && "${clean_env[@]}" "$dotnet" run -c Release -p:RestorePackagesPath="$work/packages" \
      -p:InvariantGlobalization=true -p:Nullable=enable -- --model "$model" --config "$config" \
      --tokens 100) > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
    native="$(ls "$work"/packages/attnkit/"$package_version"/runtimes/linux-x64/native/ 2> /dev/null || true)"
    [ -n "$native" ] || { echo "FAIL: the restored package has no runtimes/linux-x64/native"; exit 1; }
    ls "$work"/packages/attnkit/"$package_version"/lib/*/AttnKit.xml > /dev/null 2>&1 ||
      { echo "FAIL: the restored package has no XML docs (lib/*/AttnKit.xml)"; exit 1; }
    check_output "$work/run.log"
    ;;
  go)
    go="${ATTNKIT_GO:-$(command -v go || true)}"
    [ -n "$go" ] || skip "no go"
    [ -n "${ATTNKIT_GO_PROTOBUF_DIR:-}" ] || skip "ATTNKIT_GO_PROTOBUF_DIR is not set (ctest sets it)"
    for tool in dpkg-deb pkg-config; do command -v "$tool" > /dev/null || skip "no $tool"; done
    if [ -n "${ATTNKIT_DIST_DIR:-}" ]; then
      debs="$(cd "$ATTNKIT_DIST_DIR" && pwd)"
    else
      debs="$work/dist"
      "${CPACK:-cpack}" --config "$build_dir/CPackConfig.cmake" -B "$debs" > "$work/cpack.log" 2>&1 ||
        { cat "$work/cpack.log"; echo "FAIL: cpack"; exit 1; }
    fi
    root="$work/root"
    for deb in "$debs"/libattnkit1_"$version"_*.deb "$debs"/libattnkit-dev_"$version"_*.deb; do
      [ -e "$deb" ] || { echo "FAIL: no $(basename "$deb") in $debs"; exit 1; }
      dpkg -x "$deb" "$root"
    done
    pc="$(find "$root" -name attnkit.pc -path '*/pkgconfig/*' -print -quit)"
    libdir="$(dirname "$(dirname "$pc")")"
    module="$work/newcomer"
    mkdir -p "$module"
    # The sample's command; its model code (package llama2c) comes from the checkout's samples/go
    # module, as the binding from bindings/go.
    cp "$source_dir"/samples/go/generate/main.go "$module/"
    cat > "$module/go.mod" <<EOF
module example.com/newcomer

go 1.19

require (
	github.com/attnkit/attnkit/bindings/go v0.0.0
	github.com/attnkit/attnkit/samples/go v0.0.0
	google.golang.org/protobuf v1.28.1
)

replace github.com/attnkit/attnkit/bindings/go => $source_dir/bindings/go

replace github.com/attnkit/attnkit/samples/go => $source_dir/samples/go

replace google.golang.org/protobuf => $ATTNKIT_GO_PROTOBUF_DIR
EOF
    echo "\$ PKG_CONFIG_PATH=\$TMP${libdir#"$work"}/pkgconfig go run . (replaces to bindings/go and samples/go)"
    # Go's caches in the temporary folder too: everything is compiled from the sources.
    (cd "$module" && "${clean_env[@]}" PKG_CONFIG_LIBDIR="$libdir/pkgconfig" \
      LD_LIBRARY_PATH="$libdir" GOCACHE="$work/go/cache" GOPATH="$work/go/path" \
      GOMODCACHE="$work/go/path/pkg/mod" GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off \
      GOTOOLCHAIN=local GO111MODULE=on CGO_ENABLED=1 "$go" run . --model "$model" \
      --config "$config" --tokens 100) > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
    chmod -R u+w "$work/go" 2> /dev/null || true  # the module cache is read-only
    check_output "$work/run.log"
    ;;
  *)
    echo "usage: bindings_test.sh python|java|csharp|go BUILD_DIR SOURCE_DIR" >&2
    exit 2
    ;;
esac
