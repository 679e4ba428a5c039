"""Replay of stale rollout batches for R²VPO (ALGORITHMS.md §3, "Off-policy reuse"). Off by default.

The buffer keeps the last K rollout batches. Each sample carries its *behaviour* log-probs
``μ(y_t)`` (the policy that generated it, ``[B*G, L]``) and the advantage computed at generation
time (``[B*G, L]``), so a replayed sample's ratio is ``π_θ/μ`` and its advantage is not
recomputed. Each training step uses the fresh batch plus ``round(fraction × fresh groups)``
groups drawn uniformly without replacement from the buffer (``fraction`` = ρ, replayed groups
per fresh group: ρ = 0.5 makes a third of the step's samples stale). Sampling is by group (the
``uid`` of GRPO) so the trained batch stays a whole number of groups of ``n``. A batch added at
step s is evicted once ``current_step − s > max_age`` (default K), and at most K batches are kept:
a trainer that samples at step t before adding batch t replays from batches t−1 … t−K.

Pure: torch/numpy only; tensors are stored on the CPU, other per-sample fields as numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np
import torch

REQUIRED_FIELDS = ("behaviour_log_probs", "advantages", "response_mask")
IS_LEVELS = ("token", "sequence")


@dataclass(frozen=True)
class ReplayConfig:
    """``enable`` (off by default), ``max_batches`` K = 2, ``fraction`` ρ = 0.5 (replayed groups per
    fresh group), ``max_age`` (steps; ``None`` = K), ``seed`` of the sampler; ``is_cap`` c and
    ``is_level`` (``token`` | ``sequence``) of the truncated behaviour weight ``w = min(π_prox/μ, c)``
    that a replayed sample carries in the decoupled objective (``rpo_verl.r2vpo.proximal``).
    c = 2 is verl's default truncation of its token-level rollout-correction weights
    (``rollout_is_threshold``); the paper gives no value."""

    enable: bool = False
    max_batches: int = 2
    fraction: float = 0.5
    max_age: Optional[int] = None
    seed: int = 0
    is_cap: float = 2.0
    is_level: str = "token"

    def __post_init__(self):
        if self.max_batches < 1:
            raise ValueError(f"max_batches: must be >= 1, got {self.max_batches}")
        if not (0.0 <= self.fraction <= 16.0):
            raise ValueError(f"fraction: replayed groups per fresh group must be in [0, 16], got {self.fraction}")
        if self.max_age is not None and self.max_age < 1:
            raise ValueError(f"max_age: must be >= 1 step or null, got {self.max_age}")
        if not (isinstance(self.is_cap, (int, float)) and math.isfinite(self.is_cap) and self.is_cap > 0):
            raise ValueError(f"is_cap: the weight truncation c must be a finite number > 0, got {self.is_cap}")
        if self.is_level not in IS_LEVELS:
            raise ValueError(f"is_level: {self.is_level!r} is not one of {list(IS_LEVELS)}")


def build_replay_config(mapping: Any, prefix: str = "rpo_verl.r2vpo.replay") -> ReplayConfig:
    """Strictly build :class:`ReplayConfig` (unknown keys / wrong types / ranges name the key)."""
    from rpo_verl.config import build_config

    return build_config(ReplayConfig, mapping, prefix)


def _to_storage(name: str, value: Any, batch_size: Optional[int]) -> Any:
    if isinstance(value, torch.Tensor):
        stored = value.detach().to("cpu")
    else:
        stored = np.asarray(value, dtype=object if isinstance(value, (list, tuple)) else None)
    if stored.ndim == 0:
        raise ValueError(f"replay: field {name!r} must have a leading batch dimension")
    if batch_size is not None and stored.shape[0] != batch_size:
        raise ValueError(f"replay: field {name!r} has {stored.shape[0]} rows, expected {batch_size}")
    return stored


def _object_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _pad_cat(name: str, parts: list[Any]) -> Any:
    """Concatenate along dim 0; 2-D+ tensors of different widths are right-padded with zeros
    (a zero ``response_mask`` keeps padded positions out of the loss)."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        if parts[0].dim() >= 2:
            width = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, width - p.shape[1])) for p in parts]
        return torch.cat(parts, dim=0)
    if any(isinstance(p, torch.Tensor) for p in parts):
        raise ValueError(f"replay: field {name!r} is a tensor in some batches and not in others")
    return np.concatenate(parts, axis=0)


