#!/usr/bin/env bash
# The main job on the embedded default: install what is missing, build, then fine-tune Lathe's own
# small model on the shipped self-cognition dataset, showing its answers before and after.
# Extra arguments go to `lathe sft` (e.g. --num_train_epochs 20).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --target lathe_cli  # only the program and what it links, not the tests
BUILD_DIR=${LATHE_BUILD_DIR:-build}
exec "$BUILD_DIR/lathe" sft --output_dir output/demo "$@"
