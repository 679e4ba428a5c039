"""RPO in verl's v1 sync trainer (ALGORITHMS.md §1): ``RPOExtension``, a ``TrainerExtension``.

Per training step (hooks of ``rpo_verl.trainer.trainer.RpoVerlTrainer``, verl's loop unchanged):

1. ``before_rollout`` (every prompt batch submitted, DAPO refills included): one prefix per
   prompt from the cache service (``sample_prefix_batch(extra_info.index, rng_seed=f(seed, step,
   call))``), attached as the columns ``rpo_prefix_ids`` / ``rpo_suffix_budget`` with
   ``agent_name=rpo_suffix_agent`` (validation batches never pass here: they stay full-path with
   ``rollout.agent.default_agent_loop``). With ``actor_rollout_ref.rollout.full_determinism=true``
   each prompt also gets ``rpo_sample_seed`` so that its suffixes are reproducible.
2. Groups that verl's replay buffer drops before training (DAPO ``filter_groups`` evictions and
   surplus groups: ``ReplayBuffer._clear_groups``) are read from TransferQueue just before they are
   cleared: their tokens count as generated and their trajectories are offered to the cache too.
3. ``on_batch_rewarded``: responses (prefix ⊕ suffix ids), rewards (``rm_scores`` sum) and the
   reward function's ``acc`` (``extra_fields.reward_extra_info``; else reward > threshold) of the
   trained batch + the dropped groups go to ``client.update`` in a canonical row order.
4. ``step_metrics``: the service's ``rpo/...`` metrics, ``rollout_metrics`` over every generated
   sample (``eff/generated_tokens`` counts dropped groups too), running totals, rollout vs train
   time from verl's ``timing_raw``.
5. Checkpoints: each shard writes ``<global_step_N>/rpo_cache/rpo_cache.shard{k}of{K}.npz`` (and
   points its restart snapshot there); a resumed run loads that folder into a fresh service.

Start-up checks (clear ``ValueError``s, raised from the ``worker_class`` hook: the tokenizer and
training set are loaded, verl's workers not yet started): ``extra_info.index`` present and unique
over the training set; an offline cache whose records do not fit ``data.max_response_length``; a
bad cache file (``CacheFileError`` from the service).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zlib
from typing import Any, Optional

import numpy as np

from rpo_verl.rpo.agent_loop import AGENT_LOOP_NAME, BUDGET_KEY, PREFIX_KEY, SEED_KEY
from rpo_verl.rpo.batches import UpdateBatch
from rpo_verl.rpo.metrics import rollout_metrics
from rpo_verl.trainer.extension import TrainerExtension

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "rpo_cache"
# Test-only fault injection: kill the cache actor(s) at the start of this training step (Ray
# restarts them; they reload their last snapshot). Used by tests/rpo/test_e2e_rpo.py.
KILL_ENV = "RPO_VERL_FAULT_KILL_CACHE_AT_STEP"
TQ_FIELDS = ["responses", "rm_scores", "extra_fields", "index", "uid"]
_SEED_MASK = (1 << 48) - 1  # the service takes seeds < 2**48


# ----------------------------------------------------------------------------------------------
# Pure helpers (no Ray, no TransferQueue)
# ----------------------------------------------------------------------------------------------
def derive_seed(*parts: int, bits: int = 48) -> int:
    """Deterministic seed from integers (e.g. ``(cache.seed, global_step, call)``), < 2**bits."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << bits) - 1))


