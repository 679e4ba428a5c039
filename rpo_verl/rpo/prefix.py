"""RPO prefix-cut policies (ALGORITHMS.md §1, "Prefix cut"): pure numpy, vectorised over prompts.

One cut per prompt per step; all ``n`` samples of the group share it. For a batch of ``B`` prompts
whose cached responses have lengths ``L`` ([B]):

- ``tail`` (paper code): ``t ~ U{1..T}`` (``T = max_cut``); prefix = first ``L - t`` tokens;
  suffix budget = ``t``.
- ``ratio``: ``rho ~ U[ratio_lo, ratio_hi]``; prefix = first ``floor(rho * L)`` tokens; suffix
  budget = removed length + ``slack``.
- ``align=newline``: move the cut back so the prefix ends with a newline-containing token (the
  budget grows by the tokens moved); a prefix with no newline keeps its cut (counted).

Edge cases (each row gets a ``reason`` code):
- no cache entry / an empty one -> full-path rollout (prefix 0, budget = ``response_length``);
- cut >= length -> full path;
- prefix that does not fit (``prefix + 1 > response_length``, or ``prompt + prefix > max_input_len``
  when prompt lengths are given) -> ``overlong``: ``full_path`` (default), ``shorten`` (cut further
  back so the original budget still fits) or ``error``;
- every budget is clamped so that prefix + suffix <= ``response_length`` (the response holds both).

Deterministic given the ``numpy.random.Generator`` passed in: one draw per row, whatever the
cache content, so the stream does not depend on which prompts are cached.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

# reason codes ([B] int8)
CUT = 0
NO_ENTRY = 1
EMPTY_ENTRY = 2
CUT_GE_LEN = 3
OVERLONG_FULL_PATH = 4
OVERLONG_SHORTENED = 5
REASON_NAMES = {
    CUT: "cut",
    NO_ENTRY: "no_entry",
    EMPTY_ENTRY: "empty_entry",
    CUT_GE_LEN: "cut_ge_len",
    OVERLONG_FULL_PATH: "overlong_full_path",
    OVERLONG_SHORTENED: "overlong_shortened",
}

# gather(rows [b], offsets [b, W]) -> token ids [b, W] of the cached responses of those batch rows
Gather = Callable[[np.ndarray, np.ndarray], np.ndarray]


class PrefixOverlongError(ValueError):
    """A prefix does not fit the budget and ``rpo_verl.rpo.prefix.overlong=error``."""


@dataclasses.dataclass
class CutPlan:
    """Per-prompt cut decisions, all shaped [B]."""

    prefix_len: np.ndarray  # int64, 0 = full-path rollout
    budget: np.ndarray  # int64, suffix max_tokens
    reason: np.ndarray  # int8, see REASON_NAMES
    align_fallback: np.ndarray  # bool, newline alignment found no boundary (cut kept)


# ----------------------------------------------------------------------------------------------
# Newline tokens
# ----------------------------------------------------------------------------------------------
def newline_token_ids(tokenizer) -> np.ndarray:
    """Ids of every token whose decoded text contains a newline (computed once per tokenizer)."""
    vocab_size = len(tokenizer)
    texts = tokenizer.batch_decode(
        [[i] for i in range(vocab_size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return np.array([i for i, text in enumerate(texts) if "\n" in text], dtype=np.int64)


def newline_table(ids, vocab_size: Optional[int] = None) -> np.ndarray:
    """Boolean lookup table ``[V]``: ``table[token] == True`` for newline-containing tokens."""
    ids = np.asarray(ids, dtype=np.int64)
    size = int(vocab_size) if vocab_size is not None else (int(ids.max()) + 1 if ids.size else 1)
    table = np.zeros(max(size, 1), dtype=bool)
    table[ids[ids < size]] = True
    return table


def _is_newline(tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    inside = (tokens >= 0) & (tokens < len(table))
    return inside & table[np.where(inside, tokens, 0)]


def align_to_newline(
    prefix_len: np.ndarray, gather: Gather, table: np.ndarray, windows: tuple[int, ...] = (16, 64, 256, 1024)
) -> tuple[np.ndarray, np.ndarray]:
    """Move each cut back to the nearest line boundary at or before it.

    Returns (aligned prefix lengths [B], fallback [B] bool). A boundary is a position ``q`` with
    token ``q-1`` containing a newline; rows whose prefix has no newline keep their cut
    (``fallback``). Searches back in vectorised stages of growing ``windows`` (most lines are
    short), then row by row for the rare longer searches.
    """
    p = np.asarray(prefix_len, dtype=np.int64).copy()
    fallback = np.zeros(p.shape, dtype=bool)
    todo = np.flatnonzero(p > 0)
    searched = 0  # positions already searched back from the cut (same for every row in `todo`)
    for width in windows:
        if todo.size == 0:
            return p, fallback
        width = int(min(width, (p[todo] - searched).max()))
        offsets = p[todo, None] - 1 - searched - np.arange(width, dtype=np.int64)[None, :]
        valid = offsets >= 0
        hit = _is_newline(gather(todo, np.where(valid, offsets, 0)), table) & valid
        found = hit.any(axis=1)
        p[todo[found]] -= searched + hit[found].argmax(axis=1)
        searched += width
        rest = todo[~found]
        exhausted = p[rest] <= searched
        fallback[rest[exhausted]] = True
        todo = rest[~exhausted]
    for row in todo:
        far = int(p[row]) - searched  # positions [0, far) not searched yet
        offs = np.arange(far - 1, -1, -1, dtype=np.int64)[None, :]
        nl = _is_newline(gather(np.array([row]), offs), table)[0]
        if nl.any():
            p[row] = offs[0, int(nl.argmax())] + 1
        else:
            fallback[row] = True
    return p, fallback


# ----------------------------------------------------------------------------------------------
# Cuts
# ----------------------------------------------------------------------------------------------
def plan_cuts(
    cached_len: np.ndarray,
    has_entry: np.ndarray,
    cfg,
    rng: np.random.Generator,
    *,
    response_length: int,
    prompt_len: Optional[np.ndarray] = None,
    gather: Optional[Gather] = None,
    newline: Optional[np.ndarray] = None,
) -> CutPlan:
    """Choose prefix lengths and suffix budgets for ``B`` prompts.

    Args:
        cached_len: [B] length of the cached response of each prompt (ignored where no entry).
        has_entry: [B] bool, the prompt has a cached record.
        cfg: ``RPOPrefixConfig`` (mode, max_cut, ratio_lo/hi, slack, align, overlong, max_input_len).
        rng: the step's generator (one draw per row).
        response_length: the rollout's response budget; prefix + suffix must fit in it.
        prompt_len: [B] prompt token counts, for the ``max_input_len`` check (optional).
        gather, newline: token access and newline table, required for ``align=newline``.
    """
    if response_length < 1:
        raise ValueError(f"response_length must be >= 1, got {response_length}")
    length = np.where(has_entry, np.asarray(cached_len, dtype=np.int64), 0)
    b = length.shape[0]
    reason = np.full(b, CUT, dtype=np.int8)
    reason[~np.asarray(has_entry, dtype=bool)] = NO_ENTRY
    reason[np.asarray(has_entry, dtype=bool) & (length == 0)] = EMPTY_ENTRY

    if cfg.mode == "tail":
        cut = rng.integers(1, cfg.max_cut + 1, size=b)
        prefix = length - cut
        slack = 0
    elif cfg.mode == "ratio":
        rho = rng.uniform(cfg.ratio_lo, cfg.ratio_hi, size=b)
        # at least one token is always removed, so the suffix budget is >= 1 even with slack 0
        prefix = np.minimum(np.floor(rho * length).astype(np.int64), length - 1)
        slack = int(cfg.slack)
    else:
        raise ValueError(f"rpo_verl.rpo.prefix.mode: unknown mode {cfg.mode!r}")
    reason[(reason == CUT) & (prefix <= 0)] = CUT_GE_LEN
    prefix = np.where(reason == CUT, prefix, 0)

    fallback = np.zeros(b, dtype=bool)
    if cfg.align == "newline":
        if gather is None or newline is None:
            raise ValueError("rpo_verl.rpo.prefix.align=newline needs the cached tokens and newline token ids")
        prefix, fallback = align_to_newline(prefix, gather, newline)
        reason[(reason == CUT) & (prefix <= 0)] = CUT_GE_LEN
    budget = length - prefix + slack  # removed tokens (+ slack)

    # prefixes that do not fit: prefix + 1 > response_length, or prompt + prefix > max_input_len
    limit = np.full(b, response_length - 1, dtype=np.int64)
    if cfg.max_input_len > 0 and prompt_len is not None:
        limit = np.minimum(limit, cfg.max_input_len - np.asarray(prompt_len, dtype=np.int64))
    over = (reason == CUT) & (prefix > limit)
    if over.any():
        if cfg.overlong == "error":
            row = int(np.flatnonzero(over)[0])
            raise PrefixOverlongError(
                f"{int(over.sum())} prefixes do not fit (e.g. prefix of {int(prefix[row])} tokens, room for "
                f"{int(limit[row])} with response_length={response_length}, max_input_len={cfg.max_input_len}); "
                "raise data.max_response_length / rpo_verl.rpo.prefix.max_input_len, or set "
                "rpo_verl.rpo.prefix.overlong=full_path|shorten"
            )
        if cfg.overlong == "shorten":
            # keep the original budget if possible: prefix <= response_length - budget
            room = np.minimum(limit, response_length - np.minimum(budget, response_length))
            prefix = np.where(over, np.minimum(prefix, room), prefix)
            budget = np.where(over, length - prefix + slack, budget)
            reason[over] = OVERLONG_SHORTENED
            reason[over & (prefix <= 0)] = OVERLONG_FULL_PATH
        else:
            reason[over] = OVERLONG_FULL_PATH
    full = (reason != CUT) & (reason != OVERLONG_SHORTENED)
    prefix = np.where(full, 0, prefix)
    budget = np.where(full, response_length, np.minimum(budget, response_length - prefix))
    return CutPlan(prefix_len=prefix, budget=budget.astype(np.int64), reason=reason, align_fallback=fallback & ~full)
