"""scripts/bench/plot_rpo_regimes.py on synthetic results files of all three formats."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "plot_rpo_regimes.py"


@pytest.fixture(scope="module")
def regimes():
    spec = importlib.util.spec_from_file_location("plot_rpo_regimes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(seed, arm, tokens, step_s, rollout_s, mean_len):
    return {"seed": seed, "arm": arm, "steps": 2, "generated_tokens": tokens, "full_path_equivalent_tokens": 4000,
            "mean_response_tokens": mean_len, "rollout_s": rollout_s, "step_s": step_s, "val_acc": [0.2, 0.3],
            "val_acc_final": 0.3}


def _files(tmp_path):
    long_chain = tmp_path / "rpo_long_chain.json"
    long_chain.write_text(json.dumps({"task": "long", "commit": "x", "runs": [
        _run(0, "grpo", 4000, 100.0, 60.0, 180.0), _run(0, "rpo", 200, 45.0, 4.0, 180.0),
        _run(1, "grpo", 3000, 80.0, 40.0, 150.0), _run(1, "rpo", 300, 44.0, 4.0, 150.0),
        _run(2, "grpo", 3000, 80.0, 40.0, 150.0)]}))  # seed 2 has no RPO run yet: no point
    report = tmp_path / "rpo_vs_full.json"
    report.write_text(json.dumps({"settings": {"batch": 2, "n": 2}, "arms": {
        "grpo": {"steps": [1, 2], "generated_tokens": [100, 60], "step_s": [10.0, 10.0], "rollout_s": [3.0, 2.0]},
        "rpo_grpo": {"steps": [1, 2], "generated_tokens": [40, 40], "step_s": [8.0, 8.0], "rollout_s": [1.0, 1.0]}}}))
    listed = tmp_path / "points.json"
    listed.write_text(json.dumps({"task": "oneline", "source": "table", "points": [
        {"mean_response_tokens": 22.6, "tokens_ratio": 0.57, "step_time_ratio": 0.70, "grpo_rollout_share": 0.28}]}))
    return long_chain, report, listed


def test_points_of_each_format(regimes, tmp_path):
    long_chain, report, listed = _files(tmp_path)
    lc = regimes.points_from(long_chain)
    assert [q["source"] for q in lc] == ["rpo_long_chain.json seed 0", "rpo_long_chain.json seed 1"]
    assert lc[0]["tokens_ratio"] == pytest.approx(0.05) and lc[0]["step_time_ratio"] == pytest.approx(0.45)
    assert lc[0]["step_time_floor"] == pytest.approx(0.4) and lc[1]["mean_response_tokens"] == 150.0
    (vs,) = regimes.points_from(report)
    assert vs["mean_response_tokens"] == 20.0 and vs["tokens_ratio"] == pytest.approx(0.5)
    assert vs["step_time_ratio"] == pytest.approx(0.8) and vs["step_time_floor"] == pytest.approx(0.75)
    (one,) = regimes.points_from(listed)
    assert one["task"] == "oneline" and one["step_time_floor"] == pytest.approx(0.72)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        regimes.points_from(bad)


def test_main_writes_png_and_points(regimes, tmp_path, capsys):
    files = _files(tmp_path)
    out = tmp_path / "fig" / "regimes.png"
    assert regimes.main([*map(str, files), "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    written = json.loads(out.with_suffix(".json").read_text())
    assert len(written["points"]) == 4 and {q["task"] for q in written["points"]} == {"long", "arith oneline", "oneline"}
    assert "long: 2 points" in capsys.readouterr().out


def test_committed_one_line_points_plot(regimes, tmp_path):
    committed = regimes.default_files()
    assert regimes.RESULTS / "rpo_regimes_oneline.json" in committed
    assert regimes.main([*map(str, committed), "--out", str(tmp_path / "r.png")]) == 0
