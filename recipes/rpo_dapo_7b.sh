#!/usr/bin/env bash
# RPO on DAPO (arXiv 2601.19404), DeepSeek-R1-Distill-Qwen-7B: DAPO unchanged on suffix tokens;
# dynamic sampling refills are cheap suffix rollouts; the overlong penalty sees prefix + suffix.
#   RPO_CACHE=<file from scripts/build_cache.py> bash recipes/rpo_dapo_7b.sh   # offline cache (paper)
#   bash recipes/rpo_dapo_7b.sh                                  # lazy cache seeding
#   NNODES=4 bash recipes/rpo_dapo_7b.sh rpo_verl.rpo.loss.include_prefix=true
#   Slurm: RECIPE=recipes/rpo_dapo_7b.sh NNODES=4 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}
if [ -n "${RPO_CACHE:-}" ]; then CACHE=(rpo_verl.rpo.cache.init=offline rpo_verl.rpo.cache.path="$RPO_CACHE")
else CACHE=(rpo_verl.rpo.cache.init=lazy); fi
dapo_overrides 8192
run_recipe rpo_dapo_7b 4 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=256 data.gen_batch_size=768 data.max_prompt_length=1024 data.max_response_length=8192 \
  actor_rollout_ref.rollout.n=16 actor_rollout_ref.actor.ppo_mini_batch_size=32 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
  "${DAPO_OVERRIDES[@]}" \
  rpo_verl.rpo.enable=true "${CACHE[@]}" \
  rpo_verl.rpo.prefix.mode=tail rpo_verl.rpo.prefix.max_cut=299 \
  rpo_verl.rpo.cache.update=eps_greedy rpo_verl.rpo.cache.epsilon=0.5 \
  "$@"
