"""Batches crossing the RPO cache-service boundary (numpy only, cheap to send through Ray).

``UpdateBatch``: trajectories offered to the cache after rewards (flat int32 tokens + per-row
columns). ``PrefixBatch``: the prefixes chosen for a batch of prompts (flat tokens + lengths,
budgets and reason codes), convertible to ``[(prefix int32 array, suffix budget)]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np

from rpo_verl.rpo.cache_arena import copy_spans, segment_index

# ``update`` summary (``plan_update`` returns it as an int64 array in this order)
SUMMARY_KEYS = ("groups", "candidates", "writes", "seeded")


@dataclasses.dataclass
class UpdateBatch:
    """Trajectories to offer to the cache after rewards, one row per sample ([M]).

    ``tokens`` are the full response token ids (prefix ⊕ suffix, no padding) concatenated;
    ``correct`` is 1/0, or -1 for "unknown" (then reward > cache.correct_threshold decides).
    """

    prompt_ids: np.ndarray  # int64 [M]
    lengths: np.ndarray  # int64 [M]
    tokens: np.ndarray  # int32 [sum(lengths)]
    rewards: np.ndarray  # float32 [M]
    correct: np.ndarray  # int8 [M]
    step: int = 0

    def __post_init__(self) -> None:
        self.prompt_ids = np.asarray(self.prompt_ids, dtype=np.int64).reshape(-1)
        self.lengths = np.asarray(self.lengths, dtype=np.int64).reshape(-1)
        self.tokens = np.asarray(self.tokens, dtype=np.int32).reshape(-1)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        self.correct = np.asarray(self.correct, dtype=np.int8).reshape(-1)
        m = self.prompt_ids.size
        if not (self.lengths.size == self.rewards.size == self.correct.size == m):
            raise ValueError(f"UpdateBatch: prompt_ids, lengths, rewards, correct must all have {m} rows")
        if int(self.lengths.sum()) != self.tokens.size:
            raise ValueError(f"UpdateBatch: lengths sum {int(self.lengths.sum())} != {self.tokens.size} tokens")

    @classmethod
    def from_sequences(cls, prompt_ids, token_seqs: Sequence, rewards, correct=None, step: int = 0) -> "UpdateBatch":
        lengths = np.array([len(t) for t in token_seqs], dtype=np.int64)
        tokens = np.concatenate([np.asarray(t, dtype=np.int32) for t in token_seqs]) if len(token_seqs) else []
        correct = np.full(len(lengths), -1, dtype=np.int8) if correct is None else correct
        return cls(prompt_ids, lengths, tokens, rewards, correct, step)

    @classmethod
    def from_padded(cls, prompt_ids, responses, lengths, rewards, correct=None, step: int = 0) -> "UpdateBatch":
        """From right-padded responses ``[M, R]`` (e.g. verl's ``responses``) and valid lengths ``[M]``."""
        responses = np.asarray(responses)
        lengths = np.asarray(lengths, dtype=np.int64)
        mask = np.arange(responses.shape[1])[None, :] < lengths[:, None]
        correct = np.full(len(lengths), -1, dtype=np.int8) if correct is None else correct
        return cls(prompt_ids, lengths, responses[mask], rewards, correct, step)

    def subset(self, rows: np.ndarray) -> "UpdateBatch":
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        out = [np.empty(int(lengths.sum()), dtype=np.int32)]
        starts = np.cumsum(self.lengths) - self.lengths
        copy_spans(
            [self.tokens],
            np.zeros(rows.size, np.int64),
            starts[rows],
            out,
            np.zeros(rows.size, np.int64),
            np.cumsum(lengths) - lengths,
            lengths,
        )
        return UpdateBatch(self.prompt_ids[rows], lengths, out[0], self.rewards[rows], self.correct[rows], self.step)


@dataclasses.dataclass
class PrefixBatch:
    """Answer of ``sample_prefixes`` for B prompts, in request order."""

    prefix_tokens: np.ndarray  # int32 [sum(prefix_len)] concatenated prefixes
    prefix_len: np.ndarray  # int64 [B], 0 = full-path rollout
    budget: np.ndarray  # int64 [B], suffix max_tokens
    reason: np.ndarray  # int8 [B], rpo_verl.rpo.prefix.REASON_NAMES
    cached_len: np.ndarray  # int64 [B], length of the cached response used (0 if none)

    def prefixes(self) -> list[np.ndarray]:
        """Per-prompt int32 prefix arrays (views into ``prefix_tokens``)."""
        return np.split(self.prefix_tokens, np.cumsum(self.prefix_len)[:-1]) if self.prefix_len.size else []

    def as_list(self) -> list[tuple[np.ndarray, int]]:
        return list(zip(self.prefixes(), (int(b) for b in self.budget)))

    def to_arrays(self) -> tuple[np.ndarray, ...]:
        """Flat arrays (tokens, prefix_len, budget, reason, cached_len): the wire format of a shard's answer."""
        return (self.prefix_tokens, self.prefix_len, self.budget, self.reason, self.cached_len)

    @classmethod
    def from_arrays(cls, arrays) -> "PrefixBatch":
        """Inverse of ``to_arrays``; arrays Ray hands over read-only are copied (answers stay writable)."""
        dtypes = (np.int32, np.int64, np.int64, np.int8, np.int64)
        return cls(*(np.require(np.reshape(a, -1), dtype=d, requirements="W") for a, d in zip(arrays, dtypes)))

    @staticmethod
    def merge(parts: list[tuple[np.ndarray, "PrefixBatch"]], size: int) -> "PrefixBatch":
        """Reassemble shard answers; ``parts`` = [(request rows of the shard, its PrefixBatch)]."""
        if len(parts) == 1 and np.array_equal(parts[0][0], np.arange(size)):
            return parts[0][1]  # one shard holding the whole request: already in order
        prefix_len = np.zeros(size, dtype=np.int64)
        budget = np.zeros(size, dtype=np.int64)
        reason = np.zeros(size, dtype=np.int8)
        cached = np.zeros(size, dtype=np.int64)
        for rows, part in parts:
            prefix_len[rows], budget[rows], reason[rows], cached[rows] = (
                part.prefix_len,
                part.budget,
                part.reason,
                part.cached_len,
            )
        starts = np.cumsum(prefix_len) - prefix_len
        tokens = np.zeros(int(prefix_len.sum()), dtype=np.int32)
        for rows, part in parts:  # a shard's prefixes are concatenated in its row order
            tokens[segment_index(starts[rows], part.prefix_len)] = part.prefix_tokens
        return PrefixBatch(tokens, prefix_len, budget, reason, cached)
