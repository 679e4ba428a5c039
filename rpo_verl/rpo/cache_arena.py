"""Record arrays and token arena of the RPO cache store (``rpo_verl.rpo.cache_store``): pure numpy.

``_META_DTYPES`` are the per-record metadata columns; token ids live in int32 blocks and are
moved between block lists as *spans* with ``copy_spans`` (writes, compaction, state dicts).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

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
