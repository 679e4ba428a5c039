"""R²VPO settings: ``actor_rollout_ref.actor.policy_loss.r2vpo.*`` (ALGORITHMS.md §3).

verl instantiates ``actor_rollout_ref.actor.policy_loss`` through its ``_target_`` and rejects keys
that its ``PolicyLossConfig`` does not know, so R²VPO ships a subclass that adds one ``r2vpo``
section. Select it with::

    actor_rollout_ref.actor.policy_loss._target_=rpo_verl.r2vpo.config.R2VPOPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=r2vpo
    +actor_rollout_ref.actor.policy_loss.r2vpo.delta=0.01   # '+' only where the YAML lacks the section

A trainer YAML that wants the keys without ``+`` declares the section once (see ``YAML_DEFAULTS``);
the subclass accepts every verl key too, so pointing ``_target_`` at it is harmless for other
loss modes. Invalid values fail when verl builds the actor config (worker start-up) and, earlier,
in :func:`validate_actor_policy_loss` for launchers that call it on the driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.workers.config import PolicyLossConfig

from rpo_verl.config import ConfigError, build_config
from rpo_verl.r2vpo.replay import ReplayConfig

CONFIG_KEY = "actor_rollout_ref.actor.policy_loss.r2vpo"
DUAL_RULES = ("normalised", "absolute")
RATIO_LEVELS = ("token", "seq_geo_mean")


@dataclass
class R2VPOConfig:  # not frozen: OmegaConf.structured would make the merged node read-only
    """Hyper-parameters of the R²VPO loss and its dual variable (defaults: ALGORITHMS.md §3).

    delta: variance budget δ of the constraint ``V̂ = mean_i (r_i − r̄)² ≤ δ``.
    lambda_init: λ₀, the multiplier before the first dual step (λ ≥ 0).
    eta: dual step size η.
    dual_rule: ``normalised`` ``λ ← max(0, λ + η(V̂/δ − 1))`` or ``absolute`` ``λ ← max(0, λ + η(V̂ − δ))``.
    lambda_max: ceiling of λ after every dual step (``None``: none). Default 10 ≈ 1/(2√δ) at
        δ = 5e-3 rounded up: at λ = 1/(2√δ) the brake 2λ(r − r̄) cancels a unit advantage on a token one
        budget standard deviation √δ from the mean, so a larger λ lets the penalty outweigh the
        objective on typical tokens (the collapse of issue 15: λ 40–81). The paper gives no value.
    ratio_level: ``token`` ratio per token, or ``seq_geo_mean`` (GSPO-style length-normalised
        sequence ratio ``exp(mean_t log r_t)`` shared by every token of a response).
    log_ratio_clamp: numeric guard, ``|log r| ≤ log_ratio_clamp`` (verl's own guard is 20).
    dual_clip: optional loose ceiling C > 1 on the ratio of negative-advantage tokens in the policy
        gradient term (dual-clip PPO's ``clip_ratio_c``); ``None`` = off (the spec's default).
    """

    delta: float = 5e-3
    lambda_init: float = 0.0
    eta: float = 0.1
    dual_rule: str = "normalised"
    lambda_max: Optional[float] = 10.0
    ratio_level: str = "token"
    log_ratio_clamp: float = 20.0
    dual_clip: Optional[float] = None

    def __post_init__(self):
        for name in ("delta", "lambda_init", "eta", "log_ratio_clamp"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}: must be a finite number, got {getattr(self, name)!r}")
        if self.delta <= 0:
            raise ValueError(f"delta: the variance budget must be > 0, got {self.delta}")
        if self.lambda_init < 0:
            raise ValueError(f"lambda_init: the multiplier must be >= 0, got {self.lambda_init}")
        if self.eta < 0:
            raise ValueError(f"eta: the dual step size must be >= 0 (0 keeps lambda fixed), got {self.eta}")
        if self.lambda_max is not None and not (math.isfinite(self.lambda_max) and self.lambda_max > 0):
            raise ValueError(f"lambda_max: the ceiling must be a finite number > 0 or null, got {self.lambda_max}")
        if self.lambda_max is not None and self.lambda_init > self.lambda_max:
            raise ValueError(f"lambda_max: {self.lambda_max} is below lambda_init={self.lambda_init}")
        if self.dual_rule not in DUAL_RULES:
            raise ValueError(f"dual_rule: {self.dual_rule!r} is not one of {list(DUAL_RULES)}")
        if self.ratio_level not in RATIO_LEVELS:
            raise ValueError(f"ratio_level: {self.ratio_level!r} is not one of {list(RATIO_LEVELS)}")
        if self.log_ratio_clamp <= 0:
            raise ValueError(f"log_ratio_clamp: must be > 0, got {self.log_ratio_clamp}")
        if self.dual_clip is not None and not (math.isfinite(self.dual_clip) and self.dual_clip > 1.0):
            raise ValueError(f"dual_clip: the ceiling must be a number > 1 or null, got {self.dual_clip}")


def build_r2vpo_config(mapping: Any, prefix: str = CONFIG_KEY) -> R2VPOConfig:
    """Strictly build :class:`R2VPOConfig` from a mapping; errors start with the dotted key."""
    return build_config(R2VPOConfig, mapping, prefix)


@dataclass
class R2VPOPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the ``r2vpo`` section (a mapping or an :class:`R2VPOConfig`)."""

    r2vpo: R2VPOConfig = field(default_factory=R2VPOConfig)

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        # BaseConfig freezes fields after __init__; this runs inside it, before anyone reads the field.
        object.__setattr__(self, "r2vpo", build_r2vpo_config(self.r2vpo))


def r2vpo_settings(actor_config: Any) -> R2VPOConfig:
    """The :class:`R2VPOConfig` of an actor config (ActorConfig dataclass or DictConfig).

    Falls back to the defaults when ``policy_loss`` is verl's plain class (``r2vpo`` absent), and
    builds it strictly when ``policy_loss.r2vpo`` is a raw mapping (DictConfig paths).
    """
    policy_loss = actor_config.get("policy_loss", None) if hasattr(actor_config, "get") else None
    section = policy_loss.get("r2vpo", None) if policy_loss is not None else None
    if isinstance(section, R2VPOConfig):
        return section
    return build_r2vpo_config(section)


def validate_actor_policy_loss(policy_loss: Any) -> R2VPOConfig | None:
    """Driver-side start-up check of ``actor_rollout_ref.actor.policy_loss`` (DictConfig or dict).

    Returns the R²VPO settings when ``loss_mode == 'r2vpo'`` (else ``None``) and raises
    :class:`rpo_verl.config.ConfigError` naming the key when the section is invalid or when the
    loss is selected without the subclass as ``_target_`` (verl would then drop or reject it).
    """
    if policy_loss is None:
        return None
    loss_mode = policy_loss.get("loss_mode", "vanilla")
    section = policy_loss.get("r2vpo", None)
    if loss_mode != "r2vpo":
        if section is not None:
            build_r2vpo_config(section)
        return None
    target = policy_loss.get("_target_", "")
    expected = f"{R2VPOPolicyLossConfig.__module__}.{R2VPOPolicyLossConfig.__qualname__}"
    if section is not None and target != expected:
        raise ConfigError(
            f"actor_rollout_ref.actor.policy_loss._target_: {target!r} cannot hold the r2vpo section; "
            f"set actor_rollout_ref.actor.policy_loss._target_={expected}"
        )
    return build_r2vpo_config(section)


# The section a trainer YAML adds under actor_rollout_ref.actor.policy_loss so that the keys can be
# overridden without '+' (documented here; the YAML itself belongs to the trainer's config).
YAML_DEFAULTS = {
    "_target_": f"{R2VPOPolicyLossConfig.__module__}.{R2VPOPolicyLossConfig.__qualname__}",
    "r2vpo": {
        "delta": 5e-3,
        "lambda_init": 0.0,
        "eta": 0.1,
        "dual_rule": "normalised",
        "lambda_max": 10.0,
        "ratio_level": "token",
        "log_ratio_clamp": 20.0,
        "dual_clip": None,
    },
}


@dataclass
class R2VPOTrainerConfig:
    """Controller-side R²VPO settings, section ``rpo_verl.r2vpo`` (the loss and λ are configured
    under ``actor_rollout_ref.actor.policy_loss.r2vpo`` because the training workers read them).

    replay: the off-policy replay of stale rollout batches (``rpo_verl.r2vpo.replay.*``, off by default).
    """

    replay: ReplayConfig = field(default_factory=ReplayConfig)


def build_trainer_config(mapping: Any, prefix: str = "rpo_verl.r2vpo") -> R2VPOTrainerConfig:
    """Strictly build :class:`R2VPOTrainerConfig`; errors name the dotted key."""
    return build_config(R2VPOTrainerConfig, mapping, prefix)
