"""RPO experience-cache files: format, tokenizer fingerprint, validation, atomic writes.

A cache file is an ``.npz`` without pickles: one row per record in the columns ``STATE_COLUMNS``,
the concatenated int32 ``tokens`` and a JSON ``meta`` entry (format name and version, prompt-id
range, ``per_prompt``, tokenizer fingerprint, write counter, CRC32 of the tokens). Every way a file
can be unusable (missing, truncated, corrupt, another format version, another tokenizer, prompt
ids outside the dataset) raises ``CacheFileError`` with what to fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_NAME = "rpo_verl.experience_cache"
FORMAT_VERSION = 1
# Columns that travel in state dicts / files (block/pos are arena layout, not state).
STATE_COLUMNS = ("prompt_id", "length", "reward", "correct", "step", "hits", "seq")

# Text whose encoding identifies a tokenizer beyond its vocabulary size.
_PROBE_TEXT = "RPO fingerprint: 12 + 30 = 42.\nThe answer is \\boxed{42}. Ünïcødé ✓ 数学"


class CacheFileError(ValueError):
    """A cache file or state dict that cannot be used (corrupt, other tokenizer, other dataset)."""


def tokenizer_fingerprint(tokenizer) -> dict:
    """Identify a tokenizer: vocab size, special tokens (text and id), hash of a probe encoding.

    ``name`` (basename of ``name_or_path``) is informational only and not compared, so the same
    tokenizer at another path still matches.
    """
    special = {}
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        token = getattr(tokenizer, attr, None)
        token_id = getattr(tokenizer, f"{attr}_id", None)
        special[attr] = [None if token is None else str(token), None if token_id is None else int(token_id)]
    probe = tokenizer.encode(_PROBE_TEXT, add_special_tokens=False)
    probe_hash = hashlib.sha256(np.asarray(probe, dtype=np.int64).tobytes()).hexdigest()[:16]
    name = os.path.basename(str(getattr(tokenizer, "name_or_path", "") or "").rstrip("/"))
    return {"vocab_size": int(len(tokenizer)), "special": special, "probe_hash": probe_hash, "name": name}


def fingerprint_mismatches(expected: dict, found: dict) -> list[str]:
    """Human-readable differences between two fingerprints (``name`` ignored)."""
    problems = []
    for key in ("vocab_size", "special", "probe_hash"):
        if expected.get(key) != found.get(key):
            problems.append(f"{key}: expected {expected.get(key)!r}, file has {found.get(key)!r}")
    return problems


def read_cache_file(path: str) -> dict:
    """Load a cache file into a state dict, turning every low-level failure into ``CacheFileError``."""
    if not os.path.exists(path):
        raise CacheFileError(f"RPO cache file {path!r} does not exist (build one with scripts/build_cache.py)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CacheFileError(
            f"RPO cache file {path!r} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "delete it and rebuild it with scripts/build_cache.py"
        ) from exc
    if "meta" not in arrays:
        raise CacheFileError(f"RPO cache file {path!r} has no 'meta' entry: not an rpo_verl experience cache")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise CacheFileError(f"RPO cache file {path!r}: unreadable metadata ({exc})") from exc
    state = {"meta": meta, **arrays}
    check_state(state, source=repr(path))
    return state


def check_state(
    state: dict,
    *,
    source: str = "state dict",
    id_range: Optional[tuple[int, int]] = None,
    fingerprint: Optional[dict] = None,
) -> None:
    """Validate a cache state dict; raise ``CacheFileError`` naming ``source`` and what to fix."""
    meta = state.get("meta")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CacheFileError(
            f"{source}: not an rpo_verl experience cache (format={None if meta is None else meta.get('format')!r})"
        )
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise CacheFileError(
            f"{source}: cache format version {version!r}, this rpo_verl reads version {FORMAT_VERSION}; "
            "rebuild the cache with this version's scripts/build_cache.py"
        )
    missing = [c for c in STATE_COLUMNS + ("tokens",) if c not in state]
    if missing:
        raise CacheFileError(f"{source}: missing arrays {missing}; the file is incomplete, rebuild it")
    n = len(state["prompt_id"])
    bad_len = [c for c in STATE_COLUMNS if len(state[c]) != n]
    if bad_len:
        raise CacheFileError(f"{source}: columns {bad_len} do not have {n} rows; the file is corrupt, rebuild it")
    lengths = np.asarray(state["length"], dtype=np.int64)
    tokens = state["tokens"]
    if tokens.dtype != np.int32:
        raise CacheFileError(f"{source}: token ids must be int32, found {tokens.dtype}")
    if (lengths < 0).any() or int(lengths.sum()) != len(tokens):
        raise CacheFileError(
            f"{source}: record lengths (sum {int(lengths.sum())}) do not match the {len(tokens)} stored tokens; "
            "the file is corrupt, rebuild it"
        )
    crc = meta.get("tokens_crc32")
    if crc is not None and zlib.crc32(memoryview(np.ascontiguousarray(tokens))) != crc:
        raise CacheFileError(f"{source}: token checksum mismatch; the file is corrupt, rebuild it")
    if fingerprint is not None:
        found = meta.get("tokenizer")
        if found is None:
            logger.warning("%s carries no tokenizer fingerprint; cannot check it matches the model's tokenizer", source)
        else:
            problems = fingerprint_mismatches(fingerprint, found)
            if problems:
                raise CacheFileError(
                    f"{source} was built with another tokenizer (file: {found.get('name')!r}, "
                    f"model: {fingerprint.get('name')!r}): "
                    + "; ".join(problems)
                    + ". Rebuild the cache with this model's tokenizer (scripts/build_cache.py)"
                )
        vocab = fingerprint.get("vocab_size")
        if vocab is not None and len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise CacheFileError(
                f"{source}: token ids outside [0, {vocab}) (min {int(tokens.min())}, max {int(tokens.max())}): "
                "built with another tokenizer; rebuild the cache"
            )
    if id_range is not None and n:
        lo, hi = id_range
        ids = np.asarray(state["prompt_id"], dtype=np.int64)
        outside = (ids < lo) | (ids >= hi)
        if outside.any():
            examples = np.unique(ids[outside])[:5].tolist()
            raise CacheFileError(
                f"{source}: {int(outside.sum())} records have prompt ids outside this dataset's id range "
                f"[{lo}, {hi}) (e.g. {examples}; file range [{meta.get('id_lo')}, {meta.get('id_hi')})): "
                "the cache was built for another dataset; rebuild it for this one"
            )