def dataset_prompt_ids(extra_infos) -> np.ndarray:
    """``extra_info.index`` of every training row as int64 ``[N]``; raise ``ValueError`` if any is
    missing, not an integer, or repeated (the cache is keyed by it; verl turns a missing index into 0)."""
    ids, missing, bad = [], [], []
    for row, info in enumerate(extra_infos):
        value = info.get("index") if isinstance(info, dict) else None
        if value is None:
            missing.append(row)
            continue
        try:
            as_int = int(value)
            if as_int != value and str(as_int) != str(value):
                raise ValueError
        except (TypeError, ValueError):
            bad.append((row, value))
            continue
        ids.append(as_int)
    fix = "Fix: give every training row a unique integer extra_info.index (scripts/prepare_data.py writes one)."
    if missing:
        raise ValueError(
            f"rpo_verl.rpo: {len(missing)} training rows have no extra_info.index (e.g. rows {missing[:5]}); RPO keys "
            f"its experience cache by it and verl would use 0 for all of them. {fix}"
        )
    if bad:
        raise ValueError(f"rpo_verl.rpo: extra_info.index must be an integer, e.g. row {bad[0][0]} has {bad[0][1]!r}. {fix}")
    arr = np.asarray(ids, dtype=np.int64)
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.size != arr.size:
        dup = uniq[counts > 1]
        raise ValueError(
            f"rpo_verl.rpo: extra_info.index is not unique over the training set: {dup.size} values repeat "
            f"(e.g. {dup[:5].tolist()}); prompts sharing an index would share one cache entry. {fix}"
        )
    return arr


def id_range_of(ids: np.ndarray) -> tuple[int, int]:
    if ids.size == 0:
        raise ValueError("rpo_verl.rpo: the training set is empty")
    lo, hi = int(ids.min()), int(ids.max()) + 1
    if lo < 0:
        raise ValueError(f"rpo_verl.rpo: extra_info.index must be >= 0, found {lo}")
    if hi - lo > 8 * ids.size + (1 << 20):
        logger.warning(
            "rpo: extra_info.index spans [%d, %d) for %d prompts; the cache's id table is dense over that range",
            lo, hi, ids.size,
        )
    return lo, hi


def check_response_budget(cached_lengths: np.ndarray, response_length: int, overlong: str, source: str) -> Optional[str]:
    """Start-up check of an offline cache against ``data.max_response_length`` (which must hold
    prefix + suffix). Raises ``ValueError`` when prefixes cannot fit (any record with
    ``overlong=error``, or most records); returns a warning text when some do not, else None."""
    lengths = np.asarray(cached_lengths, dtype=np.int64)
    if lengths.size == 0:
        return None
    # a prefix is at most L - 1 tokens, so records up to response_length always leave room for a suffix
    too_long = int((lengths > response_length).sum())
    if not too_long:
        return None
    text = (
        f"{too_long} of {lengths.size} cached responses in {source} are longer than data.max_response_length="
        f"{response_length} tokens (longest {int(lengths.max())}); the response must hold prefix + suffix, so "
        "long prefixes of them do not fit"
    )
    fix = (
        f"Fix: raise data.max_response_length (e.g. to {int(lengths.max())} or more) or rebuild the cache "
        "with scripts/build_cache.py at this response length."
    )
    if overlong == "error" or too_long * 2 > lengths.size:
        raise ValueError(f"rpo_verl.rpo: {text}. {fix}")
    return f"{text} (rpo_verl.rpo.prefix.overlong={overlong}). {fix}"


