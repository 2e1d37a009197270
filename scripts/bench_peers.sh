#!/usr/bin/env bash
# Lathe against its peers on this CPU (bench/peers.py): `lathe sft`, Hugging Face's Trainer + PEFT and
# `swift sft` on one model folder and dataset (LoRA and full), and decode against llama.cpp.
# Makes what it needs first: the build, the oracle venv (PyPI's torch, transformers, PEFT, ms-swift)
# and llama.cpp's folder. Arguments go to `bench/peers.py run` (e.g. --steps 2,6 --no-swift).
#   scripts/bench_peers.sh [--work DIR] [--steps S1,S2] [--shape a|small|qwen2.5-0.5b|qwen2.5-1.5b]
#                          [--max-length N] [--no-swift] [--no-decode] [--no-full] [--no-train]
#                          [--tools hf,swift] [--lathe-weight-dtype bfloat16|float16]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --target lathe_cli inference_bench
bash scripts/llama_cpp_env.sh
python=$(bash scripts/oracle_env.sh | tail -n 1)
BUILD_DIR=${LATHE_BUILD_DIR:-build}
work=.cache/bench-peers
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --work) work="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
exec "$python" bench/peers.py run --lathe "$BUILD_DIR/lathe" --inference-bench "$BUILD_DIR/bench/inference_bench" \
  --work "$work" "${args[@]}"
