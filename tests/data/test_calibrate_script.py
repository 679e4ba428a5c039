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
