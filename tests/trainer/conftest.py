"""Fixtures for trainer tests: the tiny model, tiny prompt files, composing the config and running
``python -m rpo_verl.main`` under a hard timeout (helpers are fixtures: tests use importlib mode)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rpo_verl.models.paths import default_model_path


REPO = Path(__file__).resolve().parents[2]
DENSE_REWARD = Path(__file__).with_name("dense_reward.py")


def write_prompts(path, n: int, seed: int = 0) -> str:
    """``n`` one-line addition prompts in verl's RL parquet format."""
    rows = []
    for i in range(n):
        a, b = (seed + 3 * i) % 10, (seed + 7 * i + 1) % 10
        rows.append({
            "data_source": "rpo_verl_test/add",
            "prompt": [{"role": "user", "content": f"What is {a} + {b}? Reply with just the number."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"split": "test", "index": i},
        })
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def run_main(args: list[str], timeout: float, log_path: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m rpo_verl.main <args>`` in its own process group, killed as a whole on timeout
    (so a Ray hang fails the test instead of blocking CI)."""
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
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
    """rpo_verl's composed config (rpo_trainer.yaml over verl's ppo_trainer.yaml)."""
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
def prompt_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    return write_prompts(folder / "train.parquet", 16), write_prompts(folder / "val.parquet", 4, seed=5)


@pytest.fixture(scope="session")
def dense_reward():
    """Path of the dense test reward (fraction of vowels): non-zero advantages with a random model."""
    return DENSE_REWARD


@pytest.fixture(scope="session")
def rpo_main():
    """``rpo_main(args, timeout, log_path=None)`` runs ``python -m rpo_verl.main`` (see ``run_main``)."""
    return run_main


@pytest.fixture(scope="session")
def compose_config():
    """``compose_config(*overrides)`` -> rpo_verl's composed DictConfig."""
    return compose
