"""RPO cache update policies (ALGORITHMS.md §1, "Cache update"): pure numpy, vectorised over groups.

After rewards, each prompt's group of ``n`` trajectories (full prefix ⊕ suffix token ids) may
write one trajectory back to the cache:

- ``eps_greedy`` (paper, eps = 0.5): with probability eps the group's best trajectory (highest
  reward, ties: shorter, then first), otherwise one drawn uniformly from *all* the group's
  non-empty trajectories (the released code's ``randint(0, n-1)``-style bug never picked the last
  one; here ``Generator.integers(0, count)`` has an exclusive upper bound, so every one can be);
- ``best``: the group's best replaces the cached one only if it is better (reward, then shorter);
- ``correct_only``: eps-greedy among the correct trajectories; no write if none is correct;
- ``static``: never overwrite (a prompt without any record is still seeded with the group's best,
  so ``static`` + lazy initialisation is not plain GRPO forever).

Empty trajectories (length 0) are never written. With ``per_prompt > 1`` a write fills a free
slot first; when full, ``best`` replaces the worst record (if better), the others the oldest.

Inputs are flattened candidates of ``G`` groups: ``group`` [M] (group index, 0..G-1), ``reward``
[M], ``length`` [M], ``correct`` [M]; outputs index into the M candidates.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("eps_greedy", "best", "correct_only", "static")


def better(reward_a, length_a, reward_b, length_b) -> np.ndarray:
    """Elementwise: trajectory a is better than b (higher reward, ties: shorter)."""
    reward_a, reward_b = np.asarray(reward_a), np.asarray(reward_b)
    return (reward_a > reward_b) | ((reward_a == reward_b) & (np.asarray(length_a) < np.asarray(length_b)))


def best_in_group(group: np.ndarray, reward: np.ndarray, length: np.ndarray, eligible: np.ndarray, num_groups: int):
    """[G] index of each group's best eligible candidate (reward desc, length asc, index asc); -1 if none.

    ``group`` must be sorted (candidates of a group contiguous); O(M) segment reductions, no sort.
    """
    m = len(group)
    out = np.full(num_groups, -1, dtype=np.int64)
    if m == 0:
        return out
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, m])
    score = np.where(eligible, np.asarray(reward, dtype=np.float64), -np.inf)
    cand = eligible & (score == np.repeat(np.maximum.reduceat(score, starts), sizes))
    length = np.where(cand, length, np.iinfo(np.int64).max)
    cand &= length == np.repeat(np.minimum.reduceat(length, starts), sizes)
    first = np.minimum.reduceat(np.where(cand, np.arange(m), m), starts)
    ok = first < m
    out[group[starts[ok]]] = first[ok]
    return out


def random_in_group(group: np.ndarray, eligible: np.ndarray, num_groups: int, rng: np.random.Generator):
    """[G] index of a uniformly drawn eligible candidate per group (-1 if none).

    One draw per group (``rng.integers(0, count)``, upper bound exclusive: the last eligible
    candidate is as likely as the first).
    """
    counts = np.bincount(group[eligible], minlength=num_groups)
    draw = rng.integers(0, np.maximum(counts, 1), size=num_groups)
    out = np.full(num_groups, -1, dtype=np.int64)
    if len(group) == 0:
        return out
    # rank of each eligible candidate among its group's eligible ones (group is sorted)
    csum = np.cumsum(eligible)
    first = np.r_[True, group[1:] != group[:-1]]
    group_base = np.maximum.accumulate(np.where(first, csum - eligible, 0))
    rank = csum - 1 - group_base
    chosen = eligible & (rank == draw[group])
    out[group[chosen]] = np.flatnonzero(chosen)
    out[counts == 0] = -1
    return out


def choose_writes(
    policy: str,
    group: np.ndarray,
    reward: np.ndarray,
    length: np.ndarray,
    correct: np.ndarray,
    num_groups: int,
    rng: np.random.Generator,
    *,
    epsilon: float = 0.5,
    has_record: np.ndarray | None = None,
    slot_free: np.ndarray | None = None,
    worst_reward: np.ndarray | None = None,
    worst_length: np.ndarray | None = None,
) -> np.ndarray:
    """[G] candidate to write per group (index into the M candidates), -1 = no write.

    Args:
        group: [M] sorted group index of each candidate.
        reward, length, correct: [M] per candidate.
        has_record: [G] the prompt has at least one cached record (``static`` seeds only if not).
        slot_free: [G] the prompt has a free slot (``best`` then writes without comparing).
        worst_reward, worst_length: [G] the prompt's worst cached record (``best`` compares).
        The draws are the same for every policy (G coins, then G uniform picks), so runs are
        deterministic given the generator.
    """
    if policy not in POLICIES:
        raise ValueError(f"rpo_verl.rpo.cache.update: unknown policy {policy!r} (one of {list(POLICIES)})")
    group = np.asarray(group, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    correct = np.asarray(correct, dtype=bool)
    g = num_groups
    has_record = np.zeros(g, dtype=bool) if has_record is None else np.asarray(has_record, dtype=bool)
    slot_free = ~has_record if slot_free is None else np.asarray(slot_free, dtype=bool)
    nonempty = length > 0
    eligible = nonempty & correct if policy == "correct_only" else nonempty

    coin = rng.random(g) < epsilon
    best = best_in_group(group, reward, length, eligible, g)
    rand = random_in_group(group, eligible, g, rng)

    if policy in ("eps_greedy", "correct_only"):
        return np.where(coin, best, rand)
    if policy == "best":
        pick = best.copy()
        full = ~slot_free & (pick >= 0)
        if full.any():
            wins = better(reward[pick[full]], length[pick[full]], worst_reward[full], worst_length[full])
            pick[np.flatnonzero(full)[~wins]] = -1
        return pick
    # static: seed prompts that have nothing cached, never overwrite
    return np.where(has_record, -1, best)
