"""The CPU platform: registered through the plugin, selected only by VERL_PLATFORM=cpu (in a fresh
process and in Ray workers), and what verl's own helpers get from it."""

from __future__ import annotations

import pytest

from .cpu_test_utils import HERE, run_json, world_of_one

PROBE = str(HERE / "cpu_platform_probe.py")


def test_fresh_process_importing_only_verl_selects_cpu_platform_and_verl_helpers_work():
    report = run_json([PROBE, "--full"], world_of_one(VERL_PLATFORM="cpu"))

    assert report["platform"] == "CPUPlatform"
    assert report["device_name"] == "cpu" and report["device_id"] == "cpu"
    assert report["nccl_backend"] == "gloo" and report["resource_name"] == "GPU"
    assert report["torch_device"] == "rpo_verl.backends.cpu.device"
    # verl's memory logging reports real host figures (MB): allocated = RSS > 0, total = host RAM.
    allocated, reserved, used, total = report["mem_info"]
    assert 50 < allocated == reserved < total and 0 < used <= total
    assert report["memory_info"]["total_memory_gb"] > 0.5
    assert report["memory_info"]["max_memory_allocated_gb"] >= report["memory_info"]["allocated_memory_gb"] > 0
    assert report["device_flops"] == pytest.approx(0.448)  # verl's FLOPS table entry "CPU", in TFLOPS
    assert report["rng_restored"], "verl's checkpoint RNG save/restore did not round-trip on CPU"
    # EngineRegistry lookup by the platform's device name.
    assert report["engine_fsdp2"] == "CPUFSDPEngineWithLMHead"  # verl's engine, unpinned offload
    assert report["value_engine_fsdp2"] == "CPUFSDPEngineWithValueHead"
    assert report["engine_fsdp"] == "CPURefusesFSDPEngineWithLMHead"
    # The process-group fix reaches the name TrainingWorker calls, and is needed.
    assert report["pg_fix_installed"] and report["worker_init_is_fix"]
    assert "Duplicate device type cpu" in report["unfixed_error"]
    assert report["backend"] == "cpu:gloo"
    assert report["all_reduce"] == [1.0, 1.0, 1.0]


def test_auto_detection_never_picks_cpu(monkeypatch):
    from verl.plugin.platform import platform_manager

    from rpo_verl.backends.cpu.platform import CPUPlatform

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert CPUPlatform().is_platform_available(use_smi_check=True) is False
    assert CPUPlatform().is_platform_available() is False
    assert platform_manager._detect_platform_name() != "cpu"


def test_platform_methods():
    from rpo_verl.backends.cpu import device
    from rpo_verl.backends.cpu.platform import CPUPlatform

    platform = CPUPlatform()  # instantiable: every abstract method of PlatformBase is implemented
    assert (platform.device_name, platform.current_device(), platform.device_count()) == ("cpu", "cpu", 1)
    assert platform.device_module is device and platform.is_available()
    assert platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    assert platform.get_device_capability() == (None, None)
    assert platform.is_ipc_supported() is False and platform.cudart() is None
    with platform.nvtx_range("label"):
        platform.synchronize()
        platform.set_device(0)
        platform.set_allocator_settings("expandable_segments:True")
        platform.empty_cache()
        platform.profiler_start()
        platform.profiler_stop()


def test_register_is_idempotent():
    from verl.plugin.platform import PlatformRegistry

    import rpo_verl.backends.cpu as cpu_backend
    from rpo_verl.backends.cpu.platform import CPUPlatform

    cpu_backend.register()
    cpu_backend.register()
    assert PlatformRegistry.get("cpu") is CPUPlatform
    assert cpu_backend.REGISTRATIONS["platform"] == ["cpu"]


def test_ray_workers_select_cpu_platform_through_cpu_worker_env():
    ray = pytest.importorskip("ray")
    import os

    from rpo_verl.backends.cpu.env import cpu_worker_env

    assert "VERL_PLATFORM" not in os.environ, "the driver must not hand the platform down by inheritance here"

    def in_worker() -> dict:
        import os

        import verl  # noqa: F401 - loads the verl.plugins entry points (rpo_verl.plugin)
        from verl.plugin.platform import get_platform
        from verl.utils.device import get_device_name

        from rpo_verl.backends.cpu import process_group

        return {
            "platform": type(get_platform()).__name__,
            "device": get_device_name(),
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "pg_fix": process_group.is_installed(),
        }

    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": cpu_worker_env(num_threads=2)},
    )
    try:
        report = ray.get(ray.remote(in_worker).remote(), timeout=240)
    finally:
        ray.shutdown()
    assert report == {"platform": "CPUPlatform", "device": "cpu", "threads": "2", "pg_fix": True}
