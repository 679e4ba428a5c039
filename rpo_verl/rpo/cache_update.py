"""Cache updates of one RPO cache-service shard, in two phases (``CacheService`` mixin; pure numpy).

Of the ``M`` candidate trajectories of a step at most one per prompt group is written, so the
token ids of the others need not cross the Ray boundary (they are ~90 % of the bytes of a step):

1. ``plan_update(prompt_ids, lengths, rewards, correct, step, rng_seed)`` takes only the per-row
   columns, runs the update policy and returns ``(plan_id, rows, summary)``: the rows (indices into
   the arguments) whose tokens are to be written, and the summary ``[groups, candidates, writes,
   seeded]`` as int64. ``plan_id == 0``: nothing to write, the update is already applied.
2. ``commit_update(plan_id, lengths, tokens)`` writes those rows (their lengths and concatenated
   int32 token ids, in ``rows`` order) and returns True; False if the plan is stale (the shard
   was written or reloaded in between, or its actor restarted): the caller plans again.

Phase 1 changes nothing but the pending plan, so plan + commit leaves exactly the state of the
single-call ``update``, including the update random stream ``[cache.seed, shard, update_calls]``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from rpo_verl.rpo.batches import SUMMARY_KEYS, UpdateBatch
from rpo_verl.rpo.update_policy import choose_writes


def _group_rows(prompt_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order [M], group ids [G], group index [M] of the ordered rows): rows of a group contiguous.

    verl batches keep the n samples of a prompt adjacent, so usually no sort is needed.
    """
    m = prompt_ids.size
    change = prompt_ids[1:] != prompt_ids[:-1]
    if np.unique(prompt_ids).size == int(change.sum()) + 1:
        starts = np.r_[0, np.flatnonzero(change) + 1]
        return np.arange(m), prompt_ids[starts], np.r_[0, np.cumsum(change)]
    order = np.argsort(prompt_ids, kind="stable")
    uniq, group = np.unique(prompt_ids[order], return_inverse=True)
    return order, uniq, group


class CacheUpdates:
    """Two-phase updates (module doc); needs ``self.cfg``, ``self.store``, ``self.shard``, ``self.counters``."""

    _pending: Optional[dict] = None
    _plans = 0

    def plan_update(self, prompt_ids, lengths, rewards, correct, step: int = 0, rng_seed: Optional[int] = None):
        """Phase 1: ``(plan_id, rows int64, summary int64[4])``; see the module doc."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
        correct_flag = np.asarray(correct, dtype=np.int8).reshape(-1)
        m = ids.size
        if not (lengths.size == rewards.size == correct_flag.size == m):
            raise ValueError(f"plan_update: prompt_ids, lengths, rewards, correct must all have {m} rows")
        cache = self.cfg.cache
        calls = int(self.counters["update_calls"])
        seed = [cache.seed, self.shard[0], calls] if rng_seed is None else [int(rng_seed), self.shard[0]]
        self._pending = None
        none = np.zeros(0, dtype=np.int64)
        if m == 0:
            self._apply_counts(np.zeros(len(SUMMARY_KEYS), dtype=np.int64))
            return 0, none, np.zeros(len(SUMMARY_KEYS), dtype=np.int64)
        rng = np.random.default_rng(seed)
        order, uniq, group = _group_rows(ids)
        g = uniq.size
        reward = rewards[order].astype(np.float64)
        length = lengths[order]
        flag = correct_flag[order]
        is_correct = np.where(flag >= 0, flag > 0, reward > cache.correct_threshold)

        st = self.store
        table = st.record_table(uniq)  # [G, K]
        filled = table >= 0
        has_record = filled.any(axis=1)
        slot_free = ~filled.all(axis=1)
        safe = np.maximum(table, 0)
        rec_reward = np.where(filled, st.col("reward")[safe] if st.num_records else 0, np.inf)
        rec_len = np.where(filled, st.col("length")[safe] if st.num_records else 0, -1)
        rec_seq = np.where(filled, st.col("seq")[safe] if st.num_records else 0, np.iinfo(np.int64).max)
        # worst record: lowest reward, ties: longest
        worst_col = np.lexsort((-rec_len, rec_reward), axis=1)[:, 0] if table.shape[1] > 1 else np.zeros(g, np.int64)
        rows = np.arange(g)
        pick = choose_writes(
            cache.update,
            group,
            reward,
            length,
            is_correct,
            g,
            rng,
            epsilon=cache.epsilon,
            has_record=has_record,
            slot_free=slot_free,
            worst_reward=rec_reward[rows, worst_col],
            worst_length=rec_len[rows, worst_col],
        )
        write = np.flatnonzero(pick >= 0)
        summary = np.array([g, m, write.size, int((~has_record[write]).sum())], dtype=np.int64)
        if write.size == 0:
            self._apply_counts(summary)
            return 0, none, summary
        evict_col = worst_col if cache.update == "best" else rec_seq.argmin(axis=1)
        src = order[pick[write]]  # rows of the arguments
        self._plans += 1
        self._pending = {
            "id": self._plans,
            "calls": calls,
            "seq": st._seq,
            "prompt_ids": uniq[write],
            "lengths": lengths[src],
            "rewards": rewards[src],
            "correct": is_correct[pick[write]],
            "replace": np.where(slot_free, -1, table[rows, evict_col])[write],
            "step": int(step),
            "summary": summary,
        }
        return self._plans, src.astype(np.int64), summary

    def commit_update(self, plan_id: int, lengths, tokens) -> bool:
        """Phase 2: write the planned rows (``lengths`` [W] and concatenated ``tokens``); False if stale."""
        plan = self._pending
        if (
            plan is None
            or plan["id"] != int(plan_id)
            or plan["calls"] != int(self.counters["update_calls"])
            or plan["seq"] != self.store._seq
        ):
            return False
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
        if not np.array_equal(lengths, plan["lengths"]) or int(lengths.sum()) != tokens.size:
            raise ValueError("commit_update: lengths/tokens do not match the planned rows")
        self._pending = None
        self.store.write_many(
            plan["prompt_ids"], tokens, lengths, plan["rewards"], plan["correct"], plan["step"], replace=plan["replace"]
        )
        self._apply_counts(plan["summary"])
        return True

    def _apply_counts(self, summary: np.ndarray) -> None:
        c = self.counters
        c["update_calls"] += 1
        groups, candidates, writes, seeded = (int(v) for v in summary)
        c["update_groups"] += groups
        c["update_candidates"] += candidates
        c["writes"] += writes
        c["seeded"] += seeded

    def update(self, records: UpdateBatch | dict, rng_seed: Optional[int] = None) -> dict:
        """Offer each group's trajectories to the cache; the configured policy decides what is written.

        One call in process (plan + commit); returns ``{"groups", "candidates", "writes", "seeded"}``.
        """
        batch = records if isinstance(records, UpdateBatch) else UpdateBatch(**records)
        plan_id, rows, summary = self.plan_update(
            batch.prompt_ids, batch.lengths, batch.rewards, batch.correct, batch.step, rng_seed
        )
        if plan_id:
            sub = batch.subset(rows)
            self.commit_update(plan_id, sub.lengths, sub.tokens)
        return dict(zip(SUMMARY_KEYS, (int(v) for v in summary)))
