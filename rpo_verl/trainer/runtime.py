"""What both sides of a launch need: the driver (``launch``) and the Ray task runner
(``task_runner``): the plugin's module name, the CPU platform's environment, the run's metrics
file and resolved config. (``launch`` starts the task runner and the task runner must not import
``launch`` back: both import this module.)
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

PLUGIN_MODULE = "rpo_verl.plugin"


def _cpu_platform_env() -> dict[str, str]:
    """Environment the CPU platform needs in every process (VERL_PLATFORM, torch threads)."""
    from rpo_verl.backends.cpu.env import cpu_worker_env

    return cpu_worker_env()


def assert_plugin_loaded(config: DictConfig) -> None:
    """Fail with a clear message if rpo_verl's registrations did not happen in this Ray process."""
    import importlib

    plugin = importlib.import_module(PLUGIN_MODULE)
    if plugin.FAILED:
        names = ", ".join(plugin.FAILED)
        raise RuntimeError(f"rpo_verl's plugin failed to register {names} in a Ray worker:\n"
                           + "\n".join(plugin.FAILED.values()))
    if config.trainer.device == "cpu":
        from verl.plugin.platform import get_platform

        device = get_platform().device_name
        if device != "cpu":
            raise RuntimeError(f"trainer.device=cpu but verl's platform in the Ray workers is {device!r}: the "
                               f"CPU platform environment ({_cpu_platform_env()}) did not reach them.")


def metrics_file_path(config: DictConfig) -> str:
    path = OmegaConf.select(config, "rpo_verl.metrics_file")
    return path or os.path.join(config.trainer.default_local_dir, "metrics.jsonl")


def will_resume(config: DictConfig) -> bool:
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    mode = config.trainer.resume_mode
    if mode == "disable":
        return False
    if mode == "resume_path":
        return True
    return find_latest_ckpt_path(config.trainer.default_local_dir) is not None


def prepare_metrics_file(config: DictConfig) -> str:
    from rpo_verl.trainer import metrics_file

    return metrics_file.prepare(metrics_file_path(config), resuming=will_resume(config))


def save_resolved_config(config: DictConfig) -> str:
    """Write the resolved config next to the metrics file (the summary reads batch sizes from it)."""
    path = os.path.join(os.path.dirname(metrics_file_path(config)), "resolved_config.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(OmegaConf.to_yaml(config, resolve=True))
    return path


def ray_init_kwargs(config: DictConfig) -> dict:
    """``ray.init`` arguments from ``ray_kwargs.ray_init``, for a script that starts Ray itself
    (e.g. scripts/build_cache.py). When ``RAY_ADDRESS`` names a running cluster (a Slurm job's),
    Ray refuses ``num_cpus`` / ``num_gpus`` ("must not be provided"): the cluster's resources are
    what they are, so both are dropped."""
    kwargs = OmegaConf.to_container(config.ray_kwargs.ray_init, resolve=True) if "ray_kwargs" in config else {}
    kwargs = dict(kwargs or {})
    if os.environ.get("RAY_ADDRESS"):
        kwargs.pop("num_cpus", None)
        kwargs.pop("num_gpus", None)
    return kwargs
