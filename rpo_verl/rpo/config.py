"""Configuration of RPO (``rpo_verl.rpo``): experience cache, prefix cut, loss mask.

Defaults are the RPO paper's / released code's values where they exist (ALGORITHMS.md §1):
offline cache, one trajectory per prompt, eps-greedy update with eps = 0.5, tail cut with
T = 299, prefix outside the loss. ``ratio`` mode's bounds and slack have no paper value; the
defaults here are the project's choice for short responses (small models, CPU runs).

Build with ``rpo_verl.config.build_config(RPOConfig, mapping, "rpo_verl.rpo")``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

CacheInit = Literal["offline", "lazy"]
UpdatePolicyName = Literal["eps_greedy", "best", "correct_only", "static"]
PrefixMode = Literal["tail", "ratio"]
Align = Literal["none", "newline"]
Overlong = Literal["full_path", "shorten", "error"]


@dataclasses.dataclass
class RPOCacheConfig:
    """``rpo_verl.rpo.cache``: the experience cache and its service actor(s)."""

    # offline: load `path` (built by scripts/build_cache.py) at start-up; lazy: a prompt's first
    # visit is a full-path group whose response seeds the cache.
    init: CacheInit = "offline"
    # Cache file for init=offline (.npz written by CacheStore.save / scripts/build_cache.py).
    path: Optional[str] = None
    # Trajectories kept per prompt (paper: 1). A prefix is cut from one of them, chosen uniformly.
    per_prompt: int = 1
    # Write-back policy after rewards (see rpo_verl/rpo/update_policy.py).
    update: UpdatePolicyName = "eps_greedy"
    # eps_greedy: probability of writing the group's best trajectory (else a uniform one).
    epsilon: float = 0.5
    # A trajectory counts as correct when reward > correct_threshold (if the caller gives no flag).
    correct_threshold: float = 0.0
    # Cache service actors; prompts are routed by prompt_id % num_shards.
    num_shards: int = 1
    # Ray restarts of a killed service actor (it reloads its last snapshot).
    max_restarts: int = 3
    # Directory holding the pointer to each shard's last snapshot (null: the trainer picks
    # <trainer.default_local_dir>/rpo_cache). Without it a restarted actor starts from `path`.
    snapshot_dir: Optional[str] = None
    # Compact the token arena when replaced (dead) tokens exceed this fraction of live tokens.
    compact_garbage_frac: float = 0.05
    # Seed of the service's own random choices (update policy, per_prompt pick).
    seed: int = 0

    def __post_init__(self) -> None:
        if self.per_prompt < 1:
            raise ValueError(f"per_prompt: must be >= 1, got {self.per_prompt}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {self.epsilon}")
        if self.num_shards < 1:
            raise ValueError(f"num_shards: must be >= 1, got {self.num_shards}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts: must be >= 0, got {self.max_restarts}")
        if not 0.0 < self.compact_garbage_frac <= 10.0:
            raise ValueError(f"compact_garbage_frac: must be in (0, 10], got {self.compact_garbage_frac}")


@dataclasses.dataclass
class RPOPrefixConfig:
    """``rpo_verl.rpo.prefix``: where the cached response is cut (one cut per prompt per step)."""

    # tail: drop the last t ~ U{1..max_cut} tokens (budget t); ratio: keep rho ~ U[ratio_lo, ratio_hi].
    mode: PrefixMode = "tail"
    max_cut: int = 299
    ratio_lo: float = 0.5
    ratio_hi: float = 0.9
    # ratio mode: suffix budget = removed length + slack.
    slack: int = 16
    # newline: move the cut back so the prefix ends with a newline-containing token.
    align: Align = "none"
    # Prefix that does not fit (prefix + 1 > response budget, or prompt + prefix > max_input_len):
    # full_path (drop it, counted warning), shorten (cut it further back so it fits) or error.
    overlong: Overlong = "full_path"
    # Limit on prompt + prefix tokens (the generation input); 0 = no limit beyond the response budget.
    max_input_len: int = 0

    def __post_init__(self) -> None:
        if self.max_cut < 1:
            raise ValueError(f"max_cut: must be >= 1, got {self.max_cut}")
        if not 0.0 <= self.ratio_lo <= self.ratio_hi <= 1.0:
            raise ValueError(
                f"ratio_lo: need 0 <= ratio_lo <= ratio_hi <= 1, got ratio_lo={self.ratio_lo}, ratio_hi={self.ratio_hi}"
            )
        if self.slack < 0:
            raise ValueError(f"slack: must be >= 0, got {self.slack}")
        if self.max_input_len < 0:
            raise ValueError(f"max_input_len: must be >= 0 (0 = no limit), got {self.max_input_len}")


@dataclasses.dataclass
class RPOLossConfig:
    """``rpo_verl.rpo.loss``."""

    # true: prefix tokens get response_mask 1 (under the loss), as the paper's released code did.
    include_prefix: bool = False


@dataclasses.dataclass
class RPOConfig:
    """``rpo_verl.rpo``: off unless ``enable: true``."""

    enable: bool = False
    cache: RPOCacheConfig = dataclasses.field(default_factory=RPOCacheConfig)
    prefix: RPOPrefixConfig = dataclasses.field(default_factory=RPOPrefixConfig)
    loss: RPOLossConfig = dataclasses.field(default_factory=RPOLossConfig)

    def __post_init__(self) -> None:
        if self.enable and self.cache.init == "offline" and not self.cache.path:
            raise ValueError(
                "cache.path: required when cache.init=offline (build one with scripts/build_cache.py), "
                "or set rpo_verl.rpo.cache.init=lazy"
            )


def rpo_config_from_trainer_config(trainer_config) -> RPOConfig:
    """``RPOConfig`` from a whole trainer config (DictConfig or dict) with an optional ``rpo_verl.rpo``."""
    from rpo_verl.config.validation import build_config

    section = None
    root = trainer_config.get("rpo_verl", None) if trainer_config is not None else None
    if root is not None:
        section = root.get("rpo", None)
    return build_config(RPOConfig, section, "rpo_verl.rpo")


def cross_config_problems(config) -> list[tuple[str, str]]:
    """Settings outside ``rpo_verl.rpo`` that RPO cannot work with: ``(key, message)`` pairs.

    With ``loss.include_prefix=true`` the prefix tokens are under the loss, but they were not sampled
    in this rollout, so there are no behaviour log-probs for them (the agent loop fills 0.0). Any
    setting that takes the rollout's log-probs as the old/behaviour policy would then compute
    ratios ``exp(log π − 0)`` on the prefix: the trainer must recompute the old log-probs instead.
    """
    from omegaconf import OmegaConf

    rpo = rpo_config_from_trainer_config(config)
    if not (rpo.enable and rpo.loss.include_prefix):
        return []
    problems = []
    correction = "algorithm.rollout_correction"
    if OmegaConf.select(config, f"{correction}.bypass_mode", default=False):
        problems.append((f"{correction}.bypass_mode", "true takes the rollout's log-probs as the old policy, but with "
                         "rpo_verl.rpo.loss.include_prefix=true the cached prefix tokens have none (they were not "
                         "sampled now). Fix: bypass_mode=false (the trainer recomputes them) or include_prefix=false."))
    for key in ("rollout_is", "rollout_rs"):
        if OmegaConf.select(config, f"{correction}.{key}", default=None):
            problems.append((f"{correction}.{key}", "importance weights against the rollout's log-probs are undefined "
                             "on the cached prefix tokens that rpo_verl.rpo.loss.include_prefix=true puts under the "
                             f"loss. Fix: {correction}.{key}=null or include_prefix=false."))
    return problems
