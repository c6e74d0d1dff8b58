#!/usr/bin/env bash
# Runs the whole ctest suite under valgrind memcheck (errors and definite leaks fail the
# test): about 2 minutes of CPU on two cores; test_errors is the longest (many fixtures).
#   scripts/valgrind.sh [ctest -R regex]     (default: every test)
# valgrind cannot execute AVX-512 instructions, so OpenBLAS is pinned to its AVX2 "Haswell"
# kernels (SSE3 "Prescott" on CPUs without AVX2); the library's own code dispatches on CPUID,
# which valgrind reports without AVX-512. Optimised build with debug info, so that errors
# come with line numbers and the run stays short.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test valgrind
build=build/valgrind
# Every test executable target runs through this "emulator": exit code 99 on any error.
emulator="valgrind;--tool=memcheck;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite;--show-leak-kinds=definite;--track-origins=yes;--quiet"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNCONV_BUILD_TESTS=ON \
      -DDYNCONV_BUILD_EXAMPLES=OFF -DCMAKE_CROSSCOMPILING_EMULATOR="$emulator" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

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
