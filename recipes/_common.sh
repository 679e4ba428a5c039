# Sourced by every GPU recipe: cluster size, paths and the overrides shared by all paper set-ups.
# Not a recipe itself. Environment:
#   NNODES (1), GPUS_PER_NODE (8)       cluster size (scripts/slurm/ sets both)
#   MODEL                               model folder or hub id (each recipe sets its default)
#   RPO_VERL_DATA (~/.cache/rpo_verl/data)  parquet written by scripts/prepare_data.py
#   CKPT_ROOT (./checkpoints)           checkpoints: <CKPT_ROOT>/<experiment name>
#   PYTHON (the repo's .venv if present, else python)   interpreter with rpo_verl installed
set -euo pipefail
RECIPES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
DATA=${RPO_VERL_DATA:-$HOME/.cache/rpo_verl/data}
CKPT_ROOT=${CKPT_ROOT:-checkpoints}
REPO_VENV_PYTHON="$RECIPES_DIR/../.venv/bin/python"
if [ -x "$REPO_VENV_PYTHON" ]; then PYTHON=${PYTHON:-$REPO_VENV_PYTHON}; else PYTHON=${PYTHON:-python}; fi

# Training data and evaluation sets shared by the papers' math set-ups (prepare_data.py names).
TRAIN_FILES=${TRAIN_FILES:-$DATA/dapo/train.parquet}
VAL_FILES=${VAL_FILES:-"[$DATA/aime24/test.parquet,$DATA/math500/test.parquet]"}

# run_recipe EXPERIMENT TP OVERRIDES... -- the one entry point, user overrides ("$@" of the recipe) last.
run_recipe() {
  local experiment=$1 tp=$2
  shift 2
  exec "$PYTHON" -m rpo_verl.main \
    data.train_files="$TRAIN_FILES" \
    data.val_files="$VAL_FILES" \
    data.filter_overlong_prompts=true \
    data.truncation=error \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.tensor_model_parallel_size="$tp" \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.model.use_remove_padding=true \
    actor_rollout_ref.model.enable_gradient_checkpointing=true \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.use_kl_loss=false \
    actor_rollout_ref.actor.entropy_coeff=0 \
    reward.custom_reward_function.path=pkg://rpo_verl.reward.score \
    reward.custom_reward_function.name=compute_score \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$GPUS_PER_NODE" \
    trainer.experiment_name="$experiment" \
    trainer.default_local_dir="$CKPT_ROOT/$experiment" \
    trainer.resume_mode=auto \
    trainer.save_freq=20 \
    trainer.test_freq=10 \
    trainer.val_before_train=true \
    "$@"
}

# DAPO (arXiv 2503.14476) on top of verl's GRPO: clip-higher, token-level loss, dynamic sampling,
# overlong reward shaping (on RPO runs the response holds prefix ⊕ suffix, so the overlong
# penalty is measured on the full path, as ALGORITHMS.md §1 requires).
dapo_overrides() {
  local max_resp=$1
  DAPO_OVERRIDES=(
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.filter_groups.enable=true
    algorithm.filter_groups.metric=acc
    algorithm.filter_groups.max_num_gen_batches=10
    reward.reward_manager.name=dapo
    +reward.reward_kwargs.max_resp_len="$max_resp"
    +reward.reward_kwargs.overlong_buffer_cfg.enable=true
    +reward.reward_kwargs.overlong_buffer_cfg.len=$((max_resp / 4))
    +reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0
    +reward.reward_kwargs.overlong_buffer_cfg.log=false
  )
}
