"""verl's FSDP training engines, registered for device ``cpu`` in ``EngineRegistry``.

verl registers ``FSDPEngineWithLMHead`` (language_model) and ``FSDPEngineWithValueHead``
(value_model) for backends fsdp/fsdp2 on devices cuda/npu only; ``EngineRegistry.get_engine_cls``
looks engines up by the platform's device name, so on the CPU platform it finds nothing. Here:

* backend ``fsdp2`` on ``cpu`` -> a subclass of verl's engine that changes one thing: verl gives
  forward-only engines (the reference model) ``CPUOffloadPolicy(pin_memory=True)``, and pinning host
  memory needs an accelerator ("Cannot access accelerator device"). On CPU the "offloaded" copy is
  the working copy, so the policy stays but unpinned; everything else is verl's engine (gloo works);
* backend ``fsdp`` on ``cpu`` -> a subclass that refuses at construction with the settings to
  change: FSDP1 needs an accelerator (``FullyShardedDataParallel(device_id=...)``). Mapping it
  silently to FSDP2 would leave ``actor.strategy`` saying one thing while running another.

The FSDP engine module is heavy (transformers, peft, ...) and the plugin runs in every process
that imports verl, so the registration is deferred until verl itself imports that module
(a post-import hook; immediately if it is already imported).
"""

from __future__ import annotations

import logging

import wrapt

logger = logging.getLogger(__name__)

ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
DEVICE = "cpu"
# (model_type, backend) -> name of the engine class in ENGINE_MODULE
ENGINE_CLASSES = {
    ("language_model", "fsdp2"): "FSDPEngineWithLMHead",
    ("value_model", "fsdp2"): "FSDPEngineWithValueHead",
    ("language_model", "fsdp"): "FSDPEngineWithLMHead",
    ("value_model", "fsdp"): "FSDPEngineWithValueHead",
}
REFUSED_BACKEND = "fsdp"
# "model_type:backend:device", the form tests/plugin_probe.py checks.
ENGINE_NAMES = [f"{model_type}:{backend}:{DEVICE}" for model_type, backend in ENGINE_CLASSES]

FSDP1_ON_CPU_MESSAGE = (
    "FSDP1 (strategy 'fsdp') cannot run on the CPU platform: it needs an accelerator. Use FSDP2: set "
    "actor_rollout_ref.actor.strategy=fsdp2 (actor_rollout_ref.ref.strategy follows it) and, when a critic "
    "is trained, critic.strategy=fsdp2; for consistency also actor_rollout_ref.actor.fsdp_config.strategy=fsdp2, "
    "actor_rollout_ref.ref.fsdp_config.strategy=fsdp2 and critic.fsdp.strategy=fsdp2."
)

_hook_registered = False


def _refusing_fsdp1(engine_cls: type, verl_name: str) -> type:
    """A subclass of ``engine_cls`` (EngineRegistry requires a BaseEngine) that refuses to start."""

    def __init__(self, *args, **kwargs):
        raise ValueError(FSDP1_ON_CPU_MESSAGE)

    return type(f"CPURefuses{verl_name}", (engine_cls,), {"__init__": __init__, "__module__": __name__})


def _unpinned_offload(engine_cls: type, module) -> type:
    """A subclass of ``engine_cls`` whose FSDP2 wrapping uses unpinned CPU offload (see above)."""
    policy_cls = module.CPUOffloadPolicy

    class UnpinnedCPUOffloadPolicy(policy_cls):
        def __init__(self, pin_memory: bool = False):
            super().__init__(pin_memory=False)

    def _build_fsdp_module(self, fsdp_module):
        # verl reads CPUOffloadPolicy from its module globals inside this call; swap it for the call only
        module.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy
        try:
            return engine_cls._build_fsdp_module(self, fsdp_module)
        finally:
            module.CPUOffloadPolicy = policy_cls

    return type(f"CPU{engine_cls.__name__}", (engine_cls,),
                {"_build_fsdp_module": _build_fsdp_module, "__module__": __name__})


def _register_from(module) -> None:
    from verl.workers.engine.base import EngineRegistry

    cpu_classes = {name: _unpinned_offload(getattr(module, name), module) for name in set(ENGINE_CLASSES.values())}
    for (model_type, backend), class_name in ENGINE_CLASSES.items():
        existing = EngineRegistry._engines.get(model_type, {}).get(backend, {})
        if DEVICE in existing:  # idempotent; EngineRegistry.register asserts on duplicates
            continue
        engine_cls = cpu_classes[class_name]
        if backend == REFUSED_BACKEND:
            engine_cls = _refusing_fsdp1(engine_cls, class_name)
        EngineRegistry.register(model_type=model_type, backend=backend, device=DEVICE)(engine_cls)


def _on_engine_module_imported(module) -> None:
    # An exception here would make verl's own import fail; log it instead (the contract test
    # notices the missing registrations).
    try:
        _register_from(module)
    except Exception:
        logger.exception("rpo_verl: registering verl's FSDP engines for device 'cpu' failed")


def register() -> None:
    """Register (now, or as soon as verl imports its FSDP engine module). Idempotent."""
    global _hook_registered
    if _hook_registered:
        return
    _hook_registered = True
    wrapt.register_post_import_hook(_on_engine_module_imported, ENGINE_MODULE)


def is_registered() -> bool:
    """Whether every CPU engine is in verl's EngineRegistry (imports the engine module)."""
    from verl.workers.engine.base import EngineRegistry

    engines = EngineRegistry._engines
    return all(DEVICE in engines.get(model_type, {}).get(backend, {}) for model_type, backend in ENGINE_CLASSES)
