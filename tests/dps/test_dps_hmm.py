"""HMM filter: the spec's worked numbers and agreement with a plain per-prompt transcription."""

import numpy as np
import pytest

from rpo_verl.dps.hmm import PARTIAL, SOLVED, UNSOLVED, DenseHMMFilter, HMMFilter, observed_states


class PerPromptReference:
    """ALGORITHMS.md §2 steps 2-4 written out literally, one prompt at a time, every prompt every step."""

    def __init__(self, n, lam, a0):
        self.lam, self.a0 = lam, a0
        self.alpha = [np.full((3, 3), a0) for _ in range(n)]
        self.mu_prior = [np.full(3, 1 / 3) for _ in range(n)]
        self.mu_post_prev = [np.full(3, 1 / 3) for _ in range(n)]

    def step(self, observations):  # {prompt: state in 0..2, or -1}
        for p in range(len(self.alpha)):
            state = observations.get(p, -1)
            phi_prev = self.alpha[p] / self.alpha[p].sum(axis=0, keepdims=True)
            if state >= 0:
                post = np.eye(3)[state]
                xi = np.zeros((3, 3))
                for i in range(3):
                    for j in range(3):
                        xi[i, j] = post[i] * phi_prev[i, j] * self.mu_post_prev[p][j]
                xi /= xi.sum()
            else:
                post, xi = self.mu_prior[p], 0.0
            self.alpha[p] = self.lam * self.alpha[p] + (1 - self.lam) * self.a0 + xi
            phi = self.alpha[p] / self.alpha[p].sum(axis=0, keepdims=True)
            nxt = phi @ post
            self.mu_prior[p] = nxt / nxt.sum()
            self.mu_post_prev[p] = post


def _next_mu_partial(states, **kw):
    f = HMMFilter(4, decay=0.7, prior_alpha=1.0, **kw)
    for s in states:
        f.update([2], [s])
    return f.scores([2])[0]


def test_worked_numbers():
    assert _next_mu_partial([PARTIAL]) == pytest.approx(0.40, abs=5e-3)
    assert _next_mu_partial([PARTIAL] * 3) == pytest.approx(0.59, abs=5e-3)
    assert _next_mu_partial([UNSOLVED]) == pytest.approx(0.30, abs=5e-3)
    # Exact values of the recursion behind the rounded spec numbers.
    assert _next_mu_partial([PARTIAL]) == pytest.approx(0.4, rel=1e-12)
    assert _next_mu_partial([UNSOLVED]) == pytest.approx(0.3, rel=1e-12)


def test_never_seen_prompts_rank_above_recently_degenerate_ones():
    f = HMMFilter(3)
    f.update([0, 1], [SOLVED, UNSOLVED])
    s = f.scores([0, 1, 2])
    assert s[2] == pytest.approx(1 / 3) and s[0] < s[2] and s[1] < s[2]


def _random_sequence(rng, n, steps, max_batch, p_nan=0.1):
    seq = []
    for _ in range(steps):
        b = int(rng.integers(0, max_batch + 1))
        ids = rng.choice(n, size=b, replace=False)
        states = rng.integers(0, 3, size=b)
        states[rng.random(b) < p_nan] = -1
        seq.append((ids, states))
    return seq


def _run_all(n, seq, lam, a0, settle_tol):
    ref = PerPromptReference(n, lam, a0)
    fast = HMMFilter(n, decay=lam, prior_alpha=a0, settle_tol=settle_tol)
    dense = DenseHMMFilter(n, decay=lam, prior_alpha=a0)
    for ids, states in seq:
        ref.step(dict(zip(ids.tolist(), states.tolist())))
        fast.update(ids, states)
        dense.update(ids, states)
    return ref, fast, dense


