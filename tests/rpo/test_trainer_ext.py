"""RPOExtension without Ray or verl's trainer: start-up checks, prefix columns, write-back of the
trained batch and of groups dropped by the replay buffer, metrics, checkpoints; the agent loop's
per-request seeds; DAPO's overlong penalty sees prefix + suffix."""

import types

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rpo_verl.rpo.agent_loop import AGENT_LOOP_NAME, BUDGET_KEY, PREFIX_KEY, SEED_KEY, request_seed
from rpo_verl.rpo.cache_service import CacheService
from rpo_verl.rpo.config import RPOCacheConfig, RPOConfig, RPOPrefixConfig
from rpo_verl.rpo.service_client import CacheServiceClient
from rpo_verl.rpo.step_rows import (
    Rows,
    check_response_budget,
    correctness,
    dataset_prompt_ids,
    derive_seed,
    id_range_of,
    rows_from_tensordict,
    timing_metrics,
)
from rpo_verl.rpo.trainer_ext import RPOExtension

RESP = 32
N_PROMPTS = 8
N = 4


# ------------------------------------------------------------------------------------- pure parts
def test_dataset_prompt_ids_accepts_unique_ints():
    ids = dataset_prompt_ids([{"index": 3}, {"index": 0, "split": "train"}, {"index": np.int64(7)}, {"index": "5"}])
    assert ids.tolist() == [3, 0, 7, 5] and ids.dtype == np.int64
    assert id_range_of(ids) == (0, 8)


@pytest.mark.parametrize(
    "infos, match",
    [
        ([{"index": 1}, {"split": "x"}], r"1 training rows have no extra_info.index .*rows \[1\]"),
        ([{"index": 1}, None], r"no extra_info.index"),
        ([{"index": 1}, {"index": 2}, {"index": 1}], r"not unique .*\[1\]"),
        ([{"index": 1.5}], r"must be an integer"),
        ([{"index": "a"}], r"must be an integer"),
    ],
)
def test_dataset_prompt_ids_rejects_bad_indices(infos, match):
    with pytest.raises(ValueError, match=match):
        dataset_prompt_ids(infos)


def test_id_range_rejects_negative_and_empty():
    with pytest.raises(ValueError, match=">= 0"):
        id_range_of(np.array([-1, 2]))
    with pytest.raises(ValueError, match="empty"):
        id_range_of(np.zeros(0, np.int64))


def test_derive_seed_is_deterministic_and_spread():
    assert derive_seed(0, 5, 0) == derive_seed(0, 5, 0)
    seeds = {derive_seed(0, step, call) for step in range(50) for call in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**48 for s in seeds)
    assert all(0 <= derive_seed(1, s, bits=31) < 2**31 for s in range(100))


def test_check_response_budget():
    # a cache built at this response length holds responses cut at exactly that length: fine
    assert check_response_budget(np.array([5, 10, 32]), 32, "full_path", "f") is None
    warning = check_response_budget(np.array([5, 10, 40]), 32, "full_path", "'c.npz'")
    assert "1 of 3 cached responses in 'c.npz' are longer than data.max_response_length=32" in warning
    with pytest.raises(ValueError, match="raise data.max_response_length"):
        check_response_budget(np.array([5, 10, 40]), 32, "error", "f")
    with pytest.raises(ValueError, match="2 of 3"):
        check_response_budget(np.array([5, 40, 40]), 32, "full_path", "f")


def test_correctness_from_reward_extra_info():
    extra = [{"reward_extra_info": {"acc": 1.0}}, {"reward_extra_info": {"acc": False}}, {}, None,
             {"reward_extra_info": {"score": 1}}, {"reward_extra_info": {"acc": True}}]
    assert correctness(extra).tolist() == [1, 0, -1, -1, -1, 1]


def test_timing_metrics():
    m = timing_metrics({"gen": 6.0, "old_log_prob": 1.0, "adv": 0.5, "update_actor": 2.5, "step": 12.0})
    assert m == {"eff/rollout_time_s": 6.0, "eff/train_time_s": 4.0, "eff/rollout_time_frac": 0.5}


def _rows(prompt_ids, prefix_len, suffix_len, rewards, uid_of=None, start_key=0):
    keys, responses, extras, uids = [], [], [], []
    for i, (pid, p, s) in enumerate(zip(prompt_ids, prefix_len, suffix_len)):
        uid = uid_of(pid) if uid_of else f"u{pid}"
        keys.append(f"{uid}_{(start_key + i) % N}_0")
        responses.append(np.concatenate([np.full(p, 7), np.arange(s) + 100 * pid + i]).astype(np.int64))
        extras.append({"rpo_prefix_len": p, "rpo_suffix_len": s, "rpo_suffix_truncated": int(s >= 5),
                       "rpo_prefix_fallback": 0, "reward_extra_info": {"acc": float(rewards[i] > 0.5)}})
        uids.append(uid)
    return Rows.from_fields(keys, responses, rewards, extras, prompt_ids, uids)


