"""Keep vLLM-CPU's linear weights so that verl can reload them in place every step.

vLLM's CPU build prepacks each unquantized linear weight into a oneDNN (or sgl/zentorch) handle
in ``UnquantizedLinearMethod.process_weights_after_loading`` and then *replaces* the weight
Parameter by an empty one (``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`` in
``vllm/model_executor/layers/linear.py``). The empty Parameter has no ``weight_loader``, so
verl's weight sync (``model.load_weights`` in ``vLLMColocateWorkerExtension``) fails with
``'Parameter' object has no attribute 'weight_loader'``. With ``remove_weight=False`` (what vLLM
already passes for embeddings) the weight stays; verl calls vLLM's
``process_weights_after_loading`` after each sync, which prepacks the new values again.

The cost is one extra copy of the linear weights in the rollout process (the packed handle plus
the kept weight). Applied only on vLLM's CPU platform and for the vLLM releases listed in
``TESTED_VLLM``; ``tests/rollout/vllm_cpu/test_weights_patch.py`` fails once vLLM keeps the weight
itself (then this patch can go).
"""

from __future__ import annotations

import functools
import logging

from packaging.version import Version

logger = logging.getLogger(__name__)

TARGET_MODULE = "vllm.model_executor.layers.utils"
TARGET_NAME = "dispatch_cpu_unquantized_gemm"
# vLLM releases whose CPU linear layers drop the weight after prepacking (checked by the test).
TESTED_VLLM = (Version("0.24.0"), Version("0.28.0"))  # [low, high)
PATCHED_ATTR = "__rpo_verl_keeps_weight__"

_hook_installed = False


def vllm_version_supported(version: str) -> bool:
    low, high = TESTED_VLLM
    return low <= Version(Version(version).base_version) < high


def _keep_weight(dispatch):
    @functools.wraps(dispatch)
    def dispatch_keeping_weight(layer, remove_weight: bool = False, *args, **kwargs):
        return dispatch(layer, False, *args, **kwargs)

    setattr(dispatch_keeping_weight, PATCHED_ATTR, True)
    dispatch_keeping_weight.__wrapped__ = dispatch
    return dispatch_keeping_weight


def apply(module) -> bool:
    """Wrap ``module.dispatch_cpu_unquantized_gemm`` to pass ``remove_weight=False``. Returns
    whether the module is (now) patched; leaves it alone off the CPU platform or on an untested vLLM."""
    import vllm
    from vllm.platforms import current_platform

    original = getattr(module, TARGET_NAME, None)
    if original is None or getattr(original, PATCHED_ATTR, False):
        return original is not None
    if not current_platform.is_cpu():
        return False
    if not vllm_version_supported(vllm.__version__):
        logger.warning("rpo_verl: vLLM %s is outside the tested range %s-%s of the CPU weight-keeping patch; "
                       "not applied (verl's weight sync may fail with 'no attribute weight_loader')",
                       vllm.__version__, *TESTED_VLLM)
        return False
    # linear.py imports the function from this module at call time, so replacing it here is enough.
    setattr(module, TARGET_NAME, _keep_weight(original))
    return True


def _on_import(module) -> None:
    try:
        apply(module)
    except Exception:  # noqa: BLE001 - never break vLLM's import; the weight sync would report it
        logger.exception("rpo_verl: applying the vLLM-CPU weight-keeping patch failed")


def install_hook() -> None:
    """Apply the patch when (or if already) vLLM's layer utilities are imported in this process."""
    global _hook_installed
    if _hook_installed:
        return
    import wrapt

    _hook_installed = True
    wrapt.register_post_import_hook(_on_import, TARGET_MODULE)
