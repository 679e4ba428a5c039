"""R²VPO trainer extension without Ray: activation, worker classes, start-up check, the row <->
buffer conversions, padding, metric names, and the replay flow of ``after_advantage`` over an
in-memory stand-in for TransferQueue's kv API with verl's real ``_balance_batch``."""

import types

import pytest
import torch
from omegaconf import OmegaConf
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from rpo_verl.r2vpo import trainer_ext
from rpo_verl.r2vpo.checks import startup_problems
from rpo_verl.r2vpo.config import R2VPOTrainerConfig, build_trainer_config
from rpo_verl.r2vpo.loss import _stale_from_batch
from rpo_verl.r2vpo.replay import ReplayBuffer, ReplayConfig
from rpo_verl.r2vpo.trainer_ext import (
    R2VPOExtension,
    actor_r2vpo_metrics,
    buffer_fields,
    group_ids,
    pad_count,
    padding_rows,
    replayed_rows,
    td_rows,
    uses_r2vpo_loss,
)
from rpo_verl.r2vpo.worker import (
    R2VPOActorRolloutRefMixin,
    R2VPOActorRolloutRefWorker,
    R2VPOTrainingWorker,
    R2VPOTrainingWorkerMixin,
    with_r2vpo,
)

PL = "actor_rollout_ref.actor.policy_loss"


@pytest.fixture(scope="module")
def compose_config():
    """``compose_config(*overrides)`` -> rpo_verl's composed trainer config (rpo_trainer.yaml)."""
    import copy

    from hydra import compose, initialize_config_module

    cache = {}

    def _compose(*overrides):
        if overrides not in cache:  # composing costs seconds; tests get their own copy
            with initialize_config_module("rpo_verl.config", version_base=None):
                cache[overrides] = compose("rpo_trainer", overrides=list(overrides))
        return copy.deepcopy(cache[overrides])

    return _compose


# ----------------------------------------------------------------------------- configuration


def test_activation_follows_loss_mode_and_replay(compose_config):
    assert not uses_r2vpo_loss(compose_config())
    assert uses_r2vpo_loss(compose_config(f"{PL}.loss_mode=r2vpo"))
    trainer = types.SimpleNamespace(config=compose_config())
    off = R2VPOExtension(trainer, R2VPOTrainerConfig(), "r2vpo")
    assert not off.active and off.state_dict() == {} and off.step_metrics() == {}
    assert off.after_advantage(None, {}) is None  # inactive: TransferQueue is never touched
    assert off.worker_class("actor_rollout", ActorRolloutRefWorker) is ActorRolloutRefWorker
    replay = R2VPOExtension(trainer, build_trainer_config({"replay": {"enable": True}}), "r2vpo")
    assert replay.active and not replay.uses_loss and replay.buffer is not None
    assert replay.worker_class("actor_rollout", ActorRolloutRefWorker) is ActorRolloutRefWorker


def test_worker_class_for_actor_roles_only(compose_config):
    trainer = types.SimpleNamespace(config=compose_config(f"{PL}.loss_mode=r2vpo"))
    ext = R2VPOExtension(trainer, R2VPOTrainerConfig(), "r2vpo")
    assert ext.active and ext.buffer is None
    for role in ("actor", "actor_rollout", "actor_rollout_ref"):
        assert ext.worker_class(role, ActorRolloutRefWorker) is R2VPOActorRolloutRefWorker
    assert ext.worker_class("ref", ActorRolloutRefWorker) is ActorRolloutRefWorker
    assert ext.worker_class("critic", TrainingWorker) is TrainingWorker


