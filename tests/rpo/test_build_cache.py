"""The offline cache builder: its resumable parts (no Ray), and ``scripts/build_cache.py`` on the tiny
model through verl's standalone HF rollout server, interrupted (SIGKILL) and resumed."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rpo_verl.rpo.cache_file import CacheFileError, read_cache_file, tokenizer_fingerprint
from rpo_verl.rpo.cache_parts import PartsDir, parts_dir_for
from rpo_verl.rpo.cache_service import CacheService
from rpo_verl.rpo.config import RPOCacheConfig, RPOConfig

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------- parts (pure)
def _settings(tokenizer, **kw):
    return {"tokenizer": tokenizer_fingerprint(tokenizer), "temperature": 0.9, "top_p": 0.9, "max_tokens": 32, **kw}


def test_parts_resume_skip_done_and_merge_into_a_loadable_cache(tokenizer, tmp_path):
    out = str(tmp_path / "cache.npz")
    parts = PartsDir(parts_dir_for(out), _settings(tokenizer))
    parts.write([3, 0], [np.array([5, 6, 7]), np.array([8])], [1.0, 0.0], [1, 0])
    (Path(parts.path) / "part_000001.npz.abc.tmp").write_bytes(b"half a write")
    # a rerun with the same settings sees what is done and drops the interrupted write
    again = PartsDir(parts_dir_for(out), _settings(tokenizer))
    assert again.done_ids().tolist() == [0, 3] and not list(Path(parts.path).glob("*.tmp"))
    again.write([1], [np.array([9, 10])], [0.5], [0])
    assert [os.path.basename(f) for f in again.part_files()] == ["part_000000.npz", "part_000001.npz"]
    path, n = again.merge(out, (0, 4), tokenizer_fingerprint(tokenizer))
    assert n == 3
    state = read_cache_file(path)
    assert state["prompt_id"].tolist() == [0, 1, 3] and state["tokens"].tolist() == [8, 9, 10, 5, 6, 7]
    assert state["step"].tolist() == [0, 0, 0] and state["correct"].tolist() == [0, 0, 1]
    # what the trainer does with cache.init=offline
    cfg = RPOConfig(enable=True, cache=RPOCacheConfig(init="offline", path=path))
    svc = CacheService(cfg, id_range=(0, 4), response_length=32, fingerprint=tokenizer_fingerprint(tokenizer))
    assert svc.metrics()["rpo/cache_size"] == 3


def test_parts_refuse_other_settings(tokenizer, other_tokenizer, tmp_path):
    folder = str(tmp_path / "c.npz.parts")
    PartsDir(folder, _settings(tokenizer)).write([0], [np.array([1])], [0.0], [0])
    with pytest.raises(CacheFileError, match=r"temperature: earlier parts used 0.9, now 1.0"):
        PartsDir(folder, _settings(tokenizer, temperature=1.0))
    with pytest.raises(CacheFileError, match=r"tokenizer vocab_size"):
        PartsDir(folder, _settings(other_tokenizer))


def test_merge_rejects_ids_outside_the_dataset(tokenizer, tmp_path):
    parts = PartsDir(str(tmp_path / "c.npz.parts"), _settings(tokenizer))
    parts.write([7], [np.array([1, 2])], [0.0], [0])
    with pytest.raises(Exception, match="7"):
        parts.merge(str(tmp_path / "c.npz"), (0, 4), None)


# ------------------------------------------------------------------------------------- the script
def _prompts(path, n):
    rows = [{"data_source": "rpo_verl_test/add",
             "prompt": [{"role": "user", "content": f"What is {i % 10} + {(3 * i) % 10}? Reply with the number."}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(i % 10 + (3 * i) % 10)},
             "extra_info": {"split": "train", "index": 10 + i}} for i in range(n)]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def _build(run, out, train, model, log, *extra, kill_when_parts=None, timeout=300):
    """scripts/build_cache.py on ``train`` (6 prompts); with ``kill_when_parts`` it is SIGKILLed once
    that many parts are on disk. ``run`` is the ``run_in_session`` fixture."""
    args = [sys.executable, "scripts/build_cache.py", "--out", str(out), "--limit", "6", *extra, "--",
            "preset=cpu", f"actor_rollout_ref.model.path={model}", f"data.train_files={train}",
            f"data.val_files={train}", "data.max_prompt_length=64", "data.max_response_length=16",
            f"reward.custom_reward_function.path={REPO / 'tests' / 'trainer' / 'dense_reward.py'}"]

    def enough_parts():
        return bool(kill_when_parts) and len(list(Path(parts_dir_for(str(out))).glob("part_*.npz"))) >= kill_when_parts

    result = run(args, timeout, log_path=log, kill_when=enough_parts, kill_delay=0.0)  # parts are atomic
    return result.returncode, result.stdout, result.killed


@pytest.mark.e2e
def test_build_cache_interrupted_then_resumed(tmp_path, tiny_model_path, run_in_session):
    model = tiny_model_path
    train = _prompts(tmp_path / "train.parquet", 8)
    out = tmp_path / "cache.npz"
    small = ["--part-size", "2", "--concurrency", "2"]
    rc, log, killed = _build(run_in_session, out, train, model, tmp_path / "first.log", *small, kill_when_parts=1)
    assert killed, f"finished (rc={rc}) before the first part was written:\n{log[-4000:]}"
    assert not out.exists()
    first_parts = sorted(Path(parts_dir_for(str(out))).glob("part_*.npz"))
    assert 1 <= len(first_parts) < 3
    kept = {p.name: p.read_bytes() for p in first_parts}
    done_before = {int(i) for p in first_parts for i in np.load(p)["prompt_id"]}

    rc, log, _ = _build(run_in_session, out, train, model, tmp_path / "resumed.log", *small)
    assert rc == 0, log[-4000:]
    assert f"6 prompts, {len(done_before)} already done" in log and f"{6 - len(done_before)} to generate" in log
    assert all((Path(parts_dir_for(str(out))) / name).read_bytes() == data for name, data in kept.items())
    state = read_cache_file(str(out))
    assert state["prompt_id"].tolist() == list(range(10, 16))  # each of the 6 prompts exactly once
    assert (state["length"] >= 1).all() and (state["length"] <= 16).all() and state["tokens"].dtype == np.int32
    assert ((state["reward"] >= 0) & (state["reward"] <= 1)).all()  # scored by the run's reward function
    manifest = json.loads((Path(parts_dir_for(str(out))) / "manifest.json").read_text())
    assert manifest["temperature"] == 0.9 and manifest["top_p"] == 0.9 and manifest["max_tokens"] == 16

    # per-prompt seeds: one uninterrupted build with other batching gives the same responses
    other = tmp_path / "other.npz"
    rc, log, _ = _build(run_in_session, other, train, model, tmp_path / "other.log", "--part-size", "6",
                        "--concurrency", "6", "--clean")
    assert rc == 0, log[-4000:]
    ref = read_cache_file(str(other))
    for key in ("prompt_id", "length", "tokens", "reward"):
        np.testing.assert_array_equal(state[key], ref[key], err_msg=key)
    assert not Path(parts_dir_for(str(other))).exists()
    # loadable as the trainer's offline cache (tokenizer fingerprint checked)
    from transformers import AutoTokenizer

    fingerprint = tokenizer_fingerprint(AutoTokenizer.from_pretrained(str(model)))
    cfg = RPOConfig(enable=True, cache=RPOCacheConfig(init="offline", path=str(out)))
    svc = CacheService(cfg, id_range=(10, 18), response_length=16, fingerprint=fingerprint)
    assert svc.metrics()["rpo/cache_size"] == 6
