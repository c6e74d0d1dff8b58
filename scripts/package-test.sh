#!/usr/bin/env bash
# The Debian packages, built, checked and installed for real:
#   1. copies the source tree (tracked and new files, nothing ignored such as build/) into a
#      temporary directory and runs `dpkg-buildpackage -us -uc -b` there (the build runs the
#      test suite and checks the symbols file), so the checkout and its parent stay untouched;
#   2. lintian on the .changes (every package): any error or warning fails;
#   3. checks the packages' metadata: dependencies, Multi-Arch, the symbols file and ldconfig
#      trigger of libdynconv1, no RUNPATH in the installed program, the -dbgsym packages;
#   4. `apt-get install -y ./*.deb` as root and debian/tests (autopkgtest, null runner); then,
#      against /usr only: a C program built with pkg-config, a CMake project with
#      find_package(dynconv), a program that dlopens libdynconv.so.1 (each runs a dynamic
#      convolution and checks it against a direct computation), the Python module with
#      Debian's /usr/bin/python3, `dynconv --help`, `dynconv-export --help`, both manual pages;
#   5. `apt-get purge -y` of the packages and of what apt pulled in for them, and checks that
#      libdynconv is gone.
# The machine is left as it was, also when a step fails (except for the build dependencies,
# which scripts/deps.sh installs and keeps, as the other scripts do).
#   scripts/package-test.sh [--keep] [--nocheck]
#     --keep      keep the temporary directory (packages, build log) and print its name
#     --nocheck   build without running the test suite (DEB_BUILD_OPTIONS=nocheck)
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD
keep=0
nocheck=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    --nocheck) nocheck=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-test: unknown argument '$arg' (--keep, --nocheck)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
# grep -q at the end of a pipeline may stop reading early: under pipefail the writer's SIGPIPE
# would then fail the pipeline. This reads all of its input.
has() { grep "$@" >/dev/null; }
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  fail "installing the packages needs root (or sudo)"
fi
scripts/deps.sh deb

header=include/dynconv/dynconv.h
version=$(sed -n 's/^#define DYNCONV_VERSION_STRING "\(.*\)"$/\1/p' "$header")
major=$(sed -n 's/^#define DYNCONV_VERSION_MAJOR \([0-9]*\)$/\1/p' "$header")
debversion=$(dpkg-parsechangelog -l debian/changelog -S Version)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$multiarch
runtime=libdynconv$major
packages=("$runtime" libdynconv-dev dynconv-tools python3-dynconv)
dbgsym=("$runtime-dbgsym" dynconv-tools-dbgsym)

# Installed packages of ours would be replaced and then purged: refuse rather than touch them.
installed_pkgs() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null |
                   awk '$1 ~ /^.i/ { print $2 }' | sort -u; }
