"""CacheService / CacheServiceClient without Ray: lazy seeding, prefixes, updates, sharding,
metrics, state dicts and resume equivalence."""

import numpy as np
import pytest

from rpo_verl.rpo.batches import UpdateBatch
from rpo_verl.rpo.cache_file import CacheFileError, tokenizer_fingerprint
from rpo_verl.rpo.cache_service import CacheService
from rpo_verl.rpo.cache_store import CacheStore
from rpo_verl.rpo.config import RPOCacheConfig, RPOConfig, RPOPrefixConfig
from rpo_verl.rpo.prefix import NO_ENTRY, newline_token_ids
from rpo_verl.rpo.service_client import CacheServiceClient

N_PROMPTS = 64
RESP = 128


def _cfg(**cache):
    return RPOConfig(cache=RPOCacheConfig(init="lazy", **cache), prefix=RPOPrefixConfig(mode="tail", max_cut=20))


def _service(cfg=None, shard=(0, 1), **kw):
    return CacheService(cfg or _cfg(), id_range=(0, N_PROMPTS), response_length=RESP, shard=shard, **kw)


def _group_batch(rng, prompt_ids, n=4, step=0, vocab=300, prefixes=None):
    """n trajectories per prompt (prefix ⊕ random suffix), rewards in {0, 1}."""
    ids, seqs = [], []
    for i, pid in enumerate(prompt_ids):
        prefix = prefixes[i] if prefixes is not None else np.zeros(0, np.int32)
        for _ in range(n):
            suffix = rng.integers(0, vocab, size=int(rng.integers(1, 60)))
            ids.append(pid)
            seqs.append(np.concatenate([prefix, suffix]).astype(np.int32))
    rewards = rng.integers(0, 2, size=len(ids)).astype(np.float32)
    return UpdateBatch.from_sequences(ids, seqs, rewards, step=step), seqs


def test_lazy_first_visit_is_full_path_then_prefixes_of_written_records():
    rng = np.random.default_rng(0)
    svc = _service()
    ids = np.arange(0, 32)
    first = svc.sample_prefix_batch(ids, rng_seed=1)
    assert (first.prefix_len == 0).all() and (first.budget == RESP).all() and (first.reason == NO_ENTRY).all()
    batch, seqs = _group_batch(rng, ids)
    summary = svc.update(batch)
    assert summary == {"groups": 32, "candidates": 128, "writes": 32, "seeded": 32}
    # every written record is exactly one of its group's trajectories, as int32
    for pid in ids:
        rec = svc.store.record_table([pid])[0, 0]
        written = svc.store.tokens(rec)
        assert written.dtype == np.int32
        assert any(np.array_equal(written, s) for s in seqs[4 * pid : 4 * pid + 4])
    answer = svc.sample_prefixes(ids, rng_seed=2)
    assert len(answer) == 32
    for pid, (prefix, budget) in zip(ids, answer):
        record = svc.store.tokens(svc.store.record_table([pid])[0, 0])
        assert prefix.dtype == np.int32 and isinstance(budget, int)
        if len(prefix):
            np.testing.assert_array_equal(prefix, record[: len(prefix)])
            assert budget == len(record) - len(prefix)  # tail mode: budget = removed tokens
        else:
            assert budget == RESP
    m = svc.metrics()
    assert m["rpo/cache_size"] == 32 and m["rpo/cache_updates"] == 32 and m["rpo/cache_seeded"] == 32
    assert m["rpo/cache_hit_rate"] == 0.5  # 0 of 32, then 32 of 32
    assert svc.metrics()["rpo/cache_updates"] == 0  # window restarts after each read
    assert svc.metrics()["rpo/cache_updates_total"] == 32


def test_written_record_is_prefix_plus_suffix():
    rng = np.random.default_rng(1)
    svc = _service()
    ids = np.arange(8)
    batch, _ = _group_batch(rng, ids)
    svc.update(batch)
    plan = svc.sample_prefix_batch(ids, rng_seed=3)
    prefixes = plan.prefixes()
    batch, seqs = _group_batch(rng, ids, prefixes=prefixes, step=1)
    svc.update(batch)
    for i, pid in enumerate(ids):
        written = svc.store.tokens(svc.store.record_table([pid])[0, 0])
        np.testing.assert_array_equal(written[: len(prefixes[i])], prefixes[i])
        assert svc.store.col("step")[svc.store.record_table([pid])[0, 0]] == 1


