"""RPOConfig: paper defaults, strict nested building, range checks naming the dotted key."""

import pytest

from rpo_verl.config import ConfigError, build_config
from rpo_verl.rpo.config import RPOConfig, rpo_config_from_trainer_config


def test_defaults_are_the_papers():
    cfg = build_config(RPOConfig, None, "rpo_verl.rpo")
    assert cfg.enable is False
    assert (cfg.cache.init, cfg.cache.per_prompt, cfg.cache.update, cfg.cache.epsilon) == (
        "offline",
        1,
        "eps_greedy",
        0.5,
    )
    assert (cfg.prefix.mode, cfg.prefix.max_cut, cfg.prefix.align, cfg.prefix.overlong) == (
        "tail",
        299,
        "none",
        "full_path",
    )
    assert cfg.loss.include_prefix is False


def test_nested_mapping():
    cfg = build_config(
        RPOConfig,
        {
            "enable": True,
            "cache": {"init": "lazy", "update": "best", "num_shards": 2},
            "prefix": {"mode": "ratio", "slack": 4},
        },
        "rpo_verl.rpo",
    )
    assert (
        cfg.cache.update == "best"
        and cfg.cache.num_shards == 2
        and cfg.prefix.mode == "ratio"
        and cfg.prefix.slack == 4
    )


@pytest.mark.parametrize(
    "mapping, key",
    [
        ({"cache": {"epsilon": 1.5}}, "rpo_verl.rpo.cache.epsilon"),
        ({"cache": {"per_prompt": 0}}, "rpo_verl.rpo.cache.per_prompt"),
        ({"cache": {"update": "newest"}}, "rpo_verl.rpo.cache.update"),
        ({"prefix": {"max_cut": 0}}, "rpo_verl.rpo.prefix.max_cut"),
        ({"prefix": {"ratio_lo": 0.9, "ratio_hi": 0.5}}, "rpo_verl.rpo.prefix.ratio_lo"),
        ({"prefix": {"align": "sentence"}}, "rpo_verl.rpo.prefix.align"),
        ({"prefix": {"cut": 3}}, "rpo_verl.rpo.prefix.cut"),
        ({"loss": {"include_prefix": "yes"}}, "rpo_verl.rpo.loss.include_prefix"),
        ({"enable": True}, "rpo_verl.rpo.cache.path"),
    ],
)
def test_bad_values_name_the_key(mapping, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(RPOConfig, mapping, "rpo_verl.rpo")


def test_from_trainer_config():
    from omegaconf import OmegaConf

    cfg = rpo_config_from_trainer_config(OmegaConf.create({"rpo_verl": {"rpo": {"loss": {"include_prefix": True}}}}))
    assert cfg.loss.include_prefix is True
    assert rpo_config_from_trainer_config(OmegaConf.create({"trainer": {}})) == RPOConfig()