def test_with_r2vpo_composes_another_features_worker():
    class OtherTraining(TrainingWorker):
        pass

    class Other(ActorRolloutRefWorker):
        actor_worker_cls = OtherTraining

    cls = with_r2vpo(Other)
    assert issubclass(cls, Other) and issubclass(cls, R2VPOActorRolloutRefMixin)
    assert issubclass(cls.actor_worker_cls, OtherTraining) and issubclass(cls.actor_worker_cls, R2VPOTrainingWorkerMixin)
    assert with_r2vpo(cls) is cls  # idempotent
    plain = with_r2vpo(type("Plain", (ActorRolloutRefWorker,), {}))
    assert plain.actor_worker_cls is R2VPOTrainingWorker
    assert hasattr(cls, "r2vpo_dual_state")
    with pytest.raises(TypeError, match="not an ActorRolloutRefWorker"):
        with_r2vpo(TrainingWorker)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ([f"{PL}.loss_mode=r2vpo", f"{PL}.r2vpo.delta=0"], f"{PL}.r2vpo.delta"),
        ([f"{PL}.r2vpo.dual_rule=sometimes"], f"{PL}.r2vpo.dual_rule"),  # checked for every loss mode
        ([f"{PL}.loss_mode=r2vpo", f"{PL}._target_=verl.workers.config.PolicyLossConfig"], f"{PL}._target_"),
        (["rpo_verl.r2vpo.replay.max_batches=0"], "rpo_verl.r2vpo.replay.max_batches"),
        (["+rpo_verl.r2vpo.replay.size=3"], "rpo_verl.r2vpo.replay.size"),
    ],
)
def test_startup_check_names_the_key(compose_config, overrides, key):
    problems = startup_problems(compose_config(*overrides))
    assert [p.key for p in problems] == [key] and problems[0].check == "r2vpo"


def test_startup_check_passes_defaults_and_stock_loss_modes(compose_config):
    assert startup_problems(compose_config()) == []
    assert startup_problems(compose_config(f"{PL}.loss_mode=r2vpo", "rpo_verl.r2vpo.replay.enable=true")) == []
    assert startup_problems(compose_config(f"{PL}.loss_mode=gspo")) == []


def test_startup_check_is_registered():
    from rpo_verl.config.checks import all_checks
    from rpo_verl.config.features import FEATURES

    assert FEATURES["r2vpo"].checks == "rpo_verl.r2vpo.checks:startup_problems"
    assert all_checks()["r2vpo"] is startup_problems


# ----------------------------------------------------------------------------- rows <-> buffer


def _rows(step: int, groups: int = 2, n: int = 2, seed: int = 0):
    """TransferQueue-like rows: variable response lengths, per-token fields of that length."""
    g = torch.Generator().manual_seed(seed + step)
    rows, keys, tags = [], [], []
    for i in range(groups * n):
        length = 3 + (i * 2 + step) % 4
        uid = f"s{step}g{i // n}"
        rows.append({
            "uid": uid,
            "prompts": torch.arange(4),
            "responses": torch.randint(0, 50, (length,), generator=g),
            "response_mask": torch.ones(length, dtype=torch.int64),
            "loss_mask": torch.ones(length, dtype=torch.int64),
            "old_log_probs": -torch.rand(length, generator=g),
            "advantages": torch.full((length,), float(i) - 1.5),
            "rm_scores": torch.zeros(length),
            "num_turns": 2,
            "extra_info": {"index": i},
        })
        keys.append(f"{uid}_{i % n}_0")
        tags.append({"seq_len": 4 + length, "min_global_steps": step, "max_global_steps": step})
    return rows, keys, tags


def test_td_rows_clones_rows_out_of_the_batch_storage():
    rows, _, _ = _rows(1)
    td = list_of_dict_to_tensordict(rows)
    out = td_rows(td)
    assert [r["uid"] for r in out] == [r["uid"] for r in rows] and out[0]["extra_info"] == {"index": 0}
    torch.testing.assert_close(out[2]["old_log_probs"], rows[2]["old_log_probs"])
    # a row of a jagged tensor is a view of the whole batch: the clone owns only its own values
    assert out[1]["responses"].untyped_storage().nbytes() == out[1]["responses"].numel() * 8


