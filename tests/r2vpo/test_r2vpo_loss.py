"""R²VPO loss: autograd equals the analytic gradient r·∇log π·(Â − 2λ(r − r̄))·w for every
``loss_agg_mode`` (w = the aggregation weight of the token, i.e. 1/N), plain policy gradient at
λ = 0 and r = 1 (compared with verl's ``vanilla``), guards and metrics."""

import math

import pytest
import torch
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
from verl.workers.config import ActorConfig

from rpo_verl.r2vpo.config import R2VPOConfig
from rpo_verl.r2vpo.loss import r2vpo_loss

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"]


def _batch(seed=0, rows=8, length=7, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(rows, length, generator=g) * 3.0
    new = old + spread * torch.randn(rows, length, generator=g)
    adv = torch.randn(rows, 1, generator=g).expand(rows, length).contiguous()  # one advantage per response
    lengths = torch.randint(1, length + 1, (rows,), generator=g)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return old, new.requires_grad_(True), adv, mask


def _weights(mask, mode, gbi):
    """The aggregation weight N⁻¹ of each valid token (what agg_loss multiplies a token's loss by)."""
    m = mask.double()
    dp = gbi.get("dp_size", 1)
    if mode == "token-mean":
        return m * dp / gbi.get("batch_num_tokens", m.sum())
    if mode == "token-sum":
        return m * dp
    seqs = gbi.get("global_batch_size", (m.sum(-1) > 0).double().sum())
    if mode == "seq-mean-token-sum":
        return m * dp / seqs
    if mode == "seq-mean-token-sum-norm":
        return m * dp / (seqs * (gbi.get("loss_scale_factor") or mask.shape[-1]))
    if mode == "seq-mean-token-mean":
        return m * dp / (seqs * m.sum(-1, keepdim=True).clamp(min=1))
    raise AssertionError(mode)


def _loss(old, new, adv, mask, lam, mode="token-mean", gbi=None, **settings):
    return r2vpo_loss(
        old, new, adv, mask, lam=lam, settings=R2VPOConfig(**settings), loss_agg_mode=mode, global_batch_info=gbi
    )


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("lam", [0.0, 0.8, 5.0])
def test_token_gradient_matches_analytic_formula(mode, lam):
    old, new, adv, mask = _batch(seed=1)
    out = _loss(old, new, adv, mask, lam, mode)
    out.loss.backward()
    r = torch.exp(new.detach() - old).double()
    r_bar = r[mask].mean()
    effective = adv.double() - 2.0 * lam * (r - r_bar)
    # d(−objective)/d log π_i = −w_i · r_i · (Â_i − 2λ(r_i − r̄)); zero on padding.
    expected = -_weights(mask, mode, {}) * r * effective
    torch.testing.assert_close(new.grad.double(), expected, rtol=1e-5, atol=1e-7)
    assert new.grad[~mask].abs().max() == 0


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_gradient_with_global_batch_info(mode):
    """verl's global normaliser (dp_size, batch_num_tokens, global_batch_size) is honoured."""
    old, new, adv, mask = _batch(seed=2)
    gbi = {"dp_size": 2, "batch_num_tokens": 3 * int(mask.sum()), "global_batch_size": 24, "loss_scale_factor": None}
    lam = 1.5
    _loss(old, new, adv, mask, lam, mode, gbi).loss.backward()
    r = torch.exp(new.detach() - old).double()
    expected = -_weights(mask, mode, gbi) * r * (adv.double() - 2 * lam * (r - r[mask].mean()))
    torch.testing.assert_close(new.grad.double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_seq_geo_mean_gradient(mode):
    """GSPO-style s_b = exp(mean_t log r_bt): ∇log s_b = mean_t ∇log π_bt, same effective advantage."""
    old, new, adv, mask = _batch(seed=3)
    lam = 2.0
    out = _loss(old, new, adv, mask, lam, mode, ratio_level="seq_geo_mean")
    out.loss.backward()
    m = mask.double()
    n_b = m.sum(-1, keepdim=True)
    s = torch.exp(((new.detach() - old).double() * m).sum(-1, keepdim=True) / n_b).expand_as(m)
    s_bar = s[mask].mean()  # token-weighted mean over valid tokens
    w = _weights(mask, mode, {})
    per_token = -w * s * (adv.double() - 2 * lam * (s - s_bar))  # d loss / d log s_b, token by token
    expected = per_token.sum(-1, keepdim=True) / n_b * m
    torch.testing.assert_close(new.grad.double(), expected, rtol=1e-5, atol=1e-7)
    assert out.metrics["r2vpo/v_hat"] == pytest.approx(float(((s - s_bar) ** 2)[mask].mean()), rel=1e-6)


def _actor_config(mode):
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, loss_agg_mode=mode)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_on_policy_lambda_zero_is_plain_policy_gradient(mode):
    """λ = 0 and r = 1: the gradient is −Â·w (plain policy gradient) and equals verl's vanilla loss."""
    old, _, adv, mask = _batch(seed=4)
    ours = old.clone().requires_grad_(True)
    _loss(old, ours, adv, mask, 0.0, mode).loss.backward()
    theirs = old.clone().requires_grad_(True)
    loss, _ = compute_policy_loss_vanilla(old, theirs, adv, mask, loss_agg_mode=mode, config=_actor_config(mode))
    loss.backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ours.grad.double(), -_weights(mask, mode, {}) * adv.double(), rtol=1e-6, atol=1e-8)