class ReplayBuffer:
    """The last K rollout batches, sampled by group; ``state_dict``/``load_state_dict`` for resume."""

    def __init__(self, config: ReplayConfig = ReplayConfig()):
        self.config = config
        self._batches: list[dict[str, Any]] = []  # {"step", "fields", "groups" (np.ndarray of group ids)}
        self._rng = np.random.default_rng(config.seed)

    @property
    def max_age(self) -> int:
        return self.config.max_age if self.config.max_age is not None else self.config.max_batches

    def __len__(self) -> int:
        """Samples currently held."""
        return sum(len(b["groups"]) for b in self._batches)

    @property
    def num_batches(self) -> int:
        return len(self._batches)

    def add(self, step: int, fields: Mapping[str, Any], group_ids: Optional[Sequence[Hashable]] = None) -> None:
        """Store one rollout batch generated at ``step``; ``fields`` map names to per-sample arrays
        with a leading dimension B (must include ``behaviour_log_probs``, ``advantages`` and
        ``response_mask``, ``[B, L]``); ``group_ids`` (e.g. verl's ``uid``) default to one group per sample."""
        missing = [name for name in REQUIRED_FIELDS if name not in fields]
        if missing:
            raise ValueError(f"replay: batch of step {step} lacks {missing} (required: {list(REQUIRED_FIELDS)})")
        if self._batches and step <= self._batches[-1]["step"]:
            raise ValueError(f"replay: step {step} is not after the last stored step {self._batches[-1]['step']}")
        size = int(fields["response_mask"].shape[0])
        shape = tuple(fields["response_mask"].shape)
        stored = {name: _to_storage(name, value, size) for name, value in fields.items()}
        for name in ("behaviour_log_probs", "advantages"):
            if tuple(stored[name].shape) != shape:
                raise ValueError(f"replay: {name} has shape {tuple(stored[name].shape)}, response_mask {shape}")
        if self._batches and set(stored) != set(self._batches[-1]["fields"]):
            raise ValueError(
                f"replay: batch of step {step} has fields {sorted(stored)}, "
                f"earlier batches {sorted(self._batches[-1]['fields'])}"
            )
        groups = _object_array(range(size) if group_ids is None else group_ids)
        if len(groups) != size:
            raise ValueError(f"replay: {len(groups)} group ids for {size} samples")
        self._batches.append({"step": int(step), "fields": stored, "groups": groups})
        while len(self._batches) > self.config.max_batches:
            self._batches.pop(0)

    def evict(self, current_step: int) -> int:
        """Drop batches with age ``current_step − step > max_age``; returns how many were dropped."""
        before = len(self._batches)
        self._batches = [b for b in self._batches if current_step - b["step"] <= self.max_age]
        return before - len(self._batches)

    def sample(self, num_fresh_groups: int, current_step: int) -> tuple[Optional[dict[str, Any]], dict[str, float]]:
        """Draw ``round(fraction × num_fresh_groups)`` whole groups (fewer if fewer are held).

        Evicts by age first. Returns ``(fields, metrics)``: ``fields`` has every stored field plus
        ``replay_age`` (``[b]`` int64, steps since generation) and ``group_id`` (``[b]``), or is
        ``None`` when nothing is replayed; ``metrics`` has ``r2vpo/replay_share`` (replayed / all
        groups of the step), ``r2vpo/replay_groups``, ``r2vpo/replay_mean_age``, ``r2vpo/replay_buffer_samples``.
        """
        self.evict(current_step)
        want = int(round(self.config.fraction * num_fresh_groups))
        pool = [(bi, g) for bi, b in enumerate(self._batches) for g in dict.fromkeys(b["groups"].tolist())]
        take = min(want, len(pool))
        metrics = {
            "r2vpo/replay_share": take / (take + num_fresh_groups) if take + num_fresh_groups > 0 else 0.0,
            "r2vpo/replay_groups": float(take),
            "r2vpo/replay_mean_age": 0.0,
            "r2vpo/replay_buffer_samples": float(len(self)),
        }
        if take == 0:
            return None, metrics
        chosen = sorted(self._rng.choice(len(pool), size=take, replace=False).tolist())
        by_batch: dict[int, set] = {}
        for index in chosen:
            bi, group = pool[index]
            by_batch.setdefault(bi, set()).add(group)
        parts: dict[str, list[Any]] = {}
        ages, group_col = [], []
        for bi in sorted(by_batch):
            batch = self._batches[bi]
            rows = np.flatnonzero(np.fromiter((g in by_batch[bi] for g in batch["groups"]), dtype=bool))
            for name, value in batch["fields"].items():
                parts.setdefault(name, []).append(value[torch.as_tensor(rows)] if isinstance(value, torch.Tensor) else value[rows])
            ages.append(np.full(len(rows), current_step - batch["step"], dtype=np.int64))
            group_col.append(batch["groups"][rows])
        out = {name: _pad_cat(name, values) for name, values in parts.items()}
        out["replay_age"] = torch.as_tensor(np.concatenate(ages))
        out["group_id"] = np.concatenate(group_col)
        metrics["r2vpo/replay_mean_age"] = float(out["replay_age"].double().mean())
        return out, metrics

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: ``torch.save`` it and ``torch.load(..., weights_only=False)``
        (numpy fields and the sampler state are not plain tensors)."""
        return {
            "config": dict(self.config.__dict__),
            "batches": [
                {"step": b["step"], "fields": dict(b["fields"]), "groups": b["groups"].tolist()} for b in self._batches
            ],
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._batches = [
            {"step": int(b["step"]), "fields": dict(b["fields"]), "groups": _object_array(b["groups"])}
            for b in state["batches"]
        ]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
