"""Hydra composition of rpo_trainer.yaml over verl's ppo_trainer.yaml, and the CPU preset."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rpo_verl.config.checks import check_cpu_options, required_logical_cpus
from rpo_verl.config.features import RunConfig, build_run_config
from rpo_verl.config.validation import ConfigError


def test_base_config_is_verls_ppo_trainer_with_rpo_verl_defaults(compose_config):
    cfg = compose_config()
    # verl's tree is all there (a few keys from different groups of its defaults list)
    assert cfg.trainer.use_v1 is True and cfg.trainer.v1.trainer_mode == "sync"
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    assert cfg.transfer_queue.backend.storage_backend == "SimpleStorage"
    # rpo_verl's own defaults on top
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert list(cfg.trainer.logger) == ["console", "file"]
    assert cfg.trainer.device == "cuda"
    assert build_run_config(cfg.rpo_verl) == RunConfig()


def test_cpu_preset_overrides(compose_config):
    cfg = compose_config("preset=cpu")
    assert cfg.trainer.device == "cpu" and cfg.trainer.n_gpus_per_node == 1
    arr = cfg.actor_rollout_ref
    assert arr.rollout.name == "hf" and arr.rollout.tensor_model_parallel_size == 1
    assert arr.actor.strategy == arr.actor.fsdp_config.strategy == arr.ref.strategy == "fsdp2"
    assert arr.actor.use_torch_compile is False and arr.actor.fsdp_config.use_torch_compile is False
    assert arr.model.use_remove_padding is False
    assert arr.model.override_config.attn_implementation == "sdpa"
    assert arr.rollout.agent.num_workers == 1 and cfg.reward.num_workers == 1
    assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
    assert cfg.ray_kwargs.ray_init.num_gpus == 1
    assert cfg.ray_kwargs.ray_init.num_cpus >= required_logical_cpus(cfg)
    assert not arr.actor.use_kl_loss and not cfg.algorithm.use_kl_in_reward  # no reference model
    # the preset passes the CPU option checks by itself (model/data checks need real paths)
    assert check_cpu_options(cfg) == []


def test_command_line_overrides_beat_the_preset(compose_config):
    cfg = compose_config("preset=cpu", "actor_rollout_ref.rollout.name=vllm", "data.train_batch_size=16")
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.data.train_batch_size == 16
    assert [p.key for p in check_cpu_options(cfg)] == ["actor_rollout_ref.rollout.name"]


def test_unknown_preset_fails_to_compose(compose_config):
    with pytest.raises(ConfigCompositionException, match="preset"):
        compose_config("preset=tpu")


def test_misspelt_rpo_verl_key_fails(compose_config):
    # without "+": Hydra refuses keys that are not in the config
    with pytest.raises(ConfigCompositionException, match="dry_rn"):
        compose_config("rpo_verl.dry_rn=true")
    # with "+": rpo_verl's strict check names the key
    cfg = compose_config("+rpo_verl.dry_rn=true")
    with pytest.raises(ConfigError, match=r"^rpo_verl\.dry_rn: unknown key"):
        build_run_config(cfg.rpo_verl)


def test_run_config_types_are_checked(compose_config):
    cfg = compose_config("rpo_verl.skip_checks=memory")
    with pytest.raises(ConfigError, match=r"rpo_verl\.skip_checks: expected a list"):
        build_run_config(cfg.rpo_verl)
    cfg = compose_config("rpo_verl.skip_checks=[memory]", "rpo_verl.dry_run=true")
    assert build_run_config(cfg.rpo_verl) == RunConfig(dry_run=True, skip_checks=["memory"])


def test_sample_poll_s_bounds(compose_config):
    assert build_run_config(compose_config("rpo_verl.sample_poll_s=0.5").rpo_verl).sample_poll_s == 0.5
    for bad in ("0", "-1", "11"):
        with pytest.raises(ConfigError, match=r"rpo_verl\.sample_poll_s: must be in \(0, 10\]"):
            build_run_config(compose_config(f"rpo_verl.sample_poll_s={bad}").rpo_verl)


def test_config_resolves(compose_config):
    cfg = compose_config("preset=cpu", "actor_rollout_ref.model.path=/m")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["actor_rollout_ref"]["rollout"]["n_gpus_per_node"] == 1
    assert resolved["actor_rollout_ref"]["ref"]["strategy"] == "fsdp2"


def test_cpu_preset_declares_the_hf_server_options_with_their_defaults(compose_config):
    from rpo_verl.config import build_config, to_dict
    from rpo_verl.rollout.hf import HFEngineOptions

    cfg = compose_config("preset=cpu", "actor_rollout_ref.rollout.engine_kwargs.hf.dtype=bfloat16")
    hf = OmegaConf.to_container(cfg.actor_rollout_ref.rollout.engine_kwargs.hf)
    assert hf.pop("dtype") == "bfloat16"  # overridable without '+'
    assert hf == {k: v for k, v in to_dict(HFEngineOptions()).items() if k != "dtype"}
    assert build_config(HFEngineOptions, cfg.actor_rollout_ref.rollout.engine_kwargs.hf, "x").dtype == "bfloat16"
