#!/usr/bin/env bash
# The Python environment Lathe's tests use as oracles and peers: PyPI's torch 2.x, transformers,
# PEFT, TRL, tokenizers, safetensors, jinja2, gguf, tensorboard and ms-swift, in one venv at
# .cache/oracle-venv, every package pinned in scripts/oracle-requirements.txt.
#
#   scripts/oracle_env.sh        prints "package version" lines, then the venv's python as the last line
#
# Idempotent: a venv whose recorded lock (.lathe-pins inside it) matches the lock file is kept as it
# is; otherwise it is removed and made again, from .cache/pip/wheelhouse when that holds every file
# (no network), downloading only what is missing otherwise. Overlapping runs wait for each other.
# Needs a CPython >= 3.11 with venv: python3 on PATH, or ORACLE_PYTHON=/path/to/python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.cache/oracle-venv
LOCK=$ROOT/scripts/oracle-requirements.txt
REPORT=(torch transformers peft trl tokenizers safetensors jinja2 gguf tensorboard ms-swift)

BASE_PYTHON=${ORACLE_PYTHON:-python3}
# The interpreter's own version is part of the record: a different Python remakes the venv.
PYVER=$("$BASE_PYTHON" -c 'import sys; print(sys.version.split()[0])')
WANT=$(printf 'python=%s\n' "$PYVER"; grep -v '^#' "$LOCK")

mkdir -p "$ROOT/.cache"
exec 9>"$ROOT/.cache/oracle-env.lock"
flock 9

# PyPI's files come here without cache validators, so pip's own HTTP cache keeps none of them: the
# files are kept in a wheelhouse instead. Three packages are source archives; setuptools and wheel
# (kept there too) build them, and pip's wheel cache keeps what they build.
WHEELS=$ROOT/.cache/pip/wheelhouse
export PIP_CACHE_DIR=$ROOT/.cache/pip PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Nothing run here may reach a model hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.lathe-pins" 2>/dev/null)" != "$WANT" ]; then
  echo "oracle_env: making $VENV (python $PYVER)" >&2
  rm -rf "$VENV"
  "$BASE_PYTHON" -m venv "$VENV"
  mkdir -p "$WHEELS"
  PIP=("$VENV/bin/python" -m pip --no-input --quiet)
  # The lock is complete, so nothing is resolved: --no-deps installs exactly its versions.
  if ! "${PIP[@]}" install --no-index --find-links "$WHEELS" --no-deps -r "$LOCK" 2>/dev/null; then
    echo "oracle_env: downloading into $WHEELS" >&2
    "${PIP[@]}" download --progress-bar off --no-deps --dest "$WHEELS" -r "$LOCK" setuptools wheel
    "${PIP[@]}" install --no-index --find-links "$WHEELS" --no-deps -r "$LOCK"
  fi
  "$VENV/bin/python" -m pip check >&2 || { echo "oracle_env: pip check failed" >&2; exit 1; }
  printf '%s\n' "$WANT" >"$VENV/.lathe-pins"   # written last: a half-made venv is made again next time
fi

"$VENV/bin/python" - "${REPORT[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for name in sys.argv[1:]:
    try:
        print(f"{name} {version(name)}")
    except PackageNotFoundError:
        print(f"{name} -")
PY
echo "$VENV/bin/python"
