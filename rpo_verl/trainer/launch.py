"""What ``python -m rpo_verl.main`` does between Hydra and verl's ``run_ppo``.

``prepare`` (driver): absolute paths, the environment every Ray process needs (the CPU platform
on ``trainer.device=cpu``, rpo_verl's plugin), start-up validation (verl's ``validate_config``,
the feature dataclasses, ``rpo_verl.config.checks``). ``launch`` then hands the config to verl's
``run_ppo`` with ``RpoVerlTaskRunner``, or, with ``rpo_verl.dry_run=true``, prints the resolved
config and returns before Ray starts.
"""

from __future__ import annotations

import os
import sys
import warnings

from omegaconf import DictConfig, OmegaConf, open_dict

from rpo_verl.config.checks import Problem, StartupCheckError, enforce, run_checks
from rpo_verl.config.features import RunConfig, build_features, build_run_config
from rpo_verl.config.validation import ConfigError
from rpo_verl.trainer.console import console_env
from rpo_verl.trainer.runtime import PLUGIN_MODULE, _cpu_platform_env

# Runs in every Ray worker before its first task: known-irrelevant warnings filtered at their
# source, also in workers that never import verl (where the plugin would install them).
NOISE_FILTERS_HOOK = "rpo_verl.utils.noise_filters.install"

# Config keys holding local paths that may be written with "~" or relative to the launch folder
# (Ray workers do not share the driver's working directory).
PATH_KEYS = (
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.model.tokenizer_path",
    "critic.model.path",
    "reward.custom_reward_function.path",
    "trainer.default_local_dir",
    "trainer.rollout_data_dir",
    "trainer.validation_data_dir",
    "rpo_verl.metrics_file",
)
LIST_PATH_KEYS = ("data.train_files", "data.val_files")


