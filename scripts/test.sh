#!/usr/bin/env bash
# The whole test suite from a fresh machine: install, build, run every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${LATHE_BUILD_DIR:-build}
export OMP_WAIT_POLICY=passive
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 900
