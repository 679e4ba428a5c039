"""The ``Problem`` a start-up check reports, and the config helpers every check module uses.

A low module on purpose: the generic checks (``rpo_verl.config.checks``), the CPU backend's
(``rpo_verl.backends.cpu.checks``), the data checks and every feature's checks
(``rpo_verl.<feature>.checks``, registered in ``rpo_verl.config.features.FEATURES``) import it, and
it imports nothing of rpo_verl.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


@dataclasses.dataclass(frozen=True)
class Problem:
    check: str  # the check's name (what rpo_verl.skip_checks takes)
    key: str  # the dotted setting to change
    message: str  # what is wrong and how to fix it
    environment: bool = False  # depends on this machine/files rather than on the config alone

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _get(config: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(config, key, default=default)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def _is_remote(path: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", path))


def _on_cpu(config: DictConfig) -> bool:
    return _get(config, "trainer.device") == "cpu"


def _safe(fn: Callable, *args) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)
