#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install rpo_verl with its CPU and test extras.
# Source it (`source scripts/setup_env.sh`) to get the venv on PATH; RPO_VERL_VENV moves the venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${RPO_VERL_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))'; then
    echo "rpo_verl needs Python 3.10-3.12 (verl 0.9.1); $PYTHON is $("$PYTHON" -V 2>&1). Set PYTHON=..." >&2
    exit 1
  fi
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the package metadata changed (the editable install picks up code changes).
STAMP="$VENV/.rpo_verl_setup"
WANT=$(cat "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing rpo_verl and its dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The CPU build of torch first, so that no dependency pulls a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e "$ROOT[cpu,test]"
  echo "$WANT" > "$STAMP"
fi

export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
