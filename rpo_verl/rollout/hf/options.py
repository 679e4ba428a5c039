"""Settings of the HF-transformers rollout backend and the rollout-config checks it needs.

Backend settings live where vLLM's do, under ``actor_rollout_ref.rollout.engine_kwargs.<backend>``:
``+actor_rollout_ref.rollout.engine_kwargs.hf.dtype=bfloat16`` etc. (the ``+`` is needed because
verl's default ``engine_kwargs`` has no ``hf`` entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rpo_verl.config import ConfigError, build_config

BACKEND_NAME = "hf"
ROLLOUT_KEY = "actor_rollout_ref.rollout"
OPTIONS_KEY = f"{ROLLOUT_KEY}.engine_kwargs.{BACKEND_NAME}"
SUPPORTED_LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")


@dataclass
class HFEngineOptions:
    """``actor_rollout_ref.rollout.engine_kwargs.hf``.

    ``dtype`` is the server's own: verl's ``rollout.dtype`` (bfloat16 by default) is vLLM's knob and
    is not read, because on CPU fp32 is both faster and matches an fp32 trainer exactly.
    """

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # torch threads of the server process; 0 = every usable core (generation and training take
    # turns in the sync trainer; Ray would otherwise set the thread count from logical CPUs).
    num_threads: int = 0
    # Micro-batching: a batch starts once no new request arrived for batch_window_ms, or
    # max_wait_ms after its first request, or when max_batch_size requests are waiting.
    batch_window_ms: float = 20.0
    max_wait_ms: float = 500.0
    max_batch_size: int = 64
    # Size of one weight-update message from the trainer to the server.
    weight_bucket_mb: int = 256

    def __post_init__(self):
        if self.num_threads < 0:
            raise ValueError(f"num_threads: must be >= 0 (0 = all cores), got {self.num_threads}")
        if self.batch_window_ms < 0 or self.max_wait_ms < 0:
            raise ValueError("batch_window_ms: batch_window_ms and max_wait_ms must be >= 0")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size: must be >= 1, got {self.max_batch_size}")
        if self.weight_bucket_mb < 1:
            raise ValueError(f"weight_bucket_mb: must be >= 1, got {self.weight_bucket_mb}")


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def check_rollout_config(rollout_config: Any) -> HFEngineOptions:
    """Validate ``actor_rollout_ref.rollout`` for the HF backend; return its engine options.

    Accepts verl's ``RolloutConfig``, a DictConfig or a dict. Raises ``ConfigError`` naming the key.
    """
    for key in ("tensor_model_parallel_size", "data_parallel_size", "pipeline_model_parallel_size"):
        value = _get(rollout_config, key, 1)
        if value != 1:
            raise ConfigError(
                f"{ROLLOUT_KEY}.{key}: the hf rollout runs the whole model in one process per trainer "
                f"rank; set {ROLLOUT_KEY}.{key}=1 (got {value})"
            )
    expert_parallel = _get(rollout_config, "expert_parallel_size", 1)
    if expert_parallel not in (1, None):
        raise ConfigError(f"{ROLLOUT_KEY}.expert_parallel_size: must be 1 for the hf rollout (got {expert_parallel})")
    mode = _get(rollout_config, "logprobs_mode", "processed_logprobs") or "processed_logprobs"
    if mode not in SUPPORTED_LOGPROBS_MODES:
        raise ConfigError(
            f"{ROLLOUT_KEY}.logprobs_mode: the hf rollout supports {list(SUPPORTED_LOGPROBS_MODES)}, got {mode!r}"
        )
    engine_kwargs = _get(rollout_config, "engine_kwargs", None) or {}
    return build_config(HFEngineOptions, _get(engine_kwargs, BACKEND_NAME, None), OPTIONS_KEY)
