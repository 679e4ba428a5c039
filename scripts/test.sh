#!/usr/bin/env bash
# The test command: set up the virtualenv, then run the CPU test suite (GPU tests are skipped).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/dps -x` (main suite only).
# Without arguments (CI) the vLLM tests then run in their own virtualenv, built or reused by
# `scripts/setup_env.sh --vllm` (vLLM's CPU build); RPO_VERL_VLLM_TESTS=0 skips them, =1 forces them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ $# -eq 0 ]; then VLLM_TESTS=${RPO_VERL_VLLM_TESTS:-1}; else VLLM_TESTS=${RPO_VERL_VLLM_TESTS:-0}; fi
source scripts/setup_env.sh
python -m pytest -m "not gpu and not vllm" "$@"
if [ "$VLLM_TESTS" = 1 ]; then
  source scripts/setup_env.sh --vllm
  python -m pytest -m "vllm and not gpu" "$@"
fi
