"""State dicts and files of the RPO cache store (a mixin of ``rpo_verl.rpo.cache_store.CacheStore``).

``state_dict`` is canonical (records sorted by prompt id and write sequence, tokens concatenated);
``load_state_dict`` replaces the content with one or the union of several state dicts; files use
the format of ``rpo_verl.rpo.cache_file`` (atomic writes).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from rpo_verl.rpo.cache_arena import _META_DTYPES, copy_spans
from rpo_verl.rpo.cache_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    STATE_COLUMNS,
    check_state,
    read_cache_file,
)
from rpo_verl.utils.atomic_files import atomic_write_npz

logger = logging.getLogger(__name__)


class CacheState:
    """Saving and restoring; the store's arrays (``_cols``, ``_blocks``, ...) are ``CacheStore``'s."""

    # ---- state ------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "id_lo": self.id_lo,
            "id_hi": self.id_hi,
            "per_prompt": self.per_prompt,
            "tokenizer": self.fingerprint,
            "seq_counter": self._seq,
        }

    def state_dict(self, shard: Optional[tuple[int, int]] = None) -> dict:
        """Canonical content: records sorted by (prompt id, write sequence), tokens concatenated.

        Two stores with the same content give equal state dicts whatever their arena layout.
        ``shard=(k, K)`` keeps only prompts with ``prompt_id % K == k``.
        """
        n = self._n
        cols = self._cols
        order = np.lexsort((cols["seq"][:n], cols["prompt_id"][:n]))
        if shard is not None:
            order = order[cols["prompt_id"][:n][order] % shard[1] == shard[0]]
        state: dict[str, Any] = {c: cols[c][:n][order].copy() for c in STATE_COLUMNS}
        state["tokens"] = self.spans(order, cols["length"][:n][order])
        meta = self.meta()
        meta["tokens_crc32"] = zlib.crc32(memoryview(state["tokens"]))
        meta["num_records"] = int(len(order))
        state["meta"] = meta
        return state

    def load_state_dict(
        self,
        states,
        *,
        shard: Optional[tuple[int, int]] = None,
        source: str = "state dict",
        check_fingerprint: bool = True,
        seq_counter: Optional[int] = None,
    ) -> None:
        """Replace the content with one state dict or the union of several (e.g. shard files).

        Checks format, consistency, tokenizer fingerprint (if both sides have one) and that every
        prompt id is inside this store's range. ``shard=(k, K)`` keeps prompts with id % K == k.
        More than ``per_prompt`` records for a prompt: the most recently written are kept (warned).
        ``seq_counter`` overrides the write counter (default: the largest of the states').
        """
        if isinstance(states, dict):
            states = [states]
        parts = []
        file_seq = 0
        for i, state in enumerate(states):
            name = source if len(states) == 1 else f"{source}[{i}]"
            check_state(
                state,
                source=name,
                id_range=(self.id_lo, self.id_hi),
                fingerprint=self.fingerprint if check_fingerprint else None,
            )
            file_seq = max(file_seq, int(state["meta"].get("seq_counter", 0)))
            parts.append(state)
        cols = {c: np.concatenate([np.asarray(p[c], dtype=_META_DTYPES[c]) for p in parts]) for c in STATE_COLUMNS}
        lengths_all = cols["length"].astype(np.int64)
        token_start = np.concatenate(
            [np.cumsum(np.asarray(p["length"], np.int64)) - np.asarray(p["length"], np.int64) for p in parts]
        )
        part_of = np.concatenate([np.full(len(p["prompt_id"]), i) for i, p in enumerate(parts)])
        keep = np.ones(len(lengths_all), dtype=bool)
        if shard is not None:
            keep &= cols["prompt_id"] % shard[1] == shard[0]
        # canonical order; per prompt keep the newest per_prompt records
        order = np.flatnonzero(keep)
        order = order[np.lexsort((cols["seq"][order], cols["prompt_id"][order]))]
        pid = cols["prompt_id"][order]
        if pid.size:
            first = np.r_[True, pid[1:] != pid[:-1]]
            group_start = np.maximum.accumulate(np.where(first, np.arange(pid.size), 0))
            group_id = np.cumsum(first) - 1
            group_size = np.bincount(group_id)
            rank = np.arange(pid.size) - group_start
            too_old = rank < group_size[group_id] - self.per_prompt
            if too_old.any():
                logger.warning(
                    "%s: %d records beyond per_prompt=%d dropped (kept the most recent per prompt)",
                    source,
                    int(too_old.sum()),
                    self.per_prompt,
                )
                order = order[~too_old]
        self._reset()
        self._seq = seq_counter if seq_counter is not None else file_seq
        n = len(order)
        self._grow_meta(n)
        for c in STATE_COLUMNS:
            self._cols[c][:n] = cols[c][order]
        self._n = n
        lengths = lengths_all[order]
        new_block, new_pos, sizes = self._layout(lengths, self._target_block_for(int(lengths.sum())))
        blocks: list[Optional[np.ndarray]] = [None] * len(sizes)
        copy_spans(
            [p["tokens"] for p in parts],
            part_of[order],
            token_start[order],
            blocks,
            new_block,
            new_pos,
            lengths,
            dst_sizes=sizes,
        )
        self._blocks = blocks
        self._block_used = [int(x) for x in sizes]
        self._block_garbage = [0] * len(sizes)
        self._cols["block"][:n] = new_block
        self._cols["pos"][:n] = new_pos.astype(np.int32)
        self._live_tokens = int(lengths.sum())
        # slot table: records of a prompt fill its slots in write order
        if n:
            rows = self._cols["prompt_id"][:n] - self.id_lo
            first = np.r_[True, rows[1:] != rows[:-1]]
            group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
            slot = np.arange(n) - group_start
            self._slots[rows, slot] = np.arange(n, dtype=np.int32)

    def _target_block_for(self, live: int) -> int:
        return min(self.max_block_tokens, max(self.min_block_tokens, live // 16))

    # ---- files ------------------------------------------------------------------------------
    def save(self, path: str, shard: Optional[tuple[int, int]] = None) -> str:
        """Write the state to ``path`` (.npz, atomic: a crash leaves the old file intact)."""
        state = self.state_dict(shard=shard)
        meta = state.pop("meta")
        atomic_write_npz(path, {"meta": np.array(json.dumps(meta)), **state})
        return path

    def load(self, paths: str | Sequence[str], shard: Optional[tuple[int, int]] = None) -> None:
        """Replace the content with the records of one or several cache files (see ``load_state_dict``)."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        states = [read_cache_file(os.fspath(p)) for p in paths]
        self.load_state_dict(states, shard=shard, source=", ".join(repr(os.fspath(p)) for p in paths))

    @classmethod
    def from_file(
        cls,
        path: str,
        *,
        id_range: Optional[tuple[int, int]] = None,
        fingerprint: Optional[dict] = None,
        per_prompt: Optional[int] = None,
        **kwargs,
    ) -> CacheState:
        """Open a cache file; ``id_range``/``per_prompt`` default to the file's own."""
        state = read_cache_file(path)
        meta = state["meta"]
        store = cls(
            id_range or (meta["id_lo"], meta["id_hi"]),
            per_prompt or int(meta.get("per_prompt", 1)),
            fingerprint=fingerprint if fingerprint is not None else meta.get("tokenizer"),
            **kwargs,
        )
        store.load_state_dict(state, source=repr(path))
        return store
