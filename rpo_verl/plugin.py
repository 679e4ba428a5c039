"""verl plugin entry point (entry-point group ``verl.plugins``).

verl imports this module in every process that imports verl (driver, TaskRunner, agent-loop,
reward and training workers), so every rpo_verl name is registered wherever verl looks it up.
verl swallows exceptions raised here (DEBUG log only), so each component failure is logged at
ERROR level and kept in ``FAILED``; ``tests/test_plugin.py`` asserts that nothing failed.

Each component module exposes ``register()`` (idempotent) and ``REGISTRATIONS``, a mapping
``{registry kind: [names]}`` that the contract test checks against verl's own registries.

Before registering anything, the plugin installs rpo_verl's filters of known-irrelevant warnings
and log records (``rpo_verl.utils.noise_filters``), so that they are in place in every process
before verl imports its optional engines.
"""

from __future__ import annotations

import importlib
import logging
import traceback

logger = logging.getLogger("rpo_verl.plugin")

# Order matters only where one registration needs another (platform before engines).
COMPONENTS: tuple[str, ...] = (
    "rpo_verl.backends.cpu",
    "rpo_verl.r2vpo",
    "rpo_verl.rpo.registration",
    "rpo_verl.rollout.hf",
    "rpo_verl.rollout.vllm_cpu",
)

FAILED: dict[str, str] = {}


def _install_noise_filters() -> None:
    try:
        from rpo_verl.utils.noise_filters import install

        install()
    except Exception:  # noqa: BLE001 - verl discards plugin exceptions; keep and log them
        FAILED["rpo_verl.utils.noise_filters"] = traceback.format_exc()
        logger.error("rpo_verl: installing the noise filters failed:\n%s", FAILED["rpo_verl.utils.noise_filters"])


def register_all() -> None:
    """Import every component and call its ``register()``; never raises (verl would hide it)."""
    for module_name in COMPONENTS:
        try:
            importlib.import_module(module_name).register()
        except Exception:  # noqa: BLE001 - verl discards plugin exceptions; keep and log them
            FAILED[module_name] = traceback.format_exc()
            logger.error("rpo_verl: registering %s failed:\n%s", module_name, FAILED[module_name])


def expected_registrations() -> dict[str, list[str]]:
    """Union of every component's ``REGISTRATIONS`` (what verl's registries must contain)."""
    merged: dict[str, list[str]] = {}
    for module_name in COMPONENTS:
        module = importlib.import_module(module_name)
        for kind, names in module.REGISTRATIONS.items():
            merged.setdefault(kind, []).extend(names)
    return merged


_install_noise_filters()
register_all()
