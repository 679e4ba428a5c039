"""Environment of verl's vLLM server processes on the CPU platform (no verl or rpo_verl imports)."""

from __future__ import annotations

import os

# vLLM-CPU settings for verl's vLLM server processes; a value already in the environment wins.
ROLLOUT_SERVER_DEFAULTS = {
    # Sleeping (not spinning) OpenMP threads: an idle engine must not take the trainer's cores.
    "OMP_WAIT_POLICY": "PASSIVE",
    # KV-cache space in GiB (vLLM-CPU's own default is 4 GiB per engine).
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # vLLM-CPU pins its OpenMP threads to cores by default ("auto"); the trainer shares those
    # cores between rollouts, so threads are left to the OS scheduler.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


def rollout_server_env() -> dict[str, str]:
    """Environment for verl's vLLM server actor on the CPU platform (``CPUPlatform.rollout_env_vars``)."""
    return {key: os.environ.get(key, default) for key, default in ROLLOUT_SERVER_DEFAULTS.items()}
