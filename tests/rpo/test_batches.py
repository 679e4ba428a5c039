"""Wire format of the RPO cache service: flat arrays of ``PrefixBatch`` and the shard-answer merge."""

import numpy as np

from rpo_verl.rpo.batches import PrefixBatch, UpdateBatch


def _prefix_batch(rng, size):
    prefix_len = rng.integers(0, 7, size=size)
    return PrefixBatch(
        rng.integers(0, 50_000, size=int(prefix_len.sum())).astype(np.int32),
        prefix_len.astype(np.int64),
        rng.integers(1, 100, size=size).astype(np.int64),
        rng.integers(0, 4, size=size).astype(np.int8),
        (prefix_len + rng.integers(0, 5, size=size)).astype(np.int64),
    )


def _assert_same(a: PrefixBatch, b: PrefixBatch):
    for x, y in zip(a.to_arrays(), b.to_arrays()):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_prefix_arrays_round_trip_is_exact_and_writable():
    batch = _prefix_batch(np.random.default_rng(0), 17)
    arrays = [a.copy() for a in batch.to_arrays()]
    for a in arrays:  # what Ray hands over: read-only buffers
        a.setflags(write=False)
    back = PrefixBatch.from_arrays(arrays)
    _assert_same(batch, back)
    assert all(a.flags.writeable for a in back.to_arrays())
    assert [p.tolist() for p in back.prefixes()] == [p.tolist() for p in batch.prefixes()]


def test_empty_prefix_batch_round_trip_and_merge():
    empty = PrefixBatch.from_arrays([np.zeros(0)] * 5)
    assert empty.prefixes() == [] and empty.as_list() == []
    merged = PrefixBatch.merge([(np.zeros(0, np.int64), empty), (np.zeros(0, np.int64), empty)], 0)
    assert merged.prefix_tokens.size == 0 and merged.prefix_len.size == 0


def test_merge_matches_per_prompt_reassembly_with_a_shard_without_prompts():
    rng = np.random.default_rng(1)
    size = 23
    ids = rng.permutation(size)
    routes = [ids[:9], np.zeros(0, np.int64), np.sort(ids[9:])]  # shard 1 got no prompt
    parts = [(r, _prefix_batch(rng, r.size)) for r in routes]
    merged = PrefixBatch.merge(parts, size)
    expected = [None] * size
    for rows, part in parts:
        for row, prefix, budget in zip(rows, part.prefixes(), part.budget):
            expected[row] = (prefix.tolist(), int(budget))
    assert [(p.tolist(), b) for p, b in merged.as_list()] == expected
    assert merged.prefix_tokens.dtype == np.int32
    for rows, part in parts:
        np.testing.assert_array_equal(merged.reason[rows], part.reason)
        np.testing.assert_array_equal(merged.cached_len[rows], part.cached_len)


def test_merge_of_one_shard_in_order_is_that_answer():
    batch = _prefix_batch(np.random.default_rng(2), 5)
    _assert_same(PrefixBatch.merge([(np.arange(5), batch)], 5), batch)


def test_update_batch_subset_keeps_rows_exactly():
    seqs = [np.arange(k, dtype=np.int32) + 100 * k for k in (3, 0, 5, 1)]
    batch = UpdateBatch.from_sequences([7, 7, 8, 9], seqs, [0.5, 1.0, 0.0, 1.0], step=4)
    sub = batch.subset(np.array([2, 0]))
    assert sub.prompt_ids.tolist() == [8, 7] and sub.lengths.tolist() == [5, 3] and sub.step == 4
    np.testing.assert_array_equal(sub.tokens, np.concatenate([seqs[2], seqs[0]]))
    assert batch.subset(np.zeros(0, np.int64)).tokens.size == 0
