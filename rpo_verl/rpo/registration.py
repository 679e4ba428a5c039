"""Registers RPO's suffix agent loop (``rpo_suffix_agent``) in verl's agent-loop registry.

Component module for ``rpo_verl.plugin.COMPONENTS``. verl imports the plugin in *every* process
that imports verl, but only agent-loop workers read the agent-loop registry; importing verl's
``agent_loop`` module (hydra, transformers, the worker configs: seconds) everywhere would slow
every process. So ``register()`` writes the registry entry at once if that module is already
imported, and otherwise arranges for it to be written right after that module is first imported.
The entry is what verl's ``@register`` decorator writes: ``{"_target_": "<module>.<class>"}``.
"""

from __future__ import annotations

import importlib.abc
import sys

AGENT_LOOP_NAME = "rpo_suffix_agent"
REGISTRATIONS = {"agent_loop": [AGENT_LOOP_NAME]}

_VERL_AGENT_LOOP = "verl.experimental.agent_loop.agent_loop"
_TARGET = "rpo_verl.rpo.agent_loop.RPOSuffixAgentLoop"


def _add_entry(module) -> None:
    module._agent_loop_registry[AGENT_LOOP_NAME] = {"_target_": _TARGET}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after ``name`` has been executed by its normal loader."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                break
        else:
            return None
        original = spec.loader.exec_module  # this loader instance serves only this module
        callback = self.callback

        def exec_module(module):
            original(module)
            callback(module)

        spec.loader.exec_module = exec_module
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one-shot
        return spec


def register() -> None:
    """Idempotent: make ``rpo_suffix_agent`` visible in verl's agent-loop registry."""
    module = sys.modules.get(_VERL_AGENT_LOOP)
    if module is not None and hasattr(module, "_agent_loop_registry"):
        _add_entry(module)
        return
    if not any(isinstance(f, _AfterImport) and f.name == _VERL_AGENT_LOOP for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_VERL_AGENT_LOOP, _add_entry))
