"""What a trainer calls: the Ray worker env, platform activation in the driver; the CPU start-up
check on verl's own default config."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from rpo_verl.backends.cpu.device import usable_cpu_count
from rpo_verl.backends.cpu.env import activate_cpu_platform, cpu_worker_env

from .cpu_test_utils import fresh_env, run_json


def test_cpu_worker_env():
    threads = str(usable_cpu_count())
    assert cpu_worker_env() == {"VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    assert cpu_worker_env(num_threads=3)["OMP_NUM_THREADS"] == "3"
    assert cpu_worker_env(processes_per_node=10**6)["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="num_threads"):
        cpu_worker_env(num_threads=0)
    with pytest.raises(ValueError, match="processes_per_node"):
        cpu_worker_env(processes_per_node=0)


@pytest.fixture(scope="module")
def verl_default_config():
    import verl

    path = os.path.join(os.path.dirname(verl.__file__), "trainer/config/_generated_ppo_trainer.yaml")
    return OmegaConf.load(path)


CPU_OVERRIDES = ["trainer.device=cpu", "actor_rollout_ref.actor.strategy=fsdp2",
                 "actor_rollout_ref.actor.fsdp_config.strategy=fsdp2", "algorithm.adv_estimator=grpo"]


def _strategy_keys(config) -> list[str]:
    from rpo_verl.backends.cpu.checks import check_cpu_options

    return sorted(p.key for p in check_cpu_options(config) if p.key.endswith("strategy"))


def test_cpu_options_names_every_strategy_to_change(verl_default_config):
    on_cpu = OmegaConf.merge(verl_default_config, OmegaConf.from_dotlist(["trainer.device=cpu"]))
    keys = _strategy_keys(on_cpu)
    assert "actor_rollout_ref.actor.strategy" in keys
    assert "critic.strategy" in keys  # verl's default estimator is gae: a critic is trained

    assert _strategy_keys(OmegaConf.merge(verl_default_config, OmegaConf.from_dotlist(CPU_OVERRIDES))) == []


def test_cpu_options_checks_ref_and_critic_only_when_used(verl_default_config):
    with_ref = OmegaConf.from_dotlist(
        [*CPU_OVERRIDES, "actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.ref.strategy=fsdp"]
    )
    assert "actor_rollout_ref.ref.strategy" in _strategy_keys(OmegaConf.merge(verl_default_config, with_ref))
    # ref.strategy follows actor.strategy by interpolation in verl's config; its fsdp_config does not.
    ref_follows = OmegaConf.from_dotlist([*CPU_OVERRIDES, "actor_rollout_ref.actor.use_kl_loss=true"])
    assert _strategy_keys(OmegaConf.merge(verl_default_config, ref_follows)) == [
        "actor_rollout_ref.ref.fsdp_config.strategy"]

    gae = OmegaConf.from_dotlist([*CPU_OVERRIDES, "algorithm.adv_estimator=gae"])
    assert "critic.strategy" in _strategy_keys(OmegaConf.merge(verl_default_config, gae))


def test_activate_refuses_a_conflicting_verl_platform(monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    with pytest.raises(ValueError, match="VERL_PLATFORM='nvidia'"):
        activate_cpu_platform()
    assert os.environ["VERL_PLATFORM"] == "nvidia"


# A driver process with no VERL_PLATFORM: the plugin registered "cpu" but verl would not pick it
# and verl is untouched, until the trainer activates the CPU platform.
ACTIVATE = """
import json, verl
from verl.plugin.platform import PlatformRegistry, platform_manager
from rpo_verl.backends.cpu import process_group
from rpo_verl.backends.cpu.env import activate_cpu_platform

before = {
    "registered": "cpu" in PlatformRegistry.registered_names(),
    "detected": platform_manager._detect_platform_name(),
    "pg_fix": process_group.is_installed(),
}
platform = activate_cpu_platform()
print(json.dumps({"before": before, "platform": type(platform).__name__, "pg_fix": process_group.is_installed()}))
"""


def test_cpu_platform_is_unused_until_the_driver_activates_it():
    report = run_json(["-c", ACTIVATE], fresh_env())
    assert report["before"]["registered"] and report["before"]["detected"] != "cpu"
    assert report["before"]["pg_fix"] is False, "verl must stay untouched unless the CPU platform is chosen"
    assert report["platform"] == "CPUPlatform" and report["pg_fix"] is True


def test_activate_after_verl_chose_another_platform_explains_the_import_order(monkeypatch):
    from verl.plugin.platform import platform_manager
    from verl.plugin.platform.platform_cuda import PlatformCUDA

    from rpo_verl.backends.cpu import process_group

    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    monkeypatch.setattr(platform_manager, "_current_platform", PlatformCUDA())
    monkeypatch.setattr(process_group, "apply_process_group_fix", lambda: False)  # keep this process's verl as is
    with pytest.raises(RuntimeError) as excinfo:
        activate_cpu_platform()
    assert "already selected platform PlatformCUDA" in str(excinfo.value)
    assert "VERL_PLATFORM=cpu" in str(excinfo.value)
