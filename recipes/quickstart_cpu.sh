#!/usr/bin/env bash
# Quickstart on a CPU-only machine: GRPO with RPO (partial reasoning optimisation, arXiv 2601.19404)
# on SmolLM2-135M-Instruct and the synthetic arithmetic task, through verl's real v1 trainer
# (python -m rpo_verl.main preset=cpu).
#
#   offline RPO cache (scripts/build_cache.py: one response per training prompt from the initial
#   policy, built once, about a minute) -> validation before training -> training steps (one
#   console line each: reward, tokens generated vs the full-path equivalent, seconds per phase,
#   ETA) -> validation after -> checkpoint -> metrics file -> a closing summary (methods on,
#   accuracy before/after, tokens saved, rollout time, time per phase)
#
# Each step, RPO continues a cached response of each prompt from a random cut (the kept 50-90 % is
# not generated again) and only the suffix is generated; the prefix is under the loss too
# (rpo_verl.rpo.loss.include_prefix=true, which kept GRPO's accuracy on this task in BENCHMARKS.md,
# "RPO-GRPO study"; it needs the old log-probs recomputed: bypass_mode=false).
#
# Budget: under 15 minutes on 2 cores with set-up (model and data prepared:
#   python scripts/prepare_model.py && python scripts/prepare_data.py arith).
#
# Paths come from the environment (defaults: the set-up scripts' cache locations):
#   RPO_VERL_MODEL  model folder       (~/.cache/rpo_verl/models/smollm2-135m-instruct)
#   RPO_VERL_TRAIN  training parquet   (~/.cache/rpo_verl/data/arith/train.parquet)
#   RPO_VERL_VAL    validation parquet (~/.cache/rpo_verl/data/arith/val.parquet)
#   RPO_VERL_RUN    run folder: checkpoints, metrics.jsonl, summary.json, the RPO cache (runs/quickstart_cpu)
# Every argument is passed on as a Hydra override, e.g. `trainer.total_training_steps=4`,
# `rpo_verl.dry_run=true` (validate and print the config only), `rpo_verl.rpo.enable=false` (stock
# GRPO) or `trainer.resume_mode=disable`. Re-running with the same RPO_VERL_RUN resumes from its
# last checkpoint (and reuses the cache file).
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
DRY_RUN=0
NO_RPO=0
CACHE_ARGS=()  # the user's overrides that change what the cache holds (prompts, lengths, model); last wins
for arg in "$@"; do
  if [[ "$arg" == "rpo_verl.dry_run=true" ]]; then DRY_RUN=1; fi
  if [[ "$arg" == "rpo_verl.rpo.enable=false" ]]; then NO_RPO=1; fi
  if [[ "$arg" =~ ^\+*(data\.(train_files|train_max_samples|seed|max_prompt_length|max_response_length)=|actor_rollout_ref\.model\.) ]]; then
    CACHE_ARGS+=("$arg")
  fi
done

# What the cache build and the training run share: model, data (a pool of TRAIN_POOL prompts drawn
# with data.seed, so that the cache holds every prompt the run can draw), lengths, reward.
TRAIN_POOL=${RPO_VERL_TRAIN_POOL:-64}
COMMON=(
  preset=cpu
  actor_rollout_ref.model.path="$MODEL"
  data.train_files="$TRAIN"
  data.val_files="$VAL"
  data.train_max_samples="$TRAIN_POOL"
  data.seed=0
  data.max_prompt_length=128
  data.max_response_length=48
  reward.custom_reward_function.path=pkg://rpo_verl.reward.score
  reward.custom_reward_function.name=compute_score
)
CACHE_FILE=${RPO_VERL_RPO_CACHE:-$RUN/rpo_cache_init.npz}
if [ "$DRY_RUN" = 0 ] && [ "$NO_RPO" = 0 ] && [ ! -f "$CACHE_FILE" ]; then
  echo "[quickstart] building RPO's offline cache: one response per training prompt ($TRAIN_POOL) -> $CACHE_FILE"
  mkdir -p "$(dirname "$CACHE_FILE")"
  "$PYTHON" scripts/build_cache.py --out "$CACHE_FILE" --clean -- "${COMMON[@]}" ${CACHE_ARGS[@]+"${CACHE_ARGS[@]}"} \
    > "$RUN/build_cache.log" 2>&1 || { tail -n 30 "$RUN/build_cache.log"; exit 1; }
  echo "[quickstart] cache built in $(( $(date +%s) - start )) s (log: $RUN/build_cache.log)"
fi

# Sizes chosen for learning signal within the budget (see BENCHMARKS.md, "Trainer"): 4 prompts x
# 4 samples per step, answers of <= 48 tokens, sampling at temperature 1.0, where SmolLM2 solves
# about a fifth of the default task (greedy: most), so many groups are partly solved; validation
# samples at the same temperature (pass@1 of the sampled policy, 128 prompts), which is what GRPO
# moves; learning rate 1e-5 (3e-5 halved validation accuracy within 8 steps in a trial). RPO as
# in BENCHMARKS.md's study: ratio cuts keeping 50-90 % of the cached path, suffix budget = the
# removed length + 16 tokens, eps-greedy write-back, prefix under the loss (so bypass_mode=false:
# the trainer recomputes the old log-probs, the cached prefix has none from this rollout).
"$PYTHON" -m rpo_verl.main \
  "${COMMON[@]}" \
  data.val_max_samples=128 \
  data.train_batch_size=4 \
  actor_rollout_ref.rollout.n=4 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.val_kwargs.do_sample=true \
  actor_rollout_ref.rollout.val_kwargs.temperature=1.0 \
  actor_rollout_ref.actor.ppo_mini_batch_size=4 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.actor.optim.lr=1e-5 \
  actor_rollout_ref.model.enable_gradient_checkpointing=false \
  algorithm.rollout_correction.bypass_mode=false \
  rpo_verl.rpo.enable=true \
  rpo_verl.rpo.cache.init=offline \
  rpo_verl.rpo.cache.path="$CACHE_FILE" \
  rpo_verl.rpo.prefix.mode=ratio \
  rpo_verl.rpo.loss.include_prefix=true \
  trainer.experiment_name=quickstart_cpu \
  trainer.validation_data_dir="$RUN/validation_generations" \
  trainer.default_local_dir="$RUN" \
  trainer.total_training_steps=10 \
  trainer.val_before_train=true \
  trainer.test_freq=10 \
  trainer.save_freq=10 \
  "$@"

# A dry run writes no metrics; otherwise close with the summary.
if [ "$DRY_RUN" = 1 ]; then exit 0; fi
"$PYTHON" -m rpo_verl.trainer.summary "$RUN" --json "$RUN/summary.json"
echo "quickstart_cpu: finished in $(( $(date +%s) - start )) s; checkpoints and metrics in $RUN"
