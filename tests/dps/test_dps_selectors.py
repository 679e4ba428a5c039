"""Selectors: top-B, random tie-break, pools, exclusion, epoch stream, MoPPS posterior."""

import numpy as np
import pytest

from rpo_verl.dps.hmm import PARTIAL, SOLVED, UNSOLVED
from rpo_verl.dps.mopps import MoPPSPosterior
from rpo_verl.dps.selectors import DPSSelector, EpochStream, MoPPSSelector, UniformSelector, make_selector


def _trained_dps(n=200, steps=30, seed=0, **kw):
    sel = DPSSelector(n, seed=seed, **kw)
    rng = np.random.default_rng(100 + seed)
    for _ in range(steps):
        ids = sel.select(16)
        sel.update(ids, rng.choice([0.0, 0.5, 1.0], size=16), 8)
    return sel


def _all_scores(sel):
    return sel.filter.scores(np.arange(sel.num_prompts))


@pytest.mark.parametrize("batch", [1, 7, 16, 150, 200])
def test_dps_whole_dataset_is_top_b(batch):
    sel = _trained_dps()
    scores = _all_scores(sel)
    ids = sel.select(batch)
    assert ids.size == batch and np.unique(ids).size == batch
    rest = np.setdiff1d(np.arange(200), ids)
    if rest.size:
        assert scores[ids].min() >= scores[rest].max()
    # The same multiset of scores as a brute-force sort.
    np.testing.assert_allclose(np.sort(scores[ids]), np.sort(scores)[-batch:])


def test_dps_tie_break_is_seeded_and_random():
    picks = []
    for seed in (0, 0, 1):
        sel = DPSSelector(1000, seed=seed)  # every prompt ties at μ(partial) = 1/3
        picks.append(sel.select(10))
    np.testing.assert_array_equal(picks[0], picks[1])
    assert not np.array_equal(np.sort(picks[0]), np.sort(picks[2]))
    # Ties are broken uniformly: over many draws every prompt of a small tie group is chosen.
    sel = DPSSelector(20, seed=3)
    counts = np.bincount(np.concatenate([sel.select(5) for _ in range(400)]), minlength=20)
    assert counts.min() > 50 and counts.max() < 150  # expectation 100


def test_dps_ties_mix_active_and_untouched_prompts():
    # An active prompt whose score is exactly 1/3 ties with never-seen prompts.
    sel = DPSSelector(6, seed=0, decay=0.0, settle_tol=0.0)
    sel.update([0], [0.5], 8)  # λ = 0: the α excess is gone after one more step
    sel.update([], [], 8)
    assert 0 in sel.filter.active_ids and sel.filter.scores([0])[0] == pytest.approx(1 / 3)
    chosen = np.concatenate([sel.select(1) for _ in range(600)])
    assert np.bincount(chosen, minlength=6).min() > 50


def test_dps_pool_selects_top_b_of_its_candidates():
    sel = _trained_dps(pool_ratio=3.0)
    stream_before = sel.stream.state_dict()
    ids = sel.select(10)
    replay = EpochStream(200, stream_before["seed"])
    replay.load_state_dict(stream_before)
    cands = replay.take(30)
    assert set(ids) <= set(cands)
    scores = sel.filter.scores(cands)
    chosen = np.isin(cands, ids)
    assert scores[chosen].min() >= scores[~chosen].max()


def test_exclude_is_respected_by_every_selector():
    for name in ("dps", "mopps", "uniform"):
        for pool in (None, 2.0):
            sel = make_selector(name, 50, seed=1, pool_ratio=pool)
            exclude = np.arange(0, 50, 2)
            ids = sel.select(20, exclude=exclude)
            assert ids.size == 20 and np.unique(ids).size == 20 and not np.isin(ids, exclude).any()
            with pytest.raises(ValueError, match="exceeds"):
                sel.select(26, exclude=exclude)


def test_dps_exclude_with_active_prompts():
    sel = _trained_dps()
    top = sel.select(20)
    again = sel.select(20, exclude=top)
    assert not np.isin(again, top).any()
    scores = _all_scores(sel)
    rest = np.setdiff1d(np.arange(200), np.concatenate([top, again]))
    assert scores[again].min() >= scores[rest].max()


def test_uniform_is_epoch_like_with_drop_last():
    sel = UniformSelector(10, seed=0)
    first = np.concatenate([sel.select(3) for _ in range(3)])
    assert np.unique(first).size == 9  # one epoch: no repeats; the 10th prompt is dropped
    assert sel.stream.epoch == 0
    sel.select(3)
    assert sel.stream.epoch == 1


def test_mopps_posterior_matches_dense_recursion():
    n, lam, a0 = 8, 0.6, 1.0
    post = MoPPSPosterior(n, decay=lam, prior=a0)
    a, b = np.full(n, a0), np.full(n, a0)
    rng = np.random.default_rng(0)
    for _ in range(25):
        ids = rng.choice(n, 3, replace=False)
        s = rng.choice([0.0, 0.25, 1.0, np.nan], 3)
        post.update(ids, s, 4)
        a, b = lam * a + (1 - lam) * a0, lam * b + (1 - lam) * a0
        ok = ~np.isnan(s)
        a[ids[ok]] += s[ok] * 4
        b[ids[ok]] += (1 - s[ok]) * 4
    pa, pb = post.params()
    np.testing.assert_allclose(pa, a, rtol=1e-12)
    np.testing.assert_allclose(pb, b, rtol=1e-12)


def test_mopps_prefers_prompts_near_half():
    sel = MoPPSSelector(30, seed=0, decay=1.0)
    # Prompts 0-9 look solved, 10-19 unsolved, 20-29 half solved, each with strong evidence.
    for _ in range(5):
        sel.update(np.arange(30), np.repeat([1.0, 0.0, 0.5], 10), 40)
    assert set(sel.select(10)) == set(range(20, 30))


def test_dps_prefers_partial_prompts():
    sel = DPSSelector(30, seed=0)
    for _ in range(3):
        sel.update(np.arange(30), np.repeat([1.0, 0.0, 0.5], 10), 8)
    assert set(sel.select(10)) == set(range(20, 30))
    assert sel.predict(np.array([0, 10, 20])).argmax(axis=1).tolist() == [SOLVED, UNSOLVED, PARTIAL]


def test_bad_selector_name():
    with pytest.raises(ValueError, match="dapo_ds is algorithm.filter_groups"):
        make_selector("dapo_ds", 10)
