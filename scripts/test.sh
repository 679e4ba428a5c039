#!/usr/bin/env bash
# The test command: set up the virtualenv, then run the CPU test suite (GPU tests are skipped).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/dps -x`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/setup_env.sh
python -m pytest -m "not gpu" "$@"
