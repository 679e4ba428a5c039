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


# ----------------------------------------------------------------------------- the feature contract


def _demo_check(config):
    from rpo_verl.config.problems import Problem

    if OmegaConf.select(config, "rpo_verl.demo.mode") == "ratio":
        return [Problem("demo", "rpo_verl.demo.mode", "'ratio' clashes with the rest of the config")]
    return []


@pytest.fixture
def demo_feature_with_check(demo_feature, monkeypatch):
    sys.modules["rpo_verl_demo_feature"].demo_check = _demo_check
    monkeypatch.setitem(features.FEATURES, "demo", FeatureSpec(config="rpo_verl_demo_feature:DemoConfig",
                                                               checks="rpo_verl_demo_feature:demo_check"))


def test_registered_check_runs_under_the_feature_name_and_can_be_skipped(demo_feature_with_check):
    from rpo_verl.config.checks import CHECKS, all_checks, run_checks

    assert list(all_checks()) == [*CHECKS, *[n for n, s in features.FEATURES.items() if s.checks]]
    assert all_checks()["demo"] is _demo_check
    cfg = OmegaConf.create({"rpo_verl": {"demo": {"mode": "ratio"}}})
    generic = list(CHECKS)
    (problem,) = run_checks(cfg, skip=[n for n in all_checks() if n != "demo"])
    assert (problem.check, problem.key) == ("demo", "rpo_verl.demo.mode")
    assert [p.check for p in run_checks(cfg, skip=generic)].count("demo") == 1
    assert all(p.check != "demo" for p in run_checks(cfg, skip=[*generic, "demo"]))


def test_feature_named_like_a_generic_check_is_refused(demo_feature, monkeypatch):
    from rpo_verl.config.checks import all_checks

    monkeypatch.setitem(sys.modules["rpo_verl_demo_feature"].__dict__, "demo_check", _demo_check)
    monkeypatch.setitem(features.FEATURES, "memory", FeatureSpec(config="rpo_verl_demo_feature:DemoConfig",
                                                                 checks="rpo_verl_demo_feature:demo_check"))
    with pytest.raises(ValueError, match=r"\['memory'\] are named like a generic start-up check"):
        all_checks()


@pytest.mark.parametrize("name", sorted(features.FEATURES))
def test_registered_feature_references_resolve(compose_config, name):
    """Each FEATURES line names an existing dataclass, check, extension and metric namespace, all in
    the feature's own folder (rpo_verl/<name>/)."""
    from rpo_verl.trainer.extension import TrainerExtension

    spec = features.FEATURES[name]
    refs = [spec.config, spec.checks, spec.extension]
    assert all(ref.startswith(f"rpo_verl.{name}.") for ref in refs if ref), refs
    assert dataclasses.is_dataclass(load_attr(spec.config))
    if spec.checks:
        assert load_attr(spec.checks)(compose_config()) == []  # the defaults pass
    if spec.extension:
        assert issubclass(load_attr(spec.extension), TrainerExtension)
        assert spec.metrics == name  # each feature logs under its own name


def test_metric_namespaces():
    spec = FeatureSpec(config="m:C", metrics="rpo")
    assert spec.owns_metric("rpo/cache_hit_rate") and spec.owns_metric("eff/generated_tokens")
    assert spec.owns_metric("timing_s/validate")
    assert not spec.owns_metric("dps/step") and not spec.owns_metric("rpo") and not spec.owns_metric("rpox/a")
    assert not FeatureSpec(config="m:C").owns_metric("rpo/a")
