"""DPSExtension inside RpoVerlTrainer, without Ray: prompt batches, success rates, one update per
step, checkpoint state and resume. The scheduler is the real actor body (``DPSScheduler``) called
in-process instead of through Ray; the trainer is built from a real composed config up to its
dataloaders (as tests/trainer/test_trainer_hooks.py does)."""

import dataclasses
import logging
import math
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rpo_verl.dps.config import DPSConfig
from rpo_verl.dps.core import SchedulerCore
from rpo_verl.dps.scheduler import DPSScheduler
from rpo_verl.dps.state_io import diff_states, load_state
from rpo_verl.dps.trainer_ext import (PROMPT_ID_KEY, DPSExtension, GroupTally, tally_groups,
                                      trajectory_accuracy)
from rpo_verl.trainer.trainer import EXTENSION_STATE_FILE, RpoVerlTrainer

N_PROMPTS, BATCH, ROLLOUT_N = 12, 3, 4
CLASSES = ["0", "0.5", "1", "nan"] * 3


class InProcessClient:
    """The scheduler actor's body called directly (same methods as DPSSchedulerClient)."""

    def __init__(self, config, num_prompts, rollouts_per_prompt):
        self.actor = DPSScheduler(dataclasses.asdict(config), num_prompts, rollouts_per_prompt)
        self.updates = []

    def select(self, batch_size, exclude=None):
        return np.asarray(self.actor.select(batch_size, exclude), dtype=np.int64)

    def update(self, prompt_ids, success_rates, num_rollouts=None):
        self.updates.append((np.asarray(prompt_ids), np.asarray(success_rates), np.asarray(num_rollouts)))
        return self.actor.update(prompt_ids, success_rates, num_rollouts)

    def __getattr__(self, name):
        return getattr(self.actor, name)


class RecordingWorkerGroup:
    def save_checkpoint(self, local_path, remote_path, global_steps, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)

    def load_checkpoint(self, local_path, del_local_after_load=False):
        pass


@pytest.fixture
def make_trainer(tiny_model_path, tmp_path, dps_helpers):
    train = dps_helpers["write_prompts"](tmp_path / "train.parquet", CLASSES)
    val = dps_helpers["write_prompts"](tmp_path / "val.parquet", CLASSES[:4])

    def _make(*overrides, dps=None, ckpt="ckpt"):
        cfg = dps_helpers["compose"](
            "preset=cpu", f"actor_rollout_ref.model.path={tiny_model_path}", f"data.train_files={train}",
            f"data.val_files={val}", f"data.train_batch_size={BATCH}", f"actor_rollout_ref.rollout.n={ROLLOUT_N}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}", f"trainer.default_local_dir={tmp_path / ckpt}",
            "rpo_verl.dps.enable=true", "rpo_verl.dps.seed=3", *overrides)
        if dps:
            cfg.rpo_verl.dps = OmegaConf.merge(cfg.rpo_verl.dps, dps)
        OmegaConf.resolve(cfg)
        trainer = RpoVerlTrainer(cfg)
        trainer._init_tokenizer()
        trainer._init_dataloader()
        trainer._init_dump_executor()
        ext = next(e for e in trainer.extensions if isinstance(e, DPSExtension))
        ext.client_factory = InProcessClient
        trainer.actor_rollout_wg = RecordingWorkerGroup()
        trainer.global_steps = 0  # set by verl's _load_checkpoint in a real start
        return trainer, ext

    return _make


def _rows(batch):
    return batch[PROMPT_ID_KEY].tolist()


def _report(ext, batch, rates_by_row):
    """What on_batch_rewarded reads from TransferQueue, for the rows of ``batch``: ROLLOUT_N
    trajectories per uid with accuracy = the row's rate."""
    keys, accs = [], []
    for uid, row in zip(batch["uid"], _rows(batch)):
        for s in range(ROLLOUT_N):
            keys.append(f"{uid}_{s}_0")
            accs.append(rates_by_row(row))
    ext.record_groups(tally_groups(keys, accs))


def _fixed_rate(row):
    cls = CLASSES[row]
    return math.nan if cls == "nan" else float(cls)


def _run_steps(trainer, ext, steps):
    chosen = []
    for _ in range(steps):
        trainer.global_steps += 1
        ext.on_step_begin()
        batch = trainer._next_train_batch()
        chosen.append(_rows(batch))
        _report(ext, batch, _fixed_rate)
        ext.flush()
    return chosen


def test_registered_and_off_by_default(dps_helpers):
    from rpo_verl.config.features import FEATURES, build_features

    assert FEATURES["dps"].extension == "rpo_verl.dps.trainer_ext:DPSExtension"
    assert build_features(dps_helpers["compose"]().rpo_verl)["dps"] == DPSConfig()


