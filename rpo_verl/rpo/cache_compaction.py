"""Compaction of the RPO cache store's token arena (a mixin of ``rpo_verl.rpo.cache_store.CacheStore``).

Replaced records leave garbage spans; ``compact`` rebuilds the arena block by block (peak extra
memory about one block) and ``_layout`` packs spans into blocks of a target size.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from rpo_verl.rpo.cache_arena import copy_spans


class CacheCompaction:
    """Arena compaction; the store's state (``_cols``, ``_blocks``, ...) is ``CacheStore``'s."""

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
