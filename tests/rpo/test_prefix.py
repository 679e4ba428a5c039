"""Prefix-cut policies: tail, ratio, newline alignment and every edge case."""

import numpy as np
import pytest

from rpo_verl.rpo.config import RPOPrefixConfig
from rpo_verl.rpo.prefix import (
    CUT,
    CUT_GE_LEN,
    EMPTY_ENTRY,
    NO_ENTRY,
    OVERLONG_FULL_PATH,
    OVERLONG_SHORTENED,
    PrefixOverlongError,
    align_to_newline,
    newline_table,
    newline_token_ids,
    plan_cuts,
)

R = 4096  # response budget large enough not to interfere unless a test wants it


def _plan(lengths, cfg, seed=0, has=None, response_length=R, **kw):
    lengths = np.asarray(lengths, dtype=np.int64)
    has = np.ones(lengths.size, dtype=bool) if has is None else np.asarray(has)
    return plan_cuts(lengths, has, cfg, np.random.default_rng(seed), response_length=response_length, **kw)


def test_tail_cut_distribution_and_budget():
    cfg = RPOPrefixConfig(mode="tail", max_cut=10)
    lengths = np.full(20_000, 1000)
    plan = _plan(lengths, cfg)
    cut = lengths - plan.prefix_len
    assert (plan.reason == CUT).all()
    assert cut.min() == 1 and cut.max() == 10  # t ~ U{1..T}, both ends reachable
    np.testing.assert_array_equal(plan.budget, cut)  # suffix budget = t
    counts = np.bincount(cut, minlength=11)[1:]
    assert counts.min() > 0.8 * counts.mean()  # roughly uniform


def test_tail_cut_ge_length_is_full_path():
    cfg = RPOPrefixConfig(mode="tail", max_cut=299)
    plan = _plan([3] * 1000, cfg, response_length=512)
    full = plan.reason == CUT_GE_LEN
    assert full.mean() > 0.9  # t >= 3 almost always
    assert (plan.prefix_len[full] == 0).all() and (plan.budget[full] == 512).all()
    assert (plan.prefix_len[~full] > 0).all()


def test_ratio_cut_keeps_fraction_plus_slack():
    cfg = RPOPrefixConfig(mode="ratio", ratio_lo=0.25, ratio_hi=0.75, slack=5)
    lengths = np.full(5000, 400)
    plan = _plan(lengths, cfg)
    assert plan.prefix_len.min() >= 100 and plan.prefix_len.max() <= 300
    np.testing.assert_array_equal(plan.budget, lengths - plan.prefix_len + 5)


def test_ratio_one_with_zero_slack_still_leaves_a_token():
    cfg = RPOPrefixConfig(mode="ratio", ratio_lo=1.0, ratio_hi=1.0, slack=0)
    plan = _plan([10, 1], cfg)
    assert plan.prefix_len.tolist() == [9, 0]
    assert plan.budget[0] == 1 and plan.reason.tolist() == [CUT, CUT_GE_LEN]


def test_missing_and_empty_entries_are_full_path():
    cfg = RPOPrefixConfig(mode="tail", max_cut=2)
    plan = _plan([50, 0, 50], cfg, has=[False, True, True], response_length=64)
    assert plan.reason.tolist() == [NO_ENTRY, EMPTY_ENTRY, CUT]
    assert plan.prefix_len[:2].tolist() == [0, 0] and plan.budget[:2].tolist() == [64, 64]


def test_budget_always_fits_the_response():
    rng = np.random.default_rng(5)
    for mode in ("tail", "ratio"):
        cfg = RPOPrefixConfig(mode=mode, max_cut=50, slack=30, overlong="shorten")
        lengths = rng.integers(0, 300, size=2000)
        plan = _plan(lengths, cfg, response_length=200)
        assert (plan.prefix_len + plan.budget <= 200).all()
        assert (plan.budget >= 1).all()
        assert (plan.prefix_len <= np.maximum(lengths - 1, 0)).all()


def test_overlong_prefix_full_path_shorten_and_error():
    lengths = [1000, 100]
    plan = _plan(lengths, RPOPrefixConfig(mode="tail", max_cut=10), response_length=256)
    assert plan.reason.tolist() == [OVERLONG_FULL_PATH, CUT]
    assert plan.prefix_len[0] == 0 and plan.budget[0] == 256

    plan = _plan(lengths, RPOPrefixConfig(mode="tail", max_cut=10, overlong="shorten"), response_length=256)
    assert plan.reason[0] == OVERLONG_SHORTENED
    budget0 = 1000 - _plan(lengths, RPOPrefixConfig(mode="tail", max_cut=10), response_length=R).prefix_len[0]
    assert plan.prefix_len[0] == 256 - budget0  # shortened so the original budget still fits
    assert plan.prefix_len[0] + plan.budget[0] == 256

    with pytest.raises(PrefixOverlongError, match="overlong=full_path"):
        _plan(lengths, RPOPrefixConfig(mode="tail", max_cut=10, overlong="error"), response_length=256)