def test_fetch_prompts_builds_verl_batches_from_the_selected_rows(make_trainer):
    trainer, ext = make_trainer()
    trainer.global_steps = 1
    ext.on_step_begin()
    batch = trainer._next_train_batch()
    rows = _rows(batch)
    assert len(rows) == BATCH and len(set(rows)) == BATCH
    np.testing.assert_array_equal(rows, ext.client.actor.core.last_selected)
    # the same columns as a batch from verl's own dataloader, plus the row index
    reference = trainer.fetch_dataloader_prompts(BATCH)
    assert set(batch.keys()) == set(reference.keys()) | {PROMPT_ID_KEY}
    for i, row in enumerate(rows):
        item = trainer.train_dataset[row]
        assert batch["raw_prompt"][i] == item["raw_prompt"] and f"Q{row}:" in item["raw_prompt"][0]["content"]
        assert batch["extra_info"][i]["index"] == 100 + row  # row index, not extra_info.index
    from verl.utils import tensordict_utils as tu

    assert tu.get_non_tensor_data(batch, "global_steps", None) == 1
    assert len(set(batch["uid"])) == BATCH
    # a refill in the same step (DAPO) never repeats a prompt of this step
    refill = trainer._next_train_batch(BATCH)
    assert not set(_rows(refill)) & set(rows)
    assert len(ext._dispatched) == 2 * BATCH


def test_trajectory_accuracy_prefers_acc_then_score_sign():
    assert trajectory_accuracy({"reward_extra_info": {"acc": 0.25, "score": 0.9}}, 0.9, "acc") == 0.25
    assert trajectory_accuracy({"reward_extra_info": {"score": -0.5}}, -0.5, "acc") == 0.0
    assert trajectory_accuracy({"reward_extra_info": {}}, 0.7, "acc") == 1.0
    assert math.isnan(trajectory_accuracy({"reward_extra_info": {"acc": None}}, 1.0, "acc"))
    assert math.isnan(trajectory_accuracy({}, math.nan, "acc"))
    assert trajectory_accuracy({"reward_extra_info": {"correct": True}}, 0.0, "correct") == 1.0
    groups = tally_groups(["u1_0_0", "u1_1_0", "u1_2_0", "u2_0_0", "u2_1_0"], [1.0, 0.0, math.nan, math.nan, math.nan])
    assert groups["u1"] == GroupTally(hits=1.0, valid=2, total=3) and groups["u1"].rate == 0.5
    assert math.isnan(groups["u2"].rate) and groups["u2"].total == 2


def test_accuracy_outside_unit_interval_warns_once_and_uses_sign(caplog):
    ext = object.__new__(DPSExtension)  # only the config and the warn-once flag are used
    ext.config, ext._range_warned = DPSConfig(enable=True), False
    with caplog.at_level(logging.WARNING, logger="rpo_verl.dps"):
        assert ext._checked([1.0, -1.0, 0.5, math.nan])[:3] == [1.0, 0.0, 0.5]
        ext._checked([-1.0])
    assert sum("outside [0, 1]" in r.message for r in caplog.records) == 1


def test_one_update_per_step_with_every_dispatched_group(make_trainer, caplog):
    trainer, ext = make_trainer()
    trainer.global_steps = 1
    ext.on_step_begin()
    first = trainer._next_train_batch()
    refill = trainer._next_train_batch(2)  # a DAPO refill round
    _report(ext, first, lambda row: 0.5)
    # the refill's groups were dropped by DAPO: one read before clearing, one left no trajectory
    uid0, uid1 = refill["uid"][0], refill["uid"][1]
    ext.record_groups(tally_groups([f"{uid0}_{s}_0" for s in range(ROLLOUT_N)], [1.0] * ROLLOUT_N), discarded=True)
    ext.record_groups({"not-this-step": GroupTally(1.0, 1, 1)})  # e.g. a validation group: ignored
    with caplog.at_level(logging.WARNING, logger="rpo_verl.dps"):
        metrics = ext.flush()
    (ids, rates, k), = ext.client.updates
    assert ids.tolist() == _rows(first) + _rows(refill)
    assert rates[:BATCH].tolist() == [0.5] * BATCH and rates[BATCH] == 1.0 and math.isnan(rates[BATCH + 1])
    assert k.tolist() == [ROLLOUT_N] * (BATCH + 2)
    assert metrics["dps/groups_generated_step"] == BATCH + 2 and metrics["dps/select_calls_step"] == 2
    assert metrics["dps/prompts_step"] == BATCH + 2 and metrics["dps/nan_prompts_step"] == 1
    assert metrics["dps/effective_ratio"] == pytest.approx(BATCH / (BATCH + 1))
    assert any("stay unobserved" in r.message and str(_rows(refill)[1]) in r.message for r in caplog.records)
    assert ext.step_metrics() == metrics and ext.step_metrics() == {}
    assert ext.flush() == {}  # nothing dispatched since


