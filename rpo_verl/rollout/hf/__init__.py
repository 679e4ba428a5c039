"""HF-transformers rollout backend for verl 0.9.1, selected with ``actor_rollout_ref.rollout.name=hf``.

It plugs in exactly where vLLM does: ``HFReplica`` (``RolloutReplicaRegistry``) launches one
``HFRolloutServer`` Ray actor per replica, ``HFServerAdapter`` (``_ROLLOUT_REGISTRY``) pushes the
trainer's weights to it every step. Heavy modules are imported only when verl asks for them.
"""

from __future__ import annotations

import wrapt

from rpo_verl.rollout.hf.options import BACKEND_NAME, HFEngineOptions, check_rollout_config

ADAPTER_CLASS = "rpo_verl.rollout.hf.adapter.HFServerAdapter"
REGISTRATIONS = {"rollout": [f"{BACKEND_NAME}:async"], "rollout_replica": [BACKEND_NAME]}
_ADAPTER_REGISTRY_MODULE = "verl.workers.rollout.base"
_REPLICA_REGISTRY_MODULE = "verl.workers.rollout.replica"

__all__ = ["BACKEND_NAME", "HFEngineOptions", "REGISTRATIONS", "check_rollout_config", "register"]

_hooks_installed = False


def _load_replica():
    from rpo_verl.rollout.hf.replica import HFReplica

    return HFReplica


def _register_adapter(module) -> None:
    # verl has no register function for adapters: add our own key to its module-level dict.
    module._ROLLOUT_REGISTRY[(BACKEND_NAME, "async")] = ADAPTER_CLASS


def _register_replica(module) -> None:
    module.RolloutReplicaRegistry.register(BACKEND_NAME, _load_replica)


def register() -> None:
    """Register ``hf`` in verl's adapter and replica registries (idempotent).

    Runs now if verl's rollout modules are imported, otherwise right after verl imports them, so
    processes that never touch rollout (verl imports the plugin in every process) pay nothing.
    """
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    wrapt.register_post_import_hook(_register_adapter, _ADAPTER_REGISTRY_MODULE)
    wrapt.register_post_import_hook(_register_replica, _REPLICA_REGISTRY_MODULE)