def worker_env_vars(config: DictConfig) -> dict[str, str]:
    """Environment variables for the driver and every Ray worker of this run."""
    env: dict[str, str] = {}
    # verl imports rpo_verl.plugin through its entry point; naming it here as well keeps it loaded
    # when VERL_USE_EXTERNAL_PLUGINS restricts the entry points.
    modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    if PLUGIN_MODULE not in modules:
        modules.append(PLUGIN_MODULE)
    env["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules)
    if OmegaConf.select(config, "trainer.device") == "cpu":
        env.update(_cpu_platform_env())
    return env


def _expand(path):
    if path is None or not isinstance(path, str) or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


# Keys that may also name a Hugging Face hub model ("org/name"), which must stay as written.
MODEL_PATH_KEYS = ("actor_rollout_ref.model.path", "actor_rollout_ref.model.tokenizer_path", "critic.model.path")


def absolutize_paths(config: DictConfig) -> None:
    """Expand "~" and make local paths absolute (workers may run in another folder)."""
    from rpo_verl.config.checks import _looks_like_hub_id

    with open_dict(config):
        for key in PATH_KEYS:
            value = OmegaConf.select(config, key)
            if isinstance(value, str) and not (key in MODEL_PATH_KEYS and _looks_like_hub_id(value)):
                OmegaConf.update(config, key, _expand(value))
        for key in LIST_PATH_KEYS:
            value = OmegaConf.select(config, key)
            if isinstance(value, str):
                OmegaConf.update(config, key, _expand(value))
            elif value is not None:
                OmegaConf.update(config, key, [_expand(v) for v in value])


def export_env(config: DictConfig, env: dict[str, str]) -> None:
    """Set ``env`` in this process and in the Ray job's runtime_env (every worker inherits it)."""
    os.environ.update(env)
    with open_dict(config):
        runtime_env = config.ray_kwargs.ray_init.get("runtime_env") or {}
        merged = dict(runtime_env.get("env_vars") or {})
        merged.update(env)
        merged = {str(k): str(v) for k, v in merged.items()}  # Ray accepts strings only
        hook = runtime_env.get("worker_process_setup_hook") or NOISE_FILTERS_HOOK  # a user's own hook wins
        config.ray_kwargs.ray_init.runtime_env = {**runtime_env, "worker_process_setup_hook": hook, "env_vars": merged}


def verl_validation_problems(config: DictConfig) -> list[Problem]:
    """verl's own ``validate_config`` (assertions), reported as a problem instead of a traceback."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            validate_config(config=config, use_reference_policy=need_reference_policy(config),
                            use_critic=need_critic(config))
        except (AssertionError, ValueError, TypeError) as exc:
            return [Problem("verl", "config", f"verl's validate_config rejected it: {exc}")]
    return []


def trainer_problems(config: DictConfig) -> list[Problem]:
    problems = []
    if not config.trainer.get("use_v1", True):
        problems.append(Problem("verl", "trainer.use_v1", "false selects verl's deprecated legacy trainer; rpo_verl "
                                "runs the v1 trainer. Fix: trainer.use_v1=true."))
    mode = OmegaConf.select(config, "trainer.v1.trainer_mode")
    if mode != "sync":
        problems.append(Problem("verl", "trainer.v1.trainer_mode", f"{mode!r}: rpo_verl extends verl's synchronous "
                                "v1 trainer only. Fix: trainer.v1.trainer_mode=sync."))
    return problems


def prepare(config: DictConfig) -> RunConfig:
    """Everything before Ray: paths, environment, validation. Raises ``StartupCheckError``."""
    try:
        run_config = build_run_config(config.get("rpo_verl"))
        build_features(config.get("rpo_verl"))
    except ConfigError as exc:
        key, _, message = str(exc).partition(": ")
        raise StartupCheckError([Problem("features", key, message or key)]) from exc
    absolutize_paths(config)
    export_env(config, {**worker_env_vars(config), **console_env(run_config.console)})
    problems = trainer_problems(config)
    if config.trainer.device == "cpu":
        # Before anything asks verl for its platform (it is resolved once per process).
        from rpo_verl.backends.cpu.env import activate_cpu_platform

        try:
            activate_cpu_platform()
        except (ValueError, RuntimeError) as exc:
            problems.append(Problem("device", "trainer.device", f"cpu, but the CPU platform cannot be selected: {exc}"))

    problems += run_checks(config, skip=run_config.skip_checks)
    enforce(problems, dry_run=run_config.dry_run)

    from verl.utils.device import auto_set_device

    auto_set_device(config)
    enforce(verl_validation_problems(config), dry_run=run_config.dry_run)
    return run_config


def launch(config: DictConfig) -> None:
    """Validate, then either print the resolved config (dry run) or train."""
    run_config = prepare(config)
    if run_config.dry_run:
        print(OmegaConf.to_yaml(config, resolve=True))
        print("[rpo_verl] dry run: the config composes and passes verl's validate_config and rpo_verl's "
              "start-up checks; Ray was not started.")
        return

    from verl.trainer.main_ppo import run_ppo

    from rpo_verl.trainer.failure_watch import WatchedRunner
    from rpo_verl.trainer.task_runner import RpoVerlTaskRunner

    import ray

    options = {}
    if ray.is_initialized():
        # Ray was started before (e.g. attached by a caller): run_ppo skips ray.init and its job
        # runtime_env, so give the environment to the task runner; its workers inherit it.
        options["runtime_env"] = {"env_vars": dict(config.ray_kwargs.ray_init.runtime_env.env_vars)}
    # WatchedRunner: the first failure filed by any worker ends the run (failure_watch.py)
    run_ppo(config, task_runner_class=WatchedRunner(RpoVerlTaskRunner, options))


def main_with_clean_errors(config: DictConfig) -> None:
    """``launch`` with start-up problems printed as a list (exit code 2), not as a traceback; a
    failure once Ray is up as a short report (exit code 1, ``failure_watch.exit_on_run_failure``)."""
    try:
        launch(config)
    except StartupCheckError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - Ray's out-of-memory kill and run failures are translated
        from ray.exceptions import OutOfMemoryError

        if isinstance(exc, OutOfMemoryError):  # also Ray's RayTaskError(OutOfMemoryError)
            lines = str(exc).strip().splitlines()
            detail = next((line for line in lines if "running low on memory" in line), "")
            print(f"rpo_verl: Ray stopped the run because the machine ran out of memory. {detail.strip()}\n"
                  "Fix: free memory (other runs on this machine count too), or use a smaller model, batch "
                  "(data.train_batch_size, actor_rollout_ref.rollout.n) or micro-batch "
                  "(actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu). Checkpoints up to the last "
                  "save are kept; rerun to resume.", file=sys.stderr)
            sys.exit(3)
        import ray

        if not ray.is_initialized():
            raise
        # Ray is up: a worker or the trainer failed. The short report, printed last (failure_watch.py).
        from rpo_verl.trainer.failure_watch import exit_on_run_failure, failure_log_path

        exit_on_run_failure(exc, failure_log_path(config))
