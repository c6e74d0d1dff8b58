#!/usr/bin/env bash
# Runs the benchmark workload (bench/layers.txt) through libdynconv and through PyTorch in one
# run, prints the comparison table and writes the report with its plot. A full run also compares
# the backward pass (bench/backward_compare.sh, batch 16, 1 thread: about 2 more minutes) and
# appends that section to the report.
#
#   bench/compare.sh [--quick] [--no-torch] [--out DIR] [--layers FILE]
#
#   --quick      fewer, shorter repetitions and no per-module breakdown (about 3 minutes
#                instead of about 10 on 2 cores): for a first look, not for the record
#   --no-torch   libdynconv only (no PyTorch, no torch ratios)
#   --out DIR    where benchmarks.md and benchmark-ratios.png go. Default: docs/ for a full run,
#                build/bench-report/ for --quick or --no-torch, so a partial run never
#                replaces the committed report.
#   --layers F   another layer list (same format as bench/layers.txt)
# The hand-written benchmark notes (docs/benchmarks-engine.md, -training.md, -networks.md) are
# left alone; the report links to them.
# Installs what it needs with scripts/deps.sh (apt-get). Raw results stay in build/bench-report/.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 torch=1 out="" layers=bench/layers.txt
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-torch) torch=0 ;;
    --out) [ $# -ge 2 ] || { echo "compare.sh: --out needs a directory" >&2; exit 2; }
           out=$2; shift ;;
    --layers) [ $# -ge 2 ] || { echo "compare.sh: --layers needs a file" >&2; exit 2; }
              layers=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1' (--help lists the options)" >&2; exit 2 ;;
  esac
  shift
done
[ -r "$layers" ] || { echo "compare.sh: cannot read layer list '$layers'" >&2; exit 2; }
layers=$(realpath "$layers")
raw=build/bench-report
if [ -z "$out" ]; then
  if [ $quick -eq 0 ] && [ $torch -eq 1 ]; then out=docs; else out=$raw; fi
fi
mkdir -p "$raw" "$out"

if [ $torch -eq 1 ]; then scripts/deps.sh build compare; else scripts/deps.sh build bench plot; fi
py=/usr/bin/python3   # Debian's interpreter: the one that sees python3-torch

echo "== building dynconv-bench"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DDYNCONV_BUILD_BENCHMARKS=ON \
      -DDYNCONV_BUILD_TESTS=OFF -DDYNCONV_BUILD_EXAMPLES=OFF -DDYNCONV_BUILD_TOOLS=ON >/dev/null
cmake --build build/bench -j"$(nproc)" --target dynconv-bench dynconv_cli >/dev/null

# OPENBLAS_CORETYPE must be in the environment before OpenBLAS loads (both programs below);
# it is set only when OpenBLAS fell back to a generic core (`dynconv info` tells).
DYNCONV_CLI=build/bench/tools/dynconv . scripts/openblas-env.sh
# PyTorch's OpenMP threads spin while idle by default; when other processes want the cores too,
# that made its 2-thread runs 10 to 20 times slower than its 1-thread ones. Sleeping threads
# measure PyTorch, not the machine's load. A policy the user chose is kept.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ $quick -eq 1 ]; then reps=3 min_time=0.05; else reps=5 min_time=0.2; fi
settings="$reps repetitions of at least ${min_time} s each per case (median reported),"
settings+=" one warm-up call before each; libdynconv and PyTorch alternate layer by layer"
names=$(sed 's/#.*//' "$layers" | awk 'NF > 0 {print $1}')
for name in $names; do
  [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || { echo "compare.sh: layer name '$name' has characters" \
    "other than letters, digits, '_' and '-'" >&2; exit 2; }
done
rm -f "$raw"/*.json
bench=(build/bench/bench/dynconv-bench --layers "$layers" --batches 1,16 --threads 1,2
       --sgemm 2048 --benchmark_repetitions=$reps --benchmark_min_time=$min_time
       --benchmark_out_format=json)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# The sgemm and memory bandwidth references keep their single runs (the best is what the machine
# can reach), at the start and again at the end, in case the load was high at one of the two.
echo "== sgemm reference (libdynconv's OpenBLAS)"
"${bench[@]}" --benchmark_filter='^(sgemm|membw)/' --benchmark_out="$raw/0-sgemm.json"
# Layer by layer, libdynconv then PyTorch: a change in the machine's load then hits both sides
# of a ratio alike, instead of one whole half of the run.
for name in $names; do
  echo "== $name: libdynconv"
  "${bench[@]}" --benchmark_filter="^layer/$name/" --benchmark_out="$raw/1-layer-$name.json" \
    --benchmark_report_aggregates_only=true
  if [ $torch -eq 1 ]; then
    echo "== $name: PyTorch"
    "$py" bench/torch_bench.py --layers "$layers" --only "$name" --batches 1,16 --threads 1,2 \
      --repeats $reps --min-time $min_time --out "$raw/torch-$name.json"
  fi
done
if [ $quick -eq 0 ]; then
  echo "== libdynconv stages, one by one"
  "${bench[@]}" --benchmark_filter='^module/' --benchmark_out="$raw/2-modules.json" \
    --benchmark_report_aggregates_only=true
fi
echo "== sgemm reference again"
"${bench[@]}" --benchmark_filter='^(sgemm|membw)/' --benchmark_out="$raw/3-sgemm.json"
appendix=()
if [ $torch -eq 1 ] && [ $quick -eq 0 ]; then
  echo "== backward, libdynconv against PyTorch autograd"
  bench/backward_compare.sh --layers "$layers" --batch 16 --threads 1 --md "$raw/backward.md"
  appendix=(--append "$raw/backward.md")
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

command="bench/compare.sh"
[ $quick -eq 1 ] && command+=" --quick"
[ $torch -eq 0 ] && command+=" --no-torch"
torch_json=()
[ $torch -eq 1 ] && torch_json=("$raw"/torch-*.json)
echo "== report"
"$py" bench/report.py --dynconv "$raw"/[0-9]-*.json --torch "${torch_json[@]}" \
  --layers "$layers" --sgemm 2048 --md "$out/benchmarks.md" --png "$out/benchmark-ratios.png" \
  --command "$command" --settings "$settings" \
  --load "$load_start at the start, $load_end at the end" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  "${appendix[@]}"
