#!/usr/bin/env bash
# R2VPO on GRPO (arXiv 2601.03320), DeepSeek-R1-Distill-Qwen-1.5B: the ratio-variance constraint
# (delta = 5e-3, dual step eta = 0.1) replaces clipping; replay of the last 2 rollout batches (rho = 0.5).
#   bash recipes/r2vpo_1.5b.sh
#   bash recipes/r2vpo_1.5b.sh rpo_verl.r2vpo.replay.enable=false   # on-policy R2VPO only
#   (replay uses the decoupled objective: lambda on pi/pi_prox, capped at lambda_max=10, stale rows carry
#    truncated weights; watch r2vpo/replay_is_ess_frac and r2vpo/lambda. Its 3-seed benchmark is pending: BENCHMARKS.md)
#   Slurm: RECIPE=recipes/r2vpo_1.5b.sh NNODES=2 bash scripts/slurm/submit.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
run_recipe r2vpo_1.5b 1 \
  actor_rollout_ref.model.path="$MODEL" \
  algorithm.adv_estimator=grpo \
  data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=4096 \
  actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.actor.policy_loss.loss_mode=r2vpo \
  actor_rollout_ref.actor.policy_loss.r2vpo.delta=5e-3 \
  actor_rollout_ref.actor.policy_loss.r2vpo.eta=0.1 \
  rpo_verl.r2vpo.replay.enable=true rpo_verl.r2vpo.replay.max_batches=2 rpo_verl.r2vpo.replay.fraction=0.5 \
  "$@"
