#!/usr/bin/env bash
# Quick start, part 2: build with warnings as errors and run the whole test suite, first as
# released (optimised), then under AddressSanitizer + UndefinedBehaviorSanitizer, the threaded
# tests under ThreadSanitizer; then check the ABI against the committed baseline.
# Every stage runs even when an earlier one failed; the script ends with one line per stage
# and "N passed, N failed", and exits 1 if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/stages.sh
jobs=$(nproc)
python_lib="$PWD/build/release/src/libdynconv.so.1"
python_cli="$PWD/build/release/tools/dynconv"

configure_and_build() { # BUILD_DIR CMAKE_ARGS...: configure, then build everything
  local dir=$1
  shift
  cmake -S . -B "$dir" -DDYNCONV_WERROR=ON -DDYNCONV_BUILD_TESTS=ON "$@"
  cmake --build "$dir" -j"$jobs"
}

# ThreadSanitizer: only the tests labelled "threads" (the library's threads and handles used
# from parallel threads), which is what it is for. Address-space randomisation as some kernels
# configure it breaks TSan's start-up, hence setarch -R; any report fails the test (exit 66).
tsan_build() {
  cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DDYNCONV_WERROR=ON -DDYNCONV_BUILD_TESTS=ON \
        -DDYNCONV_TSAN=ON -DDYNCONV_BUILD_EXAMPLES=OFF -DDYNCONV_BUILD_TOOLS=OFF
  cmake --build build/tsan -j"$jobs"
}
tsan_tests() {
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
    setarch "$(uname -m)" -R ctest --test-dir build/tsan -L threads --output-on-failure \
    -j"$jobs" --no-tests=error
}

stage "dependencies (apt-get when missing)" scripts/deps.sh test python bench abi clang
# The benchmarks are built here too (and smoke-run by ctest) so that they cannot rot.
stage "release build" configure_and_build build/release -DCMAKE_BUILD_TYPE=Release \
      -DDYNCONV_BUILD_BENCHMARKS=ON
stage "release tests (ctest)" ctest --test-dir build/release --output-on-failure -j"$jobs" \
      --no-tests=error
stage "Python package, exporter and PyTorch round trip (release build)" \
      env DYNCONV_LIBRARY="$python_lib" DYNCONV_CLI="$python_cli" \
      /usr/bin/python3 -m unittest discover -s python/tests -v
stage "sanitizer build (ASan + UBSan)" configure_and_build build/sanitize \
      -DCMAKE_BUILD_TYPE=Debug -DDYNCONV_SANITIZE=ON -DDYNCONV_BUILD_BENCHMARKS=ON
stage "sanitizer tests (ctest)" ctest --test-dir build/sanitize --output-on-failure -j"$jobs" \
      --no-tests=error
# clang-14 finds warnings gcc does not (-Wformat-nonliteral, -Wfor-loop-analysis, ...): the
# whole tree is compiled with it too (not run: the gcc builds are).
clang_build() { CC=clang-14 configure_and_build build/clang -DCMAKE_BUILD_TYPE=Release; }
stage "clang build (warnings as errors)" clang_build
stage "ThreadSanitizer build" tsan_build
stage "ThreadSanitizer: threaded tests" tsan_tests
stage "backward benchmark smoke run (builds and runs; measures nothing)" \
      bench/backward_compare.sh --smoke
stage "network benchmark smoke run (runs and checks the outputs; measures nothing)" \
      env DYNCONV_LIBRARY="$python_lib" DYNCONV_CLI="$python_cli" PYTHONPATH="$PWD/python" \
      /usr/bin/python3 bench/network_compare.py --smoke
stage "ABI check against the committed baseline (abidiff)" scripts/abi-check.sh
stages_summary