def cached_lengths(path: str) -> np.ndarray:
    """The ``length`` column of a cache file or of a directory of shard files (cheap: one array)."""
    import glob

    files = sorted(glob.glob(os.path.join(path, "rpo_cache*.npz"))) if os.path.isdir(path) else [path]
    parts = []
    for f in files:
        with np.load(f, allow_pickle=False) as data:
            parts.append(np.asarray(data["length"], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def correctness(extra_fields: list) -> np.ndarray:
    """int8 [M]: 1/0 from the reward function's ``acc`` (``reward_extra_info``), -1 where absent."""
    out = np.full(len(extra_fields), -1, dtype=np.int8)
    for i, extra in enumerate(extra_fields):
        info = extra.get("reward_extra_info") if isinstance(extra, dict) else None
        acc = info.get("acc") if isinstance(info, dict) else None
        if acc is None:
            continue
        try:
            out[i] = 1 if float(acc) > 0.5 else 0
        except (TypeError, ValueError):
            pass
    return out


@dataclasses.dataclass
class Rows:
    """Trajectories of one step (one row per sample), numpy only."""

    keys: list  # TransferQueue keys "{uid}_{session}_{i}"
    uid: np.ndarray  # object [M]
    session: np.ndarray  # int64 [M]
    prompt_id: np.ndarray  # int64 [M]
    tokens: list  # M int32 arrays: the full response (prefix ⊕ suffix)
    reward: np.ndarray  # float32 [M]
    correct: np.ndarray  # int8 [M]
    prefix_len: np.ndarray  # int64 [M]
    suffix_len: np.ndarray  # int64 [M]
    truncated: np.ndarray  # int64 [M]
    fallback: np.ndarray  # int64 [M]

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls) -> "Rows":
        z = np.zeros(0, dtype=np.int64)
        return cls([], np.zeros(0, dtype=object), z, z, [], np.zeros(0, np.float32), np.zeros(0, np.int8), z, z, z, z)

    @classmethod
    def from_fields(cls, keys, responses, rewards, extra_fields, index, uid) -> "Rows":
        """From per-row values: ``responses`` int arrays, ``rewards`` floats, ``extra_fields`` dicts
        (the agent loop's ``rpo_*`` facts), ``index`` prompt ids, ``uid`` group ids."""
        m = len(keys)
        tokens = [np.asarray(r, dtype=np.int32).reshape(-1) for r in responses]

        def col(name, default):
            return np.array(
                [int(e.get(name, d)) if isinstance(e, dict) else int(d) for e, d in zip(extra_fields, default)],
                dtype=np.int64,
            )

        lengths = [len(t) for t in tokens]
        prefix = col("rpo_prefix_len", [0] * m)
        suffix = col("rpo_suffix_len", [n - p for n, p in zip(lengths, prefix)])
        return cls(
            keys=list(keys),
            uid=np.array([str(u) for u in uid], dtype=object),
            session=np.array([int(str(k).rsplit("_", 2)[1]) if str(k).count("_") >= 2 else 0 for k in keys], np.int64),
            prompt_id=np.asarray([int(i) for i in index], dtype=np.int64),
            tokens=tokens,
            reward=np.asarray(rewards, dtype=np.float32).reshape(-1),
            correct=correctness(extra_fields),
            prefix_len=prefix,
            suffix_len=suffix,
            truncated=col("rpo_suffix_truncated", [0] * m),
            fallback=col("rpo_prefix_fallback", [0] * m),
        )

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Rows.empty()
        cat = {f.name: None for f in dataclasses.fields(Rows)}
        for name in cat:
            values = [getattr(p, name) for p in parts]
            cat[name] = sum(values, []) if isinstance(values[0], list) else np.concatenate(values)
        return Rows(**cat)

    def canonical_order(self) -> np.ndarray:
        """Row order that does not depend on completion order: (prompt id, session, content)."""
        crc = [zlib.crc32(t.tobytes()) for t in self.tokens]
        return np.array(
            sorted(range(len(self)), key=lambda i: (self.prompt_id[i], self.session[i], crc[i], float(self.reward[i]))),
            dtype=np.int64,
        )

    def update_batch(self, step: int) -> UpdateBatch:
        order = self.canonical_order()
        return UpdateBatch.from_sequences(
            self.prompt_id[order],
            [self.tokens[i] for i in order],
            self.reward[order],
            self.correct[order],
            step=step,
        )

    def metrics(self) -> dict[str, float]:
        return rollout_metrics(
            self.prefix_len, self.suffix_len, self.truncated, self.fallback, rewards=self.reward, group=self.uid
        )


def rows_from_tensordict(keys: list, data) -> Rows:
    """``Rows`` from TransferQueue's answer to ``kv_batch_get(keys, select_fields=TQ_FIELDS)``."""
    responses, scores = data["responses"], data["rm_scores"]
    if getattr(responses, "is_nested", False):
        responses = responses.unbind()
    if getattr(scores, "is_nested", False):
        rewards = [float(s.sum()) for s in scores.unbind()]
    else:
        rewards = scores.sum(dim=-1).tolist()

    def as_list(value):
        return value.tolist() if hasattr(value, "tolist") else list(value)

    return Rows.from_fields(
        keys,
        [r.numpy() if hasattr(r, "numpy") else r for r in responses],
        rewards,
        as_list(data["extra_fields"]),
        as_list(data["index"]),
        as_list(data["uid"]),
    )


def timing_metrics(timing_raw: dict) -> dict[str, float]:
    """Rollout vs train time of a step from verl's ``timing_raw`` (seconds)."""
    rollout = float(timing_raw.get("gen", 0.0))
    train = float(sum(timing_raw.get(k, 0.0) for k in ("old_log_prob", "ref", "values", "adv", "update_critic", "update_actor")))
    step = float(timing_raw.get("step", 0.0))
    return {
        "eff/rollout_time_s": rollout,
        "eff/train_time_s": train,
        "eff/rollout_time_frac": rollout / step if step > 0 else 0.0,
    }


# ----------------------------------------------------------------------------------------------
# Extension
# ----------------------------------------------------------------------------------------------
class RPOExtension(TrainerExtension):
    """RPO's controller side: prefixes before rollout, cache write-back after rewards, metrics,
    cache checkpoints (see the module docstring)."""

    def __init__(self, trainer, config, name: str):
        super().__init__(trainer, config, name)
        self.client = None
        self._calls = 0  # before_rollout calls in this step (DAPO refills make several)
        self._trained_rows: list[Rows] = []  # samples of the step that reach the actor update
        self._dropped_rows: list[Rows] = []  # samples of the step that verl's replay buffer dropped
        self._pending: list[Rows] = []  # dropped samples not yet offered to the cache
        self._cache_time = 0.0
        self._restores_seen = 0.0
        self._totals = {"generated_tokens": 0.0, "full_path_equiv_tokens": 0.0}
        self._replay_wrapped = False

    # ---- config views --------------------------------------------------------------------
    @property
    def _cfg(self):
        return self.trainer.config

    def _response_length(self) -> int:
        return int(self._cfg.actor_rollout_ref.rollout.response_length)

    def _full_determinism(self) -> bool:
        return bool(self._cfg.actor_rollout_ref.rollout.get("full_determinism", False))

    def _service_config(self):
        cache = self.config.cache
        snapshot_dir = cache.snapshot_dir or os.path.join(self._cfg.trainer.default_local_dir, CACHE_SUBDIR)
        return dataclasses.replace(self.config, cache=dataclasses.replace(cache, snapshot_dir=snapshot_dir))

    # ---- start-up ------------------------------------------------------------------------
    def _training_prompt_ids(self) -> np.ndarray:
        dataset = getattr(self.trainer, "train_dataset", None)
        frame = getattr(dataset, "dataframe", None)
        if frame is None or "extra_info" not in getattr(frame, "column_names", []):
            raise ValueError(
                "rpo_verl.rpo needs verl's RL dataset with an extra_info column holding a unique integer "
                "index per prompt (the cache key); this training set has none"
            )
        return dataset_prompt_ids(frame["extra_info"])

    def _ensure_service(self):
        if self.client is not None:
            return self.client
        from rpo_verl.rpo.cache_file import tokenizer_fingerprint
        from rpo_verl.rpo.prefix import newline_token_ids
        from rpo_verl.rpo.service_client import start_cache_service

        cfg = self._service_config()
        response_length = self._response_length()
        data_limit = int(self._cfg.data.max_response_length)
        if response_length > data_limit:
            raise ValueError(
                f"rpo_verl.rpo: actor_rollout_ref.rollout.response_length={response_length} exceeds "
                f"data.max_response_length={data_limit}; the response holds prefix + suffix, keep them equal"
            )
        ids = self._training_prompt_ids()
        if cfg.cache.init == "offline":
            warning = check_response_budget(
                cached_lengths(cfg.cache.path) if os.path.exists(cfg.cache.path) else np.zeros(0),
                response_length, cfg.prefix.overlong, repr(cfg.cache.path),
            )
            if warning:
                logger.warning("rpo: %s", warning)
                print(f"[rpo_verl] warning: {warning}")
        tok = self.trainer.tokenizer
        newline = newline_token_ids(tok) if cfg.prefix.align == "newline" else None
        self.client = start_cache_service(
            cfg,
            id_range=id_range_of(ids),
            response_length=response_length,
            fingerprint=tokenizer_fingerprint(tok),
            newline_ids=newline,
        )
        m = self.client.metrics()
        print(
            f"[rpo_verl] RPO cache service up ({cfg.cache.num_shards} shard(s), init={cfg.cache.init}, "
            f"{int(m['rpo/cache_size'])} prompts cached, {ids.size} training prompts; snapshots in "
            f"{cfg.cache.snapshot_dir})"
        )
        return self.client

    def worker_class(self, role: str, cls: type) -> type:
        # The earliest hook with the tokenizer and the training set loaded (before verl starts its
        # workers): a bad index column or cache file fails here, in seconds, not minutes in.
        self._ensure_service()
        return cls

    def on_init_end(self) -> None:
        self._ensure_service()
        self._wrap_replay_buffer()

    def _wrap_replay_buffer(self) -> None:
        """Read the groups verl's replay buffer drops (DAPO filter, surplus) before it clears them."""
        buffer = getattr(self.trainer, "replay_buffer", None)
        original = getattr(buffer, "_clear_groups", None)
        if original is None or self._replay_wrapped:
            if original is None:
                logger.warning("rpo: the replay buffer has no _clear_groups; dropped groups are not counted")
            return
        ext = self

        def _clear_groups(partition_id, uids):
            if partition_id == "train" and uids:
                keys = [k for k in buffer.partitions[partition_id] if k.split("_")[0] in uids]
                if keys:
                    try:
                        ext._collect_dropped(keys, partition_id)
                    except Exception:  # noqa: BLE001 - accounting must never break verl's sampling
                        logger.exception("rpo: could not read %d dropped trajectories", len(keys))
            return original(partition_id, uids)

        buffer._clear_groups = _clear_groups
        self._replay_wrapped = True

    def _read_rows(self, keys: list, partition_id: str) -> Rows:
        import transfer_queue as tq

        if not keys:
            return Rows.empty()
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=TQ_FIELDS)
        return rows_from_tensordict(keys, data)

    def _collect_dropped(self, keys: list, partition_id: str) -> None:
        rows = self._read_rows(keys, partition_id)
        self._dropped_rows.append(rows)
        self._pending.append(rows)

    # ---- per step ------------------------------------------------------------------------
    def on_step_begin(self) -> None:
        self._calls = 0
        self._trained_rows, self._dropped_rows, self._pending = [], [], []
        self._cache_time = 0.0
        kill_at = os.environ.get(KILL_ENV)
        if kill_at and int(kill_at) == self.trainer.global_steps:
            import ray

            self._ensure_service()
            for handle in self.client.shards:
                ray.kill(handle, no_restart=False)
            print(f"[rpo_verl] fault injection ({KILL_ENV}): killed the cache service at step {self.trainer.global_steps}")

    def before_rollout(self, batch):
        from verl.utils import tensordict_utils as tu

        client = self._ensure_service()
        step = int(self.trainer.global_steps)
        ids = np.asarray(tu.get(batch, "index"), dtype=np.int64).reshape(-1)
        prompt_lens = self._prompt_lens(batch) if self.config.prefix.max_input_len > 0 else None
        start = time.monotonic()
        plan = client.sample_prefix_batch(ids, rng_seed=derive_seed(self.config.cache.seed, step, self._calls), prompt_lens=prompt_lens)
        self._cache_time += time.monotonic() - start
        rows = len(ids)
        tu.assign_non_tensor_stack(batch, PREFIX_KEY, [p.copy() for p in plan.prefixes()])
        tu.assign_non_tensor_stack(batch, BUDGET_KEY, [int(b) for b in plan.budget])
        existing = tu.get(batch, "agent_name")
        if existing is not None and any(a != AGENT_LOOP_NAME for a in existing):
            logger.warning("rpo: the training rows' agent_name %s is replaced by %s", set(existing), AGENT_LOOP_NAME)
        tu.assign_non_tensor_stack(batch, "agent_name", [AGENT_LOOP_NAME] * rows)
        if self._full_determinism():
            base = int(self._cfg.actor_rollout_ref.rollout.get("seed", 0))
            seeds = [derive_seed(base, step, self._calls, r, bits=31) for r in range(rows)]
            tu.assign_non_tensor_stack(batch, SEED_KEY, seeds)
        self._calls += 1
        return batch

    def _prompt_lens(self, batch) -> np.ndarray:
        """Prompt token counts after the chat template (for ``prefix.max_input_len``)."""
        from verl.utils import tensordict_utils as tu

        tok = self.trainer.tokenizer
        kwargs = dict(self._cfg.data.get("apply_chat_template_kwargs", None) or {})
        lens = []
        for messages in tu.get(batch, "raw_prompt"):
            ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, **kwargs)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            lens.append(len(ids))
        return np.asarray(lens, dtype=np.int64)

    def on_batch_rewarded(self, batch, metrics: dict) -> None:
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        rows = self._read_rows(keys, batch.partition_id)
        self._trained_rows.append(rows)
        offered = Rows.concat([rows, *self._pending])  # every sample generated since the last call
        self._pending = []
        # running totals here, not in step_metrics: the checkpoint of this step is saved before
        # its metrics are logged, and a resumed run continues from the saved totals
        self._totals["generated_tokens"] += float(offered.suffix_len.sum())
        self._totals["full_path_equiv_tokens"] += float((offered.prefix_len + offered.suffix_len).sum())
        if len(offered):
            start = time.monotonic()
            self._ensure_service().update(offered.update_batch(int(self.trainer.global_steps)))
            self._cache_time += time.monotonic() - start

    def step_metrics(self) -> dict[str, float]:
        if self.client is None:
            return {}
        out = dict(self.client.metrics())
        restores = out.get("rpo/cache_service_restores", 0.0)
        if restores > self._restores_seen:
            print(
                f"[rpo_verl] the RPO cache service was restarted {int(restores - self._restores_seen)} time(s) and "
                "reloaded its last snapshot (updates since the last checkpoint are lost); training carries on"
            )
            self._restores_seen = restores
        trained, dropped = Rows.concat(self._trained_rows), Rows.concat(self._dropped_rows)
        rows = Rows.concat([trained, dropped])
        if len(rows):
            step = rows.metrics()
            out.update(step)
            out["eff/dropped_generated_tokens"] = float(dropped.suffix_len.sum())
            out["eff/generated_samples"] = float(len(rows))
            out["eff/dropped_samples"] = float(len(dropped))
        gen, full = self._totals["generated_tokens"], self._totals["full_path_equiv_tokens"]
        out["eff/generated_tokens_total"] = gen
        out["eff/full_path_equiv_tokens_total"] = full
        out["eff/token_saving_ratio_total"] = 1.0 - gen / full if full else 0.0
        out["rpo/cache_time_s"] = self._cache_time
        out.update(timing_metrics(getattr(self.trainer, "timing_raw", {}) or {}))
        self._trained_rows, self._dropped_rows = [], []
        return out

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        client = self._ensure_service()
        folder = os.path.join(self._cfg.trainer.default_local_dir, f"global_step_{self.trainer.global_steps}")
        files = client.save(os.path.join(folder, CACHE_SUBDIR))
        return {
            "cache_dir": CACHE_SUBDIR,
            "files": [os.path.basename(f) for f in files],
            "step": int(self.trainer.global_steps),
            "totals": dict(self._totals),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        folder = self.trainer._checkpoint_folder_to_resume()
        path = os.path.join(folder, state.get("cache_dir", CACHE_SUBDIR))
        client = self._ensure_service()
        client.load(path, remember=True)
        self._totals.update(state.get("totals", {}))
        m = client.metrics()
        print(f"[rpo_verl] RPO cache restored from {path}: {int(m['rpo/cache_size'])} prompts cached")
