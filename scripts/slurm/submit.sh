#!/usr/bin/env bash
# Submit an rpo_verl recipe as a multi-node Slurm job (Ray head + workers, see rpo_verl.sbatch).
#
#   NNODES=4 GPUS_PER_NODE=8 RECIPE=recipes/rpo_dapo_7b.sh \
#       bash scripts/slurm/submit.sh trainer.total_training_steps=500 trainer.save_freq=20
#
# Every argument is a Hydra override for the recipe. Submitting the same command again (same
# JOB_NAME / CKPT_DIR) resumes from the last checkpoint (trainer.resume_mode=auto). Slurm's own
# variables choose partition, account, time and QoS: SBATCH_PARTITION, SBATCH_ACCOUNT,
# SBATCH_TIMELIMIT, SBATCH_QOS. Other variables:
#   NNODES (default 1), GPUS_PER_NODE (default 8), CPUS_PER_NODE (optional --cpus-per-task),
#   JOB_NAME (default rpo_verl-<recipe>), CKPT_DIR (default checkpoints/<JOB_NAME>),
#   LOG_DIR (default runs/slurm/<JOB_NAME>), REQUEUE (1: requeue before the time limit),
#   REQUEUE_GRACE_S (seconds of warning, default 300), SBATCH_EXTRA_ARGS (word-split),
#   DRY_RUN=1 (print the sbatch command instead of running it).
# The job reads VENV, RAY_PORT, RAY_WAIT_TIMEOUT, MAX_RESTARTS, ... as documented in rpo_verl.sbatch.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

fail() { echo "submit.sh: $*" >&2; exit 1; }
[ -n "${RECIPE:-}" ] || fail "set RECIPE=recipes/<name>.sh"
[ -f "$RECIPE" ] || fail "RECIPE=$RECIPE not found under $ROOT"
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || fail "NNODES must be a positive integer, got '$NNODES'"
[[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || fail "GPUS_PER_NODE must be a positive integer, got '$GPUS_PER_NODE'"
REQUEUE=${REQUEUE:-1}
JOB_NAME=${JOB_NAME:-rpo_verl-$(basename "$RECIPE" .sh)}
CKPT_DIR=${CKPT_DIR:-checkpoints/$JOB_NAME}
LOG_DIR=${LOG_DIR:-runs/slurm/$JOB_NAME}
mkdir -p "$LOG_DIR"

ARGS=(
  --job-name="$JOB_NAME"
  --nodes="$NNODES"
  --ntasks-per-node=1
  --gpus-per-node="$GPUS_PER_NODE"
  --chdir="$ROOT"
  --output="$LOG_DIR/%x-%j.out"
  --open-mode=append
)
[ -z "${CPUS_PER_NODE:-}" ] || ARGS+=(--cpus-per-task="$CPUS_PER_NODE")
if [ "$REQUEUE" = 1 ]; then
  ARGS+=(--requeue --signal="B:USR1@${REQUEUE_GRACE_S:-300}")
else
  ARGS+=(--no-requeue)
fi
read -r -a EXTRA <<< "${SBATCH_EXTRA_ARGS:-}"
ARGS+=("${EXTRA[@]}")

# The job inherits this environment (sbatch's default --export=ALL), requeues included.
export RECIPE NNODES GPUS_PER_NODE CKPT_DIR REQUEUE RPO_VERL_ROOT="$ROOT"
CMD=(sbatch "${ARGS[@]}" "$ROOT/scripts/slurm/rpo_verl.sbatch" "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
"${CMD[@]}"
echo "log: $LOG_DIR/$JOB_NAME-<job id>.out; checkpoints and metrics.jsonl: $CKPT_DIR"
echo "plots: python scripts/plot_metrics.py --run $JOB_NAME=$CKPT_DIR --out $LOG_DIR/plots"
