"""Fixtures for the CPU backend tests."""

import pytest


@pytest.fixture
def cpu_platform(monkeypatch):
    """Make verl's platform singleton the CPU platform for one test (restored afterwards)."""
    from verl.plugin.platform import platform_manager

    from rpo_verl.backends.cpu.platform import CPUPlatform

    platform = CPUPlatform()
    monkeypatch.setattr(platform_manager, "_current_platform", platform)
    return platform
