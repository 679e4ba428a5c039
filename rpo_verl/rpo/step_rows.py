"""The RPO extension's batch surgery, as pure functions (no Ray, no TransferQueue):
prompt ids and seeds, response budgets of cached records, and ``Rows``, the trajectories of one
step read from TransferQueue, turned into the cache service's ``UpdateBatch`` and metrics.

The hook wiring that calls these is ``rpo_verl.rpo.trainer_ext.RPOExtension``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zlib
from typing import Optional

import numpy as np

from rpo_verl.rpo.batches import UpdateBatch
from rpo_verl.rpo.metrics import rollout_metrics

logger = logging.getLogger(__name__)

TQ_FIELDS = ["responses", "rm_scores", "extra_fields", "index", "uid"]
_SEED_MASK = (1 << 48) - 1  # the service takes seeds < 2**48


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
