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

Split by responsibility: record arrays and span copying in ``cache_arena``, compaction in
``cache_compaction``, state dicts and files in ``cache_state``; this module holds the store's
arrays, lookups and writes.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from rpo_verl.rpo.cache_arena import _META_DTYPES, copy_spans, segment_index  # noqa: F401 - public here too
from rpo_verl.rpo.cache_compaction import CacheCompaction
from rpo_verl.rpo.cache_state import CacheState


# ----------------------------------------------------------------------------------------------
# Store
# ----------------------------------------------------------------------------------------------
class CacheStore(CacheCompaction, CacheState):
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
