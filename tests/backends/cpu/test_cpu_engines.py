"""verl's FSDP engines are registered for device "cpu"; FSDP1 refuses with the settings to change."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def registry():
    # Importing verl's engine package triggers the deferred registration (post-import hook).
    from verl.workers.engine.base import EngineRegistry

    return EngineRegistry


def test_all_cpu_engines_registered(registry):
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    from rpo_verl.backends.cpu import REGISTRATIONS, engines

    assert engines.is_registered()
    assert REGISTRATIONS["engine"] == engines.ENGINE_NAMES
    for model_type, verl_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        cpu_cls = registry._engines[model_type]["fsdp2"]["cpu"]
        # verl's engine with only the FSDP2 wrapping step overridden (unpinned CPU offload)
        assert issubclass(cpu_cls, verl_cls) and set(vars(cpu_cls)) - {"__module__", "__doc__"} == {"_build_fsdp_module"}
    # verl's own cuda/npu registrations are untouched.
    assert registry._engines["language_model"]["fsdp2"]["cuda"] is FSDPEngineWithLMHead


def test_lookup_by_platform_device(registry, cpu_platform):
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    assert issubclass(registry.get_engine_cls("language_model", "fsdp2"), FSDPEngineWithLMHead)


@pytest.mark.parametrize("model_type", ["language_model", "value_model"])
def test_fsdp1_on_cpu_refuses_with_the_fix(registry, cpu_platform, model_type):
    engine_cls = registry.get_engine_cls(model_type, "fsdp")
    assert issubclass(engine_cls, registry._engines[model_type]["fsdp2"]["cpu"])
    with pytest.raises(ValueError) as excinfo:
        registry.new(model_type, "fsdp", model_config=None, engine_config=None, optimizer_config=None)
    message = str(excinfo.value)
    assert "actor_rollout_ref.actor.strategy=fsdp2" in message and "critic.strategy=fsdp2" in message


def test_register_is_idempotent(registry):
    from rpo_verl.backends.cpu import engines

    engines.register()
    engines._hook_registered = False  # force a second hook: it must skip, not assert on duplicates
    try:
        engines.register()
    finally:
        engines._hook_registered = True
    assert engines.is_registered()


def test_forward_only_engines_offload_unpinned_on_cpu():
    """verl gives the reference model CPUOffloadPolicy(pin_memory=True), which needs an accelerator;
    the CPU engine builds it unpinned during the wrapping step only and restores verl's name after."""
    import types

    from torch.distributed.fsdp import CPUOffloadPolicy

    from rpo_verl.backends.cpu.engines import _unpinned_offload

    module = types.SimpleNamespace(CPUOffloadPolicy=CPUOffloadPolicy)
    seen = []

    class FakeEngine:
        def _build_fsdp_module(self, fsdp_module):  # what verl does for forward-only engines
            policy = module.CPUOffloadPolicy(pin_memory=True)
            seen.append((isinstance(policy, CPUOffloadPolicy), policy.pin_memory, fsdp_module))
            raise RuntimeError("boom")  # the swap is undone on errors too

    engine = _unpinned_offload(FakeEngine, module)()
    with pytest.raises(RuntimeError, match="boom"):
        engine._build_fsdp_module("model")
    assert seen == [(True, False, "model")]
    assert module.CPUOffloadPolicy is CPUOffloadPolicy
