"""build_config: strict dataclass construction with errors naming the full dotted key."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
from omegaconf import OmegaConf

from rpo_verl.config import ConfigError, build_config


@dataclass
class Inner:
    mode: Literal["tail", "ratio"] = "tail"
    max_cut: int = 299

    def __post_init__(self):
        if self.max_cut < 1:
            raise ValueError(f"max_cut: must be >= 1, got {self.max_cut}")


@dataclass
class Outer:
    enable: bool = False
    epsilon: float = 0.5
    path: Optional[str] = None
    ids: list[int] = field(default_factory=list)
    prefix: Inner = field(default_factory=Inner)


def test_defaults_from_empty_and_none():
    assert build_config(Outer, None, "rpo_verl.rpo") == Outer()
    assert build_config(Outer, {}, "rpo_verl.rpo") == Outer()


def test_values_from_omegaconf_nested_and_int_to_float():
    cfg = OmegaConf.create({"enable": True, "epsilon": 1, "ids": [1, 2], "prefix": {"mode": "ratio"}})
    built = build_config(Outer, cfg, "rpo_verl.rpo")
    assert built.enable is True and built.epsilon == 1.0 and isinstance(built.epsilon, float)
    assert built.prefix == Inner(mode="ratio") and built.ids == [1, 2]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"enabel": True}, "rpo_verl.rpo.enabel: unknown key"),
        ({"prefix": {"maxcut": 3}}, "rpo_verl.rpo.prefix.maxcut: unknown key"),
        ({"enable": "yes"}, "rpo_verl.rpo.enable: expected true/false"),
        ({"epsilon": "high"}, "rpo_verl.rpo.epsilon: expected a number"),
        ({"prefix": {"mode": "head"}}, "rpo_verl.rpo.prefix.mode: 'head' is not one of"),
        ({"prefix": {"max_cut": 0}}, "rpo_verl.rpo.prefix.max_cut: must be >= 1"),
        ({"ids": [1, "x"]}, r"rpo_verl.rpo.ids\[1\]: expected an integer"),
        ({"prefix": 3}, "rpo_verl.rpo.prefix: expected a mapping"),
    ],
)
def test_invalid_settings_name_the_key(mapping, message):
    with pytest.raises(ConfigError, match=message):
        build_config(Outer, mapping, "rpo_verl.rpo")


def test_unknown_key_message_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        build_config(Outer, {"bogus": 1}, "rpo_verl.rpo")
    assert "enable" in str(err.value) and "epsilon" in str(err.value)
