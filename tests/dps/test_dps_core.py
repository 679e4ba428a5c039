"""Scheduler core (no Ray): metrics, NaN handling, state round trip, resume equivalence, errors."""

import logging

import numpy as np
import pytest

from rpo_verl.dps.config import DPSConfig, build_dps_config
from rpo_verl.dps.core import SchedulerCore
from rpo_verl.dps.state_io import DPSStateError, diff_states, load_state, save_state


def assert_states_identical(a, b):
    assert diff_states(a, b) == []


def _rates(ids, step):
    """Deterministic fake environment: accuracy depends on the prompt and the step (NaN sometimes)."""
    r = ((ids * 7 + step * 3) % 9) / 8.0
    r[(ids + step) % 23 == 0] = np.nan
    return r


def _drive(core, steps, start=0, batch=12):
    for t in range(start, start + steps):
        ids = core.select(batch)
        core.update(ids, _rates(ids, t))


@pytest.mark.parametrize("selector,pool", [("dps", None), ("dps", 2.0), ("mopps", 3.0), ("mopps", None), ("uniform", None)])
def test_resume_equivalence_through_a_file(tmp_path, selector, pool):
    cfg = DPSConfig(enable=True, selector=selector, pool_ratio=pool, seed=3)
    straight = SchedulerCore(cfg, 97, rollouts_per_prompt=4)
    _drive(straight, 40)

    first = SchedulerCore(cfg, 97, rollouts_per_prompt=4)
    _drive(first, 20)
    save_state(str(tmp_path / "dps.npz"), first.state_dict())
    del first
    resumed = SchedulerCore(cfg, 97, rollouts_per_prompt=4)
    resumed.load_state_dict(load_state(str(tmp_path / "dps.npz")))
    _drive(resumed, 20, start=20)
    assert_states_identical(straight.state_dict(), resumed.state_dict())
    np.testing.assert_array_equal(straight.select(12), resumed.select(12))


def test_state_dict_round_trip_identical(tmp_path):
    core = SchedulerCore(DPSConfig(enable=True), 50)
    _drive(core, 15)
    path = str(tmp_path / "s.npz")
    save_state(path, core.state_dict())
    assert_states_identical(core.state_dict(), load_state(path))
    other = SchedulerCore(DPSConfig(enable=True), 50)
    other.load_state_dict(core.state_dict())
    assert_states_identical(core.state_dict(), other.state_dict())


def test_dataset_size_mismatch_is_a_clear_error(tmp_path):
    core = SchedulerCore(DPSConfig(enable=True), 50)
    _drive(core, 3)
    with pytest.raises(ValueError, match="dataset of 50 prompts, but the current one has 60"):
        SchedulerCore(DPSConfig(enable=True), 60).load_state_dict(core.state_dict())
    with pytest.raises(ValueError, match="selector 'dps'"):
        SchedulerCore(DPSConfig(enable=True, selector="uniform"), 50).load_state_dict(core.state_dict())


def test_corrupt_snapshot_is_a_clear_error(tmp_path):
    path = tmp_path / "s.npz"
    save_state(str(path), SchedulerCore(DPSConfig(), 10).state_dict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DPSStateError, match="corrupt"):
        load_state(str(path))
    path.write_bytes(b"not a zip file")
    with pytest.raises(DPSStateError, match="corrupt or not a DPS state"):
        load_state(str(path))
    with pytest.raises(FileNotFoundError):
        load_state(str(tmp_path / "missing.npz"))


def test_nan_prompts_stay_unobserved_and_are_logged(caplog):
    core = SchedulerCore(DPSConfig(enable=True), 10, rollouts_per_prompt=8)
    with caplog.at_level(logging.WARNING, logger="rpo_verl.dps"):
        m = core.update([1, 2, 3], [0.5, np.nan, 1.0])
    assert "NaN" in caplog.text and "[2]" in caplog.text
    assert m["dps/nan_prompts_step"] == 1 and m["dps/observed_prompts_step"] == 2
    f = core.selector.filter
    assert 2 not in f.active_ids and {1, 3} <= set(f.active_ids.tolist())
    assert m["dps/rollouts_step"] == 24  # rollouts were spent on the NaN prompt too


