import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from rpo_verl.viz import MetricsError, load_run
from rpo_verl.viz import metrics as M

from .conftest import BATCH, PROMPT_LEN, synthetic_steps, write_file_logger, write_tensorboard


def test_file_logger_jsonl_loads_merged_by_step(grpo_jsonl):
    first = json.loads(grpo_jsonl.read_text().splitlines()[1])
    assert set(first) == {"step", "data"}  # verl's record layout
    df = load_run(grpo_jsonl)
    assert list(df.index) == list(range(0, 13))
    assert df.loc[0, "val-core/synth/acc/mean@1"] == pytest.approx(0.20)
    assert df.loc[8, "val-core/synth/acc/mean@1"] == pytest.approx(0.2 + 0.04 * 8)
    assert math.isnan(df.loc[4, "actor/pg_loss"])  # null -> NaN
    assert math.isnan(df.loc[0, "critic/score/mean"])  # not logged at step 0
    assert df["training/epoch"].dtype == float


def test_unreadable_lines_skipped_with_warning(tmp_path, grpo_jsonl):
    text = grpo_jsonl.read_text() + '{"step": 13, "data": {"critic/score/me'  # killed mid-write
    path = tmp_path / "cut.jsonl"
    path.write_text('{"step": 1, "data": {"note": "text", "critic/score/mean": [0.5]}}\n' + text)
    with pytest.warns(UserWarning, match="skipped 1 line"):
        df = load_run(path)
    assert df.index.max() == 12
    assert "note" not in df.columns


def test_tensorboard_matches_jsonl(tmp_path):
    records = synthetic_steps(rpo=True)
    jdf = load_run(write_file_logger(tmp_path / "run.jsonl", records))
    tdf = load_run(write_tensorboard(tmp_path / "tb", records))
    # tensorboard drops NaN-only tags' NaNs too; compare the columns both hold.
    common = [c for c in jdf.columns if c in tdf.columns]
    assert "eff/generated_tokens" in common and "val-core/synth/acc/mean@1" in common
    pd.testing.assert_frame_equal(
        jdf[common].drop(columns="actor/pg_loss"), tdf[common].drop(columns="actor/pg_loss"),
        check_exact=False, rtol=1e-6,
    )


