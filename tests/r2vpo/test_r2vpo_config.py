"""R²VPO config: composed with verl's real Hydra config and built with verl's own
``omega_conf_to_dataclass``, exactly as the actor worker does at start-up."""

import os

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import PolicyLossConfig

from rpo_verl.config import ConfigError
from rpo_verl.r2vpo.config import (
    YAML_DEFAULTS,
    R2VPOConfig,
    R2VPOPolicyLossConfig,
    r2vpo_settings,
    validate_actor_policy_loss,
)

PL = "actor_rollout_ref.actor.policy_loss"
BASE = [
    "actor_rollout_ref.model.path=/nonexistent/model",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
]
CONF_DIR = os.path.join(os.path.dirname(__file__), "conf")


def _stock(*overrides):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=BASE + list(overrides))


def _with_section(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("r2vpo_test_trainer", overrides=BASE + list(overrides))


def _actor(cfg):
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_stock_verl_config_with_plus_keys():
    cfg = _stock(
        f"{PL}._target_=rpo_verl.r2vpo.config.R2VPOPolicyLossConfig",
        f"{PL}.loss_mode=r2vpo",
        f"+{PL}.r2vpo.delta=0.01",
        f"+{PL}.r2vpo.ratio_level=seq_geo_mean",
    )
    actor = _actor(cfg)
    assert isinstance(actor.policy_loss, R2VPOPolicyLossConfig)
    assert isinstance(actor.policy_loss, PolicyLossConfig)  # verl code paths still see their class
    assert actor.policy_loss.loss_mode == "r2vpo"
    assert r2vpo_settings(actor) == R2VPOConfig(delta=0.01, ratio_level="seq_geo_mean")
    assert validate_actor_policy_loss(cfg.actor_rollout_ref.actor.policy_loss).delta == 0.01


def test_target_alone_gives_paper_defaults():
    actor = _actor(_stock(f"{PL}._target_=rpo_verl.r2vpo.config.R2VPOPolicyLossConfig", f"{PL}.loss_mode=r2vpo"))
    assert actor.policy_loss.r2vpo == R2VPOConfig()
    assert (actor.policy_loss.r2vpo.delta, actor.policy_loss.r2vpo.eta, actor.policy_loss.r2vpo.lambda_init) == (
        5e-3,
        0.1,
        0.0,
    )


def test_trainer_yaml_section_allows_overrides_without_plus():
    cfg = _with_section(
        f"{PL}.loss_mode=r2vpo",
        f"{PL}.r2vpo.delta=0.02",
        f"{PL}.r2vpo.dual_rule=absolute",
        f"{PL}.r2vpo.dual_clip=10",
        f"{PL}.r2vpo.lambda_init=0.5",
    )
    settings = r2vpo_settings(_actor(cfg))
    assert settings == R2VPOConfig(delta=0.02, dual_rule="absolute", dual_clip=10.0, lambda_init=0.5)
    section = OmegaConf.to_container(cfg.actor_rollout_ref.actor.policy_loss)
    assert set(section["r2vpo"]) == set(YAML_DEFAULTS["r2vpo"])  # the documented YAML block is complete
    # Other loss modes keep working with the subclass as _target_.
    vanilla = _actor(_with_section())
    assert vanilla.policy_loss.loss_mode == "vanilla" and vanilla.policy_loss.r2vpo == R2VPOConfig()


@pytest.mark.parametrize(
    "override, key",
    [
        ("r2vpo.delta=0", "r2vpo.delta"),
        ("r2vpo.delta=-1e-3", "r2vpo.delta"),
        ("r2vpo.eta=-0.1", "r2vpo.eta"),
        ("r2vpo.lambda_init=-1", "r2vpo.lambda_init"),
        ("r2vpo.dual_rule=clipped", "r2vpo.dual_rule"),
        ("r2vpo.ratio_level=sequence", "r2vpo.ratio_level"),
        ("r2vpo.log_ratio_clamp=0", "r2vpo.log_ratio_clamp"),
        ("r2vpo.dual_clip=0.9", "r2vpo.dual_clip"),
        ("r2vpo.lambda_max=0", "r2vpo.lambda_max"),
        ("r2vpo.lambda_max=inf", "r2vpo.lambda_max"),
        ("r2vpo.delta=small", "r2vpo.delta"),
        ("+actor_rollout_ref.actor.policy_loss.r2vpo.detla=0.1", "r2vpo.detla"),
    ],
)
def test_invalid_values_fail_at_start_up_naming_the_key(override, key):
    if not override.startswith("+"):
        override = f"{PL}.{override}"
    cfg = _with_section(f"{PL}.loss_mode=r2vpo", override)
    with pytest.raises(Exception) as info:  # hydra wraps the ConfigError raised in __post_init__
        _actor(cfg)
    assert f"{PL}.{key}" in str(info.value)
    with pytest.raises(ConfigError, match=f"{PL}.{key}".replace(".", r"\.")):
        validate_actor_policy_loss(cfg.actor_rollout_ref.actor.policy_loss)


def test_r2vpo_section_without_subclass_target_is_rejected_with_the_fix():
    cfg = _stock(f"{PL}.loss_mode=r2vpo", f"+{PL}.r2vpo.delta=0.01")
    with pytest.raises(ConfigError, match="R2VPOPolicyLossConfig"):
        validate_actor_policy_loss(cfg.actor_rollout_ref.actor.policy_loss)
    with pytest.raises(Exception, match="r2vpo"):  # what verl itself would say at worker start-up
        _actor(cfg)


def test_structured_schema_is_omegaconf_compatible():
    """verl sometimes builds configs with OmegaConf.structured; the nested section must survive it."""
    merged = OmegaConf.merge(OmegaConf.structured(R2VPOPolicyLossConfig), {"loss_mode": "r2vpo", "r2vpo": {"eta": 0.3}})
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj.r2vpo, R2VPOConfig) and obj.r2vpo.eta == 0.3


def test_trainer_side_section_with_replay():
    from rpo_verl.r2vpo.config import R2VPOTrainerConfig, build_trainer_config
    from rpo_verl.r2vpo.replay import ReplayConfig

    assert build_trainer_config(None) == R2VPOTrainerConfig() and not build_trainer_config(None).replay.enable
    cfg = build_trainer_config({"replay": {"enable": True, "fraction": 0.25, "max_batches": 3}})
    assert cfg.replay == ReplayConfig(enable=True, fraction=0.25, max_batches=3)
    with pytest.raises(ConfigError, match=r"^rpo_verl\.r2vpo\.replay\.fraction"):
        build_trainer_config({"replay": {"fraction": -1.0}})
    with pytest.raises(ConfigError, match=r"^rpo_verl\.r2vpo\.replay\.enable"):
        build_trainer_config({"replay": {"enable": "yes"}})
