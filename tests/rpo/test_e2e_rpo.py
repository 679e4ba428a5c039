"""RPO end to end on CPU: verl's v1 trainer with ``rpo_verl.rpo.enable=true``, the tiny random model.

Runs (each a ``python -m rpo_verl.main`` subprocess in its own session, killed after a hard timeout):

* A: RPO-GRPO, lazy cache, 4 prompts x 4 steps (batch 2: every prompt is seen at steps 1-2 and
  again at 3-4), checkpoints at steps 2 and 4, seeded sampling (``rollout.full_determinism``);
* B: the same run SIGKILLed as soon as its step-2 checkpoint is complete, then resumed to step 4;
  the resumed run also kills the cache-service actor at the start of step 3 (fault injection), so
  Ray restarts it from its snapshot. Its step-4 cache must equal A's bit for bit;
* D: RPO-DAPO (filter_groups, clip-higher, token-mean, the ``dapo`` reward manager with the
  overlong buffer) from an offline cache file, 2 steps, with a reward that is constant for even
  prompt indices so that DAPO drops groups: their generated tokens must be counted.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rpo_verl.rpo.cache_file import read_cache_file
from rpo_verl.trainer.metrics_file import read_records

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DENSE_REWARD = REPO / "tests" / "trainer" / "dense_reward.py"
DAPO_REWARD = Path(__file__).with_name("dapo_reward.py")
BATCH, N, RESPONSE, STEPS = 2, 4, 16, 4
CACHE_FILE = Path("global_step_4") / "rpo_cache" / "rpo_cache.shard0of1.npz"


def _runner(rpo_main):
    """``run(args, log_path, timeout, env=None, kill_when=None)`` -> (returncode, output, killed)."""

    def run(args, log_path, timeout, env=None, kill_when=None):
        result = rpo_main(args, timeout, log_path=log_path, env=env, kill_when=kill_when)
        return result.returncode, result.stdout, result.killed

    return run


def _args(model, train, val, run_dir, reward, steps, *extra):
    return [
        "preset=cpu",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}", f"data.val_files={val}",
        f"data.train_batch_size={BATCH}", "data.max_prompt_length=64", f"data.max_response_length={RESPONSE}",
        f"actor_rollout_ref.rollout.n={N}", f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.rollout.full_determinism=true",
        f"reward.custom_reward_function.path={reward}",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=2", f"trainer.test_freq={steps}",
        "trainer.val_before_train=false",
        f"trainer.default_local_dir={run_dir}", "trainer.experiment_name=e2e_rpo",
        "rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=lazy",
        # responses of 16 tokens: keep 50-90 % of the cached one, suffix budget = the rest + 4
        "rpo_verl.rpo.prefix.mode=ratio", "rpo_verl.rpo.prefix.slack=4",
        *extra,
    ]


def _steps(path):
    return {step: m for step, m in read_records([str(path)]) if "training/global_step" in m}


def _state(path):
    return read_cache_file(str(path))


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, tiny_model_path, add_prompts, rpo_main):
    folder = tmp_path_factory.mktemp("rpo_prompts")
    return {"model": tiny_model_path, "train": add_prompts(folder / "train.parquet", 4, split="train"),
            "val": add_prompts(folder / "val.parquet", 2, seed=5, split="train"),
            "root": tmp_path_factory.mktemp("rpo_e2e"), "run": _runner(rpo_main)}


@pytest.fixture(scope="session")
def rpo_runs(inputs):
    root, _run = inputs["root"], inputs["run"]
    common = (inputs["model"], inputs["train"], inputs["val"])
    a_dir, b_dir = root / "straight", root / "killed"
    rc, out_a, _ = _run(_args(*common, a_dir, DENSE_REWARD, STEPS), root / "a.log", timeout=420)
    assert rc == 0, out_a[-6000:]
    rc, out_b1, killed = _run(_args(*common, b_dir, DENSE_REWARD, STEPS), root / "b1.log", timeout=420,
                              kill_when=b_dir / "global_step_2" / "rpo_verl_extensions.pt")
    assert killed, f"the run ended (rc={rc}) before its step-2 checkpoint appeared:\n{out_b1[-6000:]}"
    rc, out_b2, _ = _run(_args(*common, b_dir, DENSE_REWARD, STEPS), root / "b2.log", timeout=420,
                         env={"RPO_VERL_FAULT_KILL_CACHE_AT_STEP": "3"})
    assert rc == 0, out_b2[-6000:]
    return {"a": a_dir, "b": b_dir, "out_a": out_a, "out_b1": out_b1, "out_b2": out_b2}


def test_lazy_cache_seeds_then_suffix_rollouts_save_tokens(rpo_runs):
    steps = _steps(rpo_runs["a"] / "metrics.jsonl")
    assert sorted(steps) == [1, 2, 3, 4]
    for step in (1, 2):  # first visits: full-path groups that seed the cache
        m = steps[step]
        assert m["rpo/full_path_frac"] == 1 and m["rpo/cache_seeded"] == BATCH
        assert m["eff/generated_tokens"] == m["eff/full_path_equiv_tokens"] > 0
    assert steps[2]["rpo/cache_size"] == 4
    for step in (3, 4):  # second visits: suffixes of cached prefixes
        m = steps[step]
        assert m["rpo/cache_hit_rate"] == 1 and m["rpo/full_path_frac"] == 0
        assert 0 < m["eff/generated_tokens"] < m["eff/full_path_equiv_tokens"]
        assert 0.5 <= m["rpo/prefix_fraction_mean"] <= 0.9 and 0 < m["eff/token_saving_ratio"] < 1
        assert m["eff/gen_tokens"] == m["eff/generated_tokens"]  # the loss mask covers the suffix only
        assert m["rpo/cache_updates"] >= 0 and m["rpo/prefix_lookups"] == BATCH  # validation never asks
        assert m["actor/grad_norm"] > 0
        # The server's log-probs of the suffix tokens (generated after prompt ⊕ prefix) equal the
        # trainer's recomputed ones at the same positions: the prefix sits where the loss expects it.
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < 1e-3, m["training/rollout_probs_diff_max"]
    m = steps[4]
    assert m["eff/generated_tokens_total"] < m["eff/full_path_equiv_tokens_total"]
    assert m["eff/rollout_time_s"] > 0 and m["eff/train_time_s"] > 0 and 0 < m["eff/rollout_time_frac"] < 1
    assert "val-core/rpo_verl_test/add/acc/mean@1" in m  # validation ran (full-path agent loop)


def test_cache_is_saved_with_each_checkpoint(rpo_runs):
    for step in (2, 4):
        folder = rpo_runs["a"] / f"global_step_{step}"
        state = _state(folder / "rpo_cache" / "rpo_cache.shard0of1.npz")
        assert len(state["prompt_id"]) == 4 and (state["length"] <= RESPONSE).all()
        assert state["tokens"].dtype == np.int32 and int(state["step"].max()) <= step
        assert (folder / "rpo_verl_extensions.pt").is_file()
    pointer = json.loads((rpo_runs["a"] / "rpo_cache" / "latest.shard0of1.json").read_text())
    assert pointer["path"].endswith("global_step_4/rpo_cache/rpo_cache.shard0of1.npz")


def test_resume_after_sigkill_gives_the_identical_cache(rpo_runs):
    assert "resumed from" in rpo_runs["out_b2"] and "the next training step is 3" in rpo_runs["out_b2"]
    a, b = _state(rpo_runs["a"] / CACHE_FILE), _state(rpo_runs["b"] / CACHE_FILE)
    assert a["meta"] == b["meta"]
    for key in a:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the resumed run's own metrics match the straight run's for the same steps
    sa, sb = _steps(rpo_runs["a"] / "metrics.jsonl"), _steps(rpo_runs["b"] / "metrics.jsonl")
    assert sorted(sb) == [3, 4]
    for step in (3, 4):
        for key in ("eff/generated_tokens", "eff/full_path_equiv_tokens", "rpo/cache_mean_reward",
                    "eff/generated_tokens_total"):
            assert sa[step][key] == sb[step][key], (step, key)


def test_killed_cache_actor_restarts_from_its_snapshot(rpo_runs):
    out = rpo_runs["out_b2"]
    assert "fault injection" in out and "killed the cache service at step 3" in out
    assert "reloaded its last snapshot" in out
    steps = _steps(rpo_runs["b"] / "metrics.jsonl")
    assert steps[3]["rpo/cache_service_restores"] == 1
    assert steps[3]["rpo/cache_size"] == 4 and steps[3]["rpo/cache_hit_rate"] == 1  # nothing lost


def _offline_cache(model, path, n_prompts=4, length=12, vocab_shift=0):
    """A cache file as scripts/build_cache.py writes it (random responses of ``length`` tokens);
    ``vocab_shift`` != 0 pretends it was built with another tokenizer."""
    from transformers import AutoTokenizer

    from rpo_verl.rpo.cache_file import tokenizer_fingerprint
    from rpo_verl.rpo.cache_store import CacheStore

    fingerprint = tokenizer_fingerprint(AutoTokenizer.from_pretrained(model))
    fingerprint["vocab_size"] += vocab_shift
    store = CacheStore((0, n_prompts), 1, fingerprint=fingerprint)
    rng = np.random.default_rng(0)
    store.write_many(np.arange(n_prompts), rng.integers(100, 1000, size=n_prompts * length), [length] * n_prompts,
                     np.zeros(n_prompts), np.zeros(n_prompts, bool), 0)
    return store.save(str(path))


@pytest.fixture(scope="session")
def dapo_run(inputs):
    run_dir = inputs["root"] / "dapo"
    cache = _offline_cache(inputs["model"], inputs["root"] / "offline_cache.npz")
    args = _args(
        inputs["model"], inputs["train"], inputs["val"], run_dir, DAPO_REWARD, 2,
        "rpo_verl.rpo.cache.init=offline", f"rpo_verl.rpo.cache.path={cache}",
        "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc",
        "actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "reward.reward_manager.name=dapo",
        f"+reward.reward_kwargs.max_resp_len={RESPONSE}",
        "+reward.reward_kwargs.overlong_buffer_cfg.enable=true",
        "+reward.reward_kwargs.overlong_buffer_cfg.len=4",
        "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
        "+reward.reward_kwargs.overlong_buffer_cfg.log=false",
        "trainer.test_freq=0", "trainer.save_freq=0",
    )
    rc, out, _ = inputs["run"](args, inputs["root"] / "dapo.log", timeout=420)
    assert rc == 0, out[-6000:]
    return run_dir, out


def test_rpo_dapo_offline_cache_counts_the_groups_dapo_drops(dapo_run):
    run_dir, out = dapo_run
    assert "init=offline, 4 prompts cached" in out
    steps = _steps(run_dir / "metrics.jsonl")
    assert sorted(steps) == [1, 2]
    dropped = sum(m.get("training/filter_groups/evicted_samples", 0) for m in steps.values())
    assert dropped > 0, "the test reward should make DAPO drop the even prompts' groups"
    for m in steps.values():
        assert m["rpo/cache_hit_rate"] == 1 and m["rpo/full_path_frac"] == 0  # every prompt starts cached
        evicted = m.get("training/filter_groups/evicted_samples", 0)
        # every generated suffix counts: the trained batch's plus the dropped groups'
        assert m["eff/generated_tokens"] == m["eff/gen_tokens"] + m["eff/dropped_generated_tokens"]
        assert m["eff/dropped_samples"] >= evicted * N
        assert m["eff/generated_samples"] == BATCH * N + m["eff/dropped_samples"]
        assert m["eff/generated_tokens"] < m["eff/full_path_equiv_tokens"]
        # eps-greedy writes one trajectory per group, dropped groups included
        assert m["rpo/cache_updates"] * N == m["eff/generated_samples"]


@pytest.mark.parametrize("problem", ["other_tokenizer", "duplicate_index"])
def test_bad_cache_file_or_index_fails_at_start_up(inputs, problem):
    root = inputs["root"] / problem
    root.mkdir()
    train, extra = inputs["train"], []
    if problem == "other_tokenizer":
        cache = _offline_cache(inputs["model"], root / "cache.npz", vocab_shift=7)
        extra = ["rpo_verl.rpo.cache.init=offline", f"rpo_verl.rpo.cache.path={cache}"]
    else:
        frame = pd.read_parquet(inputs["train"])
        frame.at[3, "extra_info"] = {"split": "train", "index": 1}
        train = str(root / "train.parquet")
        frame.to_parquet(train)
    args = _args(inputs["model"], train, inputs["val"], root / "run", DENSE_REWARD, 1, *extra)
    rc, out, _ = inputs["run"](args, root / "run.log", timeout=300)
    assert rc != 0
    if problem == "other_tokenizer":
        assert "built with another tokenizer" in out and "vocab_size" in out
    else:
        assert "extra_info.index is not unique over the training set" in out
    assert "WorkerDict" not in out  # failed before verl started its training workers
