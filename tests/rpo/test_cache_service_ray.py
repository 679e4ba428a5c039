"""The cache service as named Ray actors: a killed actor restarts from its last snapshot, and a
checkpointed cache resumed in a new actor continues exactly as an uninterrupted one."""

import time

import numpy as np
import pytest

from rpo_verl.rpo.batches import UpdateBatch
from rpo_verl.rpo.cache_service import SERVICE_NAME, CacheService
from rpo_verl.rpo.config import RPOCacheConfig, RPOConfig, RPOPrefixConfig
from rpo_verl.rpo.service_client import CacheServiceClient, connect_cache_service, start_cache_service

ray = pytest.importorskip("ray")

N_PROMPTS, RESP = 40, 64


def _config(snapshot_dir, num_shards=1):
    return RPOConfig(
        cache=RPOCacheConfig(init="lazy", snapshot_dir=str(snapshot_dir), num_shards=num_shards, max_restarts=2),
        prefix=RPOPrefixConfig(max_cut=8),
    )


def _step(client, step):
    rng = np.random.default_rng(step)
    ids = rng.choice(N_PROMPTS, size=10, replace=False)
    prefixes = client.sample_prefix_batch(ids, rng_seed=step).prefixes()
    seqs, pids = [], []
    for pid, prefix in zip(ids, prefixes):
        for _ in range(3):
            pids.append(pid)
            seqs.append(np.concatenate([prefix, rng.integers(0, 100, size=int(rng.integers(1, 20)))]))
    client.update(UpdateBatch.from_sequences(pids, seqs, rng.random(len(pids)), step=step))


def _states_equal(a, b):
    for sa, sb in zip(a["shards"], b["shards"]):
        assert sa["meta"] == sb["meta"]
        for key in sa:
            if key != "meta":
                np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def _wait_until_gone(name: str, timeout: float = 120) -> None:
    """ray.kill is asynchronous; the name is free once the actor is really dead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        assert time.monotonic() < deadline, f"actor {name} still alive"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="rpo_cache_test")
    yield
    ray.shutdown()


@pytest.mark.timeout(300)
def test_killed_actor_restarts_from_last_snapshot(ray_cluster, tmp_path):
    cfg = _config(tmp_path / "snapshots", num_shards=2)
    client = start_cache_service(cfg, id_range=(0, N_PROMPTS), response_length=RESP, name="kill_test")
    for step in range(3):
        _step(client, step)
    client.save(str(tmp_path / "ckpt_3"))
    saved = client.state_dict()
    _step(client, 3)  # after the snapshot: lost by the crash, by design
    assert client.metrics()["rpo/cache_service_restores"] == 0
    ray.kill(client.shards[0], no_restart=False)
    ray.kill(client.shards[1], no_restart=False)
    # ray.kill is asynchronous: wait until both restarted incarnations answer (same handles;
    # Ray retries calls that hit a dying actor once it is back)
    deadline = time.monotonic() + 120
    while client.metrics()["rpo/cache_service_restores"] < 2:
        assert time.monotonic() < deadline, "the killed cache actors did not come back"
        time.sleep(0.2)
    _states_equal(saved, client.state_dict())
    # named lookup from elsewhere finds the same actors
    again = connect_cache_service(num_shards=2, name="kill_test")
    _states_equal(saved, again.state_dict())
    _step(client, 3)  # the trainer carries on
    for shard in client.shards:
        ray.kill(shard, no_restart=True)


@pytest.mark.timeout(300)
def test_resume_in_new_actor_is_equivalent(ray_cluster, tmp_path):
    cfg = _config(tmp_path / "snapshots")
    straight = CacheServiceClient([CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP)])
    for step in range(8):
        _step(straight, step)

    client = start_cache_service(cfg, id_range=(0, N_PROMPTS), response_length=RESP)
    for step in range(4):
        _step(client, step)
    client.save(str(tmp_path / "ckpt_4"))
    ray.kill(client.shards[0], no_restart=True)  # the whole job dies
    _wait_until_gone(SERVICE_NAME)
    fresh = start_cache_service(cfg, id_range=(0, N_PROMPTS), response_length=RESP, name=SERVICE_NAME)
    assert fresh.metrics()["rpo/cache_records"] == 0  # a new actor starts empty (lazy) ...
    fresh.load(str(tmp_path / "ckpt_4"))  # ... until the trainer restores its checkpoint
    for step in range(4, 8):
        _step(fresh, step)
    _states_equal(straight.state_dict(), fresh.state_dict())
    ray.kill(fresh.shards[0], no_restart=True)


@pytest.mark.timeout(120)
def test_bad_cache_file_fails_at_start_with_its_message(ray_cluster, tmp_path):
    from rpo_verl.rpo.cache_file import CacheFileError

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a cache")
    cfg = RPOConfig(enable=True, cache=RPOCacheConfig(init="offline", path=str(bad)))
    with pytest.raises(CacheFileError, match="corrupt or truncated"):
        start_cache_service(cfg, id_range=(0, N_PROMPTS), response_length=RESP, name="bad_file_test")


@pytest.mark.timeout(300)
def test_batched_wire_through_ray_matches_plain_services(ray_cluster, tmp_path):
    """Flat-array prefixes, two-phase updates and deferred commits through 3 actors give exactly
    the answers and states of plain services, also when a shard has no prompt in the batch."""
    cfg = _config(tmp_path / "snapshots", num_shards=3)
    plain = CacheServiceClient([CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP, shard=(k, 3)) for k in range(3)])
    client = start_cache_service(cfg, id_range=(0, N_PROMPTS), response_length=RESP, name="wire_test")
    for step in range(6):
        rng = np.random.default_rng(step)
        pool = np.arange(0, N_PROMPTS, 3) if step % 2 else np.arange(N_PROMPTS)  # odd steps: shard 0 only
        ids = rng.choice(pool, size=min(10, pool.size), replace=False)
        answers = [c.sample_prefix_batch(ids, rng_seed=step) for c in (plain, client)]
        for a, b in zip(*(x.to_arrays() for x in answers)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        seqs, pids = [], []
        for pid, prefix in zip(ids, answers[0].prefixes()):
            for _ in range(3):
                pids.append(pid)
                seqs.append(np.concatenate([prefix, rng.integers(0, 100, size=int(rng.integers(0, 20)))]))
        batch = UpdateBatch.from_sequences(pids, seqs, rng.random(len(pids)), step=step)
        summary = client.update(batch)
        assert summary == plain.update(batch)
        assert (client._inflight is not None) == (summary["writes"] > 0)  # writes finish in the background
    assert client.update(UpdateBatch([], [], [], [], [])) == plain.update(UpdateBatch([], [], [], [], []))
    _states_equal(plain.state_dict(), client.state_dict())
    assert plain.metrics() == client.metrics()
    for shard in client.shards:
        ray.kill(shard, no_restart=True)
