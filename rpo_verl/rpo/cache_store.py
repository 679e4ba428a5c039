"""RPO experience cache store (ALGORITHMS.md §1, "Cache record"): pure numpy, no Ray.

Per prompt (keyed by the stable dataset prompt id ``extra_info.index``, an int in a known range
``[id_lo, id_hi)``) up to ``per_prompt`` records, each holding the response token ids (int32,
never re-tokenised text), reward, correctness, length, writer step (policy version), hit count and
a global write sequence number (FIFO eviction and a canonical order for state dicts).

Storage layout (scales to 10^6+ records):
- token ids live in a list of int32 *blocks* (a chunked arena); a record is a span
  ``blocks[block][pos : pos + length]``. New records are appended to the last block; a block is
  sized ``clamp(live_tokens / 16, min_block, max_block)`` so the unused tail stays small and no
  reallocation ever copies the whole arena;
- replacing a record leaves its old span as garbage; when garbage exceeds ``compact_garbage_frac``
  of the live tokens the arena is rebuilt block by block (peak extra memory ~ one block);
- per-record metadata are parallel numpy arrays (~41 bytes/record), plus a dense
  ``[id_hi - id_lo, per_prompt]`` int32 slot table (-1 = empty) from prompt id to record.

Files: ``save``/``load`` use the format of ``rpo_verl.rpo.cache_file`` (atomic writes; corrupt or
mismatched files fail with ``CacheFileError``).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from rpo_verl.rpo.cache_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    STATE_COLUMNS,
    check_state,
    read_cache_file,
)
from rpo_verl.utils.atomic_files import atomic_write_npz

logger = logging.getLogger(__name__)

# Per-record metadata columns (name -> dtype); token spans are located by block/pos/length.
_META_DTYPES: dict[str, Any] = {
    "prompt_id": np.int64,
    "block": np.int32,
    "pos": np.int32,
    "length": np.int32,
    "reward": np.float32,
    "correct": np.int8,
    "step": np.int32,
    "hits": np.int32,
    "seq": np.int64,
}


def segment_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat int64 index of the concatenated spans ``[starts[i], starts[i] + lengths[i])``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_begin = np.cumsum(lengths) - lengths  # start of each span in the output
    shift = np.asarray(starts, dtype=np.int64) - seg_begin
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)


def copy_spans(
    src: list,
    src_of: np.ndarray,
    src_pos: np.ndarray,
    dst: list,
    dst_of: np.ndarray,
    dst_pos: np.ndarray,
    lengths: np.ndarray,
    dst_sizes: Optional[np.ndarray] = None,
    release_src: bool = False,
) -> None:
    """Copy span i from ``src[src_of[i]][src_pos[i]:]`` to ``dst[dst_of[i]][dst_pos[i]:]`` (``lengths[i]``).

    Spans adjacent in both source and destination are merged into runs, each copied with one
    slice assignment (compaction and state dicts touch few runs, not one per record). A ``None``
    destination array is allocated with ``dst_sizes`` on first use; ``release_src`` drops source
    arrays (sets them to None) once every span reading them is done, which requires spans
    ordered by ``src_of``.
    """
    n = len(lengths)
    if n == 0:
        return
    lengths = np.asarray(lengths, dtype=np.int64)
    src_of, dst_of = np.asarray(src_of), np.asarray(dst_of)
    src_pos, dst_pos = np.asarray(src_pos, dtype=np.int64), np.asarray(dst_pos, dtype=np.int64)
    cont = np.zeros(n, dtype=bool)
    cont[1:] = (
        (src_of[1:] == src_of[:-1])
        & (dst_of[1:] == dst_of[:-1])
        & (src_pos[1:] == src_pos[:-1] + lengths[:-1])
        & (dst_pos[1:] == dst_pos[:-1] + lengths[:-1])
    )
    firsts = np.flatnonzero(~cont)
    run_len = np.add.reduceat(lengths, firsts).tolist()
    r_src, r_dst = src_of[firsts].tolist(), dst_of[firsts].tolist()
    r_sp, r_dp = src_pos[firsts].tolist(), dst_pos[firsts].tolist()
    released = 0
    for k in range(len(firsts)):
        d = r_dst[k]
        if dst[d] is None:
            dst[d] = np.empty(int(dst_sizes[d]), dtype=np.int32)
        length = run_len[k]
        if length:
            dst[d][r_dp[k] : r_dp[k] + length] = src[r_src[k]][r_sp[k] : r_sp[k] + length]
        if release_src:
            upto = r_src[k + 1] if k + 1 < len(firsts) else len(src)
            while released < upto:
                src[released] = None
                released += 1
    for d in range(len(dst)):  # destinations that received no span (all-empty records)
        if dst[d] is None and dst_sizes is not None:
            dst[d] = np.empty(int(dst_sizes[d]), dtype=np.int32)


# ----------------------------------------------------------------------------------------------
# Store
# ----------------------------------------------------------------------------------------------
class CacheStore:
    """Per-prompt experience records with token ids in a chunked int32 arena (see module doc)."""

    def __init__(
        self,
        id_range: tuple[int, int],
        per_prompt: int = 1,
        *,
        fingerprint: Optional[dict] = None,
        compact_garbage_frac: float = 0.05,
        min_block_tokens: int = 1 << 16,
        max_block_tokens: int = 1 << 22,
    ):
        lo, hi = int(id_range[0]), int(id_range[1])
        if hi <= lo:
            raise ValueError(f"id_range: need id_lo < id_hi, got [{lo}, {hi})")
        if per_prompt < 1:
            raise ValueError(f"per_prompt: must be >= 1, got {per_prompt}")
        if not 0 < min_block_tokens <= max_block_tokens:
            raise ValueError("min_block_tokens/max_block_tokens: need 0 < min <= max")
        self.id_lo, self.id_hi, self.per_prompt = lo, hi, int(per_prompt)
        self.fingerprint = fingerprint
        self.compact_garbage_frac = float(compact_garbage_frac)
        self.min_block_tokens, self.max_block_tokens = int(min_block_tokens), int(max_block_tokens)
        self._reset()

    def _reset(self) -> None:
        self._slots = np.full((self.id_hi - self.id_lo, self.per_prompt), -1, dtype=np.int32)
        self._n = 0
        self._cols = {name: np.empty(0, dtype=dt) for name, dt in _META_DTYPES.items()}
        self._blocks: list[Optional[np.ndarray]] = []
        self._block_used: list[int] = []
        self._block_garbage: list[int] = []
        self._live_tokens = 0
        self._garbage_tokens = 0
        self._seq = 0
        self.compactions = 0

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def num_records(self) -> int:
        return self._n

    @property
    def num_prompts_cached(self) -> int:
        return int((self._slots[:, 0] >= 0).sum()) if self.per_prompt == 1 else int((self._slots >= 0).any(1).sum())

    @property
    def live_tokens(self) -> int:
        return self._live_tokens

    @property
    def garbage_tokens(self) -> int:
        return self._garbage_tokens

    @property
    def raw_token_bytes(self) -> int:
        """Size of the live token ids as a bare int32 array (the memory-bound reference)."""
        return 4 * self._live_tokens

    @property
    def nbytes(self) -> int:
        """Allocated bytes of every array the store owns (token blocks at capacity, metadata, slots)."""
        blocks = sum(b.nbytes for b in self._blocks if b is not None)
        return blocks + sum(c.nbytes for c in self._cols.values()) + self._slots.nbytes

    def col(self, name: str) -> np.ndarray:
        """Metadata column ``name`` of the ``num_records`` records (a view)."""
        return self._cols[name][: self._n]

    # ---- lookup -----------------------------------------------------------------------------
    def rows(self, prompt_ids) -> np.ndarray:
        """Slot-table rows of ``prompt_ids``; a clear error for ids outside ``[id_lo, id_hi)``."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        rows = ids - self.id_lo
        bad = (rows < 0) | (rows >= self._slots.shape[0])
        if bad.any():
            raise KeyError(
                f"prompt ids {np.unique(ids[bad])[:5].tolist()} are outside the cache's id range "
                f"[{self.id_lo}, {self.id_hi}); the cache service was created for another dataset "
                "(pass the id range of extra_info.index of this dataset)"
            )
        return rows

    def record_table(self, prompt_ids) -> np.ndarray:
        """``[B, per_prompt]`` record indices of ``prompt_ids`` (-1 = empty slot)."""
        return self._slots[self.rows(prompt_ids)]

    def tokens(self, rec: int) -> np.ndarray:
        """Token ids of record ``rec`` (a read-only view into the arena; copy to keep)."""
        b, p, n = int(self._cols["block"][rec]), int(self._cols["pos"][rec]), int(self._cols["length"][rec])
        view = self._blocks[b][p : p + n]
        view.flags.writeable = False
        return view

    def gather(self, recs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Tokens at ``offsets[i, j]`` of record ``recs[i]`` (offsets must be within the record)."""
        recs = np.asarray(recs, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        out = np.zeros(offsets.shape, dtype=np.int32)
        if recs.size == 0:
            return out
        blocks = self._cols["block"][recs]
        base = self._cols["pos"][recs].astype(np.int64)
        for b in np.unique(blocks):
            sel = blocks == b
            out[sel] = self._blocks[int(b)][base[sel, None] + offsets[sel]]
        return out

    def spans(self, recs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Concatenated first ``lengths[i]`` tokens of records ``recs[i]`` (flat int32)."""
        recs = np.asarray(recs, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int32)
        out = [np.empty(total, dtype=np.int32)]
        copy_spans(
            self._blocks,
            self._cols["block"][recs],
            self._cols["pos"][recs],
            out,
            np.zeros(recs.size, dtype=np.int64),
            np.cumsum(lengths) - lengths,
            lengths,
        )
        return out[0]

    def add_hits(self, recs: np.ndarray) -> None:
        recs = np.asarray(recs, dtype=np.int64)
        if recs.size:
            np.add.at(self._cols["hits"], recs, 1)

    # ---- writes -----------------------------------------------------------------------------
    def _grow_meta(self, need: int) -> None:
        cap = len(self._cols["seq"])
        if need <= cap:
            return
        new_cap = max(need, cap + cap // 4, 1024)
        for name, arr in self._cols.items():
            grown = np.zeros(new_cap, dtype=arr.dtype)
            grown[: self._n] = arr[: self._n]
            self._cols[name] = grown

    def _alloc_many(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Place spans (in order): as many whole ones as fit in the last block, the rest in a new one.

        Returns (block [W], pos [W], k) where the first k spans went to the previous last block.
        The wasted tail of a block is therefore less than one trajectory.
        """
        w = lengths.size
        ends = np.cumsum(lengths)
        starts = ends - lengths
        block = np.empty(w, dtype=np.int32)
        pos = np.empty(w, dtype=np.int64)
        k = 0
        if self._blocks:
            last = len(self._blocks) - 1
            used = self._block_used[last]
            k = int(np.searchsorted(ends, len(self._blocks[last]) - used, side="right"))
            block[:k] = last
            pos[:k] = used + starts[:k]
            self._block_used[last] = used + (int(ends[k - 1]) if k else 0)
        if k < w:
            rest = int(ends[-1] - starts[k])
            size = max(rest, self._target_block())
            self._blocks.append(np.zeros(size, dtype=np.int32))
            self._block_used.append(rest)
            self._block_garbage.append(0)
            block[k:] = len(self._blocks) - 1
            pos[k:] = starts[k:] - starts[k]
        return block, pos, k

    def write(
        self,
        prompt_id: int,
        tokens: np.ndarray,
        reward: float,
        correct: bool,
        step: int,
        replace: int = -1,
    ) -> int:
        """Store one trajectory for ``prompt_id``; returns its record index (see ``write_many``)."""
        tokens = np.asarray(tokens)
        return int(
            self.write_many([prompt_id], tokens, [tokens.size], [reward], [correct], step, replace=np.array([replace]))[
                0
            ]
        )

    def write_many(
        self,
        prompt_ids,
        tokens: np.ndarray,
        lengths,
        rewards,
        correct,
        step,
        replace=None,
    ) -> np.ndarray:
        """Store one trajectory per (distinct) prompt in one vectorised pass; returns record indices.

        Args:
            prompt_ids: [W] distinct prompt ids.
            tokens: flat token ids of the W trajectories, concatenated ([sum lengths], cast to int32).
            lengths: [W]; rewards: [W]; correct: [W] bool; step: int or [W] writer step.
            replace: [W] record of that prompt to overwrite (its hit count restarts at 0), or -1 to
                fill the prompt's first free slot (``ValueError`` if all ``per_prompt`` are in use).
        """
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        w = ids.size
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        tokens = np.asarray(tokens).reshape(-1)
        if tokens.dtype != np.int32:
            info = np.iinfo(np.int32)
            if tokens.size and (tokens.min() < info.min or tokens.max() > info.max):
                raise ValueError("token ids do not fit int32")
            tokens = tokens.astype(np.int32)
        if lengths.size != w or int(lengths.sum()) != tokens.size or (lengths < 0).any():
            raise ValueError(f"lengths (sum {int(lengths.sum())}) must match the {tokens.size} tokens of {w} prompts")
        if w == 0:
            return np.zeros(0, dtype=np.int64)
        if np.unique(ids).size != w:
            raise ValueError("write_many: prompt ids must be distinct (one write per prompt per call)")
        rows = self.rows(ids)
        replace = np.full(w, -1, dtype=np.int64) if replace is None else np.asarray(replace, dtype=np.int64)
        recs = np.empty(w, dtype=np.int64)
        block = np.empty(w, dtype=np.int32)
        pos = np.empty(w, dtype=np.int64)
        rep = replace >= 0
        inplace = np.zeros(w, dtype=bool)
        if rep.any():
            old = replace[rep]
            if (old >= self._n).any() or (self._cols["prompt_id"][old] != ids[rep]).any():
                raise ValueError("replace: a record does not belong to its prompt")
            old_len = self._cols["length"][old].astype(np.int64)
            old_block = self._cols["block"][old]
            # a trajectory no longer than the one it replaces is written over it (less garbage)
            fits = lengths[rep] <= old_len
            inplace[rep] = fits
            block[inplace], pos[inplace] = old_block[fits], self._cols["pos"][old[fits]]
            freed = np.where(fits, old_len - lengths[rep], old_len)
            garbage = np.bincount(old_block, weights=freed, minlength=len(self._blocks))
            for b in np.flatnonzero(garbage):
                self._block_garbage[b] += int(garbage[b])
            self._garbage_tokens += int(freed.sum())
            self._live_tokens -= int(old_len.sum())
            recs[rep] = old
        new = ~rep
        if new.any():
            free = self._slots[rows[new]] < 0
            if not free.any(axis=1).all():
                full_id = ids[new][~free.any(axis=1)][0]
                raise ValueError(f"prompt {full_id}: all {self.per_prompt} slots in use; pass replace=<record>")
            n_new = int(new.sum())
            self._grow_meta(self._n + n_new)
            fresh = np.arange(self._n, self._n + n_new, dtype=np.int64)
            self._n += n_new
            self._slots[rows[new], free.argmax(axis=1)] = fresh
            recs[new] = fresh
        moved = ~inplace
        if moved.any():
            block[moved], pos[moved], _ = self._alloc_many(lengths[moved])
        copy_spans([tokens], np.zeros(w, np.int64), np.cumsum(lengths) - lengths, self._blocks, block, pos, lengths)
        total = int(lengths.sum())
        cols = self._cols
        cols["prompt_id"][recs] = ids
        cols["block"][recs] = block
        cols["pos"][recs] = pos
        cols["length"][recs] = lengths
        cols["reward"][recs] = np.asarray(rewards, dtype=np.float32).reshape(-1)
        cols["correct"][recs] = np.asarray(correct, dtype=bool).reshape(-1)
        cols["step"][recs] = step
        cols["hits"][recs] = 0
        cols["seq"][recs] = self._seq + np.arange(w)
        self._seq += w
        self._live_tokens += total
        if self._garbage_tokens > self.compact_garbage_frac * max(self._live_tokens, 1):
            self.compact()
        return recs

    # ---- compaction -------------------------------------------------------------------------
    def _target_block(self) -> int:
        return min(self.max_block_tokens, max(self.min_block_tokens, self._live_tokens // 16))

    @staticmethod
    def _layout(lengths: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pack spans (in order) into blocks of ~``target`` tokens: (block of span, pos, block sizes)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        block_of = starts // max(target, 1)
        # renumber to consecutive block ids (an over-long span may skip ids)
        _, block_of = np.unique(block_of, return_inverse=True)
        sizes = np.bincount(block_of, weights=lengths).astype(np.int64) if lengths.size else np.zeros(0, np.int64)
        first_start = np.zeros(len(sizes), dtype=np.int64)
        if lengths.size:
            change = np.r_[True, block_of[1:] != block_of[:-1]]
            first_start[block_of[change]] = starts[change]
        pos = starts - first_start[block_of]
        return block_of.astype(np.int32), pos.astype(np.int64), sizes

    def compact(self) -> None:
        """Rebuild the arena without garbage, consuming old blocks in order (peak ~ one block extra)."""
        n = self._n
        cols = self._cols
        order = np.lexsort((cols["pos"][:n], cols["block"][:n]))
        lengths = cols["length"][:n][order].astype(np.int64)
        new_block, new_pos, sizes = self._layout(lengths, self._target_block())
        new_blocks: list[Optional[np.ndarray]] = [None] * len(sizes)
        copy_spans(
            self._blocks,
            cols["block"][:n][order],
            cols["pos"][:n][order],
            new_blocks,
            new_block,
            new_pos,
            lengths,
            dst_sizes=sizes,
            release_src=True,  # order is by old block: each is dropped once copied
        )
        cols["block"][:n][order] = new_block
        cols["pos"][:n][order] = new_pos.astype(np.int32)
        self._blocks = new_blocks
        self._block_used = [int(s) for s in sizes]
        self._block_garbage = [0] * len(sizes)
        self._garbage_tokens = 0
        self.compactions += 1

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
    ) -> "CacheStore":
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