def test_buffer_round_trip_restores_behaviour_logprobs_and_advantages():
    rows, keys, tags = _rows(1)
    buffer = ReplayBuffer(ReplayConfig(enable=True, fraction=1.0, seed=3))
    fields = buffer_fields(rows, keys, tags)
    assert fields["behaviour_log_probs"].shape == fields["response_mask"].shape == (4, 6)
    buffer.add(1, fields, group_ids=group_ids(rows, keys))
    sampled, metrics = buffer.sample(num_fresh_groups=1, current_step=2)
    assert metrics["r2vpo/replay_groups"] == 1
    names = list(rows[0]) + ["r2vpo_stale"]
    new_keys, new_rows, new_tags = replayed_rows(sampled, names, batch_index=2)
    assert len(new_rows) == 2 and all(list(r) == names for r in new_rows)
    by_key = dict(zip(keys, rows))
    for key, row, tag in zip(new_keys, new_rows, new_tags):
        assert key.startswith("r2vpo-replay-b2-")
        original = by_key[key[len("r2vpo-replay-b2-"):]]
        torch.testing.assert_close(row["old_log_probs"], original["old_log_probs"])  # behaviour, exact
        torch.testing.assert_close(row["advantages"], original["advantages"])
        torch.testing.assert_close(row["responses"], original["responses"])
        assert row["r2vpo_stale"].item() == 1.0 and row["uid"] == original["uid"]
        assert tag["is_padding"] and tag["r2vpo_replay"] and tag["r2vpo_age"] == 1 and tag["seq_len"] > 4
    assert len({r["uid"] for r in new_rows}) == 1  # one whole group
    with pytest.raises(RuntimeError, match="lacks the fields.*'ref_log_prob'"):
        replayed_rows(sampled, names + ["ref_log_prob"], batch_index=2)


def test_padding_rows_are_no_ops_and_concatenate_with_replayed_rows():
    rows, keys, tags = _rows(1)
    pad_keys, pads, pad_tags = padding_rows(rows[0], tags[0], 3, batch_index=4)
    assert len(set(pad_keys)) == 3 and all(k.rsplit("_", 2)[0].startswith("r2vpo-pad-b4") for k in pad_keys)
    assert all(t["is_padding"] for t in pad_tags) and "is_padding" not in tags[0]
    for pad in pads:
        assert pad["response_mask"].sum() == 0 and pad["loss_mask"].sum() == 0 and pad["advantages"].abs().sum() == 0
        assert pad["r2vpo_stale"].item() == 0.0
    assert rows[0]["response_mask"].sum() > 0  # the template is untouched
    buffer = ReplayBuffer(ReplayConfig(enable=True, fraction=1.0))
    buffer.add(1, buffer_fields(rows, keys, tags), group_ids=group_ids(rows, keys))
    sampled, _ = buffer.sample(1, 2)
    names = list(pads[0])
    _, replayed, _ = replayed_rows(sampled, names, 2)
    td = list_of_dict_to_tensordict(replayed + [{k: p[k] for k in names} for p in pads])
    assert _stale_from_batch(td).tolist() == [True, True, False, False, False]


def test_spread_mixes_replayed_rows_evenly():
    assert trainer_ext.spread(list("abcdefgh"), [1, 2, 3, 4]) == ["a", 1, "b", "c", 2, "d", "e", 3, "f", "g", 4, "h"]
    assert trainer_ext.spread(list("ab"), []) == ["a", "b"]
    assert trainer_ext.spread(list("abcd"), [1]) == ["a", "b", 1, "c", "d"]


def test_pad_count_and_group_ids():
    assert [pad_count(n, 8) for n in (8, 12, 16, 1)] == [0, 4, 0, 7]
    assert pad_count(5, 0) == 0
    assert group_ids([{}, {"uid": "u"}], ["abc_0_1", "x_1_0"]) == ["abc", "u"]


def test_actor_metrics_repeated_under_r2vpo():
    out = actor_r2vpo_metrics([
        {"actor/r2vpo/v_hat": 0.2, "actor/r2vpo/ratio_max": 1.5, "actor/r2vpo/ratio_min": 0.9, "actor/pg_loss": 1.0},
        {"actor/r2vpo/v_hat": 0.4, "actor/r2vpo/ratio_max": 1.2, "actor/r2vpo/ratio_min": 0.7},
    ])
    assert out == pytest.approx({"r2vpo/v_hat": 0.3, "r2vpo/ratio_max": 1.5, "r2vpo/ratio_min": 0.7})


# ----------------------------------------------------------------------------- after_advantage flow


