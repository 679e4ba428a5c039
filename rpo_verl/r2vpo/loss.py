"""The R²VPO policy loss (ALGORITHMS.md §3, "Objective").

Primal problem over the valid tokens i of the optimiser mini-batch on all data-parallel ranks:

    max_θ  mean_i r_i·Â_i   s.t.   V̂ = mean_i (r_i − r̄)² ≤ δ,        r_i = π_θ(y_i)/π_old(y_i)

Lagrangian ``L = mean_i r_i·Â_i − λ·(V̂ − δ)``; the per-token loss minimised here is

    ℓ_i = −r_i·Â_i + λ·(r_i − r̄)²                                          (1)

aggregated with verl's ``agg_loss`` (every ``loss_agg_mode``, ``config.global_batch_info``).

Gradient. ``r̄`` enters (1) as a stop-gradient constant, so for aggregation weights w_i
(``token-mean``: w_i = 1/N, N = valid tokens of the global mini-batch)

    −∇_θ loss = Σ_i w_i · r_i · ∇log π_θ(y_i) · (Â_i − 2λ(r_i − r̄))              (2)

i.e. the spec's ``r·∇log π·(Â − 2λ(r − r̄))/N``: the *effective advantage* Â − 2λ(r − r̄) is a
soft brake, never a hard zero. For ``token-mean`` detaching r̄ changes nothing (the extra term
−2λ∇r̄·Σ_i w_i(r_i − r̄) vanishes because r̄ is the w-weighted mean); for the sequence modes the
weights are not uniform and only the detached form gives (2). Detaching also keeps the
cross-rank all-reduce out of autograd.

Scope of r̄, V̂. Sums ``(n, Σ(r−1), Σ(r−1)², ...)`` are all-reduced over the data-parallel group
(every rank optimises the same objective). verl calls the loss once per *micro-batch*, with
backward right after, so the r̄ inside (1)–(2) is the mean of the current micro-batch over all
ranks; it equals the mini-batch r̄ exactly when each rank runs its mini-batch as one micro-batch
(``ppo_micro_batch_size_per_gpu = ppo_mini_batch_size·n/dp``). The V̂ that drives λ is exact in
every case: micro-batches of one mini-batch share θ, so ``rpo_verl.r2vpo.dual`` pools their sums.

Numeric guards (no ratio clipping otherwise): ``|log r| ≤ log_ratio_clamp`` (counted), and an
optional loose dual-clip ceiling C on negative-advantage tokens (policy-gradient term uses
min(r, C), counted). ``ratio_level=seq_geo_mean`` uses the GSPO-style sequence ratio
``s_b = exp(mean_t log r_{b,t})`` for every token of response b (differentiable through the mean).

Metrics (``r2vpo/…``, per micro-batch; verl averages them over micro-batches and ranks): λ, V̂
(and ``v_hat_fresh``/``v_hat_stale`` with a stale mask), ratio mean/max/min, guard counts,
``is_ess_frac`` = (Σr)²/(n·Σr²), all global; ``soft_clip_frac`` (share of tokens whose effective
advantage has the opposite sign to Â) is this rank's share. verl's trainer prefixes them ``actor/``.

Off-policy rows (issue 15). ``π_old`` is the *proximal* policy π_prox, the policy at the start of
this update, for fresh and replayed rows alike (decoupled PPO, Hilton et al. 2022): replayed rows
get their log-probs recomputed (``rpo_verl.r2vpo.proximal``) and carry the truncated behaviour
weight ``w = min(π_prox/μ, c)`` (:func:`behaviour_weights`) as ``rollout_is_weights``, so the loss
is ``ℓ_i = −w_i·r_i·Â_i + λ(r_i − r̄)²`` and V̂ (over r, unweighted) measures only this update's move.

Shapes: every tensor is ``[B*G, L]`` (responses × response length); ``stale_mask`` is ``[B*G]`` or
``[B*G, L]`` (1 = replayed/stale sample) and only splits the V̂ metric.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss

from rpo_verl.r2vpo.config import R2VPOConfig, r2vpo_settings
from rpo_verl.r2vpo.dual import get_dual

LOSS_NAME = "r2vpo"

# Layout of the float64 vector that is all-reduced (SUM) once per call.
_N, _S1, _S2, _DCLIP, _NS, _S1S, _S2S, _KL = range(8)
_NUM_SUMS = 8


@dataclass
class R2VPOLossOutput:
    """``loss`` (scalar, for backward), ``metrics`` (``r2vpo/…`` floats) and the global sums
    ``n, s1 = Σ(r−1), s2 = Σ(r−1)²`` plus de-duplicated ``tokens`` for the dual variable."""

    loss: torch.Tensor
    metrics: dict[str, float]
    n: float
    s1: float
    s2: float
    tokens: float


class _LossContext(threading.local):
    group: Any = None
    stale_mask: Optional[torch.Tensor] = None


_CONTEXT = _LossContext()


@contextlib.contextmanager
def loss_context(group: Any = None, stale_mask: Optional[torch.Tensor] = None):
    """Give the registered loss what verl's ``ppo_loss`` cannot pass through: the engine's
    data-parallel group and a per-sample stale mask (used by ``rpo_verl.r2vpo.worker.r2vpo_ppo_loss``)."""
    previous = (_CONTEXT.group, _CONTEXT.stale_mask)
    _CONTEXT.group, _CONTEXT.stale_mask = group, stale_mask
    try:
        yield
    finally:
        _CONTEXT.group, _CONTEXT.stale_mask = previous


def _distributed(group: Any) -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size(group) > 1
    )


def _log_ratio(old_log_prob: torch.Tensor, log_prob: torch.Tensor, mask: torch.Tensor, settings: R2VPOConfig):
    """(log r before the guard, log π_θ − log π_old): per token, or the sequence's length-normalised
    mean broadcast to its tokens (``seq_geo_mean``)."""
    neg_kl = log_prob - old_log_prob
    if settings.ratio_level != "seq_geo_mean":
        return neg_kl, neg_kl
    maskf = mask.to(neg_kl.dtype)
    seq_len = maskf.sum(dim=-1).clamp(min=1.0)
    return ((neg_kl * maskf).sum(dim=-1) / seq_len).unsqueeze(-1).expand_as(neg_kl), neg_kl


def r2vpo_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    lam: float,
    settings: R2VPOConfig,
    loss_agg_mode: str = "token-mean",
    global_batch_info: Optional[dict] = None,
    rollout_is_weights: Optional[torch.Tensor] = None,
    stale_mask: Optional[torch.Tensor] = None,
    group: Any = None,
) -> R2VPOLossOutput:
    """Equation (1) aggregated by ``agg_loss``; see the module docstring for (2) and the scope.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``[B*G, L]``; ``log_prob`` carries the
            graph; ``response_mask`` marks valid tokens.
        lam: the multiplier λ ≥ 0 for this mini-batch.
        settings: :class:`R2VPOConfig` (ratio level, guards).
        loss_agg_mode, global_batch_info: as verl's ``agg_loss`` (``dp_size``, ``batch_num_tokens``,
            ``global_batch_size``, ``loss_scale_factor``).
        rollout_is_weights: optional ``[B*G, L]`` rollout-correction weights; they scale the
            policy-gradient term only (as in verl's ``vanilla``), not the variance penalty.
        stale_mask: optional ``[B*G]`` / ``[B*G, L]``, 1 for replayed samples (metrics only).
        group: process group of the all-reduce (``None``: WORLD when distributed).

    Cost: about as many tensor passes as verl's ``vanilla`` (one host sync for the metrics, two
    small all-reduces when distributed); statistics are accumulated in float64.
    """
    gbi = dict(global_batch_info or {})
    mask = response_mask.bool()
    bound = float(settings.log_ratio_clamp)
    log_ratio, neg_kl = _log_ratio(old_log_prob, log_prob, mask, settings)
    ratio = torch.exp(torch.clamp(log_ratio, min=-bound, max=bound))
    f64 = torch.float64

    with torch.no_grad():
        r = ratio.detach()
        dev = torch.where(mask, r - 1.0, 0.0)  # r − 1 on valid tokens, 0 on padding
        n_local = mask.sum(dtype=f64)
        s1_local = dev.sum(dtype=f64)
        stats = [n_local, s1_local, (dev * dev).sum(dtype=f64)]
        dual_clip_hits = None
        if settings.dual_clip is not None:
            dual_clip_hits = (advantages < 0) & (r > settings.dual_clip) & mask
            stats.append(dual_clip_hits.sum(dtype=f64))
        else:
            stats.append(torch.zeros((), dtype=f64, device=r.device))
        if stale_mask is not None:
            stale = stale_mask.to(device=r.device).bool()
            stale = (stale.unsqueeze(-1).expand_as(mask) if stale.dim() == 1 else stale) & mask
            dev_s = torch.where(stale, dev, 0.0)
            stats += [stale.sum(dtype=f64), dev_s.sum(dtype=f64), (dev_s * dev_s).sum(dtype=f64)]
        else:
            stats += [torch.zeros((), dtype=f64, device=r.device)] * 3
        stats.append(-torch.where(mask, neg_kl.detach(), 0.0).sum(dtype=f64))
        sums = torch.stack(stats)
        # Extremes over valid tokens: padding is filled with the local mean, which lies inside
        # [min, max]; a rank without valid tokens reports −inf (identity of the MAX reduction).
        fill = (s1_local / n_local.clamp(min=1.0)).to(dev.dtype)
        dev_min, dev_max = torch.aminmax(torch.where(mask, dev, fill))
        extremes = torch.where(n_local > 0, torch.stack([dev_max, -dev_min]).to(f64), -torch.inf)
        distributed = _distributed(group)
        if distributed:
            torch.distributed.all_reduce(sums, op=torch.distributed.ReduceOp.SUM, group=group)
            torch.distributed.all_reduce(extremes, op=torch.distributed.ReduceOp.MAX, group=group)
        r_bar = 1.0 + sums[_S1] / sums[_N].clamp(min=1.0)  # global mean ratio, a stop-gradient constant

    # (1): policy-gradient term (optional dual-clip ceiling for Â < 0) + variance penalty.
    ratio_pg = ratio if dual_clip_hits is None else torch.where(dual_clip_hits, settings.dual_clip, ratio)
    pg_losses = advantages * ratio_pg
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights
    if lam > 0.0:
        diff = ratio - r_bar.to(ratio.dtype)
        loss_mat = lam * (diff * diff) - pg_losses
    else:
        loss_mat = -pg_losses
    loss = agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **gbi)

    with torch.no_grad():
        if lam > 0.0:
            # Effective advantage Â − 2λ(r − r̄) of the opposite sign to Â ⟺ 2λ·Â·(r − r̄) > Â².
            adv_diff = advantages * diff.detach()
            flipped = ((2.0 * lam) * adv_diff > advantages * advantages) & mask
            soft_clip = flipped.sum(dtype=f64) / n_local.clamp(min=1.0)
        else:
            soft_clip = torch.zeros((), dtype=f64, device=r.device)
        values = torch.cat([sums, extremes, soft_clip.reshape(1)]).tolist()

    # The log-ratio guard fires only if an extreme sits on exp(±bound): count it only then (rare),
    # so the common case costs no extra pass. Every rank sees the same global extremes.
    guard_hits = 0.0
    r_max, r_min = 1.0 + values[_NUM_SUMS], 1.0 - values[_NUM_SUMS + 1]
    if r_max >= math.exp(bound) * (1 - 1e-6) or r_min <= math.exp(-bound) * (1 + 1e-6):
        with torch.no_grad():
            hits = ((log_ratio.detach().abs() >= bound) & mask).sum(dtype=f64)
            if distributed:
                torch.distributed.all_reduce(hits, op=torch.distributed.ReduceOp.SUM, group=group)
            guard_hits = float(hits)

    n_raw, s1, s2 = values[_N], values[_S1], values[_S2]
    ns, s1s, s2s = values[_NS], values[_S1S], values[_S2S]
    group_size = torch.distributed.get_world_size(group) if distributed else 1
    duplicates = max(1.0, group_size / float(gbi.get("dp_size") or group_size))

    def _var(count: float, a: float, b: float) -> float:
        if count <= 0:
            return 0.0
        return max(0.0, b / count - (a / count) ** 2)

    sum_r = n_raw + s1
    sum_r2 = s2 + 2.0 * s1 + n_raw
    metrics = {
        "r2vpo/lambda": float(lam),
        "r2vpo/v_hat": _var(n_raw, s1, s2),
        "r2vpo/ratio_mean": 1.0 + (s1 / n_raw if n_raw > 0 else 0.0),
        "r2vpo/ratio_max": r_max if n_raw > 0 else 1.0,
        "r2vpo/ratio_min": r_min if n_raw > 0 else 1.0,
        "r2vpo/soft_clip_frac": values[_NUM_SUMS + 2],
        "r2vpo/guard_log_ratio_clamp": guard_hits / duplicates,
        "r2vpo/guard_dual_clip": values[_DCLIP] / duplicates,
        "r2vpo/is_ess_frac": (sum_r * sum_r) / (n_raw * sum_r2) if n_raw > 0 and sum_r2 > 0 else 1.0,
        "actor/ppo_kl": values[_KL] / n_raw if n_raw > 0 else 0.0,
    }
    if stale_mask is not None:
        metrics["r2vpo/v_hat_fresh"] = _var(n_raw - ns, s1 - s1s, s2 - s2s)
        metrics["r2vpo/v_hat_stale"] = _var(ns, s1s, s2s)
        metrics["r2vpo/stale_token_share"] = ns / n_raw if n_raw > 0 else 0.0
    return R2VPOLossOutput(loss=loss, metrics=metrics, n=n_raw, s1=s1, s2=s2, tokens=n_raw / duplicates)


def r2vpo_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl policy-loss entry (``register_policy_loss('r2vpo')``, called by ``ppo_loss`` per micro-batch).

    Reads ``config.policy_loss.r2vpo`` (an ActorConfig), uses the process-wide λ, feeds the
    training-time sums to the dual variable and, when no optimiser hook is installed, steps λ at
    the end of each mini-batch (see ``rpo_verl.r2vpo.dual``).
    """
    if config is None:
        raise ValueError("r2vpo: the policy loss needs the actor config (config=None)")
    settings = r2vpo_settings(config)
    dual = get_dual()
    dual.configure(settings)
    group = _CONTEXT.group if _CONTEXT.group is not None else dual.process_group()
    gbi = dict(getattr(config, "global_batch_info", None) or {})
    out = r2vpo_loss(
        old_log_prob,
        log_prob,
        advantages,
        response_mask,
        lam=dual.value,
        settings=settings,
        loss_agg_mode=loss_agg_mode,
        global_batch_info=gbi,
        rollout_is_weights=rollout_is_weights,
        stale_mask=_CONTEXT.stale_mask,
        group=group,
    )
    if torch.is_grad_enabled() and log_prob.requires_grad:
        dual.observe(out.n, out.s1, out.s2, tokens=out.tokens, device=log_prob.device)
        dual.maybe_auto_step(gbi.get("batch_num_tokens"))
    out.metrics["r2vpo/v_hat_last_step"] = dual.last_v_hat if dual.last_v_hat is not None else 0.0
    return out.loss, out.metrics


