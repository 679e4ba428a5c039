"""Start-up checks: catch settings that would otherwise hang Ray or fail deep inside a worker.

Each check returns ``Problem``s that name the setting to change and the fix. ``run_checks`` runs
them all in the driver before Ray starts. Problems that depend on this machine or its files
(missing model/data, no GPU, too little RAM, a backend not installed) are *environment*
problems: a dry run (``rpo_verl.dry_run=true``) reports them as warnings, so a cluster recipe can
be checked on a CPU-only CI machine; a real launch stops on them. A check can be skipped by name
with ``rpo_verl.skip_checks=[memory]`` (names: see ``all_checks``).

This module holds the generic checks (``CHECKS``: model, data, reward function, rollout, device,
memory, logger, ``batch_split`` from ``rpo_verl.config.batch_checks``, and the CPU backend's ``cpu_options`` from ``rpo_verl.backends.cpu.checks``) and
runs them, then every registered feature's check (``FeatureSpec.checks`` in
``rpo_verl.config.features.FEATURES``, named after the feature). It imports no feature: the
registry names them as strings.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig

from rpo_verl.backends.cpu.checks import (  # noqa: F401 - required_logical_cpus: public here too
    CPU_PRESET_HINT,
    GPU_ROLLOUTS,
    check_cpu_options,
    required_logical_cpus,
)
from rpo_verl.config.batch_checks import check_batch_split
from rpo_verl.config.features import feature_checks
from rpo_verl.config.problems import Problem, _as_list, _get, _is_remote, _on_cpu, _safe


class StartupCheckError(RuntimeError):
    """One or more settings would make the run fail; the message lists each with its fix."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [f"rpo_verl start-up checks failed ({len(problems)} problem(s)); nothing was started:"]
        lines += [f"  - {p}" for p in problems]
        lines.append("(skip a check with rpo_verl.skip_checks=[<name>] if you know better; names: "
                     + ", ".join(all_checks()) + ")")
        super().__init__("\n".join(lines))


def _looks_like_hub_id(path: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path)) and not os.path.exists(path)


# ----------------------------------------------------------------------------- model & data files


def _check_model_dir(key: str, path: Any) -> list[Problem]:
    fix = "run `python scripts/prepare_model.py` (CPU models) or point it at a local Hugging Face model folder"
    if path is None or str(path).strip() in ("", "???"):
        return [Problem("model", key, f"not set. Set {key}=<model folder>: {fix}.", environment=False)]
    path = str(path)
    if _is_remote(path):
        return []
    local = os.path.expanduser(path)
    if not os.path.exists(local):
        if _looks_like_hub_id(path):
            if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_cached(path):
                return [Problem("model", key,
                                f"{path!r} is not a local folder, and Hugging Face Hub model {path!r} is not in the "
                                f"local cache (no download is attempted from the workers). Fix: download it first "
                                f"(`huggingface-cli download {path}`) and pass its folder, or {fix}.",
                                environment=True)]
            return []
        return [Problem("model", key, f"{path!r} does not exist. Fix: {fix}.", environment=True)]
    if not os.path.isdir(local) or not os.path.isfile(os.path.join(local, "config.json")):
        return [Problem("model", key, f"{path!r} is not a Hugging Face model folder (no config.json). Fix: {fix}.",
                        environment=True)]
    return []


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - no hub library or odd cache: treat as not cached
        return False


def check_model(config: DictConfig) -> list[Problem]:
    from verl.trainer.ppo.utils import need_critic

    problems = _check_model_dir("actor_rollout_ref.model.path", _get(config, "actor_rollout_ref.model.path"))
    tokenizer = _get(config, "actor_rollout_ref.model.tokenizer_path")
    if tokenizer is not None:
        problems += _check_model_dir("actor_rollout_ref.model.tokenizer_path", tokenizer)
    if _safe(need_critic, config):
        problems += _check_model_dir("critic.model.path", _get(config, "critic.model.path"))
    if _get(config, "reward.reward_model.enable"):
        problems += _check_model_dir("reward.reward_model.model_path", _get(config, "reward.reward_model.model_path"))
    return problems


def check_data(config: DictConfig) -> list[Problem]:
    problems = []
    for key in ("data.train_files", "data.val_files"):
        files = _as_list(_get(config, key))
        if not files:
            problems.append(Problem("data", key, f"not set. Set {key}=<parquet file> (e.g. from "
                                    "`python scripts/prepare_data.py`).", environment=False))
        for path in files:
            path = str(path)
            if not _is_remote(path) and not os.path.exists(os.path.expanduser(path)):
                problems.append(Problem("data", key, f"{path!r} does not exist. Fix: run "
                                        "`python scripts/prepare_data.py` or pass existing parquet files.",
                                        environment=True))
    from rpo_verl.data.checks import check_data_files  # contents: readable, columns, scorers, lengths

    return problems + check_data_files(config)