def test_penalty_value_and_metrics():
    old, new, adv, mask = _batch(seed=5, spread=0.5)
    lam = 0.4
    out = _loss(old, new, adv, mask, lam)
    r = torch.exp(new.detach() - old).double()
    rv = r[mask]
    v_hat = ((rv - rv.mean()) ** 2).mean()
    expected_loss = (-(adv.double() * r)[mask]).mean() + lam * v_hat
    assert float(out.loss) == pytest.approx(float(expected_loss), rel=1e-5)
    m = out.metrics
    assert m["r2vpo/v_hat"] == pytest.approx(float(v_hat), rel=1e-6)  # float32 (r − 1)², float64 sums
    assert m["r2vpo/ratio_mean"] == pytest.approx(float(rv.mean()), rel=1e-7)
    assert m["r2vpo/ratio_max"] == pytest.approx(float(rv.max()))
    assert m["r2vpo/ratio_min"] == pytest.approx(float(rv.min()))
    assert m["r2vpo/lambda"] == lam
    assert m["r2vpo/is_ess_frac"] == pytest.approx(float(rv.sum() ** 2 / (rv.numel() * (rv**2).sum())), rel=1e-6)
    effective = adv.double() - 2 * lam * (r - rv.mean())
    flipped = ((torch.sign(effective) != torch.sign(adv.double())) & mask).double().sum() / mask.sum()
    assert m["r2vpo/soft_clip_frac"] == pytest.approx(float(flipped))
    assert 0 < m["r2vpo/soft_clip_frac"] < 1  # the brake engages on some tokens, not all
    assert m["r2vpo/guard_log_ratio_clamp"] == 0 and m["r2vpo/guard_dual_clip"] == 0
    assert out.n == mask.sum() and out.tokens == out.n
    assert "r2vpo/v_hat_stale" not in m


def test_fresh_and_stale_variance_split():
    old, new, adv, mask = _batch(seed=6, rows=10, spread=0.2)
    stale = torch.zeros(10, dtype=torch.bool)
    stale[6:] = True
    with torch.no_grad():
        new[6:] += 0.5 * torch.randn(4, new.shape[1])  # stale samples drift further
    out = r2vpo_loss(old, new, adv, mask, lam=0.0, settings=R2VPOConfig(), stale_mask=stale)
    r = torch.exp(new.detach() - old).double()
    fresh_mask = mask & ~stale.unsqueeze(-1)
    stale_mask = mask & stale.unsqueeze(-1)

    def var(x):
        return float(((x - x.mean()) ** 2).mean())

    m = out.metrics
    assert m["r2vpo/v_hat_fresh"] == pytest.approx(var(r[fresh_mask]), rel=1e-6)
    assert m["r2vpo/v_hat_stale"] == pytest.approx(var(r[stale_mask]), rel=1e-6)
    assert m["r2vpo/stale_token_share"] == pytest.approx(float(stale_mask.sum() / mask.sum()))
    assert m["r2vpo/v_hat_stale"] > m["r2vpo/v_hat_fresh"]


