# Sourced by the scripts that measure speed, after they have built the `dynconv` tool:
#   DYNCONV_CLI=build/x/tools/dynconv . scripts/openblas-env.sh
# OpenBLAS 0.3.21 does not recognise some recent CPUs and falls back to a generic core (its SSE3
# "Prescott" kernels on some AVX-512 Xeons), several times slower. Only then is
# OPENBLAS_CORETYPE set here, to the core that fits the CPU: a core OpenBLAS recognised is never
# replaced, and a value the user already chose is kept. `dynconv info` decides, so the rule lives
# in one place (dcio_blas_better_core); the variable must be set before OpenBLAS loads, which is
# why a script does it for the programs it starts, never libdynconv itself.
_dc_cli=${DYNCONV_CLI:-}
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "openblas-env: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE was set by the caller: kept" >&2
elif [ -z "$_dc_cli" ] || [ ! -x "$_dc_cli" ]; then
  echo "openblas-env: warning: no dynconv tool (DYNCONV_CLI='$_dc_cli') to ask which core" \
       "OpenBLAS runs: OPENBLAS_CORETYPE left unset" >&2
else
  _dc_info=$("$_dc_cli" info 2>/dev/null) || _dc_info=
  _dc_core=$(printf '%s\n' "$_dc_info" | sed -n 's/^BLAS core: *\([^ ]*\).*/\1/p')
  _dc_better=$(printf '%s\n' "$_dc_info" | sed -n 's/^BLAS suggested core: *//p')
  if [ -n "$_dc_better" ]; then
    echo "openblas-env: warning: OpenBLAS fell back to its generic '$_dc_core' core on this" \
         "CPU: setting OPENBLAS_CORETYPE=$_dc_better" >&2
    export OPENBLAS_CORETYPE=$_dc_better
  else
    echo "openblas-env: OpenBLAS runs its '${_dc_core:-unknown}' core, chosen by itself: kept" >&2
  fi
fi
unset _dc_cli _dc_info _dc_core _dc_better
