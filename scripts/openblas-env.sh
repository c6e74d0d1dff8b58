# Sourced by the scripts that measure speed. OpenBLAS 0.3.21 does not recognise some recent
# AVX-512 CPUs and falls back to its SSE3 kernels ("Prescott"), several times slower. The
# variable must be set before the library is loaded, so it is set here, in the environment of
# the program, never by libdynconv itself. A value the user already chose is kept.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
