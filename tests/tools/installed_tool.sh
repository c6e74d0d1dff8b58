#!/bin/sh
# The installed dynconv finds the installed libdynconv.so.1 (RUNPATH $ORIGIN/../LIBDIR) without
# LD_LIBRARY_PATH: install the runtime and tools components into a temporary prefix and run it.
#   installed_tool.sh BUILD_DIR
set -eu
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
for component in runtime tools; do
  cmake --install "$build" --prefix "$prefix" --component "$component" >/dev/null
done
unset LD_LIBRARY_PATH
"$prefix/bin/dynconv" --version
lib=$(ldd "$prefix/bin/dynconv" | awk '/libdynconv\.so\.1/ {print $3}')
case "$lib" in
  "$prefix"/*) echo "libdynconv from the prefix: $lib" ;;
  *) echo "installed dynconv loads libdynconv from '$lib', not from $prefix" >&2; exit 1 ;;
esac
"$prefix/bin/dynconv" info >/dev/null
