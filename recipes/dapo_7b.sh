#!/usr/bin/env bash
# Baseline: verl stock DAPO (clip-higher 0.2/0.28, token-mean, dynamic sampling, overlong shaping) on
# DeepSeek-R1-Distill-Qwen-7B.
#   bash recipes/dapo_7b.sh                                     # 1 node x 8 GPUs, rollout TP 4
#   NNODES=4 bash recipes/dapo_7b.sh data.train_batch_size=512
#   Slurm: RECIPE=recipes/dapo_7b.sh NNODES=4 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}
dapo_overrides 8192
run_recipe dapo_7b 4 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=256 data.gen_batch_size=768 data.max_prompt_length=1024 data.max_response_length=8192 \
  actor_rollout_ref.rollout.n=16 actor_rollout_ref.actor.ppo_mini_batch_size=32 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
  "${DAPO_OVERRIDES[@]}" \
  "$@"
