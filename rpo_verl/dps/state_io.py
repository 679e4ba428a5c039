"""Snapshot files for the DPS scheduler state (pure; no pickle).

A state is a nested dict of numpy arrays and JSON values. It is written as one ``.npz``: every
array under its ``/``-joined key, everything else in a JSON entry ``__meta__``. Writes are atomic
(temporary file in the same directory, fsync, ``os.replace``), so a crash leaves the previous file.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from rpo_verl.dps.count_journal import CountJournal
from rpo_verl.utils.atomic_files import atomic_write_npz

META_KEY = "__meta__"
COUNTS_JOURNAL_KEY = "counts_journal"
FORMAT = "rpo_verl.dps.state/1"


class DPSStateError(ValueError):
    """A snapshot file that cannot be used (corrupt, not a DPS state, wrong dataset)."""


def _has_array(value) -> bool:
    return isinstance(value, np.ndarray) or (isinstance(value, dict) and any(map(_has_array, value.values())))


def _split(state: dict, prefix: str, arrays: dict) -> dict:
    """Arrays into ``arrays`` under ``/``-joined keys; the JSON rest returned (dicts without arrays as-is)."""
    meta = {}
    for key, value in state.items():
        path = f"{prefix}{key}"
        if _has_array(value) and "/" in key:
            raise ValueError(f"state key {key!r} holds arrays and must not contain '/'")
        if isinstance(value, np.ndarray):
            arrays[path] = value
        elif isinstance(value, dict) and _has_array(value):
            meta[key] = {"__dict__": _split(value, path + "/", arrays)}
        elif isinstance(value, np.generic):
            meta[key] = value.item()
        else:
            meta[key] = value
    return meta


def _join(meta: dict, prefix: str, arrays) -> dict:
    out = {}
    for key, value in meta.items():
        if isinstance(value, dict) and "__dict__" in value:
            out[key] = _join(value["__dict__"], f"{prefix}{key}/", arrays)
        else:
            out[key] = value
    for path in arrays.files:
        if path != META_KEY and path.startswith(prefix) and "/" not in path[len(prefix):]:
            out[path[len(prefix):]] = arrays[path]
    return out


def save_state(path: str, state: dict) -> None:
    """Write ``state`` to ``path`` atomically."""
    arrays: dict = {}
    meta = _split(state, "", arrays)
    header = json.dumps({"format": FORMAT, "state": meta}).encode()
    atomic_write_npz(path, {**arrays, META_KEY: np.frombuffer(header, np.uint8)})


def load_state(path: str) -> dict:
    """Read a state written by ``save_state``; a damaged file raises ``DPSStateError``. A snapshot
    naming a sample-count journal (``count_journal``) comes back whole, counts included."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"DPS scheduler state file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data[META_KEY]).decode())
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r}, expected {FORMAT!r}")
            state = _join(header["state"], "", _Loaded(data))
        if COUNTS_JOURNAL_KEY in state:  # an actor snapshot: its sample counts live in a journal beside it
            journal = CountJournal(path, str(state.pop(COUNTS_JOURNAL_KEY)))
            state["sample_counts"] = journal.counts(int(state["num_updates"]), int(state["num_prompts"]))
        return state
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DPSStateError(
            f"DPS scheduler state file {path} is corrupt or not a DPS state ({type(exc).__name__}: {exc}); "
            f"restore a good copy or delete it to start the scheduler from scratch"
        ) from exc


class _Loaded:
    """Eagerly materialised arrays of an open npz (the file is closed after loading)."""

    def __init__(self, data):
        self.files = list(data.files)
        self._arrays = {k: data[k] for k in self.files if k != META_KEY}

    def __getitem__(self, key):
        return self._arrays[key]


def _flatten(state: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def diff_states(a: dict, b: dict, ignore_suffixes: tuple[str, ...] = ("_time_s",)) -> list[str]:
    """Keys (``/``-joined) whose values differ between two states (arrays compared exactly, NaN
    equal to NaN); keys ending in ``ignore_suffixes`` (timings) are skipped. Empty = identical."""
    fa, fb = _flatten(a), _flatten(b)
    diffs = sorted(set(fa) ^ set(fb))
    for key in sorted(set(fa) & set(fb)):
        if key.endswith(ignore_suffixes):
            continue
        va, vb = fa[key], fb[key]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            va, vb = np.asarray(va), np.asarray(vb)
            same = va.shape == vb.shape and np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")
        else:
            same = va == vb or (va != va and vb != vb)
        if not same:
            diffs.append(key)
    return diffs
