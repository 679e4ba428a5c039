"""verl platform ``cpu``: run verl's trainer on CPU-only machines (torch CPU build, gloo).

Registered in ``verl.plugin.platform.PlatformRegistry`` under ``PLATFORM_NAME``. verl resolves its
platform once per process, on the first ``get_platform()`` call, from env ``VERL_PLATFORM``
(``platform_manager._detect_platform_name``); this platform is *only* chosen that way:
``is_platform_available`` is always False, so auto-detection (nvidia, huawei, amd, then the
"nvidia" fallback) never picks it, on GPU nodes or anywhere else. Every Ray worker must see
``VERL_PLATFORM=cpu`` too: see ``rpo_verl.backends.cpu.env.cpu_worker_env``.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase

from rpo_verl.backends.cpu import device as cpu_device

PLATFORM_NAME = "cpu"


class CPUPlatform(PlatformBase):
    """``PlatformBase`` for the host CPU: device ``cpu``, collectives over gloo."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        # EngineRegistry tries (device, vendor) first, then the device alone: engines for "cpu"
        # are registered without a vendor, so any value works; "cpu" reads clearly in logs.
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        # Not torch.cpu: verl calls CUDA-style memory/RNG/stream functions on this module.
        return cpu_device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: only an explicit VERL_PLATFORM=cpu selects the CPU platform.
        return False

    def current_device(self) -> str:  # type: ignore[override]  # verl feeds it to torch: must be "cpu"
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        """One CPU device: nothing to select."""

    def synchronize(self, device_index=None) -> None:
        """CPU ops are synchronous."""

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        """CUDA caching-allocator settings (expandable segments) have no CPU counterpart."""

    def empty_cache(self) -> None:
        cpu_device.empty_cache()

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None  # as documented by PlatformBase for devices without one

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray exports the ids of the logical "GPU" resource (see ray_resource_name) in this
        # variable; verl's Worker reads and forwards it. CPU torch ignores it.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        # Labels the range in torch.profiler traces, the CPU counterpart of an NVTX range.
        with torch.profiler.record_function(msg):
            yield

    def profiler_start(self) -> None:
        """No device profiler on CPU (torch.profiler is driven by verl's own profiler config)."""

    def profiler_stop(self) -> None:
        """No device profiler on CPU."""

    def ray_resource_name(self) -> str:
        # Must be "GPU": verl's ResourcePoolManager._check_resource_available counts only the
        # "GPU" (or "NPU") resource of each node, and placement-group bundles ask for this name.
        # A CPU run therefore starts Ray with a *logical* GPU count, one per training rank
        # (`ray.init(num_gpus=N)`), which Ray hands out without any real device behind it.
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None

    def rollout_env_vars(self) -> dict[str, str]:
        """Env of verl's vLLM server actor (and the engine/worker processes it starts) on CPU."""
        from rpo_verl.backends.cpu.rollout_env import rollout_server_env

        return rollout_server_env()
