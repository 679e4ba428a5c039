"""Decoupled-PPO behaviour weights for replayed R²VPO samples (pure tensor math).

w = min(π_prox / μ, c) per token or per sequence, with π_prox the policy at the start of this
update and μ the behaviour policy that generated the sample; see :func:`behaviour_weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rpo_verl.r2vpo.replay import IS_LEVELS


@dataclass
class BehaviourWeights:
    """Truncated importance weights of replayed samples against their behaviour policy.

    ``weights`` ``[B, L]`` (0 on padding), ``raw_log_weights`` ``[B, L]`` (log π_prox − log μ
    before truncation, per token or per sequence broadcast over its tokens) and the statistics
    (over valid tokens for ``token`` level, over sequences for ``sequence`` level).
    """

    weights: torch.Tensor
    raw_log_weights: torch.Tensor
    ess_frac: float  # (Σw)² / (n·Σw²) ∈ (0, 1]: effective sample size over n weights
    truncated_frac: float  # share of weights with π_prox/μ > c (cut to c)
    mean: float  # mean truncated weight
    count: int  # n


def behaviour_weights(
    prox_log_prob: torch.Tensor,
    behaviour_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    cap: float,
    level: str = "token",
    log_clamp: float = 20.0,
) -> BehaviourWeights:
    """Decoupled-PPO behaviour weights (Hilton et al. 2022, "Batch size-invariance for policy
    optimization"; AReaL's decoupled objective) for replayed samples:

        token:     w_{b,t} = min(π_prox(y_{b,t}) / μ(y_{b,t}), c)
        sequence:  w_b     = min(Π_t π_prox(y_{b,t}) / μ(y_{b,t}), c)   (shared by every token of b)

    π_prox is the policy at the start of this update (log-probs recomputed by the actor), μ the
    policy that generated the sample (its stored behaviour log-probs). The loss then uses
    ``ℓ_i = −w_i·r_i·Â_i + λ(r_i − r̄)²`` with ``r = π_θ/π_prox`` (``rollout_is_weights`` = w), so
    staleness lowers a sample's weight in the policy gradient instead of inflating V̂ and λ.

    Args:
        prox_log_prob, behaviour_log_prob, response_mask: ``[B, L]``.
        cap: c > 0, the truncation. level: ``token`` or ``sequence``.
        log_clamp: numeric guard on log(π_prox/μ) before exponentiation.
    Returns: :class:`BehaviourWeights`.
    """
    if level not in IS_LEVELS:
        raise ValueError(f"is_level: {level!r} is not one of {list(IS_LEVELS)}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"is_cap: must be a finite number > 0, got {cap}")
    mask = response_mask.bool()
    log_w = torch.where(mask, prox_log_prob.double() - behaviour_log_prob.double(), 0.0)
    if level == "sequence":
        log_w = log_w.sum(dim=-1, keepdim=True).expand_as(log_w)
        unit = mask.any(dim=-1)  # one weight per sequence with valid tokens
        per_unit = log_w[:, 0][unit] if log_w.shape[-1] > 0 else log_w.new_zeros(0)
    else:
        per_unit = log_w[mask]
    log_w = log_w.clamp(min=-log_clamp, max=log_clamp)
    weights = torch.where(mask, torch.exp(log_w).clamp(max=cap), 0.0)
    w = torch.exp(per_unit.clamp(min=-log_clamp, max=log_clamp)).clamp(max=cap)
    n = int(w.numel())
    if n == 0:
        return BehaviourWeights(weights.to(prox_log_prob.dtype), log_w, 1.0, 0.0, 1.0, 0)
    s1, s2 = float(w.sum()), float((w * w).sum())
    return BehaviourWeights(
        weights=weights.to(prox_log_prob.dtype),
        raw_log_weights=log_w,
        ess_frac=(s1 * s1) / (n * s2) if s2 > 0 else 0.0,
        truncated_frac=float((per_unit > math.log(cap)).double().mean()),
        mean=s1 / n,
        count=n,
    )
