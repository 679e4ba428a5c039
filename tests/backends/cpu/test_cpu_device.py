"""The CPU device module: every function verl calls on get_torch_device() exists and behaves."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil
import pytest
import torch

from rpo_verl.backends.cpu import device

MiB = 1024**2
# Called on a local alias (`device = get_torch_device()`) in verl/utils/memory_utils.py,
# verl/utils/profiler/performance.py and verl/utils/flops_counter.py, so not found by the scan.
ALIASED_CALLS = {
    "is_available",
    "memory_reserved",
    "memory_allocated",
    "max_memory_allocated",
    "max_memory_reserved",
    "reset_peak_memory_stats",
    "reset_accumulated_memory_stats",
    "current_device",
    "get_device_properties",
    "empty_cache",
    "synchronize",
    "mem_get_info",
    "get_device_name",
    "memory",
}


def _verl_calls_on_torch_device() -> set[str]:
    import verl

    pattern = re.compile(r"get_torch_device\(\)\.([A-Za-z_]\w*)")
    names = set()
    for path in Path(verl.__file__).parent.rglob("*.py"):
        names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def test_every_function_verl_calls_on_the_device_module_exists():
    called = _verl_calls_on_torch_device()
    assert {"empty_cache", "mem_get_info", "get_rng_state", "ipc_collect"} <= called, "scan found nothing"
    missing = sorted(name for name in called | ALIASED_CALLS if not hasattr(device, name))
    assert not missing, f"verl calls these on get_torch_device(), the CPU device module lacks them: {missing}"


def test_identity_and_noops():
    assert device.is_available() and device.device_count() == 1
    assert device.current_device() == "cpu"
    assert torch.zeros(1).to(device.current_device()).device.type == "cpu"
    assert device.get_device_name() == "CPU"
    props = device.get_device_properties(device.current_device())
    assert props.total_memory == psutil.virtual_memory().total and props.multi_processor_count >= 1
    for noop in (device.empty_cache, device.ipc_collect, device.synchronize, device.reset_accumulated_memory_stats):
        assert noop() is None
    device.set_device(0)
    device.set_per_process_memory_fraction(0.9)


def test_memory_figures_are_real_process_memory():
    rss = psutil.Process().memory_info().rss
    assert abs(device.memory_allocated() - rss) < 64 * MiB
    assert device.memory_reserved() >= 0
    free, total = device.mem_get_info()
    assert 0 < free <= total == psutil.virtual_memory().total

    before_peak = device.max_memory_allocated()
    block = torch.ones(256 * MiB // 4)  # 256 MiB, touched
    assert device.memory_allocated() >= rss + 200 * MiB
    assert device.max_memory_allocated() >= before_peak + 150 * MiB
    peak_with_block = device.max_memory_allocated()
    del block

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the RSS high-water mark cannot be reset here (no writable /proc/self/clear_refs)")
    device.reset_peak_memory_stats()
    assert device.max_memory_allocated() < peak_with_block - 150 * MiB


def test_rng_state_is_the_cpu_generator():
    device.manual_seed(123)
    first = torch.rand(3)
    device.manual_seed_all(123)
    assert torch.equal(torch.rand(3), first)

    state = device.get_rng_state()
    expected = torch.rand(5)
    device.set_rng_state(state)
    assert torch.equal(torch.rand(5), expected)


def test_streams_and_events_are_usable():
    side = device.Stream()
    device.current_stream().wait_stream(side)
    event = device.Event()
    event.record()
    device.current_stream().wait_event(event)
    with device.stream(side):
        torch.ones(2).sum()
    assert event.query()


def test_memory_history_is_a_warning_not_a_crash(caplog):
    device.memory._record_memory_history(enabled="all")
    assert "ignored on CPU" in caplog.text
    with pytest.raises(NotImplementedError):
        device.memory._dump_snapshot("x.pickle")
