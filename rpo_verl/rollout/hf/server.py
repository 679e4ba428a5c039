"""The HF rollout server: the object verl's ``LLMServerClient``, ``RolloutReplica`` and
``CheckpointEngineManager`` talk to, in place of ``vLLMHttpServer`` (token in, token out; no HTTP).

It is a plain class (tests drive it in-process); ``HFReplica`` runs it as an async Ray actor.
Concurrent ``generate`` calls are queued and decoded together on one engine thread (requests that
arrive while a batch is decoding join it at the next step), so the actor's event loop stays free
for new requests, weight pushes and lifecycle calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import torch

from rpo_verl.rollout.hf.engine import EngineRequest, EngineResult, HFGenerationEngine
from rpo_verl.rollout.hf.options import ROLLOUT_KEY, check_rollout_config
from rpo_verl.rollout.hf.sampling import SamplingDefaults, resolve_sampling

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


def _eos_token_ids(model_config) -> list[int]:
    """EOS ids as vLLM uses them: the generation config's ``eos_token_id`` plus the tokenizer's."""
    ids: list[int] = []
    generation_config = getattr(model_config, "generation_config", None)
    for source in (getattr(generation_config, "eos_token_id", None), getattr(model_config.tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        ids.extend(source if isinstance(source, (list, tuple)) else [source])
    return sorted({int(i) for i in ids})


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class _Pending:
    request: EngineRequest
    future: asyncio.Future


class HFRolloutServer:
    """Serves one rollout replica with an HF model on CPU.

    Args mirror ``vLLMHttpServer`` where they mean the same: ``config`` is ``actor_rollout_ref.rollout``
    (``RolloutConfig`` or DictConfig), ``model_config`` is ``actor_rollout_ref.model``.
    """

    def __init__(self, config, model_config, rollout_mode=None, replica_rank: int = 0, name: str = ""):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig
        from verl.workers.rollout.utils import get_max_position_embeddings

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.options = check_rollout_config(self.config)
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.name = name or f"hf_server_{replica_rank}"
        torch.set_num_threads(self.options.num_threads or _usable_cores())

        max_positions = get_max_position_embeddings(self.model_config.hf_config)
        max_model_len = self.config.max_model_len or max_positions
        if max_model_len > max_positions:
            raise ValueError(
                f"{ROLLOUT_KEY}.max_model_len ({max_model_len}) exceeds the model's max_position_embeddings "
                f"({max_positions})"
            )
        self.defaults = SamplingDefaults(
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=max_model_len,
            temperature=self.config.temperature,
            top_k=self.config.top_k,
            top_p=self.config.top_p,
            repetition_penalty=self.config.repetition_penalty,
            ignore_eos=self.config.ignore_eos,
        )
        tokenizer = self.model_config.tokenizer
        pad = getattr(tokenizer, "pad_token_id", None)
        self.engine = HFGenerationEngine(
            self.model_config.local_path,
            dtype=self.options.dtype,
            attn_implementation=self.options.attn_implementation,
            trust_remote_code=self.model_config.trust_remote_code,
            eos_token_ids=_eos_token_ids(self.model_config),
            pad_token_id=0 if pad is None else pad,
            seed=self.config.seed + replica_rank,
            logprobs_mode=self.config.logprobs_mode or "processed_logprobs",
        )
        logger.info(
            "%s: %s (%s, %s), max_model_len %d, eos %s, %d threads",
            self.name,
            self.model_config.local_path,
            self.options.dtype,
            self.options.attn_implementation,
            max_model_len,
            sorted(self.engine.eos_token_ids),
            torch.get_num_threads(),
        )

        # Model weight version (set by weight pushes), reported in TokenOutput.extra_fields like vLLM.
        self.global_steps = None
        # One engine thread: generation and weight loads never overlap. The engine thread admits
        # queued requests into its live batch at step boundaries (_take_pending), hence the lock.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-rollout-engine")
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._running: list[_Pending] = []
        # Admission gate closed by abort_all_requests, reopened by resume_generation.
        self._paused = False
        self._rejecting = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._batcher: Optional[asyncio.Task] = None
        self._address = f"{self._node_ip()}/{self.name}"
        self.stats = {"engine_runs": 0, "requests": 0, "generated_tokens": 0, "max_batch": 0}

    @staticmethod
    def _node_ip() -> str:
        try:
            import ray

            if ray.is_initialized():
                return ray.util.get_node_ip_address().strip("[]")
        except Exception:  # noqa: BLE001 - the address is only an id for verl's load balancer
            pass
        return "127.0.0.1"

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs: Any,
    ):
        """Token-in-token-out generation, the signature ``LLMServerClient.generate`` calls.

        ``stop_reason`` is "stop" (EOS or a ``stop_token_ids`` token, which is included in
        ``token_ids``), "length" (``max_tokens`` reached) or "aborted" (partial output). verl's vLLM
        server reports "completed" for both of the first two; verl itself only tests for "aborted".
        ``log_probs`` are returned when ``sampling_params["logprobs"]`` is true (verl sends
        ``rollout.calculate_log_probs``).
        """
        from verl.utils.tokenizer import normalize_token_ids
        from verl.workers.rollout.replica import TokenOutput

        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("the hf rollout backend is text-only: image/video/audio inputs are not supported")
        prompt_ids = [int(t) for t in normalize_token_ids(prompt_ids)]
        if not prompt_ids:
            raise ValueError(f"request {request_id}: empty prompt_ids")
        spec = resolve_sampling(sampling_params, len(prompt_ids), self.defaults)

        self._bind_loop()
        if await self._wait_for_admission():
            return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted", extra_fields=self._extra_fields())
        pending = _Pending(EngineRequest(request_id, prompt_ids, spec), self._loop.create_future())
        with self._lock:
            self._pending.append(pending)
        self._new_request.set()
        result: EngineResult = await pending.future
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if spec.return_logprobs else None,
            stop_reason=result.finish_reason,
            num_preempted=0,
            extra_fields=self._extra_fields(),
        )

    def _bind_loop(self) -> None:
        """Create the loop-bound parts on first use (a Ray actor has one loop; tests may use several)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._new_request = asyncio.Event()
            self._resume = asyncio.Event()
            if not self._paused:
                self._resume.set()
            self._batcher = None
        if self._batcher is None or self._batcher.done():
            self._batcher = loop.create_task(self._batch_loop())

    def _extra_fields(self) -> dict:
        return {"global_steps": self.global_steps, "num_cached_tokens": 0}

    async def _wait_for_admission(self) -> bool:
        """Park while the gate is closed; True means the request is rejected (returned as aborted)."""
        while self._paused:
            if self._rejecting:
                return True
            await self._resume.wait()
        return False

    async def _wait_for_first_batch(self) -> None:
        """Wait for a request, then until none arrived for batch_window_ms (bounded by max_wait_ms),
        so that a burst of requests is prefilled together."""
        while not self._pending:
            self._new_request.clear()
            await self._new_request.wait()
        window = self.options.batch_window_ms / 1000
        deadline = time.monotonic() + self.options.max_wait_ms / 1000
        while len(self._pending) < self.options.max_batch_size and not self._paused:
            self._new_request.clear()
            timeout = min(window, deadline - time.monotonic())
            if timeout <= 0:
                break
            try:
                await asyncio.wait_for(self._new_request.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                break

    def _take_pending(self, capacity: int) -> list[EngineRequest]:
        """Engine thread: admit up to ``capacity`` queued requests into the live batch."""
        with self._lock:
            taken = [p for p in self._pending[:capacity] if not p.future.done()]
            del self._pending[:capacity]
            self._running.extend(taken)
        return [p.request for p in taken]

    def _on_finish(self, request: EngineRequest, result: EngineResult) -> None:
        """Engine thread: hand a finished request back to its caller on the event loop."""
        self._loop.call_soon_threadsafe(self._finish, request, result)

    def _finish(self, request: EngineRequest, result: EngineResult) -> None:
        with self._lock:
            pending = next((p for p in self._running if p.request is request), None)
            if pending is not None:
                self._running.remove(pending)
        self.stats["requests"] += 1
        self.stats["max_batch"] = self.engine.max_live_rows
        self.stats["generated_tokens"] += len(result.token_ids)
        if pending is not None and not pending.future.done():
            pending.future.set_result(result)

    def _run_engine(self) -> None:
        first = self._take_pending(self.options.max_batch_size)
        self.stats["engine_runs"] += 1
        self.engine.run(first, self._take_pending, self._on_finish, max_rows=self.options.max_batch_size)

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_first_batch()
            try:
                await loop.run_in_executor(self._executor, self._run_engine)
            except Exception as exc:  # noqa: BLE001 - hand the failure to every caller in flight
                logger.exception("%s: generation failed", self.name)
                with self._lock:
                    failed, self._running = self._running, []
                for p in failed:
                    if not p.future.done():
                        p.future.set_exception(exc)
            # Let the _finish callbacks queued by the engine thread run before the next wait.
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ abort / resume
    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Close the admission gate and abort every queued and running request (partial tokens are
        returned with stop_reason "aborted"). Stays closed until ``resume_generation``."""
        self._bind_loop()
        self._paused = True
        self._rejecting = reject_request
        self._resume.clear()
        with self._lock:
            queued, self._pending = self._pending, []
            running = list(self._running)
        for p in queued:
            if not p.future.done():
                p.future.set_result(EngineResult(finish_reason="aborted"))
        for p in running:
            p.request.abort.set()
        await self.wait_for_requests_to_drain()
        request_ids = [p.request.request_id for p in queued + running]
        logger.info("%s: aborted %d requests", self.name, len(request_ids))
        return {"aborted_count": len(request_ids), "request_ids": request_ids}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        with self._lock:
            queued = next((p for p in self._pending if p.request.request_id == request_id), None)
            if queued is not None:
                self._pending.remove(queued)
            running = next((p for p in self._running if p.request.request_id == request_id), None)
        if queued is not None and not queued.future.done():
            queued.future.set_result(EngineResult(finish_reason="aborted"))
        if running is not None:
            running.request.abort.set()
        if queued is None and running is None:
            return {"aborted": False, "request_id": request_id, "error": f"Request {request_id} not found"}
        return {"aborted": True, "request_id": request_id}

    async def resume_engine_generation(self) -> None:
        """Nothing to restart: the engine runs whenever requests are admitted."""

    async def open_submission_gate(self) -> None:
        self._bind_loop()
        self._rejecting = False
        self._paused = False
        self._resume.set()

    async def resume_generation(self) -> None:
        await self.resume_engine_generation()
        await self.open_submission_gate()

    async def wait_for_requests_to_drain(self) -> None:
        while self._pending or self._running:
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ weights
    async def update_weights_from_tensors(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load one bucket of pushed weights (strict on names and shapes); runs between batches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.engine.load_weights, named_tensors)

    async def finish_weight_update(self, global_steps: Optional[int] = None) -> dict:
        """End of one push: every weight must have arrived. Records the weight version."""
        loop = asyncio.get_running_loop()
        stats = await loop.run_in_executor(self._executor, self.engine.finish_weight_update)
        if global_steps is not None:
            self.global_steps = global_steps
        return stats

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------ lifecycle (no device memory to manage)
    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        """Weights stay resident on CPU (the next push overwrites them), so there is nothing to restore."""

    async def sleep(self) -> None:
        """Nothing to free: KV caches live only for the duration of one batch."""

    async def clear_kv_cache(self) -> None:
        """No prefix cache is kept across requests."""

    async def release_kv_cache(self) -> None:
        pass

    async def resume_kv_cache(self) -> None:
        pass

    async def start_profile(self, **kwargs) -> None:
        logger.warning("%s: profiling is not supported by the hf rollout; ignored", self.name)

    async def stop_profile(self) -> None:
        pass

    # ------------------------------------------------------------------ information
    async def get_server_address(self) -> str:
        """An id for verl's load balancer (there is no HTTP endpoint)."""
        return self._address

    async def get_rollout_config(self):
        return self.config

    async def get_stats(self) -> dict:
        return dict(self.stats)
