"""``HFServerAdapter``: the worker-side half of the HF rollout (verl's ``BaseRollout``).

verl builds it inside every trainer worker (``ActorRolloutRefWorker``) from
``_ROLLOUT_REGISTRY[("hf", "async")]``. The sync trainer's "naive" weight sync calls
``update_weights`` with the trainer's per-tensor generator on *every* rank: each rank must iterate
it, because producing a full tensor from an FSDP shard (``DTensor.full_tensor()``) is a
collective. With tensor/data/pipeline parallel sizes of 1 (required) every trainer rank leads its
own replica, so each rank sends the full tensors it gathered to its own server.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.utils import ensure_async_iterator

from rpo_verl.rollout.hf.options import check_rollout_config
from rpo_verl.rollout.hf.replica import server_actor_name

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


class HFServerAdapter(BaseRollout):
    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        self.options = check_rollout_config(self.config)
        rank = int(os.environ.get("RANK", "0"))
        # tp = dp = pp = 1 (checked above): every trainer rank is rank 0 of its own replica.
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.server_handle: Optional[ray.actor.ActorHandle] = None
        self.sleep_level = 1  # verl's LoRA path sets this attribute; nothing here depends on it

    @property
    def is_leader_rank(self) -> bool:
        """Read by verl's ``CheckpointEngineWorker`` (colocated/standalone modes)."""
        return self.rollout_rank == 0

    def _server(self) -> ray.actor.ActorHandle:
        # Looked up lazily: the server is launched after the trainer workers.
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        if self.config.free_cache_engine:
            await self._server().wake_up.remote(tags=tags)

    async def release(self):
        if self.config.free_cache_engine:
            await self._server().sleep.remote()

    @torch.no_grad()
    async def update_weights(
        self,
        weights,
        global_steps: Optional[int] = None,
        wire_format: str = "named_tensors",
        peft_config: Any = None,
        **kwargs,
    ):
        """Push the trainer's full weights to the server, in buckets of ``weight_bucket_mb``."""
        if wire_format != "named_tensors":
            raise NotImplementedError(
                f"hf rollout receives full tensors only (wire_format 'named_tensors', got {wire_format!r}); "
                "use actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        if peft_config is not None:
            raise NotImplementedError(
                "hf rollout cannot apply LoRA adapters; set actor_rollout_ref.model.lora.merge=True so the "
                "trainer sends merged weights"
            )
        start = time.perf_counter()
        server = self._server()
        limit = self.options.weight_bucket_mb << 20
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        in_flight = None  # overlap sending one bucket with gathering the next
        async for name, tensor in ensure_async_iterator(weights):
            tensor = tensor.detach().to("cpu").contiguous()
            bucket.append((name, tensor))
            size += tensor.nbytes
            if size >= limit:
                if in_flight is not None:
                    await in_flight
                in_flight = server.update_weights_from_tensors.remote(bucket)
                bucket, size = [], 0
        if in_flight is not None:
            await in_flight
        if bucket:
            await server.update_weights_from_tensors.remote(bucket)
        stats = await server.finish_weight_update.remote(global_steps)
        logger.info(
            "hf rollout: pushed %s tensors to replica %d in %.2fs", stats.get("tensors"), self.replica_rank,
            time.perf_counter() - start,
        )

    def generate_sequences(self, prompts):
        raise NotImplementedError("the hf rollout serves requests through its server (async mode) only")
