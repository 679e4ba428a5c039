"""CUDA-style device module for the CPU platform (what ``get_torch_device()`` returns on CPU).

verl calls ``torch.cuda``-shaped functions on the platform's device module (memory statistics,
RNG state, streams, ``ipc_collect``, ...); ``torch.cpu`` lacks most of them. This module offers
every such function verl 0.9.1 calls, with CPU meanings:

* memory figures are real: "allocated"/"reserved" are this process's resident set size (RSS),
  the peaks are the kernel's RSS high-water mark (``VmHWM``), which ``reset_peak_memory_stats``
  resets through ``/proc/self/clear_refs`` on Linux, and ``mem_get_info`` is the host's
  (available, total) memory;
* the RNG functions act on torch's CPU generator (the CPU *is* the device);
* caches, IPC and device selection have nothing to do on CPU and are no-ops;
* streams and events are torch's own device-agnostic CPU stand-ins.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import psutil
import torch
import torch.cpu
from torch.cpu import Event, Stream, StreamContext, current_stream, stream, synchronize  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

DEVICE_TYPE = "cpu"
_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"

# ---------------------------------------------------------------------------------------------
# Availability and selection
# ---------------------------------------------------------------------------------------------


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def init() -> None:
    """Nothing to initialise on CPU."""


def device_count() -> int:
    return 1


def current_device() -> str:
    # A string, like torch.cpu.current_device(): verl passes it straight to torch (`.to(...)`,
    # `torch.device(...)`); an integer would mean cuda:<n>.
    return DEVICE_TYPE


def set_device(device=None) -> None:
    """No-op: there is one CPU device."""


def get_device_name(device=None) -> str:
    # "CPU" is the key of verl's FLOPS table (verl/utils/flops_counter.py) for CPU devices.
    return "CPU"


def get_device_capability(device=None) -> tuple[int, int]:
    # Numeric like torch.cuda's, so comparisons such as `>= (8, 0)` are False rather than errors.
    return (0, 0)


@dataclass(frozen=True)
class CPUDeviceProperties:
    """The subset of ``torch.cuda.get_device_properties`` fields verl reads, for the host CPU."""

    name: str
    total_memory: int
    multi_processor_count: int
    major: int = 0
    minor: int = 0


def get_device_properties(device=None) -> CPUDeviceProperties:
    return CPUDeviceProperties(
        name=get_device_name(), total_memory=psutil.virtual_memory().total, multi_processor_count=usable_cpu_count()
    )


def usable_cpu_count() -> int:
    """CPU cores this process may run on (respects taskset/cgroup CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Memory: real figures from the operating system
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss_bytes() -> int:
    """RSS high-water mark since the last reset (Linux VmHWM); lifetime peak elsewhere."""
    try:
        with open(_PROC_STATUS) as status:
            match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def memory_allocated(device=None) -> int:
    return _rss_bytes()


def memory_reserved(device=None) -> int:
    return _rss_bytes()


def max_memory_allocated(device=None) -> int:
    return max(_peak_rss_bytes(), _rss_bytes())


def max_memory_reserved(device=None) -> int:
    return max_memory_allocated()


def reset_peak_memory_stats(device=None) -> None:
    """Reset the RSS high-water mark to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open(_PROC_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
    except OSError as exc:  # not Linux, or a sandbox forbids it: peaks then cover the whole run
        logger.debug("cannot reset the RSS high-water mark (%s); peaks are since process start", exc)


def reset_max_memory_allocated(device=None) -> None:
    reset_peak_memory_stats(device)


def reset_accumulated_memory_stats(device=None) -> None:
    """No accumulated allocator statistics exist on CPU."""


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes of host memory, like ``torch.cuda.mem_get_info``."""
    vm = psutil.virtual_memory()
    return vm.available, vm.total


def memory_stats(device=None) -> dict[str, int]:
    return {
        "allocated_bytes.all.current": memory_allocated(),
        "allocated_bytes.all.peak": max_memory_allocated(),
        "reserved_bytes.all.current": memory_reserved(),
        "reserved_bytes.all.peak": max_memory_reserved(),
    }


def empty_cache() -> None:
    """No device cache on CPU (freed tensors go back to the C allocator)."""


def ipc_collect() -> None:
    """No CUDA IPC handles on CPU."""


def set_per_process_memory_fraction(fraction: float, device=None) -> None:
    """No per-process device memory cap on CPU."""


def _memory_history_unsupported(*args, **kwargs) -> None:
    logger.warning("memory history recording needs an accelerator; ignored on CPU")


def _snapshot_unsupported(*args, **kwargs):
    raise NotImplementedError("allocator memory snapshots are not available on the CPU platform")


# `device.memory._record_memory_history` etc. (verl's opt-in memory profiler).
memory = SimpleNamespace(
    _record_memory_history=_memory_history_unsupported,
    _snapshot=_snapshot_unsupported,
    _dump_snapshot=_snapshot_unsupported,
    memory_allocated=memory_allocated,
    memory_reserved=memory_reserved,
    max_memory_allocated=max_memory_allocated,
    max_memory_reserved=max_memory_reserved,
    reset_peak_memory_stats=reset_peak_memory_stats,
    mem_get_info=mem_get_info,
    empty_cache=empty_cache,
)

# ---------------------------------------------------------------------------------------------
# Random number generation: the CPU device's generator is torch's CPU generator
# ---------------------------------------------------------------------------------------------


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    return [torch.get_rng_state()]


def set_rng_state_all(new_states) -> None:
    torch.set_rng_state(new_states[0])


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def seed() -> None:
    torch.seed()


def seed_all() -> None:
    torch.seed()


def initial_seed() -> int:
    return torch.initial_seed()


def default_stream(device=None) -> Stream:
    return current_stream()
