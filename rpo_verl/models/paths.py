"""Where prepared models live: ``$RPO_VERL_CACHE`` (default ``~/.cache/rpo_verl``) / models / <name>."""

from __future__ import annotations

import os
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-smollm2"
TOKENIZER_NAME = "smollm2-tokenizer"


def cache_root() -> Path:
    """Root of every rpo_verl cache (models, data); ``RPO_VERL_CACHE`` overrides it."""
    return Path(os.environ.get("RPO_VERL_CACHE") or Path.home() / ".cache" / "rpo_verl").expanduser()


def models_dir() -> Path:
    return cache_root() / "models"


def default_model_path(tiny: bool = False) -> Path:
    """Default output folder of ``scripts/prepare_model.py`` (``--tiny`` for the random test model)."""
    return models_dir() / (TINY_NAME if tiny else SMOLLM2_NAME)


def tokenizer_path() -> Path:
    """The converted SmolLM2 tokenizer shared by both models (converted once)."""
    return models_dir() / TOKENIZER_NAME
