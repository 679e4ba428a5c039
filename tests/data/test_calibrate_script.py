"""Smoke test of scripts/bench/calibrate_task.py on the tiny random model (numbers are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

from rpo_verl.models import prepare_tiny

ROOT = Path(__file__).resolve().parents[2]


def test_calibrate_task_writes_json_and_png(tmp_path):
    model = prepare_tiny()
    cmd = [sys.executable, str(ROOT / "scripts/bench/calibrate_task.py"), "--model", str(model), "--n-prompts", "3",
           "--k", "2", "--max-new-tokens", "4", "--batch", "4", "--out", str(tmp_path / "cal")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads((tmp_path / "cal.json").read_text())
    assert (tmp_path / "cal.png").stat().st_size > 0
    assert sum(result["correct_per_group_histogram"].values()) == 3
    assert 0.0 <= result["pass_at_1"] <= 1.0 and result["max_response_tokens_seen"] <= 4
    assert len(result["examples"]) == 6 and result["args"]["seed"] == 0


def test_calibrate_reasoning_style_reports_lengths_per_operation_count(tmp_path):
    model = prepare_tiny()
    cmd = [sys.executable, str(ROOT / "scripts/bench/calibrate_task.py"), "--model", str(model), "--style", "reasoning",
           "--n-prompts", "6", "--k", "2", "--max-new-tokens", "6", "--batch", "12", "--out", str(tmp_path / "cal")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads((tmp_path / "cal.json").read_text())
    assert "Final answer: N" in result["examples"][0]["prompt"] and "steps_max=3" in result["task"]
    assert result["median_response_tokens"] <= result["p90_response_tokens"] <= 6
    by_steps = result["by_steps"]
    assert set(by_steps) <= {"1", "2", "3"} and sum(v["prompts"] for v in by_steps.values()) == 6
    for stats in by_steps.values():
        assert 0.0 <= stats["pass_at_1"] <= 1.0 and 1 <= stats["mean"] <= 6
