#!/usr/bin/env bash
# DPS on GRPO (arXiv 2603.10887), DeepSeek-R1-Distill-Qwen-1.5B: a per-prompt HMM picks the prompts
# predicted to be partially solved before any rollout (lambda = 0.7 for long math).
#   bash recipes/dps_grpo_1.5b.sh
#   bash recipes/dps_grpo_1.5b.sh rpo_verl.dps.selector=mopps       # the MoPPS baseline
#   Slurm: RECIPE=recipes/dps_grpo_1.5b.sh NNODES=2 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
run_recipe dps_grpo_1.5b 1 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=4096 \
  actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  rpo_verl.dps.enable=true rpo_verl.dps.selector=dps rpo_verl.dps.decay=0.7 \
  "$@"