def test_offline_init_and_mismatched_file_fail_at_start(tmp_path, tokenizer, other_tokenizer):
    fp = tokenizer_fingerprint(tokenizer)
    store = CacheStore((0, N_PROMPTS), fingerprint=fp)
    store.write(3, np.arange(50), 1.0, True, 0)
    path = str(tmp_path / "offline.npz")
    store.save(path)
    cfg = RPOConfig(enable=True, cache=RPOCacheConfig(init="offline", path=path), prefix=RPOPrefixConfig(max_cut=10))
    svc = CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP, fingerprint=fp)
    assert svc.store.num_records == 1 and svc.sample_prefix_batch([3], 0).prefix_len[0] > 0
    with pytest.raises(CacheFileError, match="another tokenizer"):
        CacheService(
            cfg, id_range=(0, N_PROMPTS), response_length=RESP, fingerprint=tokenizer_fingerprint(other_tokenizer)
        )
    with pytest.raises(CacheFileError, match="another dataset"):
        CacheService(cfg, id_range=(0, 3), response_length=RESP, fingerprint=fp)
    with pytest.raises(KeyError, match="outside the cache's id range"):
        svc.sample_prefixes([N_PROMPTS + 1], 0)


def test_newline_alignment_in_service(tokenizer):
    fp = tokenizer_fingerprint(tokenizer)
    nl = newline_token_ids(tokenizer)
    cfg = RPOConfig(cache=RPOCacheConfig(init="lazy"), prefix=RPOPrefixConfig(mode="tail", max_cut=30, align="newline"))
    svc = CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP, fingerprint=fp, newline_ids=nl)
    text = "Step 1: add the tens.\nStep 2: add the ones.\nThe answer is 42.\n"
    tokens = tokenizer.encode(text, add_special_tokens=False)
    svc.update(UpdateBatch.from_sequences(np.arange(20), [tokens] * 20, np.ones(20)))
    fallbacks = 0
    for prefix, budget in svc.sample_prefixes(np.arange(20), rng_seed=4):
        if len(prefix):
            text = tokenizer.decode(prefix.tolist())
            # ends a line, or has no line break at all (cut kept, counted as a fallback)
            assert text.endswith("\n") or "\n" not in text
            fallbacks += "\n" not in text
            assert len(prefix) + budget == len(tokens)
    assert svc.metrics()["rpo/align_fallback"] == fallbacks
    with pytest.raises(ValueError, match="newline_ids"):
        CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP)


def test_per_prompt_two_fills_then_evicts_oldest():
    svc = _service(_cfg(per_prompt=2, update="eps_greedy", epsilon=1.0))
    for step in range(3):
        svc.update(UpdateBatch.from_sequences([5], [np.full(3 + step, step)], [1.0], step=step))
    recs = svc.store.record_table([5])[0]
    steps = sorted(int(svc.store.col("step")[r]) for r in recs)
    assert steps == [1, 2]


def test_sharded_client_matches_single_service():
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    cfg = _cfg(update="best")  # deterministic policy: same content whatever the sharding
    single = CacheServiceClient([_service(cfg)])
    sharded = CacheServiceClient([_service(cfg, shard=(k, 3)) for k in range(3)])
    for step in range(4):
        ids = np.random.default_rng(step).choice(N_PROMPTS, size=20, replace=False)
        single.update(_group_batch(rng_a, ids, step=step)[0])
        sharded.update(_group_batch(rng_b, ids, step=step)[0])
    merged = CacheStore((0, N_PROMPTS))
    merged.load_state_dict(sharded.state_dict()["shards"])
    a, b = single.state_dict()["shards"][0], merged.state_dict()
    for key in ("prompt_id", "length", "reward", "tokens", "step"):
        np.testing.assert_array_equal(a[key], b[key])
    ids = np.arange(N_PROMPTS)[::-1]
    answer = sharded.sample_prefix_batch(ids, rng_seed=5)
    for pid, prefix in zip(ids, answer.prefixes()):  # request order preserved across shards
        if len(prefix):
            rec = merged.record_table([pid])[0, 0]
            np.testing.assert_array_equal(prefix, merged.tokens(rec)[: len(prefix)])
    m_single, m_sharded = single.metrics(), sharded.metrics()
    for key in (
        "rpo/cache_size",
        "rpo/cache_records",
        "rpo/cache_tokens",
        "rpo/cache_updates",
        "rpo/cache_mean_length",
    ):
        assert m_single[key] == pytest.approx(m_sharded[key]), key


