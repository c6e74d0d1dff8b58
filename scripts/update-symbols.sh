#!/usr/bin/env bash
# Regenerates debian/libdynconv1.symbols from a fresh build of the shared library. Symbols
# already listed keep the version that introduced them; new ones get the library's current
# version (include/dynconv/dynconv.h), removed ones are dropped (which is an ABI break: the
# SONAME must change with them). Run it after adding functions to the API and bumping the
# version, and commit the result with the change: the package build (debian/rules,
# DPKG_GENSYMBOLS_CHECK_LEVEL=4) fails while the file and the library disagree.
#   scripts/update-symbols.sh        prints the diff and rewrites the file
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build deb
header=include/dynconv/dynconv.h
version=$(sed -n 's/^#define DYNCONV_VERSION_STRING "\(.*\)"$/\1/p' "$header")
major=$(sed -n 's/^#define DYNCONV_VERSION_MAJOR \([0-9]*\)$/\1/p' "$header")
symbols=debian/libdynconv${major}.symbols
build=build/symbols
rm -rf "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDYNCONV_BUILD_TESTS=OFF \
      -DDYNCONV_BUILD_EXAMPLES=OFF -DDYNCONV_BUILD_TOOLS=OFF -DDYNCONV_INSTALL_PYTHON=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target dynconv >/dev/null
mkdir -p "$build/pkg/DEBIAN"
template=()
[ -f "$symbols" ] && template=(-I"$symbols")
# -c0: report, never fail; the new file is written in any case.
dpkg-gensymbols -c0 -q -plibdynconv"$major" -v"$version" -P"$build/pkg" \
    -e"$build/src/libdynconv.so.$version" "${template[@]}" -O"$build/new.symbols"
# Who depends on a newer symbol gets at least the version that added it; programs built with
# libdynconv-dev get a dependency at the -dev package's version when they use none newer.
if ! grep -q '^\* Build-Depends-Package:' "$build/new.symbols"; then
  sed -i '1a * Build-Depends-Package: libdynconv-dev' "$build/new.symbols"
fi
if [ -f "$symbols" ]; then
  diff -u "$symbols" "$build/new.symbols" || true
fi
mv "$build/new.symbols" "$symbols"
rm -rf "$build"
echo "update-symbols: wrote $symbols ($(grep -c '^ ' "$symbols") symbols)"
