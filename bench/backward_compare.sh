#!/usr/bin/env bash
# Backward of the dynamic conv2d: libdynconv against PyTorch autograd of the batch-as-groups
# layer, on the benchmark workload, in one run; prints a markdown table. The C program
# (bench/backward_bench.c) times libdynconv alone; bench/backward_compare.py times both in one
# process, taking turns, for the comparison.
#
#   bench/backward_compare.sh [--batch N] [--threads T] [--quick] [--smoke] [--layers FILE]
#
#   --batch N     batch size (default 16)
#   --threads T   threads for PyTorch, OpenBLAS (libdynconv's backward GEMMs) and the
#                 libdynconv handle (its forward) alike (default 1: the least noisy on a shared
#                 2-core machine)
#   --quick       3 repetitions of at least 0.05 s instead of 5 of at least 0.2 s
#   --smoke       libdynconv only, one tiny layer list, one short repetition: checks that the
#                 benchmark builds and runs (used by scripts/test.sh), measures nothing
#   --layers F    another layer list (default bench/layers.txt)
#   --md FILE     also write the result as a markdown section (bench/compare.sh appends it to
#                 docs/benchmarks.md)
# Each figure is the median over the repetitions. Raw output goes to build/bench-backward/.
set -euo pipefail
cd "$(dirname "$0")/.."

batch=16 threads=1 reps=5 min_time=0.2 smoke=0 layers=bench/layers.txt md=""
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) batch=${2:?--batch needs a value}; shift ;;
    --threads) threads=${2:?--threads needs a value}; shift ;;
    --quick) reps=3 min_time=0.05 ;;
    --smoke) smoke=1 reps=1 min_time=0.001 batch=2 ;;
    --layers) layers=${2:?--layers needs a file}; shift ;;
    --md) md=${2:?--md needs a file}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "backward_compare.sh: unknown argument '$1' (--help lists the options)" >&2; exit 2 ;;
  esac
  shift
done

out=build/bench-backward
mkdir -p "$out"
if [ $smoke -eq 1 ]; then
  scripts/deps.sh build
  printf '%s\n' "smoke_3x3   8  8  3 1 1 1 10" "smoke_dw3x3s2 8 8 3 2 1 8 9" \
                "smoke_1x1   8 16  1 1 0 1 6" > "$out/smoke-layers.txt"
  layers=$out/smoke-layers.txt
else
  scripts/deps.sh build golden
fi

# The release tree when it is configured (scripts/test.sh made it); otherwise a tree of its
# own without the tests, whose dependencies (cmocka) are not this script's.
if [ -f build/release/CMakeCache.txt ]; then
  lib=build/release
  cmake -S . -B "$lib" -DCMAKE_BUILD_TYPE=Release >/dev/null
else
  lib=build/backward
  cmake -S . -B "$lib" -DCMAKE_BUILD_TYPE=Release -DDYNCONV_BUILD_TESTS=OFF \
        -DDYNCONV_BUILD_EXAMPLES=OFF -DDYNCONV_BUILD_TOOLS=ON >/dev/null
fi
cmake --build "$lib" -j"$(nproc)" --target dynconv dynconv_cli >/dev/null
# Built against the tree's library directly: no install needed, nothing else to configure. The
# layer list is read by the tools' workload reader (tools/io/workload.c, which needs files.c).
cc -O2 -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
   -Wformat=2 -Werror -Iinclude -Itools/io bench/backward_bench.c tools/io/workload.c \
   tools/io/files.c -o "$out/backward_bench" \
   -L"$lib/src" -ldynconv -Wl,-rpath,"$PWD/$lib/src"

DYNCONV_CLI=$lib/tools/dynconv . scripts/openblas-env.sh
export OPENBLAS_NUM_THREADS=$threads

if [ $smoke -eq 1 ]; then
  echo "== libdynconv alone (batch $batch, $threads thread(s), $reps x >= ${min_time} s)"
  "$out/backward_bench" --layers "$layers" --batch "$batch" --threads "$threads" --repeats "$reps" \
    --min-time "$min_time" | tee "$out/dynconv.tsv"
  [ "$(wc -l < "$out/dynconv.tsv")" -eq 3 ] || { echo "smoke run incomplete" >&2; exit 1; }
  exit 0
fi

echo "== libdynconv and PyTorch autograd (batch-as-groups), taking turns"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/python3 bench/backward_compare.py --lib "$lib/src/libdynconv.so" \
  --layers "$layers" --batch "$batch" --threads "$threads" --repeats "$reps" \
  --min-time "$min_time" 2> "$out/context.txt" | tee "$out/table.md"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
cat "$out/context.txt" >&2
[ -n "$md" ] || exit 0
{
  echo "## Backward: libdynconv against PyTorch autograd"
  echo
  echo "Made by \`bench/backward_compare.sh --batch $batch --threads $threads\` on" \
       "$(date -u '+%Y-%m-%d %H:%M UTC'); batch $batch, $threads thread(s) everywhere" \
       "(PyTorch, OpenBLAS, the libdynconv handle). Load average $load_start at the start," \
       "$load_end at the end. $(sed 's/^backward_compare: //' "$out/context.txt")."
  echo
  echo "- **libdynconv backward**: \`dynconv_conv2d_backward\` computing dL/dx and the gradient of"
  echo "  every parameter (kernels, biases, both attention layers). It keeps no graph, so its"
  echo "  time includes recomputing the attention and the aggregated kernels from the input."
  echo "- **PyTorch backward**: autograd's \`y.backward(dy)\` through the usual batch-as-groups"
  echo "  dynamic convolution (attention, \`torch.mm\` mixing, one grouped \`F.conv2d\` over the"
  echo "  batch folded into the channels), on a graph recorded by its forward (the PyTorch"
  echo "  forward column, with autograd on). Both compute the same gradients of the same"
  echo "  weights (checked before timing)."
  echo "- Both run in one process and take turns within each of $reps repetitions of at least" \
       "${min_time} s; times are medians, speed-ups (PyTorch time / libdynconv time, above 1:"
  echo "  libdynconv is faster) medians of the per-repetition ratios."
  echo "- What to expect: a backward does two GEMMs of the forward's size per sample and group"
  echo "  (dL/dx through col2im, and dL/dW_n), plus the recomputed attention and kernel mixing"
  echo "  and two batch-wide GEMMs for dL/dpi and the K kernels' gradients: about 2 to 2.5"
  echo "  forwards for GEMM-bound layers (more for depthwise ones, whose forward has a path of"
  echo "  its own). Against PyTorch it gains most where the batch-as-groups conv is weakest"
  echo "  (many channels at a small image, depthwise layers) and is about even on large images."
  echo "- A load average above the core count means other processes shared the cores: the"
  echo "  absolute times are then inflated and noisy, and the speed-ups (turn by turn) are the"
  echo "  figures to read."
  echo
  cat "$out/table.md"
  echo
} > "$md"
echo "wrote $md"