def check_reward_function(config: DictConfig) -> list[Problem]:
    path = _get(config, "reward.custom_reward_function.path")
    name = _get(config, "reward.custom_reward_function.name") or "compute_score"
    if not path:
        return []
    key = "reward.custom_reward_function.path"
    path = str(path)
    if path.startswith("pkg://"):  # verl's form for a module on the Python path
        module = path[len("pkg://"):].removesuffix(".py").replace("/", ".")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not os.path.isfile(spec.origin):
            return [Problem("reward_function", key, f"{path!r}: no importable module {module!r}. Fix: "
                            "pkg://<package.module> of an installed package, or a file path.", environment=True)]
        local = spec.origin
    else:
        local = os.path.expanduser(path)
    if not os.path.isfile(local):
        return [Problem("reward_function", key, f"{path!r} does not exist. Fix: give the path of a Python file "
                        f"that defines {name}(data_source, solution_str, ground_truth, extra_info).",
                        environment=True)]
    try:
        tree = ast.parse(open(local, encoding="utf-8").read(), filename=local)
    except SyntaxError as exc:
        return [Problem("reward_function", key, f"{path!r} does not parse: {exc}", environment=True)]
    defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    defined |= {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
    if name not in defined:
        return [Problem("reward_function", "reward.custom_reward_function.name",
                        f"{path!r} defines no {name!r}. Fix: set reward.custom_reward_function.name to the "
                        "scoring function's name.", environment=True)]
    return []


# ----------------------------------------------------------------------------- rollout & device


def registered_rollouts() -> list[str]:
    """Rollout names that both of verl's registries know (server replica + worker adapter)."""
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    adapters = {name for name, _mode in base._ROLLOUT_REGISTRY}
    return sorted(set(RolloutReplicaRegistry._registry) & adapters)


def check_rollout(config: DictConfig) -> list[Problem]:
    key = "actor_rollout_ref.rollout.name"
    name = _get(config, key)
    known = registered_rollouts()
    if name not in known:
        hint = " (the CPU backend \"hf\" comes with rpo_verl's plugin: is rpo_verl installed in this environment?)"
        return [Problem("rollout", key, f"{name!r} is not a registered rollout backend; registered: {known}"
                        f"{hint if name == 'hf' else ''}. Fix: {key}=<one of them>"
                        f"{' or ' + CPU_PRESET_HINT if _on_cpu(config) else ''}.")]
    if name == "hf":
        from rpo_verl.config.validation import ConfigError
        from rpo_verl.rollout.hf import check_rollout_config

        try:
            check_rollout_config(_get(config, "actor_rollout_ref.rollout"))
        except ConfigError as exc:
            key_, _, message = str(exc).partition(": ")
            return [Problem("rollout", key_, message)]
    package = GPU_ROLLOUTS.get(name)
    if package and not _on_cpu(config) and importlib.util.find_spec(package) is None:
        return [Problem("rollout", key, f"{name!r} needs the Python package {package!r}, which is not installed. "
                        "Fix: `pip install -e .[gpu]` on GPU nodes, or on a CPU-only machine "
                        f"{CPU_PRESET_HINT}.", environment=True)]
    return []


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def check_device(config: DictConfig) -> list[Problem]:
    device = _get(config, "trainer.device")
    if device == "cuda" and not _cuda_available():
        return [Problem("device", "trainer.device", "'cuda' but no CUDA GPU is visible on this machine. Fix: "
                        f"{CPU_PRESET_HINT} (trainer.device=cpu with the CPU overrides).", environment=True)]
    if device == "cpu":
        from verl.plugin.platform import PlatformRegistry

        names = PlatformRegistry.registered_names()
        if "cpu" not in names:
            return [Problem("device", "trainer.device", "'cpu' but no CPU platform is registered with verl "
                            f"(registered: {sorted(names)}); rpo_verl's plugin provides it. Fix: install "
                            "rpo_verl into this environment (`pip install -e .`) and check "
                            "`python -c 'import verl, rpo_verl.plugin as p; print(p.FAILED)'`.",
                            environment=True)]
    return []


# ----------------------------------------------------------------------------- memory


def estimate_parameters(model_dir: str) -> int | None:
    """Parameter count of a decoder-only transformer from its config.json (None if unknown).

    Falls back to the size of the weight files divided by the bytes of ``torch_dtype``.
    """
    try:
        cfg = json.load(open(os.path.join(model_dir, "config.json"), encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
        inter = int(cfg.get("intermediate_size", 4 * hidden))
        heads = int(cfg.get("num_attention_heads", 1))
        kv_heads = int(cfg.get("num_key_value_heads", heads))
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        experts = int(cfg.get("num_local_experts", cfg.get("num_experts", 1)) or 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return _params_from_files(model_dir, cfg)
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * inter * experts
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * (attn + mlp + 2 * hidden) + hidden


def _params_from_files(model_dir: str, cfg: dict) -> int | None:
    sizes = [
        os.path.getsize(os.path.join(model_dir, f))
        for f in os.listdir(model_dir)
        if f.endswith((".safetensors", ".bin", ".pt"))
    ]
    if not sizes:
        return None
    width = {"float32": 4, "float16": 2, "bfloat16": 2}.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), 2)
    return sum(sizes) // width


# Bytes per parameter while training on CPU: fp32 weights + grads + Adam's two moments (16), the
# rollout server's fp32 copy (4) and mixed-precision working copies (2); x1.5 for activations.
BYTES_PER_PARAM_TRAIN = (16 + 4 + 2) * 1.5
BYTES_PER_PARAM_REF = 4
# Ray, the task runner, agent-loop/reward/TransferQueue actors: each a Python process with torch
# (measured: about 4 GB for the 3M-parameter tiny model, 10 GB for SmolLM2-135M).
FIXED_OVERHEAD_BYTES = 4.5 * 2**30


def machine_memory_bytes() -> int:
    import psutil

    total = psutil.virtual_memory().total
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def estimate_cpu_memory_bytes(config: DictConfig, params: int) -> int:
    from verl.trainer.ppo.utils import need_reference_policy

    per_param = BYTES_PER_PARAM_TRAIN + (BYTES_PER_PARAM_REF if need_reference_policy(config) else 0)
    procs = int(_get(config, "trainer.n_gpus_per_node", 1))
    # FSDP shards the trainer state over the processes but each rollout server holds a full copy.
    return int(FIXED_OVERHEAD_BYTES + params * per_param + params * 4 * max(0, procs - 1))


def check_memory(config: DictConfig) -> list[Problem]:
    if not _on_cpu(config):
        return []
    path = _get(config, "actor_rollout_ref.model.path")
    if not path or _is_remote(str(path)):
        return []
    local = os.path.expanduser(str(path))
    if not os.path.isdir(local):
        return []  # reported by check_model
    params = estimate_parameters(local)
    if params is None:
        return []
    need = estimate_cpu_memory_bytes(config, params)
    have = machine_memory_bytes()
    if need > have:
        gib = 2**30
        return [Problem("memory", "actor_rollout_ref.model.path",
                        f"{path!r} has about {params / 1e6:.0f}M parameters; RL training it on CPU needs about "
                        f"{need / gib:.1f} GiB of RAM but this machine has {have / gib:.1f} GiB. Fix: use a smaller "
                        "model (e.g. SmolLM2-135M-Instruct from scripts/prepare_model.py) or a GPU node; "
                        "rpo_verl.skip_checks=[memory] tries anyway.", environment=True)]
    import psutil

    available = psutil.virtual_memory().available
    if need > available:
        print(f"WARNING: training {path!r} on CPU needs about {need / 2**30:.1f} GiB of RAM and only "
              f"{available / 2**30:.1f} GiB are free now (other processes); Ray may kill a worker when memory "
              "runs out.")
    return []


# ----------------------------------------------------------------------------- loggers


def check_logger(config: DictConfig) -> list[Problem]:
    loggers = _as_list(_get(config, "trainer.logger"))
    problems = []
    for name, package in (("wandb", "wandb"), ("swanlab", "swanlab"), ("mlflow", "mlflow"),
                          ("tensorboard", "tensorboard")):
        if name in loggers and importlib.util.find_spec(package) is None:
            problems.append(Problem("logger", "trainer.logger", f"{list(loggers)} includes {name!r}, but the "
                                    f"package {package!r} is not installed. Fix: trainer.logger='[console,file]' "
                                    f"or `pip install {package}`.", environment=True))
    return problems


CHECKS: dict[str, Callable[[DictConfig], list[Problem]]] = {
    "model": check_model,
    "data": check_data,
    "reward_function": check_reward_function,
    "rollout": check_rollout,
    "device": check_device,
    "cpu_options": check_cpu_options,
    "memory": check_memory,
    "logger": check_logger,
    "batch_split": check_batch_split,
}


def all_checks() -> dict[str, Callable[[DictConfig], list[Problem]]]:
    """Every start-up check by name: the generic ``CHECKS``, then the features' (registry order)."""
    features = feature_checks()
    clash = sorted(set(features) & set(CHECKS))
    if clash:
        raise ValueError(f"feature(s) {clash} are named like a generic start-up check; rename the feature")
    return {**CHECKS, **features}


def run_checks(config: DictConfig, skip: Iterable[str] = ()) -> list[Problem]:
    """Run every check not in ``skip``; return all problems found (empty: good to go)."""
    checks = all_checks()
    skip = set(skip)
    unknown = skip - set(checks)
    if unknown:
        return [Problem("skip_checks", "rpo_verl.skip_checks", f"unknown check name(s) {sorted(unknown)}; "
                        f"names: {list(checks)}.")]
    problems: list[Problem] = []
    for name, check in checks.items():
        if name not in skip:
            problems += check(config)
    return list(dict.fromkeys(problems))  # once each (e.g. one file given as train and val data)


def enforce(problems: list[Problem], dry_run: bool, warn: Callable[[str], None] = print) -> None:
    """Raise ``StartupCheckError`` for the problems that must stop this launch.

    In a dry run, environment problems (files, GPUs, RAM, installed packages of this machine) are
    only printed: the config itself may be fine for the machine it is meant for.
    """
    fatal = [p for p in problems if not (dry_run and p.environment)]
    for p in problems:
        if p not in fatal:
            warn(f"WARNING (would stop a real launch on this machine): {p}")
    if fatal:
        raise StartupCheckError(fatal)