def test_directory_merges_restarts_later_file_wins(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    write_file_logger(d / "job-restart0.jsonl", synthetic_steps(n_steps=10))
    later = [(s, {**m, "critic/score/mean": 100.0 + s}) for s, m in synthetic_steps(n_steps=12)[8:]]
    f1 = write_file_logger(d / "job-restart1.jsonl", later)
    os.utime(f1, (os.path.getmtime(d / "job-restart0.jsonl") + 10,) * 2)
    df = load_run(d)
    assert df.index.max() == 12
    assert df.loc[7, "critic/score/mean"] < 10
    assert df.loc[8, "critic/score/mean"] == 108.0  # step redone after the resume
    assert df.loc[12, "critic/score/mean"] == 112.0


def test_resumed_run_segments_are_joined_and_superseded_runs_ignored(tmp_path):
    # rpo_verl's launcher layout: metrics.jsonl (current) + metrics.<k>.jsonl (earlier segments).
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    steps = synthetic_steps(n_steps=12)
    write_file_logger(ckpt / "metrics.1.jsonl", steps[:5])
    write_file_logger(ckpt / "metrics.2.jsonl", [(s, {**m, "critic/score/mean": 50.0}) for s, m in steps[4:9]])
    write_file_logger(ckpt / "metrics.jsonl", [(s, {**m, "critic/score/mean": 60.0}) for s, m in steps[8:]])
    (ckpt / "superseded-20260101-000000").mkdir()
    write_file_logger(ckpt / "superseded-20260101-000000" / "metrics.jsonl", [(99, {"critic/score/mean": 1.0})])
    for path in (ckpt, ckpt / "metrics.jsonl"):
        assert [f.name for f in M.find_metric_sources(path)] == ["metrics.1.jsonl", "metrics.2.jsonl", "metrics.jsonl"]
        df = load_run(path)
        assert list(df.index) == list(range(13))
        assert df.loc[3, "critic/score/mean"] < 10 and df.loc[4, "critic/score/mean"] == 50.0
        assert df.loc[8, "critic/score/mean"] == 60.0 and df.loc[12, "critic/score/mean"] == 60.0
    # Without a metrics.jsonl the folder is searched, superseded-* left out.
    (ckpt / "metrics.jsonl").rename(tmp_path / "elsewhere.jsonl")
    for f in ckpt.glob("metrics.*.jsonl"):
        f.rename(ckpt / f"seg{f.name}")
    assert 99 not in load_run(ckpt).index


def test_missing_or_empty_sources_raise_clear_errors(tmp_path):
    with pytest.raises(MetricsError, match="no such file"):
        load_run(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricsError, match=r"no \*\.jsonl"):
        load_run(tmp_path / "empty")
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(MetricsError, match="no metrics found"):
        load_run(tmp_path / "blank.jsonl")


def test_generated_tokens_prefers_plugin_counter(rpo_jsonl):
    df = load_run(rpo_jsonl)
    cum, source = M.cumulative_generated_tokens(df)
    assert source == "cumsum of eff/generated_tokens"
    expected = np.cumsum([BATCH * df.loc[s, "response_length/mean"] * 0.1 for s in range(1, 13)])
    np.testing.assert_allclose(cum.values, expected)
    full, fsource = M.cumulative_full_path_tokens(df)
    assert fsource == "cumsum of eff/full_path_tokens"
    assert (full.values > cum.values).all()


def test_generated_tokens_from_verl_metrics_is_exact(grpo_jsonl):
    df = load_run(grpo_jsonl)
    cum, source = M.cumulative_generated_tokens(df)
    assert source.startswith("perf/total_num_tokens")
    expected = np.cumsum([BATCH * df.loc[s, "response_length/mean"] for s in range(1, 13)])
    np.testing.assert_allclose(cum.values, expected)
    assert M.cumulative_full_path_tokens(df) is None


def test_generated_tokens_batch_size_fallback_and_absence():
    df = pd.DataFrame({"response_length/mean": [10.0, 20.0]}, index=[1, 2])
    assert M.cumulative_generated_tokens(df) is None
    cum, source = M.cumulative_generated_tokens(df, batch_size=4)
    assert list(cum.values) == [40.0, 120.0] and "× 4" in source
    cumcol = pd.DataFrame({"rpo/generated_tokens_cum": [5.0, 9.0], "eff/token_saving_ratio": [0.9, 0.9]})
    assert M.cumulative_generated_tokens(cumcol)[1] == "rpo/generated_tokens_cum"


def test_validation_prefers_acc_over_reward(grpo_jsonl):
    val = M.validation_accuracy(load_run(grpo_jsonl))
    assert sorted(val) == ["other acc mean@1", "synth acc mean@1"]
    assert list(val["synth acc mean@1"].index) == [0, 4, 8, 12]
    only_reward = pd.DataFrame({"val-core/x/reward/mean@4": [0.5]}, index=[3])
    assert list(M.validation_accuracy(only_reward)) == ["x reward mean@4"]


def test_step_time_breakdown(grpo_jsonl):
    df = load_run(grpo_jsonl)
    b = M.step_time_breakdown(df)
    assert list(b.index) == list(range(1, 13))
    assert list(b.columns) == [
        "gen", "reward", "old_log_prob", "adv", "update_actor", "update_weights", "other", "testing",
    ]
    np.testing.assert_allclose(b["other"].values, 1.5 - (0.1 + 0.3 + 0.01 + 0.8 + 0.05), atol=1e-9)
    np.testing.assert_allclose(b.drop(columns="testing").sum(axis=1).values, df.loc[1:, "timing_s/step"].values)
    assert b.loc[4, "testing"] == 0.7 and b.loc[5, "testing"] == 0.0
    assert M.step_time_breakdown(pd.DataFrame({"x": [1.0]})) is None