def test_metrics_on_a_hand_example():
    core = SchedulerCore(DPSConfig(enable=True), 6, rollouts_per_prompt=4)
    core.update([0, 1, 2], [0.5, 0.5, 0.0])  # prompts 0,1 partial; 2 unsolved
    ids = np.array([0, 1, 2, 3])  # priors: partial-argmax for 0,1; unsolved for 2; uniform (argmax 0) for 3
    m = core.update(ids, [0.5, 1.0, 0.0, 0.25])
    assert m["dps/effective_ratio"] == pytest.approx(2 / 4)
    # pred = [P, P, U, U], obs = [P, S, U, P]
    assert m["dps/pred_accuracy"] == pytest.approx(2 / 4)
    assert m["dps/partial_precision"] == pytest.approx(1 / 2)
    assert m["dps/partial_recall"] == pytest.approx(1 / 2)
    assert m["dps/selected_mu_partial_mean"] == pytest.approx((0.4 + 0.4 + 0.3 + 1 / 3) / 4)
    assert m["dps/rollouts_step"] == 16 and m["dps/rollouts_total"] == 28
    counts = np.array([2, 2, 2, 1, 0, 0])
    assert m["dps/sample_count_max"] == 2 and m["dps/sample_count_min"] == 0
    assert m["dps/sample_count_std"] == pytest.approx(counts.std())
    assert m["dps/sampled_prompts_frac"] == pytest.approx(4 / 6)
    assert core.metrics() == m


def test_duplicate_ids_are_pooled_into_one_observation():
    core = SchedulerCore(DPSConfig(enable=True), 5, rollouts_per_prompt=4)
    ref = SchedulerCore(DPSConfig(enable=True), 5, rollouts_per_prompt=4)
    core.update([1, 1, 2], [0.0, 1.0, np.nan])  # 0/4 + 4/4 correct -> 4/8 = partial
    ref.update([1, 2], [0.5, np.nan], num_rollouts=[8, 4])
    assert_states_identical(core.state_dict(), ref.state_dict())


@pytest.mark.parametrize(
    "ids,rates,msg",
    [([7], [0.5], "outside the train dataset"), ([1], [2.5], "raw task accuracy"), ([1], [-0.3], "raw task accuracy"),
     ([1], [np.inf], "raw task accuracy"), ([1, 2], [0.5], "differ in length")],
)
def test_bad_updates(ids, rates, msg):
    with pytest.raises(ValueError, match=msg):
        SchedulerCore(DPSConfig(enable=True), 5).update(ids, rates)


def test_tiny_float_noise_in_rates_is_clipped():
    core = SchedulerCore(DPSConfig(enable=True), 5)
    m = core.update([1], [1.0 + 1e-9])
    assert m["dps/solved_ratio"] == 1.0


def test_update_index_makes_retries_idempotent():
    core = SchedulerCore(DPSConfig(enable=True), 10)
    core.update([1], [0.5], update_index=0)
    before = core.state_dict()
    core.update([1], [0.5], update_index=0)  # retried call: ignored
    assert_states_identical(before, core.state_dict())
    with pytest.raises(ValueError, match="out of order"):
        core.update([1], [0.5], update_index=5)


def test_config_is_strict_and_off_by_default():
    cfg = build_dps_config(None)
    assert cfg.enable is False and cfg.selector == "dps" and cfg.decay == 0.7 and cfg.prior_alpha == 1.0
    with pytest.raises(ValueError, match="rpo_verl.dps.pool_ratio"):
        build_dps_config({"pool_ratio": 0.5})
    with pytest.raises(ValueError, match="rpo_verl.dps.bogus"):
        build_dps_config({"bogus": 1})


