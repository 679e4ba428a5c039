"""Client of the sharded RPO cache service, and creation of its named Ray actors.

``start_cache_service`` creates (or attaches to) one named actor per shard
(``rpo_verl_cache_service``, or ``rpo_verl_cache_service_{k}of{K}``) with ``max_restarts``;
``CacheServiceClient`` routes each prompt to shard ``prompt_id % K``, returns answers in request
order and merges metrics. Every step costs one parallel round of calls for the prefixes and two for
the update (plan, then the chosen rows' tokens), with flat numpy arrays as arguments and answers. The client also accepts plain ``CacheService`` objects (no Ray), which is
how the tests exercise the routing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from rpo_verl.rpo.batches import SUMMARY_KEYS, PrefixBatch, UpdateBatch
from rpo_verl.rpo.cache_file import CacheFileError
from rpo_verl.rpo.cache_metrics import derive_metrics
from rpo_verl.rpo.cache_service import SERVICE_NAME, CacheServiceActor, as_rpo_config


MAX_PLAN_ATTEMPTS = 5  # a plan goes stale only if another caller writes the shard (or it restarts) in between


def actor_name(name: str, k: int, num_shards: int) -> str:
    return name if num_shards == 1 else f"{name}_{k}of{num_shards}"


class CacheServiceClient:
    """Routes calls to K cache shards (Ray actor handles or plain ``CacheService`` objects).

    Prompt ``p`` lives on shard ``p % K``; answers come back in request order and metrics are
    merged (counts summed, rates recomputed from the summed counts).

    With Ray actors ``update`` returns once the shards have planned and the chosen rows' tokens are
    sent; the writes run in the actors meanwhile (a Ray actor runs one caller's calls in order, so
    the next call through this client sees them) and the next call or ``flush()`` collects their
    answers first, re-planning a shard whose plan went stale.
    """

    def __init__(self, shards: list):
        if not shards:
            raise ValueError("CacheServiceClient needs at least one shard")
        self.shards = list(shards)
        self._remote = hasattr(getattr(self.shards[0], "ping"), "remote")
        self._inflight: Optional[tuple] = None  # (commit refs, their shards, update args)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def _call_all(self, method: str, per_shard_args: list[tuple], shards: Optional[list[int]] = None) -> list:
        """Call ``method`` on every shard (or on ``shards``) with its args; remote calls run in parallel."""
        self.flush()
        targets = [self.shards[k] for k in (range(self.num_shards) if shards is None else shards)]
        if self._remote:
            import ray

            refs = [getattr(s, method).remote(*args) for s, args in zip(targets, per_shard_args)]
            return ray.get(refs)
        return [getattr(s, method)(*args) for s, args in zip(targets, per_shard_args)]

    def flush(self) -> None:
        """Wait for the writes of the last ``update`` (re-planning stale shards); a no-op without Ray."""
        if self._inflight is None:
            return
        refs, shards, args = self._inflight
        self._inflight = None
        import ray

        stale = [k for k, ok in zip(shards, ray.get(refs)) if not ok]
        if stale:
            self._update(*args, todo=stale, wait=True)

    def _route(self, prompt_ids: np.ndarray) -> list[np.ndarray]:
        k = self.num_shards
        if k == 1:
            return [np.arange(prompt_ids.size)]
        return [np.flatnonzero(prompt_ids % k == i) for i in range(k)]

    def sample_prefix_batch(self, prompt_ids, rng_seed: int, prompt_lens=None) -> PrefixBatch:
        """One call per shard, all in parallel; prompt ids and answers cross as flat arrays."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        lens = None if prompt_lens is None else np.asarray(prompt_lens, dtype=np.int64).reshape(-1)
        routes = self._route(ids)
        args = [(ids[r], rng_seed, None if lens is None else lens[r]) for r in routes]
        answers = self._call_all("sample_prefix_arrays", args)
        return PrefixBatch.merge([(r, PrefixBatch.from_arrays(a)) for r, a in zip(routes, answers)], ids.size)

    def sample_prefixes(self, prompt_ids, rng_seed: int, prompt_lens=None) -> list[tuple[np.ndarray, int]]:
        return self.sample_prefix_batch(prompt_ids, rng_seed, prompt_lens).as_list()

    def update(self, records: UpdateBatch, rng_seed: Optional[int] = None) -> dict:
        """Every shard plans from the per-row columns, then only the shards with writes get the
        token ids of the rows they chose (``rpo_verl.rpo.cache_update``); both rounds in parallel
        over the shards. With Ray the writes finish in the background (see the class doc)."""
        self.flush()
        return self._update(records, rng_seed, self._route(records.prompt_ids), wait=not self._remote)

    def _update(self, records: UpdateBatch, rng_seed, routes, todo=None, wait=True) -> dict:
        summaries: list = [np.zeros(len(SUMMARY_KEYS), dtype=np.int64)] * self.num_shards
        todo = list(range(self.num_shards)) if todo is None else todo
        for _ in range(MAX_PLAN_ATTEMPTS):
            args = [
                (records.prompt_ids[r], records.lengths[r], records.rewards[r], records.correct[r], records.step, rng_seed)
                for r in (routes[k] for k in todo)
            ]
            plans = self._call_all("plan_update", args, todo)
            commit, commit_args = [], []
            for k, (plan_id, rows, summary) in zip(todo, plans):
                summaries[k] = summary
                if plan_id:
                    chosen = records.subset(routes[k][np.asarray(rows, dtype=np.int64)])
                    commit.append(k)
                    commit_args.append((plan_id, chosen.lengths, chosen.tokens))
            if commit and not wait:
                refs = [self.shards[k].commit_update.remote(*a) for k, a in zip(commit, commit_args)]
                self._inflight = (refs, commit, (records, rng_seed, routes))
                todo = []
            else:
                done = self._call_all("commit_update", commit_args, commit) if commit else []
                todo = [k for k, ok in zip(commit, done) if not ok]  # stale plans: plan again
            if not todo:
                return {key: int(sum(s[i] for s in summaries)) for i, key in enumerate(SUMMARY_KEYS)}
        raise RuntimeError(f"rpo cache update: shards {todo} changed under {MAX_PLAN_ATTEMPTS} consecutive plans")

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
