#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), then configures and builds Lathe in build/.
# Extra arguments go to `cmake --build` (e.g. --target lathe_cli).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${LATHE_BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" "$@"