for p in "${packages[@]}" "${dbgsym[@]}"; do
  if installed_pkgs | has -x "$p"; then
    fail "$p is installed on this machine; remove it first (apt-get purge ${packages[*]} ${dbgsym[*]})"
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/dynconv-package-test.XXXXXX")
before="$work/installed-before"
installed_pkgs >"$before"
did_install=0
cleanup() {
  local rc=$?
  if [ "$did_install" -eq 1 ]; then
    # Our packages, and whatever apt installed for them that was not there before.
    local new
    new=$(installed_pkgs | comm -13 "$before" - | tr '\n' ' ')
    if [ -n "$new" ]; then
      echo "== purging: $new"
      # shellcheck disable=SC2086  # package names are words
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get purge -y -qq $new >"$work/purge.log" 2>&1 ||
        { cat "$work/purge.log"; rc=1; }
    fi
  fi
  if [ "$keep" -eq 1 ]; then
    echo "package-test: kept $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "copying the source tree to $work/libdynconv-$debversion"
src="$work/libdynconv-$debversion"
mkdir -p "$src"
if git -C "$checkout" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and new files as they are now, deleted ones left out, ignored ones (build/) too.
  # shellcheck disable=SC2016  # the inner shell expands "$f"
  git -C "$checkout" ls-files -z --cached --others --exclude-standard |
    (cd "$checkout" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
    tar -C "$checkout" --null -T - -cf - | tar -C "$src" -xf -
else
  tar -C "$checkout" --exclude=./build -cf - . | tar -C "$src" -xf -
fi

step "dpkg-buildpackage -us -uc -b$([ "$nocheck" -eq 1 ] && echo ' (nocheck)')"
opts="parallel=$(nproc)"
[ "$nocheck" -eq 1 ] && opts="$opts nocheck"
if ! (cd "$src" && dpkg-checkbuilddeps && DEB_BUILD_OPTIONS="$opts" dpkg-buildpackage -us -uc -b) \
     >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log"
  fail "dpkg-buildpackage failed (the whole log: --keep, then $work/build.log)"
fi
grep -E 'dpkg-gensymbols: warning|tests passed|tests failed' "$work/build.log" || true
changes="$work/libdynconv_${debversion}_${arch}.changes"
[ -f "$changes" ] || fail "no $(basename "$changes"); built: $(ls "$work")"
deb() { ls "$work/$1_${debversion}_"*.deb; }
for p in "${packages[@]}" "${dbgsym[@]}"; do
  deb "$p" >/dev/null 2>&1 || fail "package $p was not built"
done

step "lintian (fails on errors and warnings)"
lintian --display-info --fail-on error,warning "$changes" | tee "$work/lintian.log" ||
  fail "lintian reported errors or warnings"
[ -s "$work/lintian.log" ] || echo "(no tags)"

step "package metadata"
field() { dpkg-deb -f "$(deb "$1")" "$2"; }
for p in "${packages[@]}"; do
  echo "$p: Architecture: $(field "$p" Architecture), Multi-Arch: $(field "$p" Multi-Arch)," \
       "Depends: $(field "$p" Depends)"
done
[ "$(field "$runtime" Multi-Arch)" = same ] || fail "$runtime is not Multi-Arch: same"
[ "$(field libdynconv-dev Multi-Arch)" = same ] || fail "libdynconv-dev is not Multi-Arch: same"
[ "$(field dynconv-tools Multi-Arch)" = foreign ] || fail "dynconv-tools is not Multi-Arch: foreign"
field "$runtime" Depends | has libopenblas || fail "$runtime does not depend on OpenBLAS"
field libdynconv-dev Depends | has "$runtime (= $debversion)" || fail "dev does not pin the runtime"
field libdynconv-dev Depends | has libopenblas-dev || fail "dev does not depend on libopenblas-dev"
field dynconv-tools Depends | has "$runtime (>= " || fail "tools do not depend on the runtime"
field dynconv-tools Depends | has libjansson || fail "tools do not depend on jansson"
field python3-dynconv Depends | has "$runtime (>= " || fail "python3-dynconv lacks the library"
field python3-dynconv Depends | has python3-numpy || fail "python3-dynconv lacks numpy"
ctrl() { dpkg-deb --ctrl-tarfile "$(deb "$1")" | tar -xOf - "./$2" 2>/dev/null; }
ctrl "$runtime" symbols >"$work/symbols" || fail "$runtime has no symbols file"
head -n 2 "$work/symbols"
grep -q "^libdynconv.so.$major $runtime #MINVER#" "$work/symbols" || fail "bad symbols file"
ctrl "$runtime" triggers | has -x 'activate-noawait ldconfig' || fail "no ldconfig trigger"
for script in preinst postinst prerm postrm; do
  ! ctrl "$runtime" "$script" | has ldconfig || fail "$runtime's $script calls ldconfig"
done
unpacked="$work/unpacked"
for p in "${packages[@]}"; do dpkg-deb -x "$(deb "$p")" "$unpacked"; done
if readelf -d "$unpacked/usr/bin/dynconv" | has -E 'RPATH|RUNPATH'; then
  fail "the packaged dynconv has an rpath: $(readelf -d "$unpacked/usr/bin/dynconv" | grep -E 'R(UN)?PATH')"
fi
readelf -d "$unpacked/usr/bin/dynconv" | has 'FLAGS.*BIND_NOW' || fail "dynconv is not linked with -z now"
readelf -d "$unpacked$libdir/libdynconv.so.$version" | has 'FLAGS.*BIND_NOW' ||
  fail "libdynconv is not linked with -z now"
nm -D "$unpacked/usr/bin/dynconv" | has '__printf_chk' || fail "dynconv is not built with fortify"
echo "no RUNPATH in usr/bin/dynconv; BIND_NOW and fortify in place"

step "apt-get install -y ./*.deb"
did_install=1
(cd "$work" && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq ./*.deb) \
  >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "apt-get install failed"; }
installed_pkgs | comm -13 "$before" - | tr '\n' ' '; echo
# Only what the packages installed may be used from here on.
unset LD_LIBRARY_PATH PKG_CONFIG_PATH CMAKE_PREFIX_PATH DYNCONV_LIBRARY PYTHONPATH || true
cd "$work"

step "autopkgtest: debian/tests on the installed packages (null runner)"
# autopkgtest copies the tree it is given: without the build's files it is a small copy.
(cd "$src" && debian/rules clean) >"$work/clean.log" 2>&1 ||
  { cat "$work/clean.log"; fail "debian/rules clean"; }
autopkgtest --no-built-binaries "$src" -- null >"$work/autopkgtest.log" 2>&1 ||
  { tail -n 40 "$work/autopkgtest.log"; fail "autopkgtest failed"; }
sed -n '/@@@@@@@@@@@@@@@@@@@@ summary/,$p' "$work/autopkgtest.log"

step "consumer 1: pkg-config"
cflags=$(pkg-config --cflags dynconv)
libs=$(pkg-config --libs dynconv)
echo "pkg-config: $cflags $libs; version $(pkg-config --modversion dynconv)"
[ "$(pkg-config --modversion dynconv)" = "$version" ] || fail "dynconv.pc has the wrong version"
[ "$(pkg-config --variable=includedir dynconv)" = /usr/include ] || fail "dynconv.pc's includedir"
for flag in $cflags $libs; do
  case "$flag" in -I/usr/include | -I/usr/include/ | -L"$libdir" | -L"$libdir"/)
    fail "pkg-config gives the system directory $flag" ;; esac
done
pkg-config --static --libs dynconv >/dev/null || fail "pkg-config --static (Requires.private openblas)"
cons="$src/tests/package"
uses_system_lib() {
  local path
  path=$(ldd "$1" | awk -v lib="libdynconv.so.$major" '$1 == lib { print $3 }')
  [ "$(readlink -f "$path")" = "$libdir/libdynconv.so.$version" ] ||
    fail "$1 loads '$path', not $libdir/libdynconv.so.$version"
}
# shellcheck disable=SC2086  # the flags are words
cc -std=c11 -Wall -Wextra -Werror $cflags "$cons/linked_consumer.c" -o pkgconfig_consumer $libs -lm
uses_system_lib pkgconfig_consumer
./pkgconfig_consumer "pkg-config consumer"

step "consumer 2: CMake find_package(dynconv)"
cmake -S "$cons/cmake-consumer" -B cmake-consumer -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build cmake-consumer >/dev/null
grep -q "^dynconv_DIR:PATH=$libdir/cmake/dynconv$" cmake-consumer/CMakeCache.txt ||
  fail "CMake found $(grep '^dynconv_DIR' cmake-consumer/CMakeCache.txt), not $libdir/cmake/dynconv"
uses_system_lib cmake-consumer/cmake_consumer
cmake-consumer/cmake_consumer "CMake consumer"

step "consumer 3: dlopen"
cc -std=c11 -Wall -Wextra -Werror "$cons/dlopen_consumer.c" -o dlopen_consumer -ldl -lm
! ldd dlopen_consumer | has libdynconv || fail "the dlopen consumer is linked to libdynconv"
./dlopen_consumer

step "the Python module (/usr/bin/python3) and dynconv-export"
/usr/bin/python3 -c "import dynconv; print(dynconv.__version__)" | tee python.out
[ "$(cat python.out)" = "$version" ] || fail "dynconv.__version__ is not $version"
/usr/bin/python3 - "$version" "$libdir" <<'EOF' || fail "the Python module does not run on /usr"
import os, sys
import dynconv
version, libdir = sys.argv[1:]
assert dynconv.__file__.startswith("/usr/lib/python3/dist-packages/dynconv/"), dynconv.__file__
assert dynconv.version() == version, (dynconv.version(), version)
path = [line.split()[-1] for line in open("/proc/self/maps") if "libdynconv.so" in line][0]
assert os.path.realpath(path) == os.path.join(libdir, "libdynconv.so." + version), path
print(f"dynconv {dynconv.__version__} from {os.path.dirname(dynconv.__file__)}, library {path}")
EOF
[ "$(command -v dynconv-export)" = /usr/bin/dynconv-export ] ||
  fail "dynconv-export is not /usr/bin/dynconv-export"
dynconv-export --help >export-help.txt || fail "dynconv-export --help failed"
head -n 1 export-help.txt
grep -q '^usage: dynconv-export' export-help.txt || fail "dynconv-export --help prints no usage"
set +e; dynconv-export >/dev/null 2>&1; rc=$?; set -e
[ "$rc" -eq 2 ] || fail "dynconv-export without arguments exits $rc, not 2 (bad usage)"

step "the dynconv program"
[ "$(command -v dynconv)" = /usr/bin/dynconv ] || fail "dynconv is not /usr/bin/dynconv"
dynconv --help >help.txt || fail "dynconv --help failed"
head -n 1 help.txt
grep -q '^usage: dynconv <command>' help.txt || fail "dynconv --help prints no usage"
dynconv --version | tee version.out
grep -qx "dynconv $version" version.out || fail "dynconv --version does not say $version"
uses_system_lib /usr/bin/dynconv

step "manual pages"
# Minimal images may tell dpkg to drop manual pages (path-exclude): read them from the package.
man_excluded=0
if grep -hs '^path-exclude' /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/* | has '/usr/share/man'; then
  man_excluded=1
fi
for page in dynconv dynconv-export; do
  file=/usr/share/man/man1/$page.1.gz
  if [ "$man_excluded" -eq 1 ]; then
    echo "dpkg excludes /usr/share/man here: reading $page(1) from the package"
    file="$unpacked$file"
    [ -f "$file" ] || fail "$page.1.gz is not in the package"
    MANWIDTH=80 man -l "$file" 2>man-warnings.txt | sed 's/.\x08//g' >"$page.txt"
  else
    [ -f "$file" ] || fail "$file is not installed"
    [ "$(man -w "$page")" = "$file" ] || fail "man -w $page finds $(man -w "$page"), not $file"
    MANWIDTH=80 man "$page" 2>man-warnings.txt | sed 's/.\x08//g' >"$page.txt"
  fi
  [ ! -s man-warnings.txt ] || { cat man-warnings.txt; fail "man $page warns"; }
  grep -q "^NAME" "$page.txt" || fail "man $page has no NAME section"
  grep -q "^SYNOPSIS" "$page.txt" || fail "man $page has no SYNOPSIS section"
  echo "man $page: $(sed -n '/^NAME/{n;p;q}' "$page.txt" | sed 's/^ *//')"
done

step "apt-get purge"
(DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get purge -y -qq "${packages[@]}" "${dbgsym[@]}") \
  >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "apt-get purge failed"; }
leftover=$(installed_pkgs | comm -13 "$before" - | tr '\n' ' ')
if [ -n "$leftover" ]; then
  echo "purging what apt installed for the packages: $leftover"
  # shellcheck disable=SC2086  # package names are words
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get purge -y -qq $leftover >>"$work/purge.log" 2>&1 ||
    { cat "$work/purge.log"; fail "apt-get purge failed"; }
fi
did_install=0
leftover=$(installed_pkgs | comm -13 "$before" - | tr '\n' ' ')
[ -z "$leftover" ] || fail "packages remain: $leftover"
for p in "${packages[@]}" "${dbgsym[@]}"; do
  ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | has -v '^unknown ok not-installed$' ||
    fail "dpkg still knows $p: $(dpkg-query -W -f='${Status}' "$p")"
done
! ls "$libdir"/libdynconv* /usr/include/dynconv /usr/bin/dynconv /usr/bin/dynconv-export \
     /usr/lib/python3/dist-packages/dynconv /usr/share/man/man1/dynconv* >/dev/null 2>&1 ||
  fail "files remain after the purge"
! ldconfig -p | has libdynconv || fail "the loader's cache still lists libdynconv"
! /usr/bin/python3 -c "import dynconv" 2>/dev/null || fail "the Python module can still be imported"
echo "libdynconv, its tools and its Python module are gone"

step "package-test: all packages, consumers and checks OK"
