"""Run as a script in a fresh process: import only verl, then report (JSON on the last stdout
line) what verl's own helpers see. ``--full`` also exercises verl code on the device module,
the engine registry lookup and the process-group initialiser as ``TrainingWorker`` calls it
(world size 1; needs RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in the environment).

Deliberately imports nothing from rpo_verl before ``import verl``: the platform must arrive
through verl's ``verl.plugins`` entry-point loading.
"""

from __future__ import annotations

import json
import sys


def light() -> dict:
    import verl  # noqa: F401 - loads the verl.plugins entry points (rpo_verl.plugin)
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.utils import device as verl_device

    from rpo_verl.backends.cpu import process_group

    platform = get_platform()
    report = {
        "registered": list(PlatformRegistry.registered_names()),
        "platform": type(platform).__name__,
        "device_name": verl_device.get_device_name(),
        "pg_fix_installed": process_group.is_installed(),
    }
    if report["device_name"] == "cpu":  # the other platforms' calls need their device
        report.update(
            device_id=verl_device.get_device_id(),
            nccl_backend=verl_device.get_nccl_backend(),
            resource_name=verl_device.get_resource_name(),
            torch_device=verl_device.get_torch_device().__name__,
        )
    return report


def full(report: dict) -> None:
    import inspect

    import torch
    import torch.distributed as dist
    import verl.workers.engine_workers as engine_workers
    from verl.utils.checkpoint.checkpoint_manager import BaseCheckpointManager
    from verl.utils.flops_counter import get_device_flops
    from verl.utils.memory_utils import get_memory_info
    from verl.utils.profiler.performance import _get_current_mem_info
    from verl.workers.engine.base import EngineRegistry

    report["mem_info"] = [float(x) for x in _get_current_mem_info(unit="MB")]
    report["memory_info"] = get_memory_info()
    report["device_flops"] = get_device_flops(unit="T")

    state = BaseCheckpointManager.get_rng_state()
    expected = torch.rand(4)
    torch.rand(10)  # move the generator on
    BaseCheckpointManager.load_rng_state(state)
    report["rng_restored"] = torch.equal(torch.rand(4), expected)

    report["engine_fsdp2"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
    report["value_engine_fsdp2"] = EngineRegistry.get_engine_cls("value_model", "fsdp2").__name__
    report["engine_fsdp"] = EngineRegistry.get_engine_cls("language_model", "fsdp").__name__

    # TrainingWorker calls the name engine_workers imported from verl.utils.distributed.
    init_fn = engine_workers.initialize_global_process_group_ray
    report["worker_init_is_fix"] = bool(getattr(init_fn, "__rpo_verl_cpu_backend_fix__", False))
    try:
        inspect.unwrap(init_fn)(timeout_second=30)
        report["unfixed_error"] = None
    except ValueError as exc:
        report["unfixed_error"] = str(exc)
    init_fn(timeout_second=30)
    report["backend"] = str(dist.get_backend_config())
    value = torch.ones(3)
    dist.all_reduce(value)
    report["all_reduce"] = value.tolist()
    dist.destroy_process_group()


if __name__ == "__main__":
    result = light()
    if "--full" in sys.argv:
        full(result)
    print(json.dumps(result))
