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
    assert registry._engines["language_model"]["fsdp2"]["cpu"] is FSDPEngineWithLMHead
    assert registry._engines["value_model"]["fsdp2"]["cpu"] is FSDPEngineWithValueHead
    # verl's own cuda/npu registrations are untouched.
    assert registry._engines["language_model"]["fsdp2"]["cuda"] is FSDPEngineWithLMHead


def test_lookup_by_platform_device(registry, cpu_platform):
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    assert registry.get_engine_cls("language_model", "fsdp2") is FSDPEngineWithLMHead


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
