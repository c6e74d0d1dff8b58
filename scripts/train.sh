#!/usr/bin/env bash
# Builds the library and runs train_dynamic_cnn: a small dynamic CNN trained end to end on
# generated 16x16 images, then the same network with static convolutions (K = 1), compared.
# Extra arguments go to the program (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DDYNCONV_BUILD_TESTS=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target train_dynamic_cnn dynconv_cli >/dev/null
DYNCONV_CLI=build/release/tools/dynconv . scripts/openblas-env.sh
exec build/release/examples/train_dynamic_cnn "$@"
