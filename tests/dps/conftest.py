"""Fixtures for the DPS trainer tests: the tiny model, prompt files whose row index differs from
``extra_info.index``, composing rpo_verl's config, and running ``python -m rpo_verl.main`` under a
hard timeout (helpers are fixtures: tests use importlib mode)."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rpo_verl.models.paths import default_model_path

REPO = Path(__file__).resolve().parents[2]
DPS_REWARD = Path(__file__).with_name("dps_reward.py")
ROW_PATTERN = re.compile(r"Q(\d+):")


def write_prompts(path, classes: list[str]) -> str:
    """One prompt per class; row ``i`` reads ``Q{i}: ...`` and has ``extra_info.index = 100 + i``."""
    rows = []
    for i, cls in enumerate(classes):
        rows.append({
            "data_source": "rpo_verl_test/dps",
            "prompt": [{"role": "user", "content": f"Q{i}: What is {i % 7} + {i % 5}? Reply with the number."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": cls},
            "extra_info": {"split": "train", "index": 100 + i},
        })
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def run_main(args: list[str], timeout: float, log_path: Path | None = None, env: dict | None = None):
    """``python -m rpo_verl.main <args>`` in its own process group, killed as a whole on timeout."""
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "rpo_verl.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if log_path:
            log_path.write_text(out)
        pytest.fail(f"rpo_verl.main did not finish within {timeout:.0f} s (hang?); last output:\n{out[-6000:]}")
    if log_path:
        log_path.write_text(out)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("rpo_verl.config", version_base=None):
        return hydra_compose("rpo_trainer", overrides=list(overrides))


@pytest.fixture(scope="session")
def tiny_model_path():
    path = default_model_path(tiny=True)
    if not (path / "config.json").exists():
        pytest.skip(f"{path} missing: run `python scripts/prepare_model.py --tiny`")
    return str(path)


@pytest.fixture(scope="session")
def dps_helpers():
    return {"write_prompts": write_prompts, "run_main": run_main, "compose": compose, "reward": DPS_REWARD,
            "row_pattern": ROW_PATTERN}