def test_rows_canonical_order_ignores_completion_order():
    rows = _rows([1, 1, 0, 0], [2, 2, 0, 0], [3, 4, 5, 1], [1.0, 0.0, 0.5, 0.5])
    perm = [3, 0, 2, 1]
    shuffled = Rows(
        keys=[rows.keys[i] for i in perm], uid=rows.uid[perm], session=rows.session[perm],
        prompt_id=rows.prompt_id[perm], tokens=[rows.tokens[i] for i in perm], reward=rows.reward[perm],
        correct=rows.correct[perm], prefix_len=rows.prefix_len[perm], suffix_len=rows.suffix_len[perm],
        truncated=rows.truncated[perm], fallback=rows.fallback[perm],
    )
    a, b = rows.update_batch(3), shuffled.update_batch(3)
    for field in ("prompt_ids", "lengths", "tokens", "rewards", "correct"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.prompt_ids.tolist() == [0, 0, 1, 1] and a.step == 3
    assert a.correct.tolist() == [0, 0, 1, 0]


def test_rows_metrics_count_prefix_and_suffix():
    rows = _rows([0, 0, 1, 1], [6, 6, 0, 0], [2, 2, 8, 8], [1.0, 1.0, 0.0, 1.0])
    m = rows.metrics()
    assert m["eff/generated_tokens"] == 20 and m["eff/full_path_equiv_tokens"] == 32
    assert m["rpo/zero_variance_group_frac"] == 0.5
    assert m["rpo/suffix_truncation_rate"] == 0.5


def test_rows_from_tensordict_as_verl_stores_them():
    """Fields as verl's agent-loop worker writes them (list_of_dict_to_tensordict: jagged tensors)."""
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    fields = []
    for i, (resp, score) in enumerate([([7, 7, 1, 2], 0.25), ([7, 7, 3], 0.5), ([5], 1.0)]):
        rm = torch.zeros(len(resp))
        rm[-1] = score
        fields.append({"responses": torch.tensor(resp), "rm_scores": rm, "index": 4 - i // 2, "uid": f"g{i // 2}",
                       "extra_fields": {"rpo_prefix_len": 2 if i < 2 else 0, "rpo_suffix_len": len(resp) - (2 if i < 2 else 0),
                                        "reward_extra_info": {"acc": score}}})
    td = list_of_dict_to_tensordict(fields)
    rows = rows_from_tensordict(["g0_0_0", "g0_1_0", "g1_0_0"], td)
    assert [t.tolist() for t in rows.tokens] == [[7, 7, 1, 2], [7, 7, 3], [5]]
    np.testing.assert_allclose(rows.reward, [0.25, 0.5, 1.0])
    assert rows.prompt_id.tolist() == [4, 4, 3] and rows.session.tolist() == [0, 1, 0]
    assert rows.prefix_len.tolist() == [2, 2, 0] and rows.suffix_len.tolist() == [2, 1, 1]
    assert rows.correct.tolist() == [0, 0, 1]


# ------------------------------------------------------------------------------------- extension
def _trainer(tmp_path, full_determinism=False, n_prompts=N_PROMPTS):
    from datasets import Dataset

    config = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"response_length": RESP, "full_determinism": full_determinism, "seed": 7}},
        "data": {"max_response_length": RESP},
        "trainer": {"default_local_dir": str(tmp_path)},
    })
    frame = Dataset.from_list([{"extra_info": {"index": i, "split": "train"}} for i in range(n_prompts)])
    return types.SimpleNamespace(
        config=config, global_steps=1, train_dataset=types.SimpleNamespace(dataframe=frame),
        timing_raw={"gen": 2.0, "update_actor": 1.0, "step": 4.0}, tokenizer=None,
    )


def _extension(tmp_path, **kw):
    cfg = RPOConfig(enable=True, cache=RPOCacheConfig(init="lazy"), prefix=RPOPrefixConfig(mode="ratio", slack=2))
    trainer = _trainer(tmp_path, **kw)
    ext = RPOExtension(trainer, cfg, "rpo")
    ext.client = CacheServiceClient([CacheService(cfg, id_range=(0, N_PROMPTS), response_length=RESP)])
    ext._training_prompt_ids()  # the start-up check runs on the fake dataset
    return ext


def _prompt_batch(ids):
    from verl.utils import tensordict_utils as tu

    return tu.get_tensordict({
        "index": np.array(ids, dtype=object),
        "raw_prompt": np.array([[{"role": "user", "content": f"q{i}"}] for i in ids] + [None], dtype=object)[:-1],
        "dummy_tensor": torch.zeros(len(ids), 1, dtype=torch.uint8),
    })


