"""Per-step RPO rollout metrics (ALGORITHMS.md §1, "Metrics to log every step"): pure numpy.

Inputs are per-sample columns of one step's rollout batch ([M], e.g. the agent loop's
``extra_fields`` ``rpo_prefix_len`` / ``rpo_suffix_len`` / ``rpo_suffix_truncated`` /
``rpo_prefix_fallback``) and optionally rewards with group ids for the zero-variance fraction.
Pass every generated sample, filtered (DAPO ``filter_groups``) groups included, so that generated
tokens count all generation work.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def rollout_metrics(
    prefix_len,
    suffix_len,
    truncated=None,
    fallback=None,
    rewards=None,
    group=None,
) -> dict[str, float]:
    """``eff/…`` token accounting and ``rpo/…`` rollout facts for one step.

    Args:
        prefix_len: [M] cached-prefix tokens per sample (0 = full-path sample).
        suffix_len: [M] tokens generated per sample.
        truncated: [M] suffix stopped by its budget (not by EOS).
        fallback: [M] prefix dropped/shortened by the agent loop's budget check.
        rewards, group: [M] sequence rewards and group ids (e.g. ``uid``) for the fraction of
            groups whose rewards have zero variance (no GRPO signal).
    """
    prefix = np.asarray(prefix_len, dtype=np.float64)
    suffix = np.asarray(suffix_len, dtype=np.float64)
    generated = float(suffix.sum())
    full_path = float((prefix + suffix).sum())
    total = prefix + suffix
    out = {
        "eff/generated_tokens": generated,
        "eff/full_path_equiv_tokens": full_path,
        "eff/token_saving_ratio": 1.0 - generated / full_path if full_path else 0.0,
        "rpo/prefix_fraction": float(np.mean(np.divide(prefix, total, out=np.zeros_like(total), where=total > 0)))
        if prefix.size
        else 0.0,
        "rpo/prefixed_sample_frac": float(np.mean(prefix > 0)) if prefix.size else 0.0,
    }
    if truncated is not None:
        out["rpo/suffix_truncation_rate"] = (
            float(np.mean(np.asarray(truncated, dtype=np.float64))) if prefix.size else 0.0
        )
    if fallback is not None:
        out["rpo/agent_prefix_fallbacks"] = float(np.sum(np.asarray(fallback, dtype=np.float64)))
    if rewards is not None and group is not None:
        out["rpo/zero_variance_group_frac"] = zero_variance_group_frac(rewards, group)
    return out


def zero_variance_group_frac(rewards, group, atol: float = 1e-8) -> Optional[float]:
    """Fraction of groups whose rewards are all equal (within ``atol``)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.size == 0:
        return 0.0
    _, inverse = np.unique(np.asarray(group), return_inverse=True)
    g = int(inverse.max()) + 1
    hi = np.full(g, -np.inf)
    lo = np.full(g, np.inf)
    np.maximum.at(hi, inverse, rewards)
    np.minimum.at(lo, inverse, rewards)
    return float(np.mean(hi - lo <= atol))


def prefix_age_metrics(current_step: int, record_step, prefix_len) -> dict[str, float]:
    """Staleness of the prefixes used in one step (issue 14, item 5): age in policy steps.

    The age of a used prefix is ``current_step - record_step``: how many policy updates lie between
    the policy that wrote the cached trajectory (offline cache: step 0, the initial policy) and the
    policy that continues it now. Only prompts with a prefix (``prefix_len > 0``) count.

    Args:
        current_step: the trainer's global step of this rollout.
        record_step: [B] ``step`` column of the cache record each prompt's prefix was cut from.
        prefix_len: [B] prefix tokens handed out (0 = full-path rollout, not counted).
    Returns ``rpo/prefix_age_{mean,median,max}`` and ``rpo/prefix_age_count`` (0 and 0 when no
    prefix was used).
    """
    steps = np.asarray(record_step, dtype=np.int64).reshape(-1)
    used = np.asarray(prefix_len, dtype=np.int64).reshape(-1) > 0
    if steps.shape != used.shape:
        raise ValueError(f"record_step and prefix_len: need the same shape [B], got {steps.shape} and {used.shape}")
    age = int(current_step) - steps[used]
    if (age < 0).any():
        raise ValueError(f"record_step: a cache record written at step {int(steps[used].max())} is newer than "
                         f"the current step {int(current_step)}")
    if not age.size:
        return {"rpo/prefix_age_mean": 0.0, "rpo/prefix_age_median": 0.0, "rpo/prefix_age_max": 0.0,
                "rpo/prefix_age_count": 0.0}
    return {
        "rpo/prefix_age_mean": float(age.mean()),
        "rpo/prefix_age_median": float(np.median(age)),
        "rpo/prefix_age_max": float(age.max()),
        "rpo/prefix_age_count": float(age.size),
    }