def test_nan_prompt_stays_unobserved(make_trainer):
    trainer, ext = make_trainer()
    chosen = _run_steps(trainer, ext, 4)
    core = ext.client.actor.core
    nan_picks = [r for rows in chosen for r in rows if CLASSES[r] == "nan"]
    assert nan_picks, "no NaN prompt selected: the test data no longer exercises the NaN path"
    assert core.nan_total == len(nan_picks)
    # a prompt whose every report was NaN keeps the prior: predicted like a never-seen prompt
    np.testing.assert_allclose(core.selector.predict(np.unique(nan_picks)), 1 / 3, atol=1e-12)


def test_checkpoint_resume_gives_identical_scheduler_state(make_trainer, tmp_path):
    straight, ext_a = make_trainer(ckpt="a")
    chosen_a = _run_steps(straight, ext_a, 6)

    half, ext_b = make_trainer(ckpt="b")
    _run_steps(half, ext_b, 3)
    half._save_checkpoint()
    saved = torch.load(tmp_path / "b" / "global_step_3" / EXTENSION_STATE_FILE, weights_only=False)["dps"]
    assert saved["num_updates"] == 3

    resumed, ext_c = make_trainer(ckpt="b")
    resumed._load_checkpoint()
    ext_c.on_init_end()
    assert resumed.global_steps == 3
    chosen_c = _run_steps(resumed, ext_c, 3)
    assert chosen_c == chosen_a[3:]
    assert diff_states(ext_a.client.state_dict(), ext_c.client.state_dict()) == []
    # the snapshot written by the restored actor follows the resumed run
    assert diff_states(load_state(ext_c.config.snapshot_path), ext_c.client.state_dict()) == []


def test_replay_with_a_plain_scheduler_core(make_trainer):
    """The selections are exactly SchedulerCore's, fed with the raw accuracies (not the score)."""
    trainer, ext = make_trainer()
    chosen = _run_steps(trainer, ext, 5)
    core = SchedulerCore(dataclasses.replace(ext.config), N_PROMPTS, ROLLOUT_N)
    for rows in chosen:
        ids = core.select(BATCH)
        assert ids.tolist() == rows
        core.update(ids, [_fixed_rate(r) for r in ids], ROLLOUT_N)
    assert diff_states(core.state_dict(), ext.client.state_dict()) == []


def test_snapshot_defaults_to_run_folder_and_stale_one_is_removed(make_trainer, tmp_path):
    trainer, ext = make_trainer()
    snapshot = tmp_path / "ckpt" / "dps_snapshot.npz"
    assert ext.config.snapshot_path == str(snapshot)
    _run_steps(trainer, ext, 2)
    assert load_state(str(snapshot))["num_updates"] == 2
    # a new run in the same folder without a checkpoint must not restore the old snapshot
    fresh, ext2 = make_trainer()
    fresh._load_checkpoint()
    ext2.on_init_end()
    assert ext2.client.info()["restored_from"] is None and ext2.client.actor.core.num_updates == 0


def test_explicit_snapshot_path_and_wrong_dataset_size(make_trainer, tmp_path):
    trainer, ext = make_trainer(dps={"snapshot_path": str(tmp_path / "elsewhere.npz")})
    assert ext.config.snapshot_path == str(tmp_path / "elsewhere.npz")
    ext.on_init_end()
    other = SchedulerCore(DPSConfig(enable=True), N_PROMPTS + 1).state_dict()
    with pytest.raises(ValueError, match="train dataset of 13 prompts, but the current one has 12"):
        ext.load_state_dict(other)


def test_dapo_replay_buffer_clear_is_wrapped(make_trainer):
    trainer, ext = make_trainer("algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc")
    assert trainer.replay_buffer.filter_groups_metric == "acc"
    assert trainer.replay_buffer._clear_groups.__name__ == "clear_groups"
    # groups of uids this step never dispatched pass straight through to verl's clear
    trainer.replay_buffer._clear_groups("val", set())


def test_refills_beyond_the_dataset_allow_repeats(make_trainer, caplog):
    trainer, ext = make_trainer()
    trainer.global_steps = 1
    ext.on_step_begin()
    first = trainer._next_train_batch()
    with caplog.at_level(logging.WARNING, logger="rpo_verl.dps"):
        refill = trainer._next_train_batch(N_PROMPTS)  # more than the 9 prompts not yet used
    assert "allowing repeats" in caplog.text
    assert sorted(_rows(refill)) == list(range(N_PROMPTS))
    _report(ext, first, lambda row: 1.0)
    _report(ext, refill, lambda row: 0.0)
    metrics = ext.flush()
    core = ext.client.actor.core
    assert metrics["dps/groups_generated_step"] == BATCH + N_PROMPTS
    # a prompt rolled out twice in one step is one observation of its pooled groups
    assert metrics["dps/prompts_step"] == N_PROMPTS and core.sample_counts.tolist() == [1] * N_PROMPTS
    assert metrics["dps/effective_ratio"] == pytest.approx(BATCH / N_PROMPTS)