def test_prompt_plus_prefix_over_max_input_len():
    cfg = RPOPrefixConfig(mode="tail", max_cut=1, max_input_len=150)
    plan = _plan([100, 100], cfg, prompt_len=np.array([40, 60]))
    assert plan.reason.tolist() == [CUT, OVERLONG_FULL_PATH]
    cfg = RPOPrefixConfig(mode="tail", max_cut=1, max_input_len=150, overlong="shorten")
    plan = _plan([100, 100], cfg, prompt_len=np.array([40, 60]))
    assert plan.prefix_len.tolist() == [99, 90] and plan.reason.tolist() == [CUT, OVERLONG_SHORTENED]
    assert plan.budget.tolist() == [1, 10]
    # without prompt lengths the check cannot run (the agent loop re-checks with real lengths)
    assert (_plan([100], cfg).reason == CUT).all()


def test_deterministic_given_seed():
    cfg = RPOPrefixConfig(mode="tail")
    lengths = np.arange(1, 500)
    a, b, c = _plan(lengths, cfg, seed=1), _plan(lengths, cfg, seed=1), _plan(lengths, cfg, seed=2)
    np.testing.assert_array_equal(a.prefix_len, b.prefix_len)
    assert not np.array_equal(a.prefix_len, c.prefix_len)


# ---- newline alignment ------------------------------------------------------------------------
NL = 7


def _gather_from(rows_tokens):
    def gather(rows, offsets):
        return np.stack([np.asarray(rows_tokens[r])[offsets[i]] for i, r in enumerate(rows)])

    return gather


def test_align_moves_cut_back_to_line_boundary():
    table = newline_table([NL], 10)
    seqs = [
        [1, 2, NL, 3, 4, 5, NL, 6],  # cut 6 -> 3 (after the first NL); cut 7 stays 7
        [1, 2, 3, 4],  # no newline: keep the cut, flagged
        [NL, 1, 1],  # boundary right after the first token
    ]
    p, fb = align_to_newline(np.array([6, 3, 3]), _gather_from(seqs), table, windows=(1, 1))
    assert p.tolist() == [3, 3, 1] and fb.tolist() == [False, True, False]
    p, fb = align_to_newline(np.array([7, 0, 1]), _gather_from(seqs), table, windows=(4,))
    assert p.tolist() == [7, 0, 1] and not fb.any()


def test_plan_with_newline_alignment_grows_budget():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 6, size=200) for _ in range(300)]
    for s in seqs:
        s[rng.choice(200, size=5, replace=False)] = NL
    lengths = np.array([len(s) for s in seqs])
    cfg_plain = RPOPrefixConfig(mode="tail", max_cut=100)
    cfg_nl = RPOPrefixConfig(mode="tail", max_cut=100, align="newline")
    plain = _plan(lengths, cfg_plain, seed=3)
    aligned = _plan(lengths, cfg_nl, seed=3, gather=_gather_from(seqs), newline=newline_table([NL], 10))
    assert (aligned.prefix_len <= plain.prefix_len).all()
    for s, p, fb in zip(seqs, aligned.prefix_len, aligned.align_fallback):
        if p > 0 and not fb:
            assert s[p - 1] == NL
    np.testing.assert_array_equal(aligned.budget, lengths - aligned.prefix_len)
    with pytest.raises(ValueError, match="align=newline"):
        _plan(lengths, cfg_nl)


def test_newline_token_ids_from_tokenizer(tokenizer):
    ids = newline_token_ids(tokenizer)
    assert ids.size >= 1
    assert all("\n" in tokenizer.decode([int(i)]) for i in ids)
    for token in tokenizer.encode("a\nb\n\nc", add_special_tokens=False):
        assert ("\n" in tokenizer.decode([token])) == (token in set(ids.tolist()))


@pytest.mark.parametrize("windows", [(1,), (2, 5), (16, 64, 256, 1024)])
def test_align_matches_brute_force(windows):
    rng = np.random.default_rng(11)
    seqs = [
        rng.choice([NL, 1, 2, 3, 4, 5, 6, 8, 9], size=int(rng.integers(1, 120)), p=[0.04] + [0.12] * 8)
        for _ in range(400)
    ]
    cuts = np.array([int(rng.integers(0, len(s) + 1)) for s in seqs])
    p, fb = align_to_newline(cuts, _gather_from(seqs), newline_table([NL], 10), windows=windows)
    for s, c, q, f in zip(seqs, cuts, p, fb):
        boundaries = [i + 1 for i in range(c) if s[i] == NL]
        assert (q, f) == ((boundaries[-1], False) if boundaries else (c, c > 0))
