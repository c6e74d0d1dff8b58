#!/bin/sh
# The installed dynconv finds the installed libdynconv.so.1: install the runtime and tools
# components into a temporary prefix and run the program from there.
#   installed_tool.sh BUILD_DIR LIBDIR rpath|no-rpath
# rpath: the program has RUNPATH $ORIGIN/<bin to LIBDIR> (a private prefix) and must find the
# library without LD_LIBRARY_PATH; no-rpath (a system libdir, e.g. the Debian package): the
# program has no RUNPATH, and finds the prefix's library only through LD_LIBRARY_PATH.
set -eu
build=$1
libdir=$2
mode=$3
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
for component in runtime tools; do
  cmake --install "$build" --prefix "$prefix" --component "$component" >/dev/null
done
runpath=$(readelf -d "$prefix/bin/dynconv" | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p')
unset LD_LIBRARY_PATH
case "$mode" in
  rpath)
    # shellcheck disable=SC2016  # a literal $ORIGIN
    case "$runpath" in
      '$ORIGIN/'*) echo "RUNPATH $runpath" ;;
      *) echo "installed dynconv has RUNPATH '$runpath', not one relative to \$ORIGIN" >&2; exit 1 ;;
    esac ;;
  no-rpath)
    [ -z "$runpath" ] || { echo "installed dynconv has RUNPATH '$runpath'" >&2; exit 1; }
    echo "no RUNPATH; LD_LIBRARY_PATH=$prefix/$libdir"
    LD_LIBRARY_PATH="$prefix/$libdir"
    export LD_LIBRARY_PATH ;;
  *) echo "installed_tool.sh: mode '$mode' is not rpath or no-rpath" >&2; exit 2 ;;
esac
"$prefix/bin/dynconv" --version
lib=$(ldd "$prefix/bin/dynconv" | awk '/libdynconv\.so\.1/ {print $3}')
case "$lib" in
  "$prefix"/*) echo "libdynconv from the prefix: $lib" ;;
  *) echo "installed dynconv loads libdynconv from '$lib', not from $prefix" >&2; exit 1 ;;
esac
"$prefix/bin/dynconv" info >/dev/null
