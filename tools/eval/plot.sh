#!/usr/bin/env bash
# Plots attnkit-eval's results: KL divergence and top-1 agreement against the peak KV bytes held
# (relative to the full cache), one line per policy (its budgets), one column per model.
# Needs gnuplot (Debian: apt-get install -y gnuplot-nox).
# Usage: tools/eval/plot.sh [results.csv] [out.png]   (defaults: docs/quality/results.{csv,png})
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
csv="${1:-$root/docs/quality/results.csv}"
png="${2:-${csv%.csv}.png}"
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot is not installed (apt-get install -y gnuplot-nox)" >&2; exit 1; }
[ -f "$csv" ] || { echo "plot.sh: $csv is absent (run attnkit-eval first)" >&2; exit 1; }

models=$(awk -F, 'NR > 1 { print $1 }' "$csv" | sort -u)
configs=$(awk -F, 'NR > 1 && $2 != "full_cache" { print $2 }' "$csv" | sort -u)
[ -n "$models" ] || { echo "plot.sh: $csv has no results" >&2; exit 1; }
nmodels=$(echo "$models" | wc -l)

# Colour by algorithm, dash by variant (plain, KVCrush, DiverseKV, AdaKV, PyramidKV).
style() {
  local c="$1" colour dash=1
  case "$c" in
    h2o*) colour='#1f77b4' ;; snapkv*) colour='#d62728' ;; rkv*) colour='#2ca02c' ;;
    tova*) colour='#9467bd' ;; knorm*) colour='#8c564b' ;; keydiff*) colour='#e377c2' ;;
    streaming*) colour='#ff7f0e' ;; random*) colour='#7f7f7f' ;; *) colour='#17becf' ;;
  esac
  case "$c" in
    *_kvcrush) dash=2 ;; *_diversekv) dash=3 ;; *_adakv) dash=4 ;; *_pyramidkv) dash=5 ;;
  esac
  echo "lc rgb '$colour' dt $dash"
}

script=$(mktemp)
trap 'rm -f "$script"' EXIT
{
  echo "set terminal pngcairo size $((700 * nmodels + 260)),1000 font 'sans,10'"
  echo "set output '$png'"
  echo "set datafile separator ','"
  echo "set termoption noenhanced"  # config names have underscores
  echo "set multiplot layout 2,$nmodels title 'attnkit-eval: quality against KV memory (peak bytes / full cache)'"
  echo "set grid"
  echo "set xrange [0:1.05]"
  for metric in "8:mean KL divergence from the full cache" "9:top-1 agreement with the full cache"; do
    column=${metric%%:*}
    label=${metric#*:}
    i=0
    for m in $models; do
      i=$((i + 1))
      echo "set title '$m'"
      echo "set xlabel 'peak KV bytes / full cache'"
      echo "set ylabel '$label'"
      if [ "$i" -eq "$nmodels" ]; then
        echo "set key outside right top font ',8' spacing 0.9"
      else
        echo "unset key"
      fi
      plots=()
      for c in $configs; do
        plots+=("\"< awk -F, '\$1==\\\"$m\\\" && \$2==\\\"$c\\\"' '$csv' | sort -t, -k15 -g\" using 15:$column with linespoints pt 7 ps 0.6 $(style "$c") title '$c'")
      done
      plots+=("\"< awk -F, '\$1==\\\"$m\\\" && \$2==\\\"full_cache\\\"' '$csv'\" using 15:$column with points pt 5 ps 1.2 lc rgb 'black' title 'full cache'")
      (IFS=,; echo "plot ${plots[*]}")
    done
  done
  echo "unset multiplot"
} > "$script"
gnuplot "$script"
echo "plot.sh: wrote $png" >&2
