#!/usr/bin/env bash
# RPO on GRPO (arXiv 2601.19404), DeepSeek-R1-Distill-Qwen-1.5B: suffix rollouts from an experience
# cache (tail cut t ~ U{1..299}, eps-greedy write-back with eps = 0.5, loss on suffix tokens).
# Build the offline cache first (paper: one full response per prompt, temperature 0.9, top-p 0.9):
#   python scripts/build_cache.py ... (see docs/papers.md); then RPO_CACHE=<file> bash recipes/rpo_grpo_1.5b.sh
# Without RPO_CACHE the cache is seeded lazily (a prompt's first visit is a full-path group).
#   bash recipes/rpo_grpo_1.5b.sh rpo_verl.rpo.prefix.max_cut=512       # any Hydra override
#   Slurm: RECIPE=recipes/rpo_grpo_1.5b.sh NNODES=2 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
if [ -n "${RPO_CACHE:-}" ]; then CACHE=(rpo_verl.rpo.cache.init=offline rpo_verl.rpo.cache.path="$RPO_CACHE")
else CACHE=(rpo_verl.rpo.cache.init=lazy); fi
run_recipe rpo_grpo_1.5b 1 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=4096 \
  actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  rpo_verl.rpo.enable=true "${CACHE[@]}" \
  rpo_verl.rpo.prefix.mode=tail rpo_verl.rpo.prefix.max_cut=299 \
  rpo_verl.rpo.cache.update=eps_greedy rpo_verl.rpo.cache.epsilon=0.5 \
  "$@"
