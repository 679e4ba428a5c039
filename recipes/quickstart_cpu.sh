#!/usr/bin/env bash
# Quickstart on a CPU-only machine: stock GRPO on SmolLM2-135M-Instruct with the synthetic
# arithmetic task, through verl's real v1 trainer (python -m rpo_verl.main preset=cpu).
#
#   validation before training -> training steps (progress bar) -> validation after
#   -> checkpoint -> metrics file -> a closing summary (accuracy before/after, tokens, time per phase)
#
# Budget: about 15 minutes on 2 cores after set-up (model and data prepared:
#   python scripts/prepare_model.py && python scripts/prepare_data.py arith).
#
# Paths come from the environment (defaults: the set-up scripts' cache locations):
#   RPO_VERL_MODEL  model folder       (~/.cache/rpo_verl/models/smollm2-135m-instruct)
#   RPO_VERL_TRAIN  training parquet   (~/.cache/rpo_verl/data/arith/train.parquet)
#   RPO_VERL_VAL    validation parquet (~/.cache/rpo_verl/data/arith/val.parquet)
#   RPO_VERL_RUN    run folder: checkpoints, metrics.jsonl, summary.json (runs/quickstart_cpu)
# Every argument is passed on as a Hydra override, e.g. `trainer.total_training_steps=4`,
# `rpo_verl.dry_run=true` (validate and print the config only) or `trainer.resume_mode=disable`.
# Re-running with the same RPO_VERL_RUN resumes from its last checkpoint.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RPO_VERL_CACHE:-$HOME/.cache/rpo_verl}
MODEL=${RPO_VERL_MODEL:-$CACHE/models/smollm2-135m-instruct}
TRAIN=${RPO_VERL_TRAIN:-$CACHE/data/arith/train.parquet}
VAL=${RPO_VERL_VAL:-$CACHE/data/arith/val.parquet}
RUN=${RPO_VERL_RUN:-$ROOT/runs/quickstart_cpu}
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PYTHON="$ROOT/.venv/bin/python"; else DEFAULT_PYTHON=python; fi
PYTHON=${PYTHON:-$DEFAULT_PYTHON}

cd "$ROOT"
start=$(date +%s)

# Sizes chosen for learning signal within the budget (see BENCHMARKS.md, "Trainer"): 4 prompts x
# 4 samples per step, answers of <= 48 tokens, sampling at temperature 1.0, where SmolLM2 solves
# about a fifth of the default task (greedy: most), so many groups are partly solved; validation
# samples at the same temperature (pass@1 of the sampled policy, 128 prompts), which is what GRPO
# moves; learning rate 1e-5 (3e-5 halved validation accuracy within 8 steps in a trial). The preset trains in fp32, which matches the fp32 rollout server's log-probs, so the
# rollout's log-probs serve as the old log-probs (bypass_mode: no second forward pass).
"$PYTHON" -m rpo_verl.main \
  preset=cpu \
  actor_rollout_ref.model.path="$MODEL" \
  data.train_files="$TRAIN" \
  data.val_files="$VAL" \
  data.val_max_samples=128 \
  data.seed=0 \
  data.max_prompt_length=128 \
  data.max_response_length=48 \
  data.train_batch_size=4 \
  actor_rollout_ref.rollout.n=4 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.val_kwargs.do_sample=true \
  actor_rollout_ref.rollout.val_kwargs.temperature=1.0 \
  actor_rollout_ref.actor.ppo_mini_batch_size=4 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.actor.optim.lr=1e-5 \
  actor_rollout_ref.model.enable_gradient_checkpointing=false \
  algorithm.rollout_correction.bypass_mode=true \
  reward.custom_reward_function.path=pkg://rpo_verl.reward.score \
  reward.custom_reward_function.name=compute_score \
  trainer.experiment_name=quickstart_cpu \
  trainer.validation_data_dir="$RUN/validation_generations" \
  trainer.default_local_dir="$RUN" \
  trainer.total_training_steps=10 \
  trainer.val_before_train=true \
  trainer.test_freq=10 \
  trainer.save_freq=10 \
  "$@"

# A dry run writes no metrics; otherwise close with the summary.
for arg in "$@"; do
  if [[ "$arg" == "rpo_verl.dry_run=true" ]]; then exit 0; fi
done
"$PYTHON" -m rpo_verl.trainer.summary "$RUN" --json "$RUN/summary.json"
echo "quickstart_cpu: finished in $(( $(date +%s) - start )) s; checkpoints and metrics in $RUN"
