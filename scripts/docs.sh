#!/usr/bin/env bash
# The C API reference: Doxygen over the public headers (capi/include/attnkit/*.h) into HTML.
#   scripts/docs.sh     (writes build/docs/html/index.html; with ATTNKIT_DOCS_DIR=DIR, DIR/html)
# Every public symbol must be documented: any Doxygen warning (an undocumented function, type,
# enumerator, struct member or macro, a malformed command) fails the run. Only what is documented
# is extracted (EXTRACT_ALL=NO), so a symbol whose comment is a plain /* */ one counts as missing.
# Doxygen 1.9.4 does not report an undocumented enumerator: a check of its XML output adds them.
# Exit status: 0 with no warning, 1 on warnings (they are printed), 77 when doxygen is not installed
# (Debian package doxygen; ./attnkit.sh deps installs it), so ctest reports a skip.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${ATTNKIT_DOCS_DIR:-$here/build/docs}"
doxygen=${DOXYGEN:-$(command -v doxygen || true)}
if [[ -z $doxygen ]]; then
  echo "docs.sh: doxygen not found (Debian package doxygen, or set DOXYGEN); docs not built" >&2
  exit 77
fi
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
log="$out_dir/doxygen-warnings.log"
rm -rf "$log" "$out_dir/html" "$out_dir/xml"
version="$(sed -n 's/^project(attnkit VERSION \([0-9.]*\).*/\1/p' "$here/CMakeLists.txt")"

# The main page, written beside the output (the README's links to other files would not resolve).
cat >"$out_dir/mainpage.md" <<'MAINPAGE'
# attnkit C API

attnkit keeps the KV cache of long LLM generations within a budget, computes only the important
blocks of long prompts and prunes VLM image tokens, behind a stable C ABI. Include
`<attnkit/attnkit.h>` (attnkit.h, the umbrella header) and link `libattnkit.so.1`.

- attnkit_common.h: the conventions of every call (status, ownership, tensors, threads), versions,
  library-owned buffers.
- attnkit_config.h: configuration messages (attnkit.v1) as bytes or textproto.
- attnkit_session.h: the attention-wrapping session that owns the KV cache.
- attnkit_eviction.h: eviction policies for hosts that keep their own cache.
- attnkit_sparse.h: sparse prefill attention.
- attnkit_visual.h: visual token pruning.
MAINPAGE

# The configuration, read from stdin (`doxygen -`); options not named keep Doxygen's defaults.
# ATTNKIT_API and ATTNKIT_DEPRECATED(hint) expand to nothing so that declarations parse as plain C.
cd "$here"
status=0
"$doxygen" - <<EOF || status=$?
PROJECT_NAME           = "attnkit C API"
PROJECT_NUMBER         = "$version"
PROJECT_BRIEF          = "KV cache eviction, sparse prefill attention and visual token pruning"
OUTPUT_DIRECTORY       = "$out_dir"
INPUT                  = "$out_dir/mainpage.md" capi/include/attnkit
FILE_PATTERNS          = *.h
USE_MDFILE_AS_MAINPAGE = "$out_dir/mainpage.md"
RECURSIVE              = NO
STRIP_FROM_PATH        = "$here/capi/include"
STRIP_FROM_INC_PATH    = "$here/capi/include"
FULL_PATH_NAMES        = YES
OPTIMIZE_OUTPUT_FOR_C  = YES
JAVADOC_AUTOBRIEF      = YES
MARKDOWN_SUPPORT       = YES
TYPEDEF_HIDES_STRUCT   = YES
EXTRACT_ALL            = NO
EXTRACT_STATIC         = NO
EXTRACT_LOCAL_CLASSES  = NO
HIDE_UNDOC_MEMBERS     = NO
HIDE_UNDOC_CLASSES     = NO
SORT_MEMBER_DOCS       = NO
ENABLE_PREPROCESSING   = YES
MACRO_EXPANSION        = YES
EXPAND_ONLY_PREDEF     = YES
SEARCH_INCLUDES        = NO
PREDEFINED             = "ATTNKIT_API=" "ATTNKIT_DEPRECATED(hint)="
QUIET                  = YES
WARNINGS               = YES
WARN_IF_UNDOCUMENTED   = YES
WARN_IF_DOC_ERROR      = YES
WARN_IF_INCOMPLETE_DOC = YES
WARN_NO_PARAMDOC       = NO
WARN_AS_ERROR          = FAIL_ON_WARNINGS
WARN_FORMAT            = "\$file:\$line: \$text"
WARN_LOGFILE           = "$log"
GENERATE_HTML          = YES
HTML_OUTPUT            = html
GENERATE_TREEVIEW      = YES
SEARCHENGINE           = YES
GENERATE_LATEX         = NO
GENERATE_XML           = YES
XML_OUTPUT             = xml
XML_PROGRAMLISTING     = NO
GENERATE_MAN           = NO
GENERATE_RTF           = NO
HAVE_DOT               = NO
CLASS_GRAPH            = NO
EOF

# Doxygen 1.9.4 does not warn about an undocumented enumerator; its XML output shows them.
if [[ $status -eq 0 ]]; then
  python3 - "$out_dir/xml" >>"$log" <<'PY' || status=$?
import glob, sys, xml.etree.ElementTree as ET
for path in sorted(glob.glob(sys.argv[1] + "/*_8h.xml")):
    for enum in ET.parse(path).iter("memberdef"):
        if enum.get("kind") != "enum":
            continue
        where = enum.find("location")
        for value in enum.iter("enumvalue"):
            text = "".join(value.find("briefdescription").itertext())
            text += "".join(value.find("detaileddescription").itertext())
            if not text.strip():
                print("capi/include/%s:%s: warning: enumerator %s of enum %s is not documented."
                      % (where.get("file"), where.get("line"), value.findtext("name"),
                         enum.findtext("name")))
PY
fi

warnings=0
if [[ -s $log ]]; then
  warnings=$(grep -cE "(warning|error):" "$log" || true)
  cat "$log" >&2
fi
if [[ $status -ne 0 || $warnings -ne 0 || -s $log ]]; then
  echo "docs.sh: FAILED: doxygen exit status $status, $warnings warning(s) (log: $log)" >&2
  exit 1
fi
echo "docs.sh: C API reference (0 warnings): $out_dir/html/index.html"
