"""Compose rpo_verl's Hydra config (rpo_trainer.yaml over verl's ppo_trainer.yaml) for tests.

Composition imports verl and takes seconds, so each override set is composed once per session
and handed out as a fresh copy.
"""

import copy
import functools

import pytest
from omegaconf import OmegaConf

from rpo_verl.models.paths import default_model_path


@functools.lru_cache(maxsize=None)
def _compose(overrides: tuple[str, ...]):
    from hydra import compose, initialize_config_module

    with initialize_config_module("rpo_verl.config", version_base=None):
        return compose("rpo_trainer", overrides=list(overrides))


@pytest.fixture
def compose_config():
    """``compose_config("preset=cpu", "data.train_batch_size=8")`` -> a fresh DictConfig."""

    def _make(*overrides: str):
        cfg = copy.deepcopy(_compose(tuple(overrides)))
        OmegaConf.set_struct(cfg, True)
        return cfg

    return _make


@pytest.fixture
def tiny_model():
    """The tiny random SmolLM2-shaped model folder (scripts/prepare_model.py --tiny)."""
    path = default_model_path(tiny=True)
    if not (path / "config.json").exists():
        pytest.skip(f"{path} missing: run `python scripts/prepare_model.py --tiny`")
    return str(path)