class FakeKV:
    """Per-key rows and tags of TransferQueue partitions (``kv_batch_put/get/clear``)."""

    def __init__(self):
        self.rows, self.tags = {}, {}

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        new_rows = td_rows(fields) if fields is not None else None
        for i, key in enumerate(keys):
            row = self.rows.setdefault((partition_id, key), {})
            if new_rows is not None:
                row.update(new_rows[i])
            if tags is not None:
                self.tags[(partition_id, key)] = dict(tags[i])
        names = sorted({n for k in keys for n in self.rows[(partition_id, k)]})
        return KVBatchMeta(keys=list(keys), tags=[self.tags.get((partition_id, k), {}) for k in keys],
                           partition_id=partition_id, fields=names)

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        rows = [self.rows[(partition_id, k)] for k in keys]
        if select_fields is not None:
            rows = [{f: r[f] for f in select_fields} for r in rows]
        return list_of_dict_to_tensordict(rows)

    def fetch(self, meta):
        """What a worker receives for ``meta``: only its listed fields (``None``: all)."""
        return self.kv_batch_get(meta.keys, meta.partition_id, select_fields=meta.fields)

    def kv_clear(self, keys, partition_id):
        for key in keys:
            self.rows.pop((partition_id, key), None)
            self.tags.pop((partition_id, key), None)


class FakeTrainer:
    """What the extension uses of ``RpoVerlTrainer``; batch multiple and balancing are verl's code."""

    _get_required_batch_multiple = PPOTrainer._get_required_batch_multiple
    _balance_batch = PPOTrainer._balance_batch

    def __init__(self, config, mini_batch, n, kv=None):
        self.config = config
        self.use_critic = False
        self.global_steps = 1
        self.tokenizer = types.SimpleNamespace(eos_token_id=0)
        self.log_prob_calls = []
        self.actor_rollout_wg = types.SimpleNamespace(_dispatch_info={"actor": [0]},
                                                      compute_log_prob=lambda meta: self._compute_log_prob(kv, meta))
        OmegaConf.update(self.config, "actor_rollout_ref.actor.ppo_mini_batch_size", mini_batch)
        OmegaConf.update(self.config, "actor_rollout_ref.rollout.n", n)

    def _compute_log_prob(self, kv, meta):
        """The actor's forward at the current policy: ``log_probs`` over the whole sequence (verl's
        left-shifted layout, response token j at position P − 1 + j), written to TransferQueue."""
        self.log_prob_calls.append(meta)
        for key in meta.keys:
            row = kv.rows[(meta.partition_id, key)]
            full = torch.zeros(len(row["prompts"]) + len(row["responses"]))
            full[len(row["prompts"]) - 1: len(row["prompts"]) - 1 + len(row["responses"])] = current_log_probs(row)
            row["log_probs"] = full
        return meta


def current_log_probs(row):
    """log π_prox of a row's response tokens in the fake actor (a fixed function of the tokens)."""
    return -0.1 - 0.01 * row["responses"].float()


def _put_step(kv, step, groups=2, n=2, verl_pads=0):
    rows, keys, tags = _rows(step, groups, n)
    for pad in range(verl_pads):  # verl's own synthetic padding rows of the fresh batch
        rows.append({**rows[0], "response_mask": torch.zeros(1, dtype=torch.int64), "uid": "padX"})
        keys.append(f"padX_{pad}_0")
        tags.append({**tags[0], "is_padding": True})
    rows = [{**r, "old_log_probs": r["old_log_probs"][: len(r["response_mask"])],
             "advantages": r["advantages"][: len(r["response_mask"])]} for r in rows]
    # like verl's: the meta of the last put lists the fields persisted so far (not r2vpo_stale)
    return kv.kv_batch_put(keys, "train", fields=list_of_dict_to_tensordict(rows), tags=tags), rows


