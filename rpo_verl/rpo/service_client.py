"""Client of the sharded RPO cache service, and creation of its named Ray actors.

``start_cache_service`` creates (or attaches to) one named actor per shard
(``rpo_verl_cache_service``, or ``rpo_verl_cache_service_{k}of{K}``) with ``max_restarts``;
``CacheServiceClient`` routes each prompt to shard ``prompt_id % K``, returns answers in request
order and merges metrics. The client also accepts plain ``CacheService`` objects (no Ray), which is
how the tests exercise the routing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from rpo_verl.rpo.batches import PrefixBatch, UpdateBatch
from rpo_verl.rpo.cache_file import CacheFileError
from rpo_verl.rpo.cache_metrics import derive_metrics
from rpo_verl.rpo.cache_service import SERVICE_NAME, CacheServiceActor, as_rpo_config


def actor_name(name: str, k: int, num_shards: int) -> str:
    return name if num_shards == 1 else f"{name}_{k}of{num_shards}"


class CacheServiceClient:
    """Routes calls to K cache shards (Ray actor handles or plain ``CacheService`` objects).

    Prompt ``p`` lives on shard ``p % K``; answers come back in request order and metrics are
    merged (counts summed, rates recomputed from the summed counts).
    """

    def __init__(self, shards: list):
        if not shards:
            raise ValueError("CacheServiceClient needs at least one shard")
        self.shards = list(shards)
        self._remote = hasattr(getattr(self.shards[0], "ping"), "remote")

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def _call_all(self, method: str, per_shard_args: list[tuple]) -> list:
        if self._remote:
            import ray

            refs = [getattr(s, method).remote(*args) for s, args in zip(self.shards, per_shard_args)]
            return ray.get(refs)
        return [getattr(s, method)(*args) for s, args in zip(self.shards, per_shard_args)]

    def _route(self, prompt_ids: np.ndarray) -> list[np.ndarray]:
        k = self.num_shards
        return [np.flatnonzero(prompt_ids % k == i) for i in range(k)]

    def sample_prefix_batch(self, prompt_ids, rng_seed: int, prompt_lens=None) -> PrefixBatch:
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        lens = None if prompt_lens is None else np.asarray(prompt_lens, dtype=np.int64).reshape(-1)
        routes = self._route(ids)
        args = [(ids[r], rng_seed, None if lens is None else lens[r]) for r in routes]
        answers = self._call_all("sample_prefix_batch", args)
        return PrefixBatch.merge(list(zip(routes, answers)), ids.size)

    def sample_prefixes(self, prompt_ids, rng_seed: int, prompt_lens=None) -> list[tuple[np.ndarray, int]]:
        return self.sample_prefix_batch(prompt_ids, rng_seed, prompt_lens).as_list()

    def update(self, records: UpdateBatch, rng_seed: Optional[int] = None) -> dict:
        routes = self._route(records.prompt_ids)
        summaries = self._call_all("update", [(records.subset(r), rng_seed) for r in routes])
        return {k: sum(s[k] for s in summaries) for k in summaries[0]}

    def metrics(self) -> dict:
        return derive_metrics(self._call_all("raw_metrics", [()] * self.num_shards))

    def state_dict(self) -> dict:
        return {"num_shards": self.num_shards, "shards": self._call_all("state_dict", [()] * self.num_shards)}

    def load_state_dict(self, state: dict) -> None:
        shards = state["shards"]
        self._call_all("load_state_dict", [(shards,)] * self.num_shards)

    def save(self, directory: str) -> list[str]:
        """Each shard writes ``<directory>/rpo_cache.shard{k}of{K}.npz``; returns the paths."""
        os.makedirs(directory, exist_ok=True)
        return self._call_all("save", [(directory,)] * self.num_shards)

    def load(self, path: str | Sequence[str], remember: bool = False) -> None:
        """Every shard loads its prompts from a file, files, or a directory of shard files
        (``remember``: and reloads ``path`` if its actor restarts later)."""
        self._call_all("load", [(path, remember)] * self.num_shards)

    def ping(self) -> bool:
        return all(self._call_all("ping", [()] * self.num_shards))


def start_cache_service(
    config,
    *,
    id_range: tuple[int, int],
    response_length: int,
    fingerprint: Optional[dict] = None,
    newline_ids=None,
    name: str = SERVICE_NAME,
    namespace: Optional[str] = None,
    num_cpus: float = 0,
    store_kwargs: Optional[dict] = None,
) -> CacheServiceClient:
    """Create (or attach to) the named cache actors, one per shard; Ray must be initialised."""
    import ray

    cfg = as_rpo_config(config)
    k_total = cfg.cache.num_shards
    remote_cls = ray.remote(CacheServiceActor)
    handles = []
    for k in range(k_total):
        handles.append(
            remote_cls.options(
                name=actor_name(name, k, k_total),
                namespace=namespace,
                get_if_exists=True,
                max_restarts=cfg.cache.max_restarts,
                max_task_retries=cfg.cache.max_restarts,
                num_cpus=num_cpus,
            ).remote(
                cfg,
                id_range=tuple(id_range),
                response_length=response_length,
                fingerprint=fingerprint,
                newline_ids=None if newline_ids is None else np.asarray(newline_ids, dtype=np.int64),
                shard=(k, k_total),
                store_kwargs=store_kwargs,
            )
        )
    client = CacheServiceClient(handles)
    try:
        client.ping()  # surface constructor errors (bad cache file, ...) here, not at first use
    except Exception as exc:  # Ray wraps them in ActorDiedError: re-raise a bad file as itself
        marker = "CacheFileError: "
        text = str(exc)
        if marker in text:
            raise CacheFileError(text[text.rindex(marker) + len(marker) :].strip().splitlines()[0]) from exc
        raise
    return client


def connect_cache_service(num_shards: int = 1, name: str = SERVICE_NAME, namespace: Optional[str] = None):
    """Client for already running cache actors (e.g. from another process of the same Ray job)."""
    import ray

    return CacheServiceClient(
        [ray.get_actor(actor_name(name, k, num_shards), namespace=namespace) for k in range(num_shards)]
    )
