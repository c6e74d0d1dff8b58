#!/usr/bin/env bash
# Builds the Debian packages (CPack), checks their metadata and contents, unpacks them into a
# scratch root and builds three consumers against the unpacked files only:
#   - a C program compiled with the flags from pkg-config dynconv,
#   - a CMake project using find_package(dynconv),
#   - a program that dlopens libdynconv.so.1 and resolves the API by name and version;
# each runs a small dynamic convolution and compares it with a direct computation. Finally
# apt-get --simulate checks that the packages' dependencies resolve on this system.
#   scripts/package-test.sh [--keep]   (--keep leaves build/package for inspection)
# Nothing is installed into the system and no root is needed (except for deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

scripts/deps.sh build package
build=build/package
rm -rf "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
      -DDYNCONV_BUILD_TESTS=OFF -DDYNCONV_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
(cd "$build" && cpack -G DEB >/dev/null)

fail() { echo "package-test: $*" >&2; exit 1; }
major=$(sed -n 's/^#define DYNCONV_VERSION_MAJOR \([0-9]*\)/\1/p' include/dynconv/dynconv.h)
version=$(sed -n 's/^#define DYNCONV_VERSION_STRING "\(.*\)"/\1/p' include/dynconv/dynconv.h)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
pkgdir="$build/packages"
runtime="$pkgdir/libdynconv${major}_${version}_${arch}.deb"
dev="$pkgdir/libdynconv-dev_${version}_${arch}.deb"
tools="$pkgdir/dynconv-tools_${version}_${arch}.deb"
for deb in "$runtime" "$dev" "$tools"; do
  [ -f "$deb" ] || fail "missing $(basename "$deb"); built: $(ls "$pkgdir")"
done

echo "== package metadata"
for deb in "$runtime" "$dev" "$tools"; do
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version): Depends: $(dpkg-deb -f "$deb" Depends)"
done
dpkg-deb -f "$runtime" Depends | grep -q 'libc6' || fail "runtime does not depend on libc6 (shlibdeps)"
dpkg-deb -f "$runtime" Depends | grep -q 'libopenblas' || fail "runtime does not depend on OpenBLAS"
dpkg-deb -f "$dev" Depends | grep -q "libdynconv${major} (= ${version})" || fail "dev does not pin the runtime"
dpkg-deb -f "$dev" Depends | grep -q 'libopenblas-dev' || fail "dev does not depend on libopenblas-dev"
dpkg-deb -f "$tools" Depends | grep -q "libdynconv${major}" || fail "tools do not depend on the runtime"
dpkg-deb -f "$tools" Depends | grep -q 'libjansson' || fail "tools do not depend on jansson (shlibdeps)"
shlibs=$(dpkg-deb --ctrl-tarfile "$runtime" | tar -xOf - ./shlibs)
echo "shlibs: $shlibs"
echo "$shlibs" | grep -q "^libdynconv ${major} libdynconv${major} (>= ${version})" || fail "bad shlibs file"

echo "== package contents"
contents() { dpkg-deb -c "$1" | awk '{ print $6 }' | grep -v '/$' | sed 's|^\./||' | sort; }
libdir="usr/lib/$multiarch"
contents "$runtime" | tee "$build/runtime.list"
[ "$(grep -c . "$build/runtime.list")" -eq 2 ] || fail "runtime holds more than the library and its SONAME link"
grep -qx "$libdir/libdynconv.so.$major" "$build/runtime.list" || fail "runtime lacks the SONAME link"
grep -qx "$libdir/libdynconv.so.$version" "$build/runtime.list" || fail "runtime lacks the library"
contents "$dev" | tee "$build/dev.list"
for f in usr/include/dynconv/dynconv.h "$libdir/libdynconv.so" "$libdir/pkgconfig/dynconv.pc" \
         "$libdir/cmake/dynconv/dynconvConfig.cmake"; do
  grep -qx "$f" "$build/dev.list" || fail "dev lacks $f"
done
! grep -q "libdynconv.so.$major" "$build/dev.list" || fail "dev holds the runtime library"
contents "$tools" | tee "$build/tools.list"
grep -qx usr/bin/dynconv "$build/tools.list" || fail "tools lack usr/bin/dynconv"

echo "== unpacking into a scratch root"
root=$(readlink -f "$build")/root
for deb in "$runtime" "$dev" "$tools"; do
  dpkg-deb -x "$deb" "$root"
done
export PKG_CONFIG_PATH="$root/$libdir/pkgconfig"
export LD_LIBRARY_PATH="$root/$libdir"
cflags=$(pkg-config --cflags dynconv)
libs=$(pkg-config --libs dynconv)
echo "pkg-config: $cflags $libs"
incdir=$(pkg-config --variable=includedir dynconv)
[ "$(readlink -f "$incdir")" = "$root/usr/include" ] || fail "pkg-config's includedir $incdir is not in the scratch root"
pkg-config --exists 'dynconv >= 1' --print-errors || fail "pkg-config version check"
[ "$(pkg-config --modversion dynconv)" = "$version" ] || fail "dynconv.pc has the wrong version"
pkg-config --static --libs dynconv >/dev/null || fail "pkg-config --static (Requires.private openblas)"

# Each consumer must run on the unpacked library, not on a copy found elsewhere.
uses_root_lib() {
  ldd "$1" | grep "libdynconv.so.$major" | grep -q "$root/" || fail "$1 does not load the unpacked library"
}
cons=tests/package
out="$build/consumers"
mkdir -p "$out"

echo "== consumer 1: pkg-config"
# shellcheck disable=SC2086  # the flags are words
cc -std=c11 -Wall -Wextra -Werror $cflags "$cons/linked_consumer.c" -o "$out/pkgconfig_consumer" $libs -lm
uses_root_lib "$out/pkgconfig_consumer"
"$out/pkgconfig_consumer" "pkg-config consumer"

echo "== consumer 2: CMake find_package(dynconv)"
cmake -S "$cons/cmake-consumer" -B "$out/cmake" -DCMAKE_PREFIX_PATH="$root/usr" \
      -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$out/cmake" >/dev/null
grep -q "dynconv_DIR:PATH=$root/" "$out/cmake/CMakeCache.txt" || fail "CMake did not find the unpacked package"
uses_root_lib "$out/cmake/cmake_consumer"
"$out/cmake/cmake_consumer" "CMake consumer"

echo "== consumer 3: dlopen"
cc -std=c11 -Wall -Wextra -Werror -I"$root/usr/include" "$cons/dlopen_consumer.c" \
   -o "$out/dlopen_consumer" -ldl -lm
! ldd "$out/dlopen_consumer" | grep -q libdynconv || fail "the dlopen consumer is linked to libdynconv"
"$out/dlopen_consumer"

echo "== the packaged tool"
"$root/usr/bin/dynconv" --version
"$root/usr/bin/dynconv" --version | grep -q "$version" || fail "dynconv --version does not say $version"

echo "== dependencies resolve (apt-get --simulate)"
if apt-get install --simulate -qq "$(readlink -f "$runtime")" "$(readlink -f "$dev")" \
     "$(readlink -f "$tools")" >"$build/simulate.log" 2>&1; then
  grep -E '^Inst (libdynconv|dynconv)' "$build/simulate.log" || true
else
  cat "$build/simulate.log"
  fail "apt-get cannot resolve the packages' dependencies"
fi

[ "$keep" -eq 1 ] || rm -rf "$build"
echo "package-test: all packages and consumers OK"