STALE_FIELD = "r2vpo_stale"


def _stale_from_batch(data: Any) -> Optional[torch.Tensor]:
    """Per-sample stale flags ``[b]`` from a micro-batch TensorDict field ``r2vpo_stale`` (or None)."""
    try:
        if STALE_FIELD not in data.keys():
            return None
        stale = data[STALE_FIELD]
    except (AttributeError, KeyError, TypeError):
        return None
    if not isinstance(stale, torch.Tensor):
        return None
    if stale.is_nested:
        return torch.stack([row.reshape(-1).bool().any() for row in stale.unbind()])
    return stale.bool() if stale.dim() == 1 else stale.reshape(stale.shape[0], -1).bool().any(dim=-1)


def with_r2vpo_context(loss_fn):
    """Wrap a verl loss closure ``loss_fn(model_output, data, dp_group=None)`` (e.g. ``ppo_loss``)
    so that the ``r2vpo`` policy loss all-reduces over ``dp_group`` and sees the micro-batch's
    ``r2vpo_stale`` flags. Other loss modes are unaffected. Idempotent."""
    if getattr(loss_fn, "_r2vpo_wrapped", False):
        return loss_fn

    def wrapped(*args, **kwargs):
        # verl calls it as loss_fn(model_output=, data=, dp_group=) and, for top-k distillation,
        # also as a logits processor loss_fn(student_logits=, data=): pass everything through.
        data = kwargs.get("data", args[1] if len(args) > 1 else None)
        group = kwargs.get("dp_group", args[2] if len(args) > 2 else None)
        with loss_context(group=group, stale_mask=_stale_from_batch(data)):
            return loss_fn(*args, **kwargs)

    wrapped._r2vpo_wrapped = True
    wrapped.__wrapped__ = loss_fn
    return wrapped
