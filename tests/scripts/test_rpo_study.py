"""scripts/bench/rpo_study.py: the per-variant summary of an rpo_vs_full report, and its plot."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "rpo_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("rpo_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report():
    arm = {"val_acc": {"0": 0.9, "2": 0.8, "4": 0.6}, "train_reward": [0.1, 0.2]}
    rpo = {"val_acc": {"0": 0.9, "2": 0.7, "4": 0.4}, "train_reward": [0.3, 0.1],
           "zero_variance_group_frac": [0.5, 0.25]}
    return {"commit": "abc", "command": "x", "cache_build": {"correct_frac": 0.4, "mean_length": 20.0},
            "arms": {"grpo": arm, "rpo_grpo": rpo},
            "comparisons": {"rpo_grpo_vs_grpo": {"final_val_acc_delta_points": -20.0,
                                                 "generated_tokens_ratio": 0.5, "rollout_time_ratio": 0.7}}}


def test_summary_averages_validation_after_step_0(study, tmp_path):
    s = study.summarise(_report())
    assert s["mean_val_after_0_grpo"] == pytest.approx(0.7) and s["mean_val_after_0_rpo"] == pytest.approx(0.55)
    assert s["zero_variance_group_frac_rpo"] == pytest.approx(0.375)
    assert s["final_delta_points"] == -20.0 and s["generated_tokens_ratio"] == 0.5
    study.plot({"a": s, "b": s}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_unknown_variant_is_named(study, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["rpo_study.py", "--out", str(tmp_path), "--variants", "greedy_cache,nope"])
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: None)
    monkeypatch.setattr(study, "summarise", lambda report: {"mean_val_after_0_grpo": 0, "mean_val_after_0_rpo": 0,
                                                             "final_delta_points": 0, "generated_tokens_ratio": 1})
    (tmp_path / "greedy_cache").mkdir()
    (tmp_path / "greedy_cache" / "rpo_vs_full.json").write_text("{}")
    with pytest.raises(SystemExit, match="unknown variant 'nope'"):
        study.main()
