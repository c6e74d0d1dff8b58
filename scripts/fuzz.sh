#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-14 (ASan + UBSan) and runs each for a bounded time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 45)
#   FUZZ_SEED=N scripts/fuzz.sh ...           (libFuzzer's -seed; unset or 0: a new one each run)
# CI gives a fixed seed, so that a run on a given tree is repeatable and a failure it reports
# can be replayed; runs by hand explore with a new seed each time.
# The committed corpus (fuzz/corpus/<target>) seeds each run and is never modified; new inputs
# go to build/fuzz/corpus/<target>. A failing input is written to build/fuzz/artifacts/ and the
# script fails: add it to fuzz/corpus/<target>/ as regress-<what> (ctest replays it) and write a
# named test in tests/test_regressions.c.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-45}
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a number" >&2; exit 2 ;; esac
seed=${FUZZ_SEED:-0}
case "$seed" in ''|*[!0-9]*) echo "fuzz.sh: FUZZ_SEED must be a number" >&2; exit 2 ;; esac

scripts/deps.sh build fuzz
build=build/fuzz
CC=clang-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNCONV_FUZZ=ON \
      -DDYNCONV_SANITIZE=ON -DDYNCONV_WERROR=ON -DDYNCONV_BUILD_TESTS=OFF \
      -DDYNCONV_BUILD_EXAMPLES=OFF >/dev/null
targets=()
for dir in fuzz/corpus/*/; do
  targets+=("fuzz_$(basename "$dir")")
done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

# One BLAS thread: the harness measures nothing, and threads only add noise and memory.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OPENBLAS_NUM_THREADS=1
mkdir -p "$build/artifacts"
status=0
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  work="$build/corpus/$name"
  mkdir -p "$work"
  echo "== $t for ${seconds}s (seed ${seed}; 0: libFuzzer picks one)"
  if ! "$build/fuzz/$t" -seed="$seed" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
       "$work" "fuzz/corpus/$name" 2>"$build/$t.log"; then
    tail -n 60 "$build/$t.log"
    echo "fuzz.sh: $t failed; the input is in $build/artifacts/" >&2
    status=1
  else
    grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$build/$t.log" || true
  fi
done
exit "$status"
