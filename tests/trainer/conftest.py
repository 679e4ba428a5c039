"""Fixtures for trainer tests: the tiny model and tiny prompt files."""

import pytest

from rpo_verl.models.paths import default_model_path
from trainer_helpers import write_prompts


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
