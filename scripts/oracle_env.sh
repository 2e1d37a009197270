#!/usr/bin/env bash
# The Python environments that Lathe's tests use as oracles (Hugging Face transformers / PEFT, and
# ms-swift), each a venv under .cache/ in the repository, made from PyPI by package name.
#
#   scripts/oracle_env.sh [hf|swift]      (default: hf)
#
#   hf     .cache/oracle-venv        torch, transformers, peft, tokenizers, safetensors, jinja2, gguf
#   swift  .cache/oracle-venv-swift  torch, tokenizers, safetensors, jinja2, gguf and ms-swift, which
#                                    picks its own transformers, peft and trl: ms-swift 4.6.0 requires
#                                    transformers<5.20, peft<0.21 and trl<1.0, so it cannot share the
#                                    hf venv's transformers 5.23.0 / peft 0.21.2.
#
# Idempotent: a venv whose recorded pin list (.lathe-pins inside it) matches this script's is kept
# as it is; otherwise it is removed and made again, from .cache/pip/wheelhouse when that holds every
# file it needs (no network), downloading only what is missing otherwise. Runs that overlap wait for
# each other (flock).
# Prints one line per package with its installed version, then, as the last line, the venv's python.
# Needs a CPython >= 3.11 with venv: python3 on PATH, or ORACLE_PYTHON=/path/to/python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${1:-hf}

# torch is pinned twice, as a requirement and in a constraints file that every resolve here reads,
# so no other package (ms-swift declares torch unpinned) can swap it for another version: pip fails
# instead. Installing torch first, alone, would not hold it by itself; a later resolve could still move it.
TORCH_PIN=torch==2.15.0
COMMON_PINS=(tokenizers==0.23.3 safetensors==0.8.0 jinja2==3.1.6 gguf==0.19.0)
case "$PROFILE" in
  hf)    VENV=$ROOT/.cache/oracle-venv
         PINS=(transformers==5.23.0 peft==0.21.2 "${COMMON_PINS[@]}") ;;
  swift) VENV=$ROOT/.cache/oracle-venv-swift
         PINS=(ms-swift==4.6.0 "${COMMON_PINS[@]}") ;;
  *) echo "usage: $0 [hf|swift]" >&2; exit 2 ;;
esac
REPORT=(torch transformers peft trl tokenizers safetensors jinja2 gguf ms-swift)

BASE_PYTHON=${ORACLE_PYTHON:-python3}
# The interpreter's own version is part of the record: a different Python remakes the venv.
PYVER=$("$BASE_PYTHON" -c 'import sys; print(sys.version.split()[0])')
WANT=$(printf '%s\n' "profile=$PROFILE" "python=$PYVER" "$TORCH_PIN" "${PINS[@]}")

mkdir -p "$ROOT/.cache"
exec 9>"$ROOT/.cache/oracle-env-$PROFILE.lock"
flock 9

# PyPI's files come here without cache validators, so pip's own HTTP cache keeps none of them: the
# wheels are kept in a wheelhouse instead (setuptools and wheel too, for the few sdists, whose
# built wheels land in pip's wheel cache). A venv is made from the wheelhouse alone when it holds
# a solution; otherwise what is missing is downloaded into it first.
WHEELS=$ROOT/.cache/pip/wheelhouse
export PIP_CACHE_DIR=$ROOT/.cache/pip PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Nothing run here may reach a model hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.lathe-pins" 2>/dev/null)" != "$WANT" ]; then
  echo "oracle_env: making $VENV (python $PYVER)" >&2
  rm -rf "$VENV"
  "$BASE_PYTHON" -m venv "$VENV"
  mkdir -p "$WHEELS"
  echo "$TORCH_PIN" >"$VENV/.lathe-constraints"
  PIP=("$VENV/bin/python" -m pip --no-input --quiet)
  REQS=(--constraint "$VENV/.lathe-constraints" "$TORCH_PIN" "${PINS[@]}")
  if ! "${PIP[@]}" install --no-index --find-links "$WHEELS" "${REQS[@]}" 2>/dev/null; then
    echo "oracle_env: downloading into $WHEELS" >&2
    "${PIP[@]}" download --progress-bar off --dest "$WHEELS" "${REQS[@]}" setuptools wheel
    "${PIP[@]}" install --no-index --find-links "$WHEELS" "${REQS[@]}"
  fi
  "$VENV/bin/python" -m pip check >&2 || { echo "oracle_env: pip check failed" >&2; exit 1; }
  printf '%s\n' "$WANT" >"$VENV/.lathe-pins"   # written last: a half-made venv is made again next time
fi

"$VENV/bin/python" - "${REPORT[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for name in sys.argv[1:]:
    try:
        print(f"{name} {version(name)}")
    except PackageNotFoundError:
        print(f"{name} -")
EOF
echo "$VENV/bin/python"
