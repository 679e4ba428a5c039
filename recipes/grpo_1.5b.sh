#!/usr/bin/env bash
# Baseline: verl stock GRPO on DeepSeek-R1-Distill-Qwen-1.5B (the papers' comparison point).
#   bash recipes/grpo_1.5b.sh                                   # 1 node x 8 GPUs
#   NNODES=2 bash recipes/grpo_1.5b.sh trainer.total_training_steps=300
#   bash recipes/grpo_1.5b.sh rpo_verl.dry_run=true            # print the resolved config only
#   Slurm: RECIPE=recipes/grpo_1.5b.sh NNODES=2 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
run_recipe grpo_1.5b 1 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=4096 \
  actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  "$@"
