#!/usr/bin/env bash
# Compares the ABI of the freshly built libdynconv with the committed baselines (abi/*.abi,
# abidw dumps) using abidiff from abigail-tools: the first release of the SONAME
# (abi/libdynconv.so.N.abi) and every later minor release recorded for it
# (abi/libdynconv.so.N-X.Y.Z.abi). The library must be compatible with each of them.
#   scripts/abi-check.sh            build (RelWithDebInfo: abidw needs -g), compare, report
#   scripts/abi-check.sh --update   build and record the baseline of the current version:
#                                   abi/libdynconv.so.N.abi for a new SONAME, else
#                                   abi/libdynconv.so.N-<version>.abi (older ones are kept)
# Exit status: 0 when compatible (additions are reported, not fatal), 1 on an incompatible change
# (a removal, or a change to an existing function or type it uses) while the SONAME is
# unchanged, 2 on usage or tool errors. An incompatible change is accepted
# only together with a new SONAME (DYNCONV_VERSION_MAJOR in include/dynconv/dynconv.h), whose
# baseline then has to be recorded with --update.
set -euo pipefail
cd "$(dirname "$0")/.."

update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "abi-check.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

scripts/deps.sh build abi
build=build/abi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYNCONV_BUILD_TESTS=OFF \
      -DDYNCONV_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target dynconv >/dev/null

lib=$(readlink -f "$build"/src/libdynconv.so)
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ -n "$soname" ] || { echo "abi-check.sh: $lib has no SONAME" >&2; exit 2; }

# Paths and build directories stay out of the dump so that it is the same on every machine.
current="$build/$soname.abi"
abidw --headers-dir include/dynconv --drop-private-types --no-corpus-path --no-comp-dir-path --short-locs \
      --type-id-style hash --drop-undefined-syms --out-file "$current" "$lib"

baseline="abi/$soname.abi"
if [ "$update" -eq 1 ]; then
  mkdir -p abi
  target=$baseline
  if [ -f "$baseline" ]; then
    # The SONAME's first baseline stays: each minor release adds its own.
    version=$(sed -n 's/^#define DYNCONV_VERSION_STRING "\(.*\)"$/\1/p' include/dynconv/dynconv.h)
    [ -n "$version" ] || { echo "abi-check.sh: no DYNCONV_VERSION_STRING in the header" >&2; exit 2; }
    target="abi/$soname-$version.abi"
  fi
  cp "$current" "$target"
  echo "abi-check.sh: wrote the baseline $target"
  exit 0
fi

if [ ! -f "$baseline" ]; then
  # No baseline for this SONAME: the SONAME was bumped (or the baseline was never recorded).
  previous=$(ls abi/*.abi 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$previous" ]; then
    echo "abi-check.sh: no baseline under abi/: record one with --update" >&2
    exit 2
  fi
  echo "abi-check.sh: SONAME is $soname, the latest baseline is $previous: the SONAME was bumped,"
  echo "so incompatible changes are allowed. Changes against $previous, for information:"
  abidiff --no-added-syms "$previous" "$current" || true
  echo "abi-check.sh: record the new baseline with scripts/abi-check.sh --update"
  exit 0
fi

# Compares the current dump with one baseline; returns the exit status described above.
compare_with() {
  local baseline=$1 report rc changed
  set +e
  report=$(abidiff "$baseline" "$current")
  rc=$?
  set -e
  # abidiff's exit status is a bit field: 1 tool error, 2 usage error, 4 ABI change, 8 incompatible.
  if (( rc & 3 )); then
    echo "$report"
    echo "abi-check.sh: abidiff failed (exit status $rc)" >&2
    return 2
  fi
  if (( rc & 8 )); then
    echo "$report"
    echo "abi-check.sh: INCOMPATIBLE ABI change against $baseline with the same SONAME $soname." >&2
    echo "Restore compatibility (add functions, flags or _v2 variants instead of changing old ones)," >&2
    echo "or bump DYNCONV_VERSION_MAJOR (and the SONAME with it) and run --update." >&2
    return 1
  fi
  # abidiff flags only removals as incompatible; a changed struct layout or signature of an
  # existing function is merely an "ABI change" to it. Both break callers built against the old
  # header, so a change to any existing function or variable fails too. Additions, and what
  # libabigail filters as harmless (e.g. a new enumerator), pass.
  changed=$(printf '%s\n' "$report" | sed -n 's/^\(Functions\|Variables\) changes summary: [0-9]* Removed, \([0-9]*\) Changed.*/\2/p' |
            awk '{ s += $1 } END { print s + 0 }')
  if (( rc & 4 )) && [ "$changed" -gt 0 ]; then
    echo "$report"
    echo "abi-check.sh: $changed existing interface(s) changed against $baseline with the same SONAME $soname." >&2
    echo "The ABI is frozen: add new functions, flags or _v2 variants instead, or bump the SONAME." >&2
    return 1
  fi
  if (( rc & 4 )); then
    echo "$report"
    echo "abi-check.sh: compatible ABI changes against $baseline (listed above); SONAME $soname kept."
    return 0
  fi
  echo "abi-check.sh: ABI identical to $baseline ($soname)."
}

status=0
for b in "$baseline" abi/"$soname"-*.abi; do
  [ -f "$b" ] || continue
  compare_with "$b" || { rc=$?; (( rc > status )) && status=$rc; }
done
exit "$status"