def _column(batch, key):
    from verl.utils import tensordict_utils as tu

    return tu.get(batch, key)


class FakeBuffer:
    """The part of verl's ReplayBuffer the extension wraps: partitions + _clear_groups."""

    def __init__(self, keys):
        self.partitions = {"train": {k: {} for k in keys}}
        self.cleared = []

    def _clear_groups(self, partition_id, uids):
        self.cleared.append((partition_id, set(uids)))


def test_before_rollout_attaches_prefix_columns_and_agent(tmp_path):
    ext = _extension(tmp_path)
    batch = ext.before_rollout(_prompt_batch([0, 1, 2]))
    assert _column(batch, "agent_name") == [AGENT_LOOP_NAME] * 3
    prefixes = _column(batch, PREFIX_KEY)
    assert all(isinstance(p, np.ndarray) and p.dtype == np.int32 and p.size == 0 for p in prefixes)  # lazy: empty
    assert _column(batch, BUDGET_KEY) == [RESP] * 3
    assert _column(batch, SEED_KEY) is None  # no full_determinism: backend RNG


def test_write_back_then_prefixes_of_cached_responses(tmp_path):
    ext = _extension(tmp_path, full_determinism=True)
    ext.on_step_begin()
    batch = ext.before_rollout(_prompt_batch([0, 1]))
    seeds = _column(batch, SEED_KEY)
    assert len(set(seeds)) == 2 and all(0 <= s < 2**31 for s in seeds)
    # the trained batch and, dropped by the replay buffer before training, prompt 1's group
    trained = _rows([0] * N, [0] * N, [10, 12, 14, 16], [0.0, 1.0, 0.0, 0.0])
    dropped = _rows([1] * N, [0] * N, [9] * N, [1.0] * N)
    buffer = FakeBuffer(dropped.keys + trained.keys)
    ext.trainer.replay_buffer = buffer
    ext._read_rows = lambda keys, partition: dropped if set(keys) == set(dropped.keys) else trained
    ext._wrap_replay_buffer()
    buffer._clear_groups("train", {"u1"})
    buffer._clear_groups("val", {"v0"})  # validation groups are not RPO's
    assert buffer.cleared == [("train", {"u1"}), ("val", {"v0"})]
    meta = types.SimpleNamespace(keys=trained.keys, tags=[{}] * N, partition_id="train")
    ext.on_batch_rewarded(meta, {})
    m = ext.step_metrics()
    assert m["eff/generated_tokens"] == 52 + 36 and m["eff/dropped_generated_tokens"] == 36
    assert m["eff/generated_samples"] == 8 and m["eff/dropped_samples"] == 4
    assert m["rpo/cache_size"] == 2 and m["rpo/cache_seeded"] == 2  # dropped groups seed the cache too
    assert m["rpo/zero_variance_group_frac"] == 0.5 and m["eff/rollout_time_frac"] == 0.5
    assert m["eff/generated_tokens_total"] == 88
    # next step: prefixes are cuts of the cached responses, budgets = removed + slack
    ext.trainer.global_steps = 2
    ext.on_step_begin()
    batch = ext.before_rollout(_prompt_batch([0, 1, 5]))
    prefixes, budgets = _column(batch, PREFIX_KEY), _column(batch, BUDGET_KEY)
    cached = {pid: ext.client.shards[0].store.tokens(ext.client.shards[0].store.record_table([pid])[0, 0])
              for pid in (0, 1)}
    for pid, prefix, budget in zip((0, 1), prefixes, budgets):
        assert 0 < len(prefix) < len(cached[pid])
        np.testing.assert_array_equal(prefix, cached[pid][: len(prefix)])
        assert budget == len(cached[pid]) - len(prefix) + 2
    assert len(prefixes[2]) == 0 and budgets[2] == RESP  # never seen: full path
    # a second call in the same step (a DAPO refill) draws another cut stream
    again = ext.before_rollout(_prompt_batch([0, 1, 5]))
    assert _column(again, SEED_KEY) != _column(batch, SEED_KEY)


