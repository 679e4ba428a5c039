"""CacheStore: int32 storage, slots, compaction, memory bound, state dicts and cache files."""

import json
import os
import zipfile

import numpy as np
import pytest

from rpo_verl.rpo.cache_file import CacheFileError, read_cache_file, tokenizer_fingerprint
from rpo_verl.rpo.cache_store import CacheStore


def _random_batches(rng, store, steps, batch, max_len, vocab=1000, replace_existing=True):
    """Random write_many traffic; returns {record index: expected tokens}."""
    expected = {}
    span = store.id_hi - store.id_lo
    for step in range(steps):
        ids = store.id_lo + rng.choice(span, size=min(batch, span), replace=False)
        lengths = rng.integers(0, max_len, size=ids.size)
        tokens = rng.integers(0, vocab, size=int(lengths.sum()))  # int64 on purpose
        table = store.record_table(ids)
        full = (table >= 0).all(axis=1)
        replace = np.where(full & replace_existing, table[:, 0], -1)
        keep = replace_existing | ~full
        offsets = np.cumsum(lengths) - lengths
        ids, lengths, replace, offsets = ids[keep], lengths[keep], replace[keep], offsets[keep]
        flat = np.concatenate([tokens[o : o + n] for o, n in zip(offsets, lengths)]) if ids.size else tokens[:0]
        recs = store.write_many(ids, flat, lengths, rng.random(ids.size), rng.random(ids.size) < 0.5, step, replace)
        starts = np.cumsum(lengths) - lengths
        for rec, s, n in zip(recs, starts, lengths):
            expected[int(rec)] = flat[s : s + n].copy()
    return expected


def test_tokens_are_int32_and_round_trip():
    store = CacheStore((0, 10))
    rec = store.write(3, np.array([5, 70000, 2**31 - 1], dtype=np.int64), 1.0, True, step=7)
    view = store.tokens(rec)
    assert view.dtype == np.int32
    assert view.tolist() == [5, 70000, 2**31 - 1]
    assert all(b.dtype == np.int32 for b in store._blocks)
    assert store.col("step")[rec] == 7 and store.col("correct")[rec] == 1 and store.col("length")[rec] == 3
    with pytest.raises(ValueError, match="int32"):
        store.write(4, np.array([2**31]), 0.0, False, 0)


def test_slots_replace_and_errors():
    store = CacheStore((100, 110), per_prompt=2)
    a = store.write(101, [1, 2], 0.0, False, 0)
    b = store.write(101, [3], 1.0, True, 1)
    assert store.record_table([101]).tolist() == [[a, b]]
    with pytest.raises(ValueError, match="slots in use"):
        store.write(101, [4], 0.0, False, 2)
    with pytest.raises(ValueError, match="does not belong"):
        store.write(102, [4], 0.0, False, 2, replace=a)
    with pytest.raises(KeyError, match="outside the cache's id range"):
        store.record_table([99, 110])
    c = store.write(101, [9, 9, 9], 0.5, False, 3, replace=a)
    assert c == a and store.tokens(a).tolist() == [9, 9, 9] and store.col("hits")[a] == 0
    assert store.num_prompts_cached == 1 and store.num_records == 2
    # 2 dead tokens > 5% of 4 live ones: compacted at once
    assert store.live_tokens == 4 and store.garbage_tokens == 0 and store.compactions == 1
    assert store.tokens(b).tolist() == [3]


def test_random_traffic_matches_reference_and_compacts():
    rng = np.random.default_rng(0)
    store = CacheStore((0, 500), per_prompt=1, min_block_tokens=256, max_block_tokens=2048)
    expected = _random_batches(rng, store, steps=200, batch=40, max_len=60)
    assert store.compactions > 0
    assert store.garbage_tokens <= store.compact_garbage_frac * store.live_tokens
    for rec, tokens in expected.items():
        np.testing.assert_array_equal(store.tokens(rec), tokens)
    # gather/spans agree with tokens()
    recs = np.array(sorted(expected))[:50]
    lens = store.col("length")[recs]
    cut = lens // 2
    flat = store.spans(recs, cut)
    np.testing.assert_array_equal(flat, np.concatenate([expected[int(r)][: int(c)] for r, c in zip(recs, cut)]))
    ok = lens > 0
    got = store.gather(recs[ok], np.zeros((ok.sum(), 1), dtype=np.int64))[:, 0]
    np.testing.assert_array_equal(got, [expected[int(r)][0] for r in recs[ok]])


def test_memory_within_1_2x_of_raw_int32():
    """20k records, ~200 tokens each, written in batches, then churned by replacements."""
    rng = np.random.default_rng(1)
    n = 20_000
    store = CacheStore((0, n))
    for start in range(0, n, 1024):
        ids = np.arange(start, min(start + 1024, n))
        lengths = rng.integers(100, 300, size=ids.size)
        store.write_many(
            ids, rng.integers(0, 50_000, size=int(lengths.sum())), lengths, np.zeros(ids.size), np.zeros(ids.size), 0
        )
    assert store.num_records == n
    assert store.nbytes <= 1.2 * store.raw_token_bytes, store.nbytes / store.raw_token_bytes
    for step in range(30):  # replacements create garbage; compaction must keep the bound
        ids = rng.choice(n, size=1024, replace=False)
        lengths = rng.integers(100, 300, size=ids.size)
        store.write_many(
            ids,
            rng.integers(0, 50_000, size=int(lengths.sum())),
            lengths,
            np.zeros(ids.size),
            np.zeros(ids.size),
            step,
            replace=store.record_table(ids)[:, 0],
        )
    assert store.compactions > 0
    assert store.nbytes <= 1.2 * store.raw_token_bytes, store.nbytes / store.raw_token_bytes


