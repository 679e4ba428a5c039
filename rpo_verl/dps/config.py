"""DPS configuration (``rpo_verl.dps.*``); defaults follow ALGORITHMS.md §2 and the DPS scripts
(``hmm_transition_decay_ratio=0.7``, ``hmm_prior_alpha=1.0``, top-k strategy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from rpo_verl.config import build_config

CONFIG_PREFIX = "rpo_verl.dps"


@dataclass
class DPSConfig:
    # Off by default: verl's own sampler is used unless this is true.
    enable: bool = False
    # dps (HMM top-B), mopps (Beta Thompson), uniform (verl's shuffled epochs). DAPO dynamic sampling
    # is algorithm.filter_groups and combines with any of these.
    selector: Literal["dps", "mopps", "uniform"] = "dps"
    # λ: 0.7 for long math (DPS scripts), 0.5 for short tasks; MoPPS uses the same key.
    decay: float = 0.7
    # α₀ (every Dirichlet count) for dps; Beta(α₀, α₀) prior for mopps.
    prior_alpha: float = 1.0
    # Candidates = pool_ratio × batch from the shuffled stream; null = the whole dataset.
    pool_ratio: Optional[float] = None
    seed: int = 0
    # Trainer: a group's success rate is the mean of reward_extra_info[accuracy_key] (the reward
    # function's raw accuracy; verl sets "acc" = score for functions returning a number).
    accuracy_key: str = "acc"
    # A prompt whose α and μ are this close to the prior fixed point is stored implicitly (hmm.py).
    settle_tol: float = 1e-9
    # Ray actor fault tolerance: restarts, each resuming from snapshot_path when it exists.
    max_restarts: int = 3
    snapshot_path: Optional[str] = None
    snapshot_every: int = 1
    actor_name: str = "rpo_verl_dps_scheduler"

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"decay: λ must be in [0, 1], got {self.decay}")
        if not self.prior_alpha > 0.0:
            raise ValueError(f"prior_alpha: must be > 0, got {self.prior_alpha}")
        if self.pool_ratio is not None and not self.pool_ratio >= 1.0:
            raise ValueError(f"pool_ratio: must be >= 1 (candidates per selected prompt) or null, got {self.pool_ratio}")
        if not 0.0 <= self.settle_tol < 1e-3:
            raise ValueError(f"settle_tol: must be in [0, 1e-3), got {self.settle_tol}")
        if self.max_restarts < -1:
            raise ValueError(f"max_restarts: must be >= -1 (-1 = unlimited), got {self.max_restarts}")
        if self.snapshot_every < 1:
            raise ValueError(f"snapshot_every: must be >= 1, got {self.snapshot_every}")
        if not self.accuracy_key:
            raise ValueError("accuracy_key: must not be empty (the reward_extra_info entry holding the accuracy)")
        if not self.actor_name:
            raise ValueError("actor_name: must not be empty")


def build_dps_config(mapping: Any) -> DPSConfig:
    """``DPSConfig`` from the ``rpo_verl.dps`` mapping (dict, DictConfig or None), strictly checked."""
    return build_config(DPSConfig, mapping, CONFIG_PREFIX)
