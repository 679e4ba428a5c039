"""RPO experience-cache service: the store + prefix cuts + update policy behind one named Ray actor
(its counters and metrics: ``rpo_verl.rpo.cache_metrics``).

``CacheService`` is a plain class (testable without Ray) owning one ``CacheStore`` shard;
updates come in two phases (``rpo_verl.rpo.cache_update``: only the rows to write send their
tokens); ``CacheServiceActor`` is the same class run as a Ray actor named ``rpo_verl_cache_service``
(``..._{k}of{K}`` when sharded over K actors by ``prompt_id % K``); the client that routes
calls to the shards is ``rpo_verl.rpo.service_client.CacheServiceClient``. Ray is imported only
inside the actor.

Restart: the actor is created with ``max_restarts``; every ``save`` also writes a pointer file
``<snapshot_dir>/latest.shard{k}of{K}.json``, and a *reconstructed* actor (Ray re-runs
``__init__`` after a crash) reloads the file it points to, so nothing up to the last save
(checkpoint) is lost. A fresh actor starts from the offline cache file (``cache.init=offline``) or
empty (``lazy``).

Randomness: ``sample_prefixes`` draws from ``default_rng([rng_seed, shard])`` (the controller
passes e.g. the global step), ``update`` from ``default_rng([cache.seed, shard, update_calls])``
where ``update_calls`` is saved state, so a resumed service continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from rpo_verl.rpo.batches import PrefixBatch
from rpo_verl.rpo.cache_file import CacheFileError, read_cache_file
from rpo_verl.rpo.cache_metrics import COUNTERS, derive_metrics
from rpo_verl.rpo.cache_store import CacheStore
from rpo_verl.rpo.cache_update import CacheUpdates
from rpo_verl.rpo.config import RPOConfig
from rpo_verl.rpo.prefix import OVERLONG_FULL_PATH, OVERLONG_SHORTENED, newline_table, plan_cuts
from rpo_verl.utils.atomic_files import atomic_write_json, atomic_write_npz

logger = logging.getLogger(__name__)

SERVICE_NAME = "rpo_verl_cache_service"
FILE_PREFIX = "rpo_cache"


def shard_file_name(k: int, num_shards: int) -> str:
    return f"{FILE_PREFIX}.shard{k}of{num_shards}.npz"


def as_rpo_config(config) -> RPOConfig:
    if isinstance(config, RPOConfig):
        return config
    from rpo_verl.config.validation import build_config

    return build_config(RPOConfig, config, "rpo_verl.rpo")


# ----------------------------------------------------------------------------------------------
# Service (one shard)
# ----------------------------------------------------------------------------------------------
class CacheService(CacheUpdates):
    """One shard of the experience cache with RPO's cut and update policies (no Ray needed).

    Args:
        config: ``RPOConfig`` or its mapping (``rpo_verl.rpo``).
        id_range: ``(id_lo, id_hi)`` of the dataset's prompt ids (``extra_info.index``).
        response_length: rollout response budget (``data.max_response_length``); prefix + suffix fit in it.
        fingerprint: ``tokenizer_fingerprint(tokenizer)``, checked against every file loaded.
        newline_ids: ``prefix.newline_token_ids(tokenizer)``, needed for ``prefix.align=newline``.
        shard: ``(k, K)``: this service holds prompts with ``prompt_id % K == k``.
        restore_latest: reload the snapshot named by the pointer file (set on actor reconstruction).
    """

    def __init__(
        self,
        config,
        *,
        id_range: tuple[int, int],
        response_length: int,
        fingerprint: Optional[dict] = None,
        newline_ids=None,
        shard: tuple[int, int] = (0, 1),
        restore_latest: bool = False,
        store_kwargs: Optional[dict] = None,
    ):
        self.cfg = as_rpo_config(config)
        self.shard = (int(shard[0]), int(shard[1]))
        if not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard: need 0 <= k < K, got {shard}")
        if response_length < 1:
            raise ValueError(f"response_length must be >= 1, got {response_length}")
        self.response_length = int(response_length)
        cache = self.cfg.cache
        self.store = CacheStore(
            id_range,
            cache.per_prompt,
            fingerprint=fingerprint,
            compact_garbage_frac=cache.compact_garbage_frac,
            **(store_kwargs or {}),
        )
        vocab = fingerprint.get("vocab_size") if fingerprint else None
        self.newline = None if newline_ids is None else newline_table(newline_ids, vocab)
        if self.cfg.prefix.align == "newline" and self.newline is None:
            raise ValueError(
                "rpo_verl.rpo.prefix.align=newline: the cache service needs newline_ids from the tokenizer"
            )
        self.counters = dict.fromkeys(COUNTERS, 0.0)
        self._read_mark = dict(self.counters)
        self.restores = 0  # 1 if this incarnation reloaded a snapshot after an actor restart
        self.loaded_from: list[str] = []
        if restore_latest:
            latest = self._latest_pointer()
            if latest is not None:
                self.load(latest)
                self.restores = 1
                logger.warning("rpo cache service shard %s restarted: reloaded snapshot %s", self.shard, latest)
                return
            logger.warning("rpo cache service shard %s restarted without a snapshot: starting from init", self.shard)
        if cache.init == "offline" and cache.path:
            self.load(cache.path)

    # ---- prefixes ---------------------------------------------------------------------------
    def sample_prefix_batch(self, prompt_ids, rng_seed: int, prompt_lens=None) -> PrefixBatch:
        """Cut one prefix per prompt (see ``rpo_verl.rpo.prefix.plan_cuts``); vectorised."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        rng = np.random.default_rng([int(rng_seed) & 0xFFFFFFFFFFFF, self.shard[0]])
        table = self.store.record_table(ids)  # [B, K]
        if table.shape[1] == 1:
            rec = table[:, 0].astype(np.int64)
        else:  # uniform among the filled slots
            filled = table >= 0
            count = filled.sum(axis=1)
            draw = rng.integers(0, np.maximum(count, 1))
            rank = np.cumsum(filled, axis=1) - 1
            pick = (filled & (rank == draw[:, None])).argmax(axis=1)
            rec = np.where(count > 0, table[np.arange(len(ids)), pick], -1).astype(np.int64)
        has = rec >= 0
        cached_len = np.where(has, self.store.col("length")[np.maximum(rec, 0)] if self.store.num_records else 0, 0)
        plan = plan_cuts(
            cached_len,
            has,
            self.cfg.prefix,
            rng,
            response_length=self.response_length,
            prompt_len=None if prompt_lens is None else np.asarray(prompt_lens, dtype=np.int64),
            gather=lambda rows, offsets: self.store.gather(rec[rows], offsets),
            newline=self.newline,
        )
        used = plan.prefix_len > 0
        self.store.add_hits(rec[used])
        tokens = self.store.spans(np.where(used, rec, 0), plan.prefix_len)
        c = self.counters
        c["sample_calls"] += 1
        c["lookups"] += len(ids)
        c["hits"] += int(has.sum())
        c["prefixed"] += int(used.sum())
        c["full_path"] += int((~used).sum())
        c["overlong_full_path"] += int((plan.reason == OVERLONG_FULL_PATH).sum())
        c["overlong_shortened"] += int((plan.reason == OVERLONG_SHORTENED).sum())
        c["align_fallback"] += int(plan.align_fallback.sum())
        c["prefix_tokens"] += int(plan.prefix_len.sum())
        c["budget_tokens"] += int(plan.budget.sum())
        if used.any():
            c["prefix_fraction_sum"] += float((plan.prefix_len[used] / cached_len[used]).sum())
        if (plan.reason == OVERLONG_FULL_PATH).any():
            logger.warning(
                "rpo: %d prefixes did not fit the budget and ran full-path (rpo_verl.rpo.prefix.overlong)",
                int((plan.reason == OVERLONG_FULL_PATH).sum()),
            )
        return PrefixBatch(tokens, plan.prefix_len, plan.budget, plan.reason, cached_len.astype(np.int64))

    def sample_prefix_arrays(self, prompt_ids, rng_seed: int, prompt_lens=None) -> tuple[np.ndarray, ...]:
        """``sample_prefix_batch`` as the flat arrays of ``PrefixBatch.to_arrays`` (what crosses Ray)."""
        return self.sample_prefix_batch(prompt_ids, rng_seed, prompt_lens).to_arrays()

    def sample_prefixes(self, prompt_ids, rng_seed: int, prompt_lens=None) -> list[tuple[np.ndarray, int]]:
        """[(prefix token ids as int32 array, suffix budget)] per prompt, in request order."""
        return self.sample_prefix_batch(prompt_ids, rng_seed, prompt_lens).as_list()

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = self.store.state_dict()
        state["meta"]["service"] = {"shard": list(self.shard), "counters": dict(self.counters)}
        return state

    def load_state_dict(self, states, source: str = "state dict") -> None:
        """Load one state dict or several (any sharding: records of other shards are dropped)."""
        states = [states] if isinstance(states, dict) else list(states)
        own = [s for s in states if tuple((s["meta"].get("service") or {}).get("shard", ())) == self.shard]
        own_seq = int(own[0]["meta"]["seq_counter"]) if len(own) == 1 else None
        self.store.load_state_dict(states, shard=self.shard, source=source, seq_counter=own_seq)
        self._pending = None  # a planned update of the old state is stale
        if len(own) == 1:
            self.counters = {k: float(own[0]["meta"]["service"]["counters"].get(k, 0.0)) for k in COUNTERS}
        else:  # other sharding or a plain cache file: counters restart (update rng stream too)
            self.counters = dict.fromkeys(COUNTERS, 0.0)
        self._read_mark = dict(self.counters)

    def save(self, path: str) -> str:
        """Write this shard to ``path`` (a file, or a directory -> ``<dir>/rpo_cache.shard{k}of{K}.npz``)."""
        if os.path.isdir(path) or path.endswith(os.sep) or not path.endswith(".npz"):
            path = os.path.join(path, shard_file_name(*self.shard))
        elif self.shard[1] > 1:  # one file per shard, never one file for all
            path = f"{path[:-4]}.shard{self.shard[0]}of{self.shard[1]}.npz"
        state = self.state_dict()
        meta = state.pop("meta")
        atomic_write_npz(path, {"meta": np.array(json.dumps(meta)), **state})
        self._write_pointer(path)
        return path

    def load(self, path: str | Sequence[str], remember: bool = False) -> None:
        """Load a cache file, a list of files, or a directory of ``rpo_cache*.npz`` files (any sharding).

        ``remember``: also point the restart snapshot at ``path`` (a run resumed from a checkpoint
        must reload that checkpoint after an actor restart, not a newer snapshot of an older run).
        """
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        files: list[str] = []
        for p in map(os.fspath, paths):
            if os.path.isdir(p):
                found = sorted(glob.glob(os.path.join(p, f"{FILE_PREFIX}*.npz")))
                if not found:
                    raise CacheFileError(f"no {FILE_PREFIX}*.npz cache files in directory {p!r}")
                files.extend(found)
            else:
                files.append(p)
        self.load_state_dict([read_cache_file(f) for f in files], source=", ".join(map(repr, files)))
        self.loaded_from = files
        if remember and len(paths) == 1:  # a file or a directory of shard files
            self._write_pointer(os.fspath(paths[0]))

    def _pointer_path(self) -> Optional[str]:
        d = self.cfg.cache.snapshot_dir
        return None if not d else os.path.join(d, f"latest.shard{self.shard[0]}of{self.shard[1]}.json")

    def _write_pointer(self, path: str) -> None:
        pointer = self._pointer_path()
        if pointer is None:
            return
        atomic_write_json(pointer, {"path": os.path.abspath(path)})

    def _latest_pointer(self) -> Optional[str]:
        pointer = self._pointer_path()
        if pointer is None or not os.path.exists(pointer):
            return None
        with open(pointer) as handle:
            return json.load(handle)["path"]

    # ---- metrics ----------------------------------------------------------------------------
    def raw_metrics(self, reset_window: bool = True) -> dict:
        """Counters (total and since the previous read) and gauges, for merging over shards."""
        window = {k: self.counters[k] - self._read_mark.get(k, 0.0) for k in COUNTERS}
        if reset_window:
            self._read_mark = dict(self.counters)
        st = self.store
        n = st.num_records
        gauges = {
            "records": n,
            "prompts_cached": st.num_prompts_cached,
            "live_tokens": st.live_tokens,
            "garbage_tokens": st.garbage_tokens,
            "nbytes": st.nbytes,
            "reward_sum": float(st.col("reward").astype(np.float64).sum()),
            "correct_sum": int(st.col("correct").sum()),
            "step_sum": float(st.col("step").astype(np.float64).sum()),
            "compactions": st.compactions,
            "restores": self.restores,
        }
        return {"total": dict(self.counters), "window": window, "gauges": gauges}

    def metrics(self) -> dict:
        return derive_metrics([self.raw_metrics()])

    def ping(self) -> bool:
        return True


# ----------------------------------------------------------------------------------------------
# Ray actor
# ----------------------------------------------------------------------------------------------
class CacheServiceActor(CacheService):
    """``CacheService`` as a Ray actor: on reconstruction after a crash it reloads its last snapshot."""

    def __init__(self, *args, **kwargs):
        import ray

        kwargs["restore_latest"] = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        super().__init__(*args, **kwargs)
