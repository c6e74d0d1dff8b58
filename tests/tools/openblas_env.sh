#!/bin/bash
# scripts/openblas-env.sh sets OPENBLAS_CORETYPE only when `dynconv info` reports a generic
# fallback, keeps a caller's value and a core OpenBLAS recognised, and leaves the variable unset
# when it cannot ask. A stand-in for `dynconv info` prints each situation's BLAS lines.
#   openblas_env.sh SOURCE_DIR
set -u
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fake() { # fake NAME LINES...: a program that prints LINES as `NAME info` would
  local f=$tmp/$1
  shift
  { echo '#!/bin/sh'; for l in "$@"; do printf 'echo "%s"\n' "$l"; done; } > "$f"
  chmod +x "$f"
  echo "$f"
}

check() { # check WHAT EXPECTED CLI [CALLER_VALUE]
  local what=$1 want=$2 cli=$3 got
  got=$(unset OPENBLAS_CORETYPE; [ -n "${4:-}" ] && export OPENBLAS_CORETYPE=$4
        DYNCONV_CLI=$cli; . "$src/scripts/openblas-env.sh" 2>/dev/null
        echo "${OPENBLAS_CORETYPE:-unset}")
  if [ "$got" = "$want" ]; then
    echo "ok: $what: $got"
  else
    echo "FAIL: $what: OPENBLAS_CORETYPE=$got, expected $want"
    failures=$((failures + 1))
  fi
}

fallback=$(fake fallback "BLAS core:     Prescott (chosen by OpenBLAS)" "BLAS fallback: yes" \
                         "BLAS suggested core: SkylakeX")
recognised=$(fake recognised "BLAS core:     Cooperlake (chosen by OpenBLAS)" \
                             "BLAS fallback: no")
check "generic fallback on an AVX-512 CPU" SkylakeX "$fallback"
check "core recognised by OpenBLAS" unset "$recognised"
check "caller's value, even a generic one" Prescott "$fallback" Prescott
check "no tool to ask" unset "$tmp/missing"
[ "$failures" -eq 0 ]
