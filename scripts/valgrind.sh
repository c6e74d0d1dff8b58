#!/usr/bin/env bash
# Runs the whole ctest suite under valgrind memcheck (errors and definite leaks fail the
# test): about 2 minutes of CPU on two cores; test_errors is the longest (many fixtures).
#   scripts/valgrind.sh [ctest -R regex]     (default: every test)
# valgrind cannot execute AVX-512 instructions, so OpenBLAS is pinned to its AVX2 "Haswell"
# kernels (SSE3 "Prescott" on CPUs without AVX2). The library is built with DYNCONV_PORTABLE:
# only its baseline x86-64 code, which the AVX2 machines running test.sh never pick, so this
# run also covers that path. Optimised build with debug info, so that errors come with line
# numbers and the run stays short.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test valgrind
build=build/valgrind
# Every test executable target runs through this "emulator": exit code 99 on any error.
emulator="valgrind;--tool=memcheck;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite;--show-leak-kinds=definite;--track-origins=yes;--quiet"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNCONV_BUILD_TESTS=ON \
      -DDYNCONV_BUILD_EXAMPLES=OFF -DDYNCONV_PORTABLE=ON \
      -DCMAKE_CROSSCOMPILING_EMULATOR="$emulator" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
# target_clones leaves name.avx2 symbols behind; the portable build must have none.
if nm "$build/src/libdynconv.so" | grep -q '\.avx2'; then
  echo "valgrind.sh: the DYNCONV_PORTABLE build still contains AVX2 clones" >&2
  exit 1
fi

if grep -qw avx2 /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=Haswell
else
  export OPENBLAS_CORETYPE=Prescott
fi
# One BLAS thread: valgrind serialises threads anyway, and OpenBLAS's idle workers only slow it.
export OPENBLAS_NUM_THREADS=1
echo "== ctest under valgrind memcheck (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)"
args=()
[ $# -gt 0 ] && args=(-R "$1")
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 900 "${args[@]}"
