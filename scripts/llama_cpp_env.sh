#!/usr/bin/env bash
# llama.cpp for the GGUF export's tests and the decode benchmark: node-llama-cpp's prebuilt CPU
# build (pinned in tests/llama/package.json), installed into tests/llama/node_modules once. Only
# the linux-x64 CPU binaries are fetched (--omit=optional skips its CUDA and Vulkan variants), and
# nothing is downloaded or compiled at install or at run time.
set -euo pipefail
cd "$(dirname "$0")/../tests/llama"
if [ ! -f node_modules/.lathe-installed ] || [ package.json -nt node_modules/.lathe-installed ]; then
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-audit --no-fund --loglevel=error --omit=optional
  touch node_modules/.lathe-installed
fi
echo "llama_cpp_env: node-llama-cpp $(node -p 'require("./node_modules/node-llama-cpp/package.json").version')"