def test_after_advantage_adds_replayed_rows_pads_and_rebalances(compose_config, monkeypatch):
    kv = FakeKV()
    monkeypatch.setitem(__import__("sys").modules, "transfer_queue", types.SimpleNamespace(
        kv_batch_put=kv.kv_batch_put, kv_batch_get=kv.kv_batch_get, kv_clear=kv.kv_clear, KVBatchMeta=KVBatchMeta))
    trainer = FakeTrainer(compose_config(f"{PL}.loss_mode=r2vpo"), mini_batch=2, n=2, kv=kv)  # multiple: 4 rows
    OmegaConf.update(trainer.config, "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", 8)
    ext = R2VPOExtension(trainer, build_trainer_config({"replay": {"enable": True, "fraction": 0.5}}), "r2vpo")

    batch1, _ = _put_step(kv, 1, groups=2, n=2, verl_pads=4)
    metrics1 = {}
    kept = ext.after_advantage(batch1, metrics1)  # nothing stored yet: the same rows
    assert kept.keys == batch1.keys and kept.tags == batch1.tags and "r2vpo_stale" not in batch1.fields
    assert _stale_from_batch(kv.fetch(kept)).tolist() == [False] * 8  # the update reads the flags
    assert metrics1["r2vpo/replay_share"] == 0.0 and metrics1["r2vpo/replay_buffer_samples"] == 4
    assert all(kv.rows[("train", k)]["r2vpo_stale"].item() == 0.0 for k in batch1.keys)  # pads too
    kv.kv_clear(batch1.keys, "train")  # verl clears the step's keys

    batch2, rows2 = _put_step(kv, 2, groups=2, n=2, verl_pads=4)
    metrics2 = {}
    out = ext.after_advantage(batch2, metrics2)
    assert metrics2["r2vpo/replay_groups"] == 1 and metrics2["r2vpo/replay_share"] == pytest.approx(1 / 3)
    assert metrics2["r2vpo/replay_rows"] == 2 and metrics2["r2vpo/replay_pad_rows"] == 2
    assert len(out) == 8 and len(out) % 4 == 0 and "global_seqlen/min" in metrics2
    fresh = [k for k in batch2.keys if not k.startswith("padX")]
    assert sorted(k for k, t in zip(out.keys, out.tags) if not t.get("is_padding")) == sorted(fresh)
    assert not any(k.startswith("padX") for k in out.keys) and ("train", "padX_0_0") not in kv.rows
    replayed = [k for k, t in zip(out.keys, out.tags) if t.get("r2vpo_replay")]
    assert len(replayed) == 2 and all(k.startswith("r2vpo-replay-b2-s1g") for k in replayed)
    data = kv.fetch(out)  # what the actor update reads: one field set for all rows
    stale = dict(zip(out.keys, _stale_from_batch(data).tolist()))
    assert [k for k, s in stale.items() if s] == replayed
    assert out.keys.index(replayed[0]) < 4 <= out.keys.index(replayed[1])  # one per actor mini-batch
    for key in replayed:
        row = kv.rows[("train", key)]
        assert row["uid"].startswith("s1g") and row["old_log_probs"].shape == row["response_mask"].shape
        # decoupled: the ratio's reference is π_prox (recomputed), the behaviour μ enters as the weight
        torch.testing.assert_close(row["old_log_probs"], current_log_probs(row))
        mu = next(r for r in _rows(1) [0] if torch.equal(r["responses"], row["responses"]))["old_log_probs"]
        torch.testing.assert_close(row["rollout_is_weights"], torch.exp(current_log_probs(row) - mu).clamp(max=2.0))
    assert all(kv.rows[("train", k)]["rollout_is_weights"].eq(1).all() for k in fresh)  # fresh rows: weight 1
    assert "rollout_is_weights" in out.fields  # ppo_loss passes it to the policy loss
    (call,) = trainer.log_prob_calls  # one forward, topped up to the log-prob micro-batch (8) with other rows
    assert set(replayed) <= set(call.keys) and len(call.keys) % 8 == 0
    assert call.extra_info["compute_loss"] is False and "compute_loss" not in (out.extra_info or {})
    assert metrics2["r2vpo/replay_is_ess_frac"] <= 1.0 and 0.0 <= metrics2["r2vpo/replay_is_truncated_frac"] <= 1.0
    assert out.fields is not None and "r2vpo_stale" in out.fields

    state = ext.state_dict()
    assert state["batch_index"] == 2 and len(state["replay"]["batches"]) == 2
    fresh_ext = R2VPOExtension(trainer, build_trainer_config({"replay": {"enable": True}}), "r2vpo")
    fresh_ext.load_state_dict(state)
    assert fresh_ext.batch_index == 2 and len(fresh_ext.buffer) == len(ext.buffer) == 8

    # step_metrics repeats the actor's metrics that verl wrote into the step's dict after the update
    metrics2["actor/r2vpo/v_hat"] = 0.25
    trainer.actor_rollout_wg.r2vpo_dual_state = lambda: [{"lambda": 0.5, "steps": 3}]
    out_metrics = ext.step_metrics()
    assert out_metrics["r2vpo/v_hat"] == 0.25 and out_metrics["r2vpo/lambda_end"] == 0.5
    assert ext.step_metrics()["r2vpo/lambda_start"] == 0.5  # next step starts where this one ended


