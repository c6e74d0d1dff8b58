#!/usr/bin/env bash
# Installs the Debian packages a task needs, only when some are missing.
#   scripts/deps.sh build|test|...   (several purposes may be given)
# Needs root or sudo for the install itself; prints the apt-get line otherwise.
set -euo pipefail

packages=()
for purpose in "$@"; do
  case "$purpose" in
    build) packages+=(build-essential cmake pkg-config libopenblas-dev libjansson-dev) ;;
    test)  packages+=(build-essential cmake pkg-config libopenblas-dev libjansson-dev libcmocka-dev
                      python3) ;;
    golden) packages+=(python3-torch python3-numpy) ;;
    python) packages+=(python3 python3-numpy python3-torch python3-torchvision) ;;  # the Python tests
    bench) packages+=(libbenchmark-dev) ;;
    plot) packages+=(python3 python3-matplotlib) ;;
    compare) packages+=(libbenchmark-dev python3 python3-torch python3-numpy python3-matplotlib) ;;
    abi)   packages+=(abigail-tools) ;;
    # Building the Debian packages (debian/control's Build-Depends), checking and installing
    # them (scripts/package-test.sh): lintian, autopkgtest (debian/tests on the installed
    # packages), man-db for `man`, git to copy the tree.
    deb) packages+=(build-essential debhelper dpkg-dev fakeroot dh-python cmake pkgconf
                    libopenblas-dev libjansson-dev libcmocka-dev python3 python3-numpy
                    lintian man-db git autopkgtest) ;;
    valgrind) packages+=(valgrind) ;;
    fuzz)  packages+=(clang-14 libclang-rt-14-dev) ;;
    clang) packages+=(clang-14) ;;                  # the second compiler's warnings
    *) echo "deps.sh: unknown purpose '$purpose'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "Not root and no sudo: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
