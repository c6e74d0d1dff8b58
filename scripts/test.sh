#!/usr/bin/env bash
# Quick start, part 2: build with warnings as errors and run the whole test suite, first as
# released (optimised), then under AddressSanitizer + UndefinedBehaviorSanitizer; then check the
# ABI against the committed baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test python bench
jobs=$(nproc)

echo "== release build"
# The benchmarks are built here too (and smoke-run by ctest) so that they cannot rot.
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DDYNCONV_WERROR=ON -DDYNCONV_BUILD_TESTS=ON \
      -DDYNCONV_BUILD_BENCHMARKS=ON
cmake --build build/release -j"$jobs"
ctest --test-dir build/release --output-on-failure -j"$jobs"

echo "== Python package, exporter and PyTorch round trip (release build)"
DYNCONV_LIBRARY="$PWD/build/release/src/libdynconv.so.1" DYNCONV_CLI="$PWD/build/release/tools/dynconv" \
  /usr/bin/python3 -m unittest discover -s python/tests -v

echo "== sanitizer build (ASan + UBSan)"
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DDYNCONV_WERROR=ON -DDYNCONV_BUILD_TESTS=ON \
      -DDYNCONV_SANITIZE=ON -DDYNCONV_BUILD_BENCHMARKS=ON
cmake --build build/sanitize -j"$jobs"
ctest --test-dir build/sanitize --output-on-failure -j"$jobs"

echo "== backward benchmark smoke run (builds and runs; measures nothing)"
bench/backward_compare.sh --smoke

echo "== ABI check against the committed baseline (abidiff)"
scripts/abi-check.sh
