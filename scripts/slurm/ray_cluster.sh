# shellcheck shell=bash
# Functions for bringing up a Ray cluster inside a Slurm allocation. Sourced by rpo_verl.sbatch
# (and by tests/scripts/test_slurm.py, which runs them against fake srun/scontrol/ray executables).

log() { echo "[rpo_verl-slurm $(date +%H:%M:%S)] $*" >&2; }
die() { echo "[rpo_verl-slurm] ERROR: $*" >&2; exit 1; }

# Fill the global array NODES with the allocation's hostnames, one element per node.
# (verl's example wrote nodes_array=("$nodes"), which is ONE element holding every name.)
slurm_nodes() {
  local nodelist=${1:-${SLURM_JOB_NODELIST:-}}
  [ -n "$nodelist" ] || die "SLURM_JOB_NODELIST is empty: run this inside an allocation (sbatch/salloc)"
  local hosts
  hosts=$(scontrol show hostnames "$nodelist") ||
    die "'scontrol show hostnames $nodelist' failed (see its message above): cannot list the job's nodes"
  mapfile -t NODES <<< "$hosts"
  [ -n "$hosts" ] && [ "${#NODES[@]}" -gt 0 ] || die "'scontrol show hostnames $nodelist' listed no hosts"
}

# GPUs per node from Slurm's variables: SLURM_GPUS_ON_NODE (a number) or SLURM_GPUS_PER_NODE
# (which may carry a type, e.g. "h100:8").
slurm_gpus_per_node() {
  if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
    echo "$SLURM_GPUS_ON_NODE"
  elif [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then
    echo "${SLURM_GPUS_PER_NODE##*:}"
  else
    echo ""
  fi
}

# Ray's token authentication, one mode for every process of the job. Ray (2.5x) turns it on for
# `ray start --head` whenever a token file exists (~/.ray/auth_token, which any local ray.init()
# writes), but `ray status` and `ray.init(address=...)` follow RAY_AUTH_MODE only: without this the
# head demands a token that the status poll and the trainer never send ("InvalidAuthToken").
# An explicit RAY_AUTH_MODE is kept; the exported value reaches every srun step.
ray_auth_mode() {
  if [ -z "${RAY_AUTH_MODE:-}" ]; then
    if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
      RAY_AUTH_MODE=token
    else
      RAY_AUTH_MODE=disabled
    fi
  fi
  export RAY_AUTH_MODE
}

# Prefix for every command run with srun. Slurm's gres/gpu sets CUDA_VISIBLE_DEVICES and
# ROCR_VISIBLE_DEVICES (the same list) in each step, and verl's workers refuse both at once
# ("Please don't set ROCR_VISIBLE_DEVICES when HIP/CUDA_VISIBLE_DEVICES is set"; verl converts a
# lone ROCR_VISIBLE_DEVICES itself), so the step drops ROCR_VISIBLE_DEVICES when CUDA's is set.
# shellcheck disable=SC2016,SC2034  # expanded inside the step; used by rpo_verl.sbatch
IN_STEP=(bash -c '[ -z "${CUDA_VISIBLE_DEVICES:-}" ] || unset ROCR_VISIBLE_DEVICES; exec "$@"' rpo_verl_step)

# First IPv4 address of a node, asked on the node itself (hostname -I may list several).
node_ip() {
  local node=$1 out a
  local -a addrs
  out=$(srun --nodes=1 --ntasks=1 --overlap -w "$node" hostname --ip-address) ||
    die "could not get the IP address of $node (srun hostname --ip-address failed)"
  read -r -a addrs <<< "$out"
  [ "${#addrs[@]}" -gt 0 ] || die "node $node reported no IP address"
  for a in "${addrs[@]}"; do
    case $a in *.*.*.*) echo "$a"; return 0 ;; esac
  done
  echo "${addrs[0]}"
}

# Total GPUs of the cluster from `ray status` text on stdin: the " used/total GPU" line of the
# (Total) Usage section. Lines such as "GPU_group_..." (placement groups) are not GPUs. Prints 0
# when there is no GPU line (no node joined yet, or a CPU-only cluster).
ray_gpu_total() {
  awk '
    /^[[:space:]]*[0-9.]+\/[0-9.]+[[:space:]]+GPU[[:space:]]*$/ {
      split($1, parts, "/"); total = parts[2] + 0; found = 1; exit
    }
    END { printf "%d\n", (found ? total : 0) }
  '
}

# Number of alive nodes from `ray status` text on stdin: the " <count> <node type>" lines of the
# Active: and Idle: sections (Ray's v2 autoscaler lists idle nodes apart from active ones).
ray_node_count() {
  awk '
    /^(Active|Idle):/ { in_section = 1; next }
    /^[A-Za-z]/ { in_section = 0 }
    in_section && /^[[:space:]]+[0-9]+[[:space:]]+[^(]/ { n += $1 }
    END { printf "%d\n", n + 0 }
  '
}

# Wait until `ray status` shows NODES nodes and GPUS GPUs, or fail after TIMEOUT seconds with the
# last status in the message. Optional WATCH_PID: fail at once if that process (the Ray head's
# srun) has exited.
ray_wait_for_cluster() {
  local address=$1 want_nodes=$2 want_gpus=$3 timeout=$4 interval=$5 watch_pid=${6:-}
  local start now status gpus nodes
  start=$(date +%s)
  log "waiting up to ${timeout}s for $want_nodes node(s) with $want_gpus GPU(s) in total at $address"
  while true; do
    status=$(ray status --address "$address" 2>&1) || true
    gpus=$(printf '%s\n' "$status" | ray_gpu_total)
    nodes=$(printf '%s\n' "$status" | ray_node_count)
    if [ "$gpus" -ge "$want_gpus" ] && [ "$nodes" -ge "$want_nodes" ]; then
      log "Ray cluster ready: $nodes node(s), $gpus GPU(s)"
      return 0
    fi
    if [ -n "$watch_pid" ] && ! kill -0 "$watch_pid" 2>/dev/null; then
      printf '%s\n' "$status" >&2
      die "the Ray head process (srun pid $watch_pid) exited before the cluster was ready; see its output above"
    fi
    now=$(date +%s)
    if [ $((now - start)) -ge "$timeout" ]; then
      printf '%s\n' "--- last 'ray status --address $address' ---" "$status" "---" >&2
      die "timed out after ${timeout}s waiting for the Ray cluster: expected $want_nodes node(s) and $want_gpus GPU(s) (NNODES x GPUS_PER_NODE), saw $nodes node(s) and $gpus GPU(s). Check the worker logs above, GPUS_PER_NODE and the job's --gpus-per-node, or raise RAY_WAIT_TIMEOUT."
    fi
    sleep "$interval"
  done
}
