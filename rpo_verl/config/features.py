"""Registry of rpo_verl's feature sections under the top-level ``rpo_verl:`` config block.

Each feature (RPO, DPS, R2VPO, ...) owns one section ``rpo_verl.<name>`` described by one config
dataclass (off by default). To add a feature, add one line to ``FEATURES``::

    "rpo": FeatureSpec(config="rpo_verl.rpo.config:RPOConfig",
                       extension="rpo_verl.rpo.trainer_ext:RPOExtension"),

and (so that ``rpo_verl.rpo.enable=true`` works on the command line without a ``+``) the section's
defaults to ``rpo_verl/config/rpo_trainer.yaml``; ``tests/config/test_features.py`` checks that the
YAML defaults equal the dataclass defaults. ``extension`` (optional) names a
``rpo_verl.trainer.extension.TrainerExtension`` subclass that the trainer instantiates when the
section is enabled (``enable: true``, or always if the dataclass has no ``enable`` field).

Classes are named as ``"module:attr"`` strings so that this table can be read without importing
the features (or Ray) and without import cycles.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from rpo_verl.config.validation import ConfigError, build_config


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    config: str  # "module:ConfigDataclass"
    extension: str | None = None  # "module:TrainerExtensionSubclass" or None


FEATURES: dict[str, FeatureSpec] = {
    # One line per feature, e.g.
    # "rpo": FeatureSpec(config="rpo_verl.rpo.config:RPOConfig", extension="rpo_verl.rpo.trainer_ext:RPOExtension"),
    "rpo": FeatureSpec(config="rpo_verl.rpo.config:RPOConfig", extension="rpo_verl.rpo.trainer_ext:RPOExtension"),
    "dps": FeatureSpec(config="rpo_verl.dps.config:DPSConfig", extension="rpo_verl.dps.trainer_ext:DPSExtension"),
    "r2vpo": FeatureSpec(config="rpo_verl.r2vpo.config:R2VPOTrainerConfig", extension="rpo_verl.r2vpo.trainer_ext:R2VPOExtension"),
}


@dataclasses.dataclass
class RunConfig:
    """rpo_verl's own (non-feature) keys directly under ``rpo_verl:``."""

    dry_run: bool = False
    metrics_file: str | None = None
    skip_checks: list[str] = dataclasses.field(default_factory=list)


def load_attr(ref: str) -> Any:
    """``"package.module:Name"`` -> the object."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"{ref!r}: expected 'module:attribute'")
    return getattr(importlib.import_module(module_name), attr)


def _plain(section: Any) -> dict:
    if section is None:
        return {}
    if type(section).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        section = OmegaConf.to_container(section, resolve=True)
    if not isinstance(section, Mapping):
        raise ConfigError(f"rpo_verl: expected a mapping of settings, got {section!r}")
    return dict(section)


def build_run_config(section: Any) -> RunConfig:
    """The ``rpo_verl`` block's own keys (feature sections left out) as a ``RunConfig``."""
    own = {k: v for k, v in _plain(section).items() if k not in FEATURES}
    valid = sorted([f.name for f in dataclasses.fields(RunConfig)] + list(FEATURES))
    unknown = sorted(set(own) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ConfigError(f"rpo_verl.{unknown[0]}: unknown key (valid keys under rpo_verl: {', '.join(valid)})")
    return build_config(RunConfig, own, "rpo_verl")


def build_features(section: Any) -> dict[str, Any]:
    """Build every registered feature's dataclass from ``rpo_verl.<name>`` (absent -> defaults).

    Also rejects unknown keys directly under ``rpo_verl`` (a misspelt feature name), so every
    typo in the block fails at start-up with the dotted key in the message.
    """
    mapping = _plain(section)
    build_run_config(mapping)
    return {
        name: build_config(load_attr(spec.config), mapping.get(name), f"rpo_verl.{name}")
        for name, spec in FEATURES.items()
    }


def is_enabled(feature_config: Any) -> bool:
    """A feature is on when its dataclass says ``enable=True`` (or has no ``enable`` switch)."""
    return bool(getattr(feature_config, "enable", True))
