"""The feature registry: rpo_verl.<name> sections validated by their dataclasses at start-up."""

import dataclasses
import sys
import types
from typing import Literal

import pytest
from omegaconf import OmegaConf

from rpo_verl.config import features
from rpo_verl.config.features import FeatureSpec, build_features, is_enabled, load_attr
from rpo_verl.config.validation import ConfigError, to_dict


@dataclasses.dataclass
class DemoConfig:
    enable: bool = False
    mode: Literal["tail", "ratio"] = "tail"
    epsilon: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {self.epsilon}")


@pytest.fixture
def demo_feature(monkeypatch):
    module = types.ModuleType("rpo_verl_demo_feature")
    module.DemoConfig = DemoConfig
    monkeypatch.setitem(sys.modules, "rpo_verl_demo_feature", module)
    monkeypatch.setitem(features.FEATURES, "demo", FeatureSpec(config="rpo_verl_demo_feature:DemoConfig"))


def test_absent_section_gives_defaults(demo_feature):
    built = build_features(OmegaConf.create({"dry_run": False}))
    assert built["demo"] == DemoConfig()


def test_values_and_errors_name_the_dotted_key(demo_feature):
    built = build_features({"demo": {"enable": True, "mode": "ratio", "epsilon": 1}})
    assert built["demo"] == DemoConfig(enable=True, mode="ratio", epsilon=1.0)
    with pytest.raises(ConfigError, match=r"^rpo_verl\.demo\.epsilonn: unknown key"):
        build_features({"demo": {"epsilonn": 0.1}})
    with pytest.raises(ConfigError, match=r"^rpo_verl\.demo\.mode: 'head' is not one of"):
        build_features({"demo": {"mode": "head"}})
    with pytest.raises(ConfigError, match=r"^rpo_verl\.demo\.epsilon: must be in \[0, 1\]"):
        build_features({"demo": {"epsilon": 2.0}})


def test_misspelt_feature_section_is_rejected(demo_feature):
    with pytest.raises(ConfigError, match=r"^rpo_verl\.dmeo: unknown key .*demo"):
        build_features({"dmeo": {"enable": True}})


def test_is_enabled():
    assert not is_enabled(DemoConfig())
    assert is_enabled(DemoConfig(enable=True))
    assert is_enabled(object())  # no switch: always on


def test_load_attr():
    assert load_attr("rpo_verl.config.features:FeatureSpec") is FeatureSpec
    with pytest.raises(ValueError, match="module:attribute"):
        load_attr("rpo_verl.config.features.FeatureSpec")


@pytest.mark.parametrize("name", sorted(features.FEATURES) or ["<none registered>"])
def test_registered_features_yaml_defaults_match_dataclass(compose_config, name):
    """Each registered feature's section in rpo_trainer.yaml (if any) equals its dataclass defaults."""
    if name not in features.FEATURES:
        pytest.skip("no feature registered yet")
    cls = load_attr(features.FEATURES[name].config)
    cfg = compose_config()
    section = OmegaConf.select(cfg, f"rpo_verl.{name}")
    if section is None:
        pytest.skip(f"rpo_verl.{name} has no YAML section (settable only with '+')")
    assert to_dict(build_features(cfg.rpo_verl)[name]) == to_dict(cls())
    if features.FEATURES[name].extension:
        from rpo_verl.trainer.extension import TrainerExtension

        assert issubclass(load_attr(features.FEATURES[name].extension), TrainerExtension)
