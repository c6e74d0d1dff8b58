#!/usr/bin/env bash
# Runs the release test suite once under each OpenBLAS core type this CPU can execute, with
# OPENBLAS_CORETYPE set for the whole run: OpenBLAS's kernels differ per core (blocking,
# summation order, and on SkylakeX and Cooperlake a small-matrix path that allocates), and the
# machines the library meets differ too. Each run first checks that OpenBLAS really runs the
# core it was asked for.
#   scripts/coretype-matrix.sh [BUILD_DIR]     (default build/release, built by scripts/test.sh)
# The cores: the one OpenBLAS picks by itself (or the environment's OPENBLAS_CORETYPE, when it
# is set), Prescott, Haswell and Zen (the last two where the CPU has AVX2 and FMA), SkylakeX
# where it has AVX-512 F/BW/VL/DQ/CD, and Cooperlake where it also has AVX-512 BF16. Exit
# status 1 if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
cli=$build/tools/dynconv
[ -x "$cli" ] || { echo "coretype-matrix.sh: no $cli: build $build first" >&2; exit 2; }

flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { case " $flags " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
cores=(Prescott)
if has avx2 && has fma; then cores+=(Haswell Zen); fi
if has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd; then
  cores+=(SkylakeX)
  # Cooperlake is SkylakeX plus the bf16 instructions of its sbgemm kernels.
  if has avx512_bf16; then
    cores+=(Cooperlake)
  else
    echo "coretype-matrix: no avx512_bf16 on this CPU: OpenBLAS's Cooperlake core is not run"
  fi
fi

# The core in use, as `dynconv info` reports it (first word after "BLAS core:").
core_in_use() { "$cli" info 2>/dev/null | sed -n 's/^BLAS core: *\([^ ]*\).*/\1/p'; }

failed=0
run_suite() { # run_suite LABEL: ctest in the current environment
  echo "== ctest with OpenBLAS core $1"
  if ! ctest --test-dir "$build" -j"$(nproc)" --output-on-failure --timeout 900; then
    echo "FAILED: the test suite under OpenBLAS core $1"
    failed=$((failed + 1))
  fi
}

if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  first="$(core_in_use) (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE from the environment)"
else
  first="$(core_in_use) (chosen by OpenBLAS)"
fi
run_suite "$first"

for core in "${cores[@]}"; do
  got=$(OPENBLAS_CORETYPE=$core core_in_use)
  if [ "${got,,}" != "${core,,}" ]; then
    echo "FAILED: OPENBLAS_CORETYPE=$core, but OpenBLAS runs '$got'"
    failed=$((failed + 1))
    continue
  fi
  OPENBLAS_CORETYPE=$core run_suite "$core (OPENBLAS_CORETYPE=$core)"
done
echo "coretype-matrix: $((${#cores[@]} + 1)) runs ($first; ${cores[*]}), $failed failed"
[ "$failed" -eq 0 ]
