"""The deferred agent-loop registration: the entry appears right after verl's module is imported."""

import sys

from rpo_verl.rpo import registration


def test_after_import_hook_registers_once(tmp_path, monkeypatch):
    (tmp_path / "fake_agent_loop_mod.py").write_text("_agent_loop_registry = {'single_turn_agent': {}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registration, "_VERL_AGENT_LOOP", "fake_agent_loop_mod")
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    sys.modules.pop("fake_agent_loop_mod", None)
    registration.register()
    registration.register()  # idempotent: a single pending hook
    hooks = [f for f in sys.meta_path if isinstance(f, registration._AfterImport)]
    assert len(hooks) == 1
    import fake_agent_loop_mod

    assert fake_agent_loop_mod._agent_loop_registry["rpo_suffix_agent"] == {
        "_target_": "rpo_verl.rpo.agent_loop.RPOSuffixAgentLoop"
    }
    assert not any(isinstance(f, registration._AfterImport) for f in sys.meta_path)  # one-shot
    fake_agent_loop_mod._agent_loop_registry.clear()
    registration.register()  # module already imported: written at once
    assert "rpo_suffix_agent" in fake_agent_loop_mod._agent_loop_registry
    sys.modules.pop("fake_agent_loop_mod", None)


def test_registrations_constant():
    assert registration.REGISTRATIONS == {"agent_loop": ["rpo_suffix_agent"]}