def test_after_advantage_without_replay_only_marks_rows_fresh(compose_config, monkeypatch):
    kv = FakeKV()
    monkeypatch.setitem(__import__("sys").modules, "transfer_queue", types.SimpleNamespace(
        kv_batch_put=kv.kv_batch_put, kv_batch_get=kv.kv_batch_get, kv_clear=kv.kv_clear, KVBatchMeta=KVBatchMeta))
    trainer = FakeTrainer(compose_config(f"{PL}.loss_mode=r2vpo"), mini_batch=2, n=2, kv=kv)
    ext = R2VPOExtension(trainer, R2VPOTrainerConfig(), "r2vpo")
    batch, _ = _put_step(kv, 1)
    out = ext.after_advantage(batch, {})
    assert out.keys == batch.keys and "r2vpo_stale" in out.fields
    assert _stale_from_batch(kv.fetch(out)).tolist() == [False] * 4
    assert ext.state_dict() == {"batch_index": 0, "replay": None}


def test_update_starts_at_ratio_one_for_stale_rows(compose_config, monkeypatch):
    """Issue 15's cause: a replayed row's ratio was taken against its behaviour policy μ, so at the
    first optimiser step of an update (θ = π_prox) the stale rows' ratios were π_prox/μ ≠ 1 and V̂
    charged the *staleness* to λ (V̂ stale 1.7 one step after generation). With the decoupled form
    every row's ratio against the update's reference is exactly 1 before the first step."""
    kv = FakeKV()
    monkeypatch.setitem(__import__("sys").modules, "transfer_queue", types.SimpleNamespace(
        kv_batch_put=kv.kv_batch_put, kv_batch_get=kv.kv_batch_get, kv_clear=kv.kv_clear, KVBatchMeta=KVBatchMeta))
    trainer = FakeTrainer(compose_config(f"{PL}.loss_mode=r2vpo"), mini_batch=2, n=2, kv=kv)
    ext = R2VPOExtension(trainer, build_trainer_config({"replay": {"enable": True, "fraction": 1.0}}), "r2vpo")
    batch1, _ = _put_step(kv, 1)  # generated by an earlier policy: μ ≠ the fake actor's current policy
    ext.after_advantage(batch1, {})
    kv.kv_clear(batch1.keys, "train")
    rows, keys, tags = _rows(2)
    rows = [{**r, "old_log_probs": current_log_probs(r)} for r in rows]  # fresh: generated by the current policy
    batch2 = kv.kv_batch_put(keys, "train", fields=list_of_dict_to_tensordict(rows), tags=tags)
    metrics = {}
    out = ext.after_advantage(batch2, metrics)
    assert metrics["r2vpo/replay_rows"] == 4
    ratios, weights = [], []
    for key, tag in zip(out.keys, out.tags):
        row = kv.rows[("train", key)]
        valid = row["response_mask"].bool()
        ratios.append(torch.exp(current_log_probs(row) - row["old_log_probs"])[valid])
        if tag.get("r2vpo_replay"):
            weights.append(row["rollout_is_weights"][valid])
    r = torch.cat(ratios).double()
    assert float(((r - r.mean()) ** 2).mean()) < 1e-12  # V̂ at the start of the update: 0, stale rows included
    assert metrics["r2vpo/v_hat_behaviour"] > 1e-3  # the staleness is there, and is measured ...
    w = torch.cat(weights)
    assert not torch.allclose(w, torch.ones_like(w)) and float(w.max()) <= 2.0  # ... and carried by w ≤ c
