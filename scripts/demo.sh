#!/usr/bin/env bash
# Quick start, part 1: build the library and run dynconv-demo on its built-in default layer
# (3x3, 64 -> 64 channels, 56x56, batch 8, K = 4). Extra arguments go to the demo (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DDYNCONV_BUILD_TESTS=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target dynconv-demo dynconv_cli >/dev/null
DYNCONV_CLI=build/release/tools/dynconv . scripts/openblas-env.sh
exec build/release/examples/dynconv-demo "$@"
