"""CPU execution backend for verl 0.9.1 (plugin component ``rpo_verl.backends.cpu``).

Registers, through verl's own extension points:

* platform ``cpu`` in ``PlatformRegistry`` (``platform.CPUPlatform``; selected only by env
  ``VERL_PLATFORM=cpu``, never auto-detected);
* verl's FSDP engines for device ``cpu`` in ``EngineRegistry`` (``engines``: fsdp2 runs, fsdp
  refuses with the settings to change);
* when ``VERL_PLATFORM=cpu``: the process-group backend fix (``process_group``).

A trainer uses ``env.cpu_worker_env()`` and ``env.activate_cpu_platform()``; the start-up check
``cpu_options`` (``checks``) names the settings that cannot run on CPU; see ``env`` for the recipe.
"""

from __future__ import annotations

import logging
import os

from rpo_verl.backends.cpu.engines import ENGINE_NAMES

logger = logging.getLogger(__name__)

REGISTRATIONS: dict[str, list[str]] = {"platform": ["cpu"], "engine": list(ENGINE_NAMES)}


def _register_platform() -> None:
    from verl.plugin.platform import PlatformRegistry

    from rpo_verl.backends.cpu.platform import PLATFORM_NAME, CPUPlatform

    existing = PlatformRegistry.get(PLATFORM_NAME)
    if existing is CPUPlatform:
        return
    if existing is not None:  # a later verl ships its own: keep it rather than shadow it
        logger.warning(
            "rpo_verl: verl already registers platform %r (%s); not replacing it with rpo_verl's CPUPlatform",
            PLATFORM_NAME,
            existing.__name__,
        )
        return
    PlatformRegistry.register(platform=PLATFORM_NAME)(CPUPlatform)


def register() -> None:
    """Idempotent; cheap (the FSDP engine registration waits until verl imports its engines)."""
    from rpo_verl.backends.cpu import engines

    _register_platform()
    engines.register()
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        from rpo_verl.backends.cpu.process_group import apply_process_group_fix

        apply_process_group_fix()


# Import verl last, after register() exists. Submodules (platform.py) subclass verl classes; if
# one of them were imported before verl, its `from verl...` line would start verl's plugin
# loading, which calls register() while that submodule is only half executed (ImportError,
# swallowed by verl). Importing verl here, from the package, lets the plugin finish first.
import verl  # noqa: E402, F401 - see the comment above
