#!/usr/bin/env bash
# All three papers together on DAPO, DeepSeek-R1-Distill-Qwen-7B: DPS selects the prompts, RPO generates
# suffixes of cached paths for them, and the R2VPO loss (with DAPO's token-mean, dynamic sampling
# and overlong shaping) updates the policy in place of clip-higher.
#   RPO_CACHE=<file from scripts/build_cache.py> NNODES=4 bash recipes/dps_rpo_dapo_7b.sh
#   Slurm: RECIPE=recipes/dps_rpo_dapo_7b.sh NNODES=4 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}
if [ -n "${RPO_CACHE:-}" ]; then CACHE=(rpo_verl.rpo.cache.init=offline rpo_verl.rpo.cache.path="$RPO_CACHE")
else CACHE=(rpo_verl.rpo.cache.init=lazy); fi
dapo_overrides 8192
run_recipe dps_rpo_dapo_7b 4 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=256 data.gen_batch_size=768 data.max_prompt_length=1024 data.max_response_length=8192 \
  actor_rollout_ref.rollout.n=16 actor_rollout_ref.actor.ppo_mini_batch_size=32 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
  "${DAPO_OVERRIDES[@]}" \
  actor_rollout_ref.actor.policy_loss.loss_mode=r2vpo \
  rpo_verl.dps.enable=true rpo_verl.dps.selector=dps rpo_verl.dps.decay=0.7 \
  rpo_verl.rpo.enable=true "${CACHE[@]}" \
  rpo_verl.rpo.prefix.mode=tail rpo_verl.rpo.prefix.max_cut=299 \
  "$@"
