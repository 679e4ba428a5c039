"""Registry of rpo_verl's features: the one place where each feature is registered.

Each feature (RPO, DPS, R2VPO, ...) lives in its own folder ``rpo_verl/<name>/`` and owns one
config section ``rpo_verl.<name>``. Its ``FEATURES`` line names, as ``"module:attr"`` strings,
everything the generic layers need from it:

* ``config``: the section's dataclass (off by default), built and validated by ``build_features``;
* ``checks``: its start-up check, ``(DictConfig) -> list[rpo_verl.config.problems.Problem]``, run
  by ``rpo_verl.config.checks.run_checks`` under the check name ``<name>``
  (``rpo_verl.skip_checks=[<name>]`` skips it);
* ``extension``: a ``rpo_verl.trainer.extension.TrainerExtension`` subclass that the trainer
  instantiates when the section is enabled (``enable: true``, or always if the dataclass has no
  ``enable`` field);
* ``metrics``: the namespace of the metrics its extension logs (``<metrics>/...``; the shared
  ``eff/`` efficiency and ``timing_s/`` namespaces are open to every feature);
* ``components``: its Ray actor classes by class name, with what a failure message calls them
  (``rpo_verl.trainer.failures``: "the RPO cache service failed").
* ``console``: ``(metric, label, format spec)`` fields added to the console's step line while the
  feature is on (``rpo_verl.trainer.console``; shared ``eff/`` token savings are shown anyway).

Adding a fourth method = its folder plus one line here, e.g.::

    "rpo": FeatureSpec(config="rpo_verl.rpo.config:RPOConfig", checks="rpo_verl.rpo.checks:check_rpo",
                       extension="rpo_verl.rpo.trainer_ext:RPOExtension", metrics="rpo"),

and (so that ``rpo_verl.rpo.enable=true`` works on the command line without a ``+``) the section's
defaults in ``rpo_verl/config/rpo_trainer.yaml``; ``tests/config/test_features.py`` checks that the
YAML defaults equal the dataclass defaults and that every reference resolves.

The references are strings so that this table can be read without importing the features (or
Ray): nothing in ``rpo_verl/config/`` or ``rpo_verl/trainer/`` imports a feature module, and the
import graph stays free of cycles (``tests/test_layering.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, Literal

from rpo_verl.config.validation import ConfigError, build_config


# Metric namespaces every feature may write to besides its own.
SHARED_METRIC_NAMESPACES = ("eff", "timing_s")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    config: str  # "module:ConfigDataclass"
    extension: str | None = None  # "module:TrainerExtensionSubclass" or None
    checks: str | None = None  # "module:check_function" (config -> list[Problem]) or None
    metrics: str | None = None  # the extension's metric namespace ("rpo" -> "rpo/..."), None: no metrics
    components: Mapping[str, str] = dataclasses.field(default_factory=dict)  # actor class -> description
    console: tuple[tuple[str, str, str], ...] = ()  # step-line fields: (metric, label, format spec)

    def owns_metric(self, key: str) -> bool:
        """Whether metric ``key`` is in this feature's namespace or a shared one."""
        namespace = key.partition("/")[0] if "/" in key else None
        return namespace is not None and (namespace == self.metrics or namespace in SHARED_METRIC_NAMESPACES)


FEATURES: dict[str, FeatureSpec] = {
    # One line per feature (see the module docstring).
    "rpo": FeatureSpec(config="rpo_verl.rpo.config:RPOConfig", checks="rpo_verl.rpo.checks:check_rpo",
                       extension="rpo_verl.rpo.trainer_ext:RPOExtension", metrics="rpo",
                       components={"CacheServiceActor": "RPO cache service"},
                       console=(("rpo/cache_hit_rate", "cache hits", ".0%"),)),
    "dps": FeatureSpec(config="rpo_verl.dps.config:DPSConfig",
                       extension="rpo_verl.dps.trainer_ext:DPSExtension", metrics="dps",
                       components={"DPSScheduler": "DPS scheduler"},
                       console=(("dps/effective_ratio", "effective prompts", ".0%"),)),
    "r2vpo": FeatureSpec(config="rpo_verl.r2vpo.config:R2VPOTrainerConfig", checks="rpo_verl.r2vpo.checks:startup_problems",
                         extension="rpo_verl.r2vpo.trainer_ext:R2VPOExtension", metrics="r2vpo",
                         console=(("r2vpo/lambda_end", "lambda", ".3g"),)),
}


@dataclasses.dataclass
class RunConfig:
    """rpo_verl's own (non-feature) keys directly under ``rpo_verl:``."""

    dry_run: bool = False
    # steps: one line per training step (rpo_verl.trainer.console); full: verl's per-step metric
    # dump (trainer.logger's "console"); quiet: start and end lines only.
    console: Literal["steps", "full", "quiet"] = "steps"
    metrics_file: str | None = None
    skip_checks: list[str] = dataclasses.field(default_factory=list)
    # How often verl's sync replay buffer checks whether a step's rollouts are all done. verl polls
    # every 2.0 s (not configurable there), so each rollout phase is rounded up to a multiple of
    # 2 s; measured in docs/config.md.
    sample_poll_s: float = 0.1

    def __post_init__(self):
        if not (0.0 < self.sample_poll_s <= 10.0):
            raise ValueError(f"sample_poll_s: must be in (0, 10] seconds, got {self.sample_poll_s}")


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


def feature_checks() -> dict[str, Any]:
    """The registered features' start-up checks by check name (the feature's name), in
    ``FEATURES`` order; imports each feature's checks module."""
    return {name: load_attr(spec.checks) for name, spec in FEATURES.items() if spec.checks}


def is_enabled(feature_config: Any) -> bool:
    """A feature is on when its dataclass says ``enable=True`` (or has no ``enable`` switch)."""
    return bool(getattr(feature_config, "enable", True))