def test_log_ratio_guard_counts_and_stays_finite():
    old, new, adv, mask = _batch(seed=7)
    with torch.no_grad():
        new[0, 0] = old[0, 0] + 50.0  # absurd ratio
        new[1, 0] = old[1, 0] - 50.0
    out = _loss(old, new, adv, mask, 1.0)
    out.loss.backward()
    assert out.metrics["r2vpo/guard_log_ratio_clamp"] == 2
    assert out.metrics["r2vpo/ratio_max"] == pytest.approx(math.exp(20.0), rel=1e-6)
    assert torch.isfinite(out.loss) and torch.isfinite(new.grad).all()
    assert new.grad[0, 0] == 0 and new.grad[1, 0] == 0  # clamped tokens carry no gradient


def test_dual_clip_ceiling_only_for_negative_advantages():
    old, new, adv, mask = _batch(seed=8)
    with torch.no_grad():
        new[:, 0] = old[:, 0] + 2.0  # ratio e² ≈ 7.4 on every first token
    lam = 0.0
    out = _loss(old, new, adv, mask, lam, dual_clip=3.0)
    out.loss.backward()
    negative = adv[:, 0] < 0
    assert out.metrics["r2vpo/guard_dual_clip"] == int(negative.sum())
    assert (new.grad[negative, 0] == 0).all()  # capped: constant −C·Â
    assert (new.grad[~negative, 0] != 0).all()  # positive advantages are never capped


def test_no_valid_tokens_is_finite_and_zero():
    old, new, adv, mask = _batch(seed=9)
    out = _loss(old, new, adv, torch.zeros_like(mask), 1.0, gbi={"batch_num_tokens": 10})
    assert float(out.loss) == 0.0 and out.n == 0
    assert out.metrics["r2vpo/v_hat"] == 0.0 and out.metrics["r2vpo/ratio_max"] == 1.0


# ----------------------------------------------------------------------------- behaviour weights


def test_behaviour_weights_token_and_sequence():
    from rpo_verl.r2vpo.behaviour import behaviour_weights

    prox = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    mu = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-3.0, -1.2, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tok = behaviour_weights(prox, mu, mask, cap=2.0, level="token")
    raw = torch.exp(prox - mu)
    expected = torch.where(mask.bool(), raw.clamp(max=2.0), 0.0)
    torch.testing.assert_close(tok.weights, expected)  # min(π_prox/μ, c) per token, 0 on padding
    assert tok.count == 5 and tok.truncated_frac == pytest.approx(1 / 5)  # exp(2) > 2 only
    w = expected[mask.bool()].double()
    assert tok.ess_frac == pytest.approx(float(w.sum() ** 2 / (5 * (w * w).sum())))
    assert tok.mean == pytest.approx(float(w.mean()))
    seq = behaviour_weights(prox, mu, mask, cap=2.0, level="sequence")
    s0, s1 = math.exp(0.5 - 1.0 + 0.0), min(2.0, math.exp(2.0 + 0.2))  # Π_t π_prox/μ, truncated
    torch.testing.assert_close(seq.weights, torch.tensor([[s0, s0, s0, 0.0], [s1, s1, 0.0, 0.0]]))
    assert seq.count == 2 and seq.truncated_frac == 0.5
    same = behaviour_weights(prox, prox, mask, cap=2.0)  # not stale: weight 1, ESS 1
    assert same.ess_frac == pytest.approx(1.0) and same.truncated_frac == 0.0
    torch.testing.assert_close(same.weights, mask.float())
    with pytest.raises(ValueError, match="is_level"):
        behaviour_weights(prox, mu, mask, cap=2.0, level="trajectory")


def test_weights_scale_the_policy_gradient_not_the_penalty():
    """The decoupled objective ℓ = −w·r·Â + λ(r − r̄)²: ``rollout_is_weights`` = w."""
    old, new, adv, mask = _batch(seed=3)
    w = torch.rand_like(old) * 2.0
    cfg = R2VPOConfig()
    lp1 = new.clone().requires_grad_(True)
    r2vpo_loss(old, lp1, adv, mask, lam=0.0, settings=cfg, rollout_is_weights=w).loss.backward()
    lp2 = new.clone().requires_grad_(True)
    r2vpo_loss(old, lp2, adv * w, mask, lam=0.0, settings=cfg).loss.backward()
    torch.testing.assert_close(lp1.grad, lp2.grad)
    out_w = r2vpo_loss(old, new, adv, mask, lam=1.0, settings=cfg, rollout_is_weights=w)
    out_1 = r2vpo_loss(old, new, adv, mask, lam=1.0, settings=cfg)
    assert out_w.metrics["r2vpo/v_hat"] == out_1.metrics["r2vpo/v_hat"]  # V̂ over r = π_θ/π_prox, unweighted
