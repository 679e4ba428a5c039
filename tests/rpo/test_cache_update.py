"""Two-phase cache updates: plan from the per-row columns, commit the chosen rows' tokens."""

import numpy as np
import pytest

from rpo_verl.rpo.batches import UpdateBatch
from rpo_verl.rpo.cache_service import CacheService
from rpo_verl.rpo.config import RPOCacheConfig, RPOConfig, RPOPrefixConfig
from rpo_verl.rpo.service_client import CacheServiceClient

N_PROMPTS, RESP = 32, 64


def _service(update="eps_greedy", shard=(0, 1), per_prompt=1):
    cfg = RPOConfig(cache=RPOCacheConfig(init="lazy", update=update, per_prompt=per_prompt), prefix=RPOPrefixConfig(max_cut=8))
    return CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP, shard=shard)


def _batch(seed, ids, n=4, step=0):
    rng = np.random.default_rng(seed)
    pids = np.repeat(ids, n)
    seqs = [rng.integers(0, 1000, size=int(rng.integers(0, 30))).astype(np.int32) for _ in pids]
    return UpdateBatch.from_sequences(pids, seqs, rng.integers(0, 2, size=len(pids)), step=step), seqs


def _meta(batch):
    return batch.prompt_ids, batch.lengths, batch.rewards, batch.correct, batch.step


def _assert_states_equal(a, b):
    assert a["meta"] == b["meta"]
    for key in a:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("per_prompt", [1, 2])
def test_planned_rows_are_written_exactly(per_prompt):
    svc = _service(per_prompt=per_prompt)
    for step in range(3):
        batch, seqs = _batch(step, np.arange(0, N_PROMPTS, 2), step=step)
        before = svc.state_dict()
        plan_id, rows, summary = svc.plan_update(*_meta(batch))
        _assert_states_equal(before, svc.state_dict())  # planning writes nothing
        assert plan_id > 0 and rows.dtype == np.int64 and summary.tolist()[2] == rows.size
        assert len(set(batch.prompt_ids[rows].tolist())) == rows.size  # at most one row per prompt
        sub = batch.subset(rows)
        assert svc.commit_update(plan_id, sub.lengths, sub.tokens)
        for row in rows:
            recs = svc.store.record_table([batch.prompt_ids[row]])[0]
            cached = [svc.store.tokens(r).tolist() for r in recs if r >= 0]
            assert seqs[row].tolist() in cached


def test_stale_plan_is_refused_and_changes_nothing():
    svc = _service()
    batch, _ = _batch(0, np.arange(8))
    plan_id, rows, _ = svc.plan_update(*_meta(batch))
    svc.update(_batch(1, np.arange(4))[0])  # another writer comes first
    state = svc.state_dict()
    sub = batch.subset(rows)
    assert not svc.commit_update(plan_id, sub.lengths, sub.tokens)
    _assert_states_equal(state, svc.state_dict())
    plan_id, rows, _ = svc.plan_update(*_meta(batch))
    svc.load_state_dict(svc.state_dict())  # a reload makes a plan stale too
    assert not svc.commit_update(plan_id, batch.subset(rows).lengths, batch.subset(rows).tokens)
    plan_id, rows, _ = svc.plan_update(*_meta(batch))
    with pytest.raises(ValueError, match="do not match"):
        svc.commit_update(plan_id, batch.subset(rows[:-1]).lengths, batch.subset(rows[:-1]).tokens)


def test_empty_batch_and_no_write_plans_are_applied_at_once():
    svc = _service(update="static")
    plan_id, rows, summary = svc.plan_update(*_meta(UpdateBatch([], [], [], [], [])))
    assert plan_id == 0 and rows.size == 0 and summary.tolist() == [0, 0, 0, 0]
    assert svc.counters["update_calls"] == 1
    batch, _ = _batch(0, np.arange(4))
    assert svc.update(batch)["writes"] == 4  # static seeds empty prompts
    plan_id, rows, summary = svc.plan_update(*_meta(_batch(1, np.arange(4))[0]))
    assert plan_id == 0 and rows.size == 0 and summary.tolist() == [4, 16, 0, 0]
    assert svc.counters["update_calls"] == 3 and svc.counters["update_candidates"] == 32


class _ConcurrentWriter:
    """A shard whose first commit is preceded by another caller's update (its plan goes stale)."""

    def __init__(self, svc, other_batch):
        self.svc, self.other = svc, other_batch

    def __getattr__(self, name):
        return getattr(self.svc, name)

    def commit_update(self, *args):
        if self.other is not None:
            self.svc.update(self.other)
            self.other = None
        return self.svc.commit_update(*args)


def test_client_replans_a_stale_shard_and_skips_none():
    other, _ = _batch(5, np.arange(0, N_PROMPTS, 3))
    batch, _ = _batch(6, np.arange(0, N_PROMPTS, 3))  # prompts of shard 0 of 3 only
    reference = [_service(shard=(k, 3)) for k in range(3)]
    reference[0].update(other)
    expected = CacheServiceClient(reference).update(batch)
    shards = [_service(shard=(k, 3)) for k in range(3)]
    client = CacheServiceClient([_ConcurrentWriter(shards[0], other), shards[1], shards[2]])
    assert client.update(batch) == expected and expected["writes"] > 0
    for a, b in zip(reference, shards):
        _assert_states_equal(a.state_dict(), b.state_dict())
    assert [s.counters["update_calls"] for s in shards] == [2, 1, 1]  # shards 1, 2 got empty batches
