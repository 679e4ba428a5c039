"""What a trainer calls: the Ray worker env, platform activation in the driver, the config check."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from rpo_verl.backends.cpu.device import usable_cpu_count
from rpo_verl.backends.cpu.env import activate_cpu_platform, check_cpu_config, cpu_worker_env

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


CPU_OVERRIDES = ["trainer.device=cpu", "actor_rollout_ref.actor.strategy=fsdp2", "algorithm.adv_estimator=grpo"]


def test_check_cpu_config_names_every_setting_to_change(verl_default_config):
    with pytest.raises(ValueError) as excinfo:
        check_cpu_config(verl_default_config)
    message = str(excinfo.value)
    assert "trainer.device='cuda': set trainer.device=cpu" in message
    assert "actor_rollout_ref.actor.strategy='fsdp': set actor_rollout_ref.actor.strategy=fsdp2" in message
    assert "critic.strategy='fsdp'" in message  # verl's default estimator is gae: a critic is trained

    check_cpu_config(OmegaConf.merge(verl_default_config, OmegaConf.from_dotlist(CPU_OVERRIDES)))


def test_check_cpu_config_checks_ref_and_critic_only_when_used(verl_default_config):
    with_ref = OmegaConf.from_dotlist(
        [*CPU_OVERRIDES, "actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.ref.strategy=fsdp"]
    )
    with pytest.raises(ValueError, match="actor_rollout_ref.ref.strategy='fsdp'"):
        check_cpu_config(OmegaConf.merge(verl_default_config, with_ref))
    # ref.strategy follows actor.strategy by interpolation in verl's config.
    ref_follows = OmegaConf.from_dotlist([*CPU_OVERRIDES, "actor_rollout_ref.actor.use_kl_loss=true"])
    check_cpu_config(OmegaConf.merge(verl_default_config, ref_follows))

    gae = OmegaConf.from_dotlist([*CPU_OVERRIDES, "algorithm.adv_estimator=gae"])
    with pytest.raises(ValueError, match="critic.strategy='fsdp'"):
        check_cpu_config(OmegaConf.merge(verl_default_config, gae))


def test_check_cpu_config_accepts_plain_mappings():
    check_cpu_config({"trainer": {"device": "cpu"}, "actor_rollout_ref": {"actor": {"strategy": "fsdp2"}}})
    with pytest.raises(ValueError, match="trainer.device=None"):
        check_cpu_config({"actor_rollout_ref": {"actor": {"strategy": "fsdp2"}}})


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