def _assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "meta":
            assert a[key] == b[key]
        else:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_state_dict_round_trip_is_identical_and_layout_free():
    rng = np.random.default_rng(2)
    store = CacheStore((0, 300), per_prompt=2, min_block_tokens=128, max_block_tokens=512)
    _random_batches(rng, store, steps=60, batch=30, max_len=40)
    state = store.state_dict()
    other = CacheStore((0, 300), per_prompt=2)
    other.load_state_dict(state)
    _assert_state_equal(state, other.state_dict())
    store.compact()  # a different arena layout, same content
    _assert_state_equal(state, store.state_dict())
    assert state["tokens"].dtype == np.int32


def test_save_load_round_trip_atomic(tmp_path, tokenizer):
    fp = tokenizer_fingerprint(tokenizer)
    rng = np.random.default_rng(3)
    store = CacheStore((0, 200), fingerprint=fp)
    _random_batches(rng, store, steps=10, batch=50, max_len=30, vocab=len(tokenizer))
    path = str(tmp_path / "cache.npz")
    store.save(path)
    assert sorted(os.listdir(tmp_path)) == ["cache.npz"]  # no temp files left behind
    loaded = CacheStore.from_file(path, fingerprint=fp)
    _assert_state_equal(store.state_dict(), loaded.state_dict())
    assert loaded.id_lo == 0 and loaded.id_hi == 200
    with zipfile.ZipFile(path) as zf:  # plain npz, no pickles
        assert "meta.npy" in zf.namelist()
    np.load(path, allow_pickle=False).close()


def test_corrupt_files_fail_clearly(tmp_path):
    store = CacheStore((0, 50))
    store.write(1, [1, 2, 3], 1.0, True, 0)
    path = tmp_path / "cache.npz"
    store.save(str(path))
    raw = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CacheFileError, match="corrupt or truncated"):
        read_cache_file(str(truncated))

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(CacheFileError, match="corrupt or truncated"):
        read_cache_file(str(garbage))

    with pytest.raises(CacheFileError, match="does not exist"):
        read_cache_file(str(tmp_path / "missing.npz"))

    # a token changed after writing: the checksum catches it
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["tokens"] = arrays["tokens"].copy()
    arrays["tokens"][0] += 1
    flipped = tmp_path / "flipped.npz"
    np.savez(flipped, **arrays)
    with pytest.raises(CacheFileError, match="checksum"):
        read_cache_file(str(flipped))

    # lengths that do not add up
    arrays["tokens"] = arrays["tokens"][:-1]
    short = tmp_path / "short.npz"
    np.savez(short, **arrays)
    with pytest.raises(CacheFileError, match="do not match"):
        read_cache_file(str(short))

    # another format version
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["version"] = 99
    arrays["meta"] = np.array(json.dumps(meta))
    newer = tmp_path / "newer.npz"
    np.savez(newer, **arrays)
    with pytest.raises(CacheFileError, match="version 99"):
        read_cache_file(str(newer))


def test_tokenizer_mismatch_fails(tmp_path, tokenizer, other_tokenizer):
    store = CacheStore((0, 10), fingerprint=tokenizer_fingerprint(tokenizer))
    store.write(1, [1, 2, 3], 1.0, True, 0)
    path = str(tmp_path / "cache.npz")
    store.save(path)
    with pytest.raises(CacheFileError, match="another tokenizer"):
        CacheStore.from_file(path, fingerprint=tokenizer_fingerprint(other_tokenizer))
    # same tokenizer object at another path still matches (the name is informational)
    fp = dict(tokenizer_fingerprint(tokenizer), name="elsewhere")
    CacheStore.from_file(path, fingerprint=fp)


def test_token_ids_beyond_vocab_fail(tmp_path, tokenizer):
    fp = tokenizer_fingerprint(tokenizer)
    store = CacheStore((0, 10))  # no fingerprint in the file
    store.write(1, [1, len(tokenizer) + 5], 1.0, True, 0)
    path = str(tmp_path / "cache.npz")
    store.save(path)
    with pytest.raises(CacheFileError, match="outside"):
        CacheStore.from_file(path, fingerprint=fp)


def test_unknown_prompt_ids_fail(tmp_path):
    store = CacheStore((0, 1000))
    store.write(5, [1], 1.0, True, 0)
    store.write(900, [1, 2], 1.0, True, 0)
    path = str(tmp_path / "cache.npz")
    store.save(path)
    with pytest.raises(CacheFileError, match=r"outside this dataset's id range \[0, 100\)"):
        CacheStore.from_file(path, id_range=(0, 100))
    small = CacheStore((0, 100))
    with pytest.raises(CacheFileError, match="another dataset"):
        small.load(path)


def test_load_keeps_newest_per_prompt_and_filters_shards():
    store = CacheStore((0, 20), per_prompt=3)
    for i in range(3):
        store.write(4, [i] * (i + 1), float(i), False, i)
    store.write(5, [7], 0.0, False, 0)
    one = CacheStore((0, 20), per_prompt=1)
    one.load_state_dict(store.state_dict())
    assert one.num_records == 2 and one.tokens(one.record_table([4])[0, 0]).tolist() == [2, 2, 2]
    odd = CacheStore((0, 20), per_prompt=3)
    odd.load_state_dict(store.state_dict(), shard=(1, 2))
    assert odd.record_table([4]).max() == -1 and odd.record_table([5])[0, 0] >= 0
