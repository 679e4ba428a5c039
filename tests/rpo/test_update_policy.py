"""Cache update policies, including the released code's last-sample bug (every sample pickable)."""

import numpy as np
import pytest

from rpo_verl.rpo.update_policy import best_in_group, choose_writes, random_in_group


def _groups(num_groups, n):
    return np.repeat(np.arange(num_groups), n)


def test_best_prefers_reward_then_shorter_then_first():
    group = np.array([0, 0, 0, 1, 1, 1])
    reward = np.array([1.0, 1.0, 0.0, 0.5, 0.5, 0.5])
    length = np.array([9, 5, 1, 4, 4, 4])
    best = best_in_group(group, reward, length, np.ones(6, bool), 2)
    assert best.tolist() == [1, 3]
    best = best_in_group(group, reward, length, np.array([1, 0, 1, 0, 0, 0], bool), 2)
    assert best.tolist() == [0, -1]


def test_eps_one_is_greedy_eps_zero_is_uniform():
    g, n = 20_000, 4
    group = _groups(g, n)
    reward = np.tile([0.0, 1.0, 0.0, 0.0], g)
    length = np.full(g * n, 10)
    correct = reward > 0
    greedy = choose_writes("eps_greedy", group, reward, length, correct, g, np.random.default_rng(0), epsilon=1.0)
    assert (greedy - np.arange(g) * n == 1).all()
    uniform = choose_writes("eps_greedy", group, reward, length, correct, g, np.random.default_rng(0), epsilon=0.0)
    pos = uniform - np.arange(g) * n
    counts = np.bincount(pos, minlength=n)
    # chi-square goodness of fit against uniform (3 dof, p=0.001 critical value 16.27)
    chi2 = ((counts - g / n) ** 2 / (g / n)).sum()
    assert chi2 < 16.27, counts
    assert counts[-1] > 0.9 * g / n  # the last sample is as likely as the others


def test_eps_half_mixes_best_and_uniform():
    g, n, eps = 40_000, 8, 0.5
    group = _groups(g, n)
    reward = np.tile(np.eye(n)[n - 1], g)  # the best is the last sample of each group
    length = np.full(g * n, 3)
    pick = choose_writes("eps_greedy", group, reward, length, reward > 0, g, np.random.default_rng(7), epsilon=eps)
    pos = pick - np.arange(g) * n
    p_last = eps + (1 - eps) / n
    freq_last = (pos == n - 1).mean()
    assert abs(freq_last - p_last) < 4 * np.sqrt(p_last * (1 - p_last) / g)
    others = np.bincount(pos, minlength=n)[: n - 1] / g
    assert np.all(np.abs(others - (1 - eps) / n) < 0.01)


def test_random_in_group_handles_ragged_groups_and_eligibility():
    group = np.array([0, 1, 1, 2, 2, 2])
    eligible = np.array([1, 0, 1, 0, 0, 0], bool)
    picks = np.array([random_in_group(group, eligible, 3, np.random.default_rng(s)) for s in range(50)])
    assert (picks[:, 0] == 0).all() and (picks[:, 1] == 2).all() and (picks[:, 2] == -1).all()
    eligible = np.ones(6, bool)
    picks = np.array([random_in_group(group, eligible, 3, np.random.default_rng(s)) for s in range(300)])
    assert set(picks[:, 2].tolist()) == {3, 4, 5}  # the last of a ragged group is pickable


def test_empty_trajectories_are_never_written():
    group = _groups(500, 3)
    length = np.tile([0, 5, 0], 500)
    reward = np.tile([1.0, 0.0, 1.0], 500)
    pick = choose_writes("eps_greedy", group, reward, length, reward > 0, 500, np.random.default_rng(0))
    assert ((pick % 3) == 1).all()


def test_best_replaces_only_if_better():
    group = np.array([0, 0, 1, 1, 2, 2, 3])
    reward = np.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.1, 0.0])
    length = np.array([8, 2, 6, 4, 3, 3, 9])
    pick = choose_writes(
        "best",
        group,
        reward,
        length,
        reward > 0,
        4,
        np.random.default_rng(0),
        has_record=np.array([True, True, True, False]),
        slot_free=np.array([False, False, False, True]),
        worst_reward=np.array([1.0, 0.5, 0.5, np.inf]),
        worst_length=np.array([10, 4, 9, -1]),
    )
    # g0: reward tie, shorter (8 < 10) -> write; g1: tie reward, same length -> no; g2: 0.2 < 0.5 -> no
    # g3: free slot -> write
    assert pick.tolist() == [0, -1, -1, 6]


def test_correct_only_and_static():
    g, n = 2000, 4
    group = _groups(g, n)
    correct = np.tile([False, True, False, True], g)
    correct[:n] = False  # group 0 has no correct sample
    reward = correct.astype(float)
    length = np.tile([5, 6, 7, 8], g)
    pick = choose_writes("correct_only", group, reward, length, correct, g, np.random.default_rng(0), epsilon=0.5)
    assert pick[0] == -1
    assert correct[pick[1:]].all()
    assert set((pick[1:] % n).tolist()) == {1, 3}
    has = np.arange(g) % 2 == 0
    pick = choose_writes("static", group, reward, length, correct, g, np.random.default_rng(0), has_record=has)
    assert (pick[has] == -1).all() and (pick[~has] >= 0).all()


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy"):
        choose_writes("newest", np.zeros(1, int), np.zeros(1), np.ones(1), np.ones(1, bool), 1, np.random.default_rng())
