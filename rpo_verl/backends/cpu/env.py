"""What a trainer does to run verl on the CPU platform.

verl picks its platform once per process from env ``VERL_PLATFORM`` (first ``get_platform()``
call). Three places must agree:

1. the driver process: call ``activate_cpu_platform()`` before anything calls verl's
   ``get_platform()`` (importing ``verl.trainer.main_ppo`` / ``constants_ppo`` already does), or
   export ``VERL_PLATFORM=cpu`` in the shell;
2. every Ray worker (TaskRunner, training workers, agent-loop, reward, rollout servers): merge
   ``cpu_worker_env()`` into ``ray_kwargs.ray_init.runtime_env.env_vars`` -- on a cluster
   started with ``ray start`` workers do not inherit the driver's environment;
3. the config: the start-up check ``cpu_options`` (``rpo_verl.backends.cpu.checks``) names every
   setting that cannot work on CPU.

Ray itself must be started with a *logical* GPU per training rank (``ray_init.num_gpus``, see
``CPUPlatform.ray_resource_name``) and ``trainer.n_gpus_per_node`` x ``trainer.nnodes`` ranks.
"""

from __future__ import annotations

import os

from rpo_verl.backends.cpu.device import usable_cpu_count
from rpo_verl.backends.cpu.platform import PLATFORM_NAME

PLATFORM_ENV_VAR = "VERL_PLATFORM"


def cpu_worker_env(num_threads: int | None = None, processes_per_node: int = 1) -> dict[str, str]:
    """Env vars for Ray's ``runtime_env["env_vars"]`` so every worker runs on the CPU platform.

    ``VERL_PLATFORM=cpu`` selects the platform. ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set
    torch's intra-op threads: otherwise Ray sets ``OMP_NUM_THREADS`` to the worker's *logical*
    CPU share (1 for actors without ``num_cpus``), which leaves cores idle or oversubscribes
    them. Default: the cores this process may use, split over ``processes_per_node`` training
    ranks that compute at the same time (pass ``trainer.n_gpus_per_node``).
    """
    if processes_per_node < 1:
        raise ValueError(f"processes_per_node: must be >= 1, got {processes_per_node}")
    threads = num_threads if num_threads is not None else max(1, usable_cpu_count() // processes_per_node)
    if threads < 1:
        raise ValueError(f"num_threads: must be >= 1, got {threads}")
    return {PLATFORM_ENV_VAR: PLATFORM_NAME, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def activate_cpu_platform():
    """Select the CPU platform in this process (the driver). Returns verl's platform object.

    Raises ``ValueError`` if ``VERL_PLATFORM`` names another platform, ``RuntimeError`` if verl
    already resolved another platform in this process (something called ``get_platform()``
    first; set ``VERL_PLATFORM=cpu`` before importing verl's trainer modules).
    """
    from verl.plugin.platform import get_platform, platform_manager

    from rpo_verl.backends.cpu import register
    from rpo_verl.backends.cpu.platform import CPUPlatform

    requested = os.environ.get(PLATFORM_ENV_VAR, "").strip().lower()
    if requested and requested != PLATFORM_NAME:
        raise ValueError(
            f"trainer.device=cpu needs {PLATFORM_ENV_VAR}={PLATFORM_NAME}, but {PLATFORM_ENV_VAR}={requested!r} is "
            f"set: unset it, or use trainer.device=cuda on an accelerator machine"
        )
    os.environ[PLATFORM_ENV_VAR] = PLATFORM_NAME
    register()  # the plugin normally did this already; also installs the process-group fix now
    current = platform_manager._current_platform
    if current is not None and not isinstance(current, CPUPlatform):
        raise RuntimeError(
            f"verl already selected platform {type(current).__name__} (device {current.device_name!r}) in this "
            f"process before the CPU platform was activated; export {PLATFORM_ENV_VAR}={PLATFORM_NAME} or call "
            "activate_cpu_platform() before importing verl.trainer modules"
        )
    return get_platform()