def test_select_index_makes_retried_selects_return_the_same_ids():
    core = SchedulerCore(DPSConfig(enable=True), 100)
    first = core.select(10, select_index=0)
    np.testing.assert_array_equal(core.select(10, select_index=0), first)  # retried call
    second = core.select(10, select_index=1)
    assert not np.array_equal(np.sort(first), np.sort(second))
    with pytest.raises(ValueError, match="out of order"):
        core.select(10, select_index=7)


def test_cursor_restores_the_random_stream_after_a_select():
    cfg = DPSConfig(enable=True, pool_ratio=2.0)
    a, b = SchedulerCore(cfg, 100), SchedulerCore(cfg, 100)
    a.update([1, 2], [0.5, 1.0])
    b.load_state_dict(a.state_dict())  # the snapshot after the update
    a.select(10)
    assert b.load_cursor_state(a.cursor_state())  # the cursor written after the select
    np.testing.assert_array_equal(a.select(10), b.select(10))
    stale = SchedulerCore(cfg, 100)
    assert not stale.load_cursor_state(a.cursor_state())  # cursor of a later update: ignored


def test_diff_states_reports_differences():
    a = {"x": np.array([1.0, np.nan]), "n": 3, "sub": {"y": np.arange(3)}, "t_time_s": 1.0}
    b = {"x": np.array([1.0, np.nan]), "n": 3, "sub": {"y": np.arange(3)}, "t_time_s": 2.0}
    assert diff_states(a, b) == []
    b["sub"]["y"] = np.array([0, 1, 5])
    b["n"] = 4
    assert diff_states(a, b) == ["n", "sub/y"]


def test_sample_counts_are_uint16_widen_on_overflow_and_round_trip_with_their_dtype(tmp_path):
    core = SchedulerCore(DPSConfig(enable=True, selector="uniform"), 2)
    _drive(core, 2, batch=2)
    assert core.sample_counts.dtype == np.uint16 and core.sample_counts.tolist() == [2, 2]
    path = str(tmp_path / "s.npz")
    save_state(path, core.state_dict())
    loaded = SchedulerCore(DPSConfig(enable=True, selector="uniform"), 2)
    loaded.load_state_dict(load_state(path))
    assert loaded.sample_counts.dtype == np.uint16
    assert_states_identical(core.state_dict(), loaded.state_dict())
    # both prompts at the uint16 limit (bookkeeping kept consistent): the next count widens to int64
    top = int(np.iinfo(np.uint16).max)
    core.sample_counts[:] = top
    core.count_hist = np.zeros(top + 1, np.int64)
    core.count_hist[top] = 2
    core.count_sum, core.count_sumsq = 2 * top, 2 * top * top
    m = core.update(core.select(2), [0.5, 0.5])
    assert core.sample_counts.dtype == np.int64 and core.sample_counts.tolist() == [top + 1] * 2
    assert m["dps/sample_count_max"] == m["dps/sample_count_min"] == m["dps/sample_count_mean"] == top + 1
    assert m["dps/sample_count_std"] == 0.0
    save_state(path, core.state_dict())
    wide = SchedulerCore(DPSConfig(enable=True, selector="uniform"), 2)
    wide.load_state_dict(load_state(path))
    assert wide.sample_counts.dtype == np.int64
    assert_states_identical(core.state_dict(), wide.state_dict())
    # a state saved before this layout (int32 counts) still loads, and a float array is refused
    old = core.state_dict() | {"sample_counts": np.array([3, 4], np.int32)}
    wide.load_state_dict(old)
    assert wide.sample_counts.tolist() == [3, 4]
    with pytest.raises(ValueError, match="sample_counts"):
        wide.load_state_dict(core.state_dict() | {"sample_counts": np.array([3.0, 4.0])})
