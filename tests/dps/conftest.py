"""Fixtures for the DPS trainer tests: the tiny model, prompt files whose row index differs from
``extra_info.index``, composing rpo_verl's config, and running ``python -m rpo_verl.main`` under a
hard timeout (``rpo_main`` from tests/conftest.py; helpers are fixtures: tests use importlib mode)."""

import re
from pathlib import Path

import pandas as pd
import pytest

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


@pytest.fixture(scope="session")
def dps_helpers(rpo_main, compose_config):
    return {"write_prompts": write_prompts, "run_main": rpo_main, "compose": compose_config, "reward": DPS_REWARD,
            "row_pattern": ROW_PATTERN}