def _assert_states_equal(a, b):
    assert a["meta"] == b["meta"]
    for key in a:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _run_steps(client, steps, seed=0):
    for step in steps:
        rng = np.random.default_rng([seed, step])
        ids = rng.choice(N_PROMPTS, size=16, replace=False)
        plan = client.sample_prefix_batch(ids, rng_seed=step)
        client.update(_group_batch(rng, ids, step=step, prefixes=plan.prefixes())[0])


@pytest.mark.parametrize("num_shards", [1, 2])
def test_resume_equivalence(tmp_path, num_shards):
    straight = CacheServiceClient([_service(shard=(k, num_shards)) for k in range(num_shards)])
    _run_steps(straight, range(10))
    first = CacheServiceClient([_service(shard=(k, num_shards)) for k in range(num_shards)])
    _run_steps(first, range(5))
    first.save(str(tmp_path / "ckpt"))
    resumed = CacheServiceClient([_service(shard=(k, num_shards)) for k in range(num_shards)])
    resumed.load(str(tmp_path / "ckpt"))
    _run_steps(resumed, range(5, 10))
    for a, b in zip(straight.state_dict()["shards"], resumed.state_dict()["shards"]):
        _assert_states_equal(a, b)


def test_state_dict_round_trip_identical():
    svc = _service()
    _run_steps(CacheServiceClient([svc]), range(6))
    state = svc.state_dict()
    other = _service()
    other.load_state_dict(state)
    _assert_states_equal(state, other.state_dict())


def test_resharding_a_checkpoint(tmp_path):
    one = CacheServiceClient([_service()])
    _run_steps(one, range(4))
    one.save(str(tmp_path / "ckpt"))
    two = CacheServiceClient([_service(shard=(k, 2)) for k in range(2)])
    two.load(str(tmp_path / "ckpt"))
    assert two.metrics()["rpo/cache_records"] == one.metrics()["rpo/cache_records"]
    merged = CacheStore((0, N_PROMPTS))
    merged.load_state_dict(two.state_dict()["shards"])
    np.testing.assert_array_equal(merged.state_dict()["tokens"], one.state_dict()["shards"][0]["tokens"])


def test_update_batch_from_padded():
    responses = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
    batch = UpdateBatch.from_padded([7, 7], responses, [3, 1], [1.0, 0.0])
    assert batch.tokens.tolist() == [1, 2, 3, 4] and batch.correct.tolist() == [-1, -1]
    sub = batch.subset([1])
    assert sub.tokens.tolist() == [4] and sub.prompt_ids.tolist() == [7]


def test_ungrouped_batch_gives_the_same_cache():
    rng = np.random.default_rng(4)
    ids = np.arange(30)
    batch, _ = _group_batch(rng, ids)
    perm = np.random.default_rng(5).permutation(batch.prompt_ids.size)
    grouped, shuffled = _service(_cfg(update="best")), _service(_cfg(update="best"))
    grouped.update(batch)
    shuffled.update(batch.subset(perm))
    a, b = grouped.store, shuffled.store
    for pid in ids:
        np.testing.assert_array_equal(a.tokens(a.record_table([pid])[0, 0]), b.tokens(b.record_table([pid])[0, 0]))
    shuffled.update({k: getattr(batch, k) for k in ("prompt_ids", "lengths", "tokens", "rewards", "correct")})
