# Sourced by scripts/test.sh and .ci/run: runs named stages one after another, each even when
# an earlier one failed, and closes with one result line per stage and a count.
#   stage NAME COMMAND [ARGS...]     run COMMAND, record whether it exited 0 and how long it took
#   stages_summary                   print the results and "N passed, N failed"; fail if any did
# A stage that depends on a failed one still runs: it fails on its own, and says why.
_stage_names=()
_stage_status=()
_stage_seconds=()

stage() {
  local name=$1 start=$SECONDS rc
  shift
  echo
  echo "== $name"
  # A subshell with errexit: a stage's own commands stop at their first failure, the caller's
  # script goes on to the next stage.
  ( set -e; "$@" )
  rc=$?
  _stage_names+=("$name")
  _stage_status+=("$rc")
  _stage_seconds+=($((SECONDS - start)))
  if [ "$rc" -eq 0 ]; then
    echo "== $name: passed ($((SECONDS - start)) s)"
  else
    echo "== $name: FAILED with exit status $rc ($((SECONDS - start)) s)"
  fi
  return 0
}

stages_summary() {
  local i passed=0 failed=0
  echo
  echo "== results"
  for i in "${!_stage_names[@]}"; do
    if [ "${_stage_status[$i]}" -eq 0 ]; then
      passed=$((passed + 1))
      printf 'passed  %5d s  %s\n' "${_stage_seconds[$i]}" "${_stage_names[$i]}"
    else
      failed=$((failed + 1))
      printf 'FAILED  %5d s  %s (exit status %d)\n' "${_stage_seconds[$i]}" \
             "${_stage_names[$i]}" "${_stage_status[$i]}"
    fi
  done
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