@pytest.mark.parametrize("seed,lam,a0", [(0, 0.7, 1.0), (1, 0.5, 1.0), (2, 0.9, 0.5), (3, 0.0, 2.0), (4, 1.0, 1.0)])
def test_fast_and_dense_equal_reference_exact_mode(seed, lam, a0):
    rng = np.random.default_rng(seed)
    seq = _random_sequence(rng, n=12, steps=40, max_batch=6)
    ref, fast, dense = _run_all(12, seq, lam, a0, settle_tol=0.0)
    alpha, mu_prior, mu_prev = fast.dense()
    np.testing.assert_allclose(alpha, np.stack(ref.alpha), rtol=1e-12)
    np.testing.assert_allclose(mu_prior, np.stack(ref.mu_prior), rtol=1e-12)
    np.testing.assert_allclose(mu_prev, np.stack(ref.mu_post_prev), rtol=1e-12)
    np.testing.assert_allclose(dense.alpha, np.stack(ref.alpha), rtol=1e-12)
    np.testing.assert_allclose(dense.mu_prior, np.stack(ref.mu_prior), rtol=1e-12)


@pytest.mark.parametrize("seed,lam,tol", [(5, 0.7, 1e-9), (6, 0.5, 1e-9), (7, 0.7, 1e-4), (8, 0.9, 1e-3), (9, 0.0, 1e-9)])
def test_settled_prompts_stay_within_tolerance(seed, lam, tol):
    # Sparse observations: prompts go unobserved long enough to leave the active set, then return.
    rng = np.random.default_rng(seed)
    seq = _random_sequence(rng, n=30, steps=300, max_batch=2, p_nan=0.0)
    ref, fast = PerPromptReference(30, lam, 1.0), HMMFilter(30, decay=lam, settle_tol=tol)
    worst, settled = 0.0, 0
    for ids, states in seq:
        ref.step(dict(zip(ids.tolist(), states.tolist())))
        before = set(fast.active_ids.tolist())
        fast.update(ids, states)
        settled += len(before - set(fast.active_ids.tolist()))
        for got, want in zip(fast.dense(), (ref.alpha, ref.mu_prior, ref.mu_post_prev)):
            worst = max(worst, float(np.abs(got - np.stack(want)).max()))
    assert settled > 10  # prompts did leave the active set
    # Dropping a prompt moves it by at most tol; re-observed later, that error stays of order tol.
    assert worst <= 3 * tol


def test_active_set_is_bounded_by_recent_prompts():
    f = HMMFilter(100_000, decay=0.7)
    rng = np.random.default_rng(0)
    for _ in range(300):
        f.update(rng.choice(100_000, 32, replace=False), rng.integers(0, 3, 32))
    # Settling takes ~60-70 steps at λ = 0.7, so far fewer than 300 × 32 prompts are stored.
    assert f.active_ids.size <= 80 * 32


def test_float32_dense_matches():
    rng = np.random.default_rng(7)
    seq = _random_sequence(rng, n=20, steps=30, max_batch=8)
    ref = PerPromptReference(20, 0.7, 1.0)
    dense = DenseHMMFilter(20, dtype=np.float32)
    for ids, states in seq:
        ref.step(dict(zip(ids.tolist(), states.tolist())))
        dense.update(ids, states)
    np.testing.assert_allclose(dense.mu_prior, np.stack(ref.mu_prior), atol=1e-5)


def test_observed_states_mapping():
    np.testing.assert_array_equal(observed_states([0.0, 0.25, 1.0, np.nan]), [UNSOLVED, PARTIAL, SOLVED, -1])


def test_unobserved_equals_not_passed():
    a, b = HMMFilter(5), HMMFilter(5)
    a.update([1, 3], [PARTIAL, -1])
    b.update([1], [PARTIAL])
    for x, y in zip(a.dense(), b.dense()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "ids,states,msg",
    [([5], [1], "must lie in"), ([1, 1], [0, 1], "distinct"), ([1], [3], "states"), ([1, 2], [1], "differ")],
)
def test_bad_updates_raise(ids, states, msg):
    with pytest.raises(ValueError, match=msg):
        HMMFilter(5).update(ids, states)


def test_bad_params_raise():
    with pytest.raises(ValueError, match="decay"):
        HMMFilter(5, decay=1.5)
    with pytest.raises(ValueError, match="prior_alpha"):
        HMMFilter(5, prior_alpha=0.0)
