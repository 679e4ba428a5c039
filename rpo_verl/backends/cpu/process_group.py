"""The one change to verl's behaviour the CPU platform needs: the process-group backend string.

verl 0.9.1 ``verl/utils/distributed.py::initialize_global_process_group_ray`` (called by every
``TrainingWorker``, i.e. actor/ref/critic, when no backend is passed) builds::

    backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"

On the CPU platform that is ``"cpu:gloo,cpu:gloo"`` and torch refuses it ("Duplicate device type
cpu"). verl offers no hook for it, so this module wraps that one function: when the caller passes
no backend and the current platform's device is ``cpu``, it passes ``"cpu:gloo"`` (the value verl
itself uses for its CPU-only checkpoint-engine group); otherwise it calls verl's function
unchanged. The wrapper is installed only for the pinned verl version and only when the source of
verl's function still contains the expression above (``check_target``); anything else is logged
and skipped. ``tests/backends/cpu/test_cpu_process_group.py`` fails loudly if verl moves or
changes that code.

Not covered: ``initialize_global_process_group`` (torchrun/SFT entry, same string, no backend
argument): rpo_verl runs only the Ray trainer.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from importlib import metadata

logger = logging.getLogger(__name__)

PINNED_VERL_VERSION = "0.9.1"
TARGET_MODULE = "verl.utils.distributed"
TARGET_FUNCTION = "initialize_global_process_group_ray"
# The exact expression in verl's source that produces the duplicate "cpu" entry on CPU.
VERL_BACKEND_EXPRESSION = 'backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"'
CPU_BACKEND = "cpu:gloo"

_WRAPPED_MARKER = "__rpo_verl_cpu_backend_fix__"


def _target_module():
    import verl.utils.distributed as distributed

    return distributed


def original_function():
    """verl's own ``initialize_global_process_group_ray`` (unwrapped if the fix is installed)."""
    return inspect.unwrap(getattr(_target_module(), TARGET_FUNCTION))


def check_target() -> str | None:
    """Why the fix must not be installed (a sentence), or None when verl is exactly as expected."""
    installed = metadata.version("verl")
    if installed != PINNED_VERL_VERSION:
        return f"verl=={installed} is installed, the fix was written for verl=={PINNED_VERL_VERSION}"
    function = getattr(_target_module(), TARGET_FUNCTION, None)
    if function is None:
        return f"{TARGET_MODULE}.{TARGET_FUNCTION} no longer exists"
    function = inspect.unwrap(function)
    parameters = list(inspect.signature(function).parameters)
    if parameters != ["timeout_second", "backend"]:
        return f"{TARGET_MODULE}.{TARGET_FUNCTION} now takes {parameters}, expected ['timeout_second', 'backend']"
    if VERL_BACKEND_EXPRESSION not in inspect.getsource(function):
        return f"{TARGET_MODULE}.{TARGET_FUNCTION} no longer contains {VERL_BACKEND_EXPRESSION!r}"
    return None


def is_installed() -> bool:
    return getattr(getattr(_target_module(), TARGET_FUNCTION), _WRAPPED_MARKER, False)


def _platform_is_cpu() -> bool:
    from verl.plugin.platform import get_platform

    return get_platform().device_name == "cpu"


def cpu_backend_for(backend: str | None) -> str | None:
    """The backend to pass to verl's initialiser: ``CPU_BACKEND`` on the CPU platform when the
    caller left it to verl's default, the caller's value otherwise."""
    if backend is None and _platform_is_cpu():
        return CPU_BACKEND
    return backend


def apply_process_group_fix() -> bool:
    """Install the wrapper (idempotent). Returns whether it is installed."""
    if is_installed():
        return True
    reason = check_target()
    if reason is not None:
        logger.error(
            "rpo_verl: NOT installing the CPU process-group fix: %s. On the CPU platform verl's "
            "worker start-up will then fail with torch's 'Duplicate device type cpu' unless this verl "
            "no longer builds that backend string; re-check %s.%s and update %s.",
            reason,
            TARGET_MODULE,
            TARGET_FUNCTION,
            __name__,
        )
        return False

    module = _target_module()
    original = getattr(module, TARGET_FUNCTION)

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=cpu_backend_for(backend))

    setattr(initialize_global_process_group_ray, _WRAPPED_MARKER, True)
    setattr(module, TARGET_FUNCTION, initialize_global_process_group_ray)
    # Modules that already did `from verl.utils.distributed import initialize_global_process_group_ray`
    # hold the original (verl.workers.engine_workers, verl.checkpoint_engine.base); rebind those names.
    for name, loaded in list(sys.modules.items()):
        if name.startswith("verl.") and getattr(loaded, "__dict__", {}).get(TARGET_FUNCTION) is original:
            setattr(loaded, TARGET_FUNCTION, initialize_global_process_group_ray)
    logger.info("rpo_verl: %s.%s uses backend %r on the CPU platform", TARGET_MODULE, TARGET_FUNCTION, CPU_BACKEND)
    return True