def test_checkpoint_round_trip(tmp_path):
    ext = _extension(tmp_path)
    ext.on_step_begin()
    ext.before_rollout(_prompt_batch([2, 3]))
    rows = _rows([2] * N + [3] * N, [0] * 8, list(range(3, 11)), [0.0, 1.0] * 4)
    ext._read_rows = lambda keys, partition: rows
    ext.on_batch_rewarded(types.SimpleNamespace(keys=rows.keys, tags=[{}] * 8, partition_id="train"), {})
    ext.trainer.global_steps = 4
    state = ext.state_dict()  # verl saves the step's checkpoint before it logs the step's metrics
    assert state["files"] == ["rpo_cache.shard0of1.npz"] and state["step"] == 4
    assert state["totals"] == {"generated_tokens": sum(range(3, 11)), "full_path_equiv_tokens": sum(range(3, 11))}
    assert ext.step_metrics()["eff/generated_tokens_total"] == sum(range(3, 11))
    assert (tmp_path / "global_step_4" / "rpo_cache" / "rpo_cache.shard0of1.npz").is_file()
    # a resumed run: fresh service, loads the checkpoint folder and remembers it for restarts
    fresh = _extension(tmp_path)
    fresh.trainer._checkpoint_folder_to_resume = lambda: str(tmp_path / "global_step_4")
    fresh.client.shards[0].cfg.cache.snapshot_dir = str(tmp_path / "snap")
    fresh.load_state_dict(state)
    a, b = ext.client.state_dict()["shards"][0], fresh.client.state_dict()["shards"][0]
    assert a["meta"] == b["meta"]
    for key in a:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key])
    assert fresh._totals == ext._totals
    assert (tmp_path / "snap" / "latest.shard0of1.json").read_text().endswith('global_step_4/rpo_cache"}')


def test_response_length_above_data_limit_is_rejected(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.config.data.max_response_length = RESP - 1
    ext = RPOExtension(trainer, RPOConfig(enable=True, cache=RPOCacheConfig(init="lazy")), "rpo")
    with pytest.raises(ValueError, match="data.max_response_length=31"):
        ext._ensure_service()


# ------------------------------------------------------------------------------------- agent loop
class SeedRecordingServer:
    def __init__(self, eos_id):
        self.eos_id, self.calls = eos_id, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.calls.append(dict(sampling_params))
        return TokenOutput(token_ids=[40, 41, self.eos_id], log_probs=None, stop_reason="completed")


def _agent_loop(tokenizer, server, response_length=RESP):
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry

    from rpo_verl.rpo.registration import register

    register()
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 64, "response_length": response_length}},
                               "data": {}, "rpo_verl": {"rpo": {}}})
    return hydra.utils.instantiate(
        config=_agent_loop_registry[AGENT_LOOP_NAME], trainer_config=DictConfigWrap(config=config),
        server_manager=server, tokenizer=tokenizer, processor=None, hf_model_type=None, dataset_cls=None,
        data_config=DictConfigWrap(config.data), tools=ToolListWrap([]),
    )


SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}
PROMPT = [{"role": "user", "content": "What is 12 + 30?"}]


async def test_agent_loop_request_seed_per_session(tokenizer):
    server = SeedRecordingServer(tokenizer.eos_token_id)
    loop = _agent_loop(tokenizer, server)
    for session in range(3):
        await loop.run(dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=[5, 6], rpo_suffix_budget=4,
                       rpo_sample_seed=np.int64(123), session_id=session)
    await loop.run(dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=[5, 6], rpo_suffix_budget=4)
    seeds = [c.get("seed") for c in server.calls]
    assert seeds[:3] == [request_seed(123, s) for s in range(3)] and len(set(seeds[:3])) == 3
    assert seeds[3] is None


async def test_dapo_overlong_penalty_measures_prefix_plus_suffix(tokenizer):
    """verl's DAPO reward manager on what the suffix loop returns: the response holds the prefix,
    so the length it penalises is prefix + suffix."""
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager
    from tensordict import TensorDict

    server = SeedRecordingServer(tokenizer.eos_token_id)
    prefix = list(range(50, 70))  # 20 cached tokens
    out = await _agent_loop(tokenizer, server).run(dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=prefix,
                                                   rpo_suffix_budget=8)
    assert len(out.response_ids) == 23 and sum(out.response_mask) == 3
    # as verl's AgentLoopWorker._compute_score builds the reward input
    prompts, responses = torch.tensor(out.prompt_ids), torch.tensor(out.response_ids)
    input_ids = torch.cat([prompts, responses])
    data = DataProto(
        batch=TensorDict({"prompts": prompts[None], "responses": responses[None], "input_ids": input_ids[None],
                          "attention_mask": torch.ones_like(input_ids)[None]}, batch_size=1),
        non_tensor_batch={"data_source": np.array(["x"]), "reward_model": np.array([{"ground_truth": "1"}]),
                          "extra_info": np.array([{}])},
    )
    cfg = OmegaConf.create({"reward": {"reward_kwargs": {"max_resp_len": RESP, "overlong_buffer_cfg": {
        "enable": True, "len": 16, "penalty_factor": 1.0, "log": True}}}})
    manager = DAPORewardManager(cfg, tokenizer, compute_score=lambda **kw: 0.0)
    result = await manager.run_single(data)
    # expected length 32 - 16 = 16; 23 tokens exceed it by 7 -> -7/16 (the suffix alone, 3, would not)
    assert result["reward_extra_info"]["overlong_reward"] == pytest.approx(-7 / 16)
    assert result["reward_score"] == pytest.approx(-7 / 16)
