"""Fixtures for trainer tests: tiny prompt files and the dense test reward (the tiny model,
``rpo_main`` and ``compose_config`` come from tests/conftest.py)."""

from pathlib import Path

import pytest

DENSE_REWARD = Path(__file__).with_name("dense_reward.py")


@pytest.fixture(scope="session")
def prompt_files(tmp_path_factory, add_prompts):
    folder = tmp_path_factory.mktemp("prompts")
    return add_prompts(folder / "train.parquet", 16), add_prompts(folder / "val.parquet", 4, seed=5)


@pytest.fixture(scope="session")
def dense_reward():
    """Path of the dense test reward (fraction of vowels): non-zero advantages with a random model."""
    return DENSE_REWARD
