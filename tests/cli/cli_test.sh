#!/usr/bin/env bash
# The attnkit command: validate and convert on real files, with the exit status and the messages a
# user sees. Usage: cli_test.sh ATTNKIT SOURCE_DIR [CONFORMANCE_CASES_DIR]
set -uo pipefail
attnkit="$1"
source_dir="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# expect STATUS PATTERN -- COMMAND...: runs COMMAND, checks its exit status and that its output
# (stdout and stderr) matches the extended regular expression PATTERN.
expect() {
  local want="$1" pattern="$2"
  shift 3
  local out status
  out="$("$@" 2>&1)"
  status=$?
  echo "\$ ${*#"$attnkit" }  -> exit $status"
  echo "$out" | sed 's/^/    /'
  [ "$status" = "$want" ] || fail "exit $status, expected $want: $*"
  # A here-string, not `echo | grep -q`: under pipefail, grep quitting at its first match can
  # fail the pipeline with echo's SIGPIPE (seen once in the sanitize stage of a clean clone).
  grep -Eq -- "$pattern" <<<"$out" || fail "output does not match /$pattern/: $*"
}

# Every sample config is valid (checked with stories260k's shape, which the samples add).
expect 0 "of [0-9]+ valid" -- "$attnkit" validate "$source_dir"/samples/configs/*.textproto
expect 0 "OK attnkit.v1.SessionConfig \(no model shape" -- \
  "$attnkit" validate "$source_dir/samples/configs/snapkv.textproto"

# A wrong value: exit 1 and the field path with what was expected.
cat > "$work/bad_window.textproto" <<'CFG'
# attnkit.v1.SessionConfig
page_size: 16
eviction { enabled: true algorithm: SNAPKV group_size: 4 start_tokens: 4 intermediate_tokens: 64 recent_tokens: 32 window_size: -3 }
CFG
expect 1 "eviction\.window_size" -- "$attnkit" validate "$work/bad_window.textproto"
# A shape that does not fit (GQA needs num_heads to be a multiple of num_kv_heads).
expect 1 "num_kv_heads|num_heads" -- \
  "$attnkit" validate --shape 5,8,3,8 "$source_dir/samples/configs/full_cache.textproto"
# Syntax errors name the line, the column and the field being read.
printf 'page_size: 16\neviction { enabld: true }\n' > "$work/typo.textproto"
expect 1 "2:[0-9]+ \(eviction\.enabld\): .*enabld" -- "$attnkit" validate --kind session "$work/typo.textproto"
printf 'page_size: 16\neviction {\n  enabled: true\n  window_size: seven\n}\n' > "$work/word.textproto"
expect 1 "4:16 \(eviction\.window_size\): Expected integer" -- \
  "$attnkit" validate --kind session "$work/word.textproto"
# One bad file among good ones: the good ones still say OK, the exit status says a file failed.
expect 1 "1 of 2 valid" -- \
  "$attnkit" validate "$source_dir/samples/configs/full_cache.textproto" "$work/bad_window.textproto"
# Usage errors: exit 2.
expect 2 "--shape" -- "$attnkit" validate --shape 1,2 "$source_dir/samples/configs/snapkv.textproto"
expect 2 "no CONFIG" -- "$attnkit" validate
expect 1 "cannot open" -- "$attnkit" validate "$work/missing.textproto"
expect 2 "unknown command" -- "$attnkit" frobnicate

# convert: text -> binary -> JSON -> text gives back the same message.
for pair in snapkv:session:SessionConfig xattention:session:SessionConfig \
            cdpruner:visual:VisualPruningConfig; do
  IFS=: read -r config kind message <<< "$pair"
  src="$source_dir/samples/configs/$config.textproto"
  expect 0 "" -- "$attnkit" convert "$src" "$work/$config.pb"
  expect 0 "" -- "$attnkit" convert --kind "$kind" "$work/$config.pb" "$work/$config.json"
  expect 0 "" -- "$attnkit" convert --kind "$kind" "$work/$config.json" "$work/$config.textproto"
  # The text written starts with "# attnkit.v1.<Message>": no --kind needed to read it back.
  expect 0 "" -- "$attnkit" convert "$work/$config.textproto" "$work/$config.again.pb"
  cmp -s "$work/$config.pb" "$work/$config.again.pb" || fail "$config: round trip changed the message"
  expect 0 "OK attnkit.v1.$message" -- "$attnkit" validate --kind "$kind" "$work/$config.pb"
done
# Where a default shows in a message, it says it is the default.
printf 'eviction { enabled: true algorithm: SNAPKV start_tokens: 4 recent_tokens: 32 }\n' \
  > "$work/default_group.textproto"
expect 1 "eviction.start_tokens: .*32, the default when group_size is not set" -- \
  "$attnkit" validate --kind session "$work/default_group.textproto"
grep -q '"eviction"' "$work/snapkv.json" || fail "snapkv.json has no eviction object"
expect 0 "algorithm: SNAPKV" -- "$attnkit" convert --to text "$work/snapkv.pb" - --kind session
expect 2 "cannot tell the format" -- "$attnkit" convert "$work/snapkv.pb" "$work/out.xyz" --kind session
expect 1 "not a valid" -- "$attnkit" convert --kind eviction "$work/typo.textproto" "$work/x.pb"

# Running another program: `attnkit conformance DIR` runs attnkit-conformance (from the build tree
# here) on the reference's smallest case area.
expect 0 "validate" -- "$attnkit" help
cases="${3:-}"
if [ -n "$cases" ] && [ -d "$cases" ]; then
  expect 0 "passed" -- "$attnkit" conformance "$cases"
else
  echo "SKIP attnkit conformance: no conformance cases given (../shared/conformance absent)"
fi
if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
