"""Resumable output of the offline cache builder (``scripts/build_cache.py``): pure numpy.

The builder writes finished responses in *parts*, ``<out>.parts/part_<k>.npz`` (atomic: a part is
complete or absent), next to a ``manifest.json`` with the settings that produced them (tokenizer
fingerprint, sampling, model, data). A rerun reads the parts, skips their prompts and generates
the rest, so an interrupted build loses at most the parts not yet written and never stores a
prompt twice. ``merge`` turns the parts into one cache file for ``rpo_verl.rpo.cache.init=offline``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Optional

import numpy as np

from rpo_verl.rpo.cache_file import CacheFileError, fingerprint_mismatches
from rpo_verl.rpo.cache_store import CacheStore
from rpo_verl.utils.atomic_files import atomic_write_json, atomic_write_npz

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_PART = re.compile(r"part_(\d{6})\.npz$")


def parts_dir_for(out_path: str) -> str:
    return f"{out_path}.parts"


class PartsDir:
    """Finished builder output of one cache file (see the module docstring).

    Args:
        path: the parts folder (``parts_dir_for(out)``).
        settings: what produced the responses; a rerun must use the same (else ``CacheFileError``,
            naming the difference; delete the folder to start over). ``settings["tokenizer"]`` is
            a ``tokenizer_fingerprint``.
    """

    def __init__(self, path: str, settings: dict):
        self.path = path
        self.settings = json.loads(json.dumps(settings))  # plain JSON types, as read back
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.tmp")):  # a write interrupted before its rename
            os.unlink(stale)
        manifest = os.path.join(path, MANIFEST)
        if os.path.exists(manifest):
            with open(manifest) as handle:
                previous = json.load(handle)
            self._check_same(previous)
        else:
            atomic_write_json(manifest, self.settings, indent=1, sort_keys=True)

    def _check_same(self, previous: dict) -> None:
        problems = fingerprint_mismatches(previous.get("tokenizer") or {}, self.settings.get("tokenizer") or {})
        problems = [f"tokenizer {p}" for p in problems]
        for key in sorted(set(previous) | set(self.settings)):
            if key != "tokenizer" and previous.get(key) != self.settings.get(key):
                problems.append(f"{key}: earlier parts used {previous.get(key)!r}, now {self.settings.get(key)!r}")
        if problems:
            raise CacheFileError(
                f"{self.path} holds parts of a build with other settings ({'; '.join(problems)}). Resume with the "
                "same settings, or delete that folder to start the build over"
            )

    def part_files(self) -> list[str]:
        return sorted(f for f in glob.glob(os.path.join(self.path, "part_*.npz")) if _PART.search(f))

    def read(self) -> dict[str, np.ndarray]:
        """All finished records: ``prompt_id``, ``length``, ``reward``, ``correct`` [R] and ``tokens``."""
        cols: dict[str, list] = {"prompt_id": [], "length": [], "reward": [], "correct": [], "tokens": []}
        for f in self.part_files():
            try:
                with np.load(f, allow_pickle=False) as data:
                    part = {k: data[k] for k in cols}
            except Exception as exc:  # noqa: BLE001 - atomic writes make this a foreign/damaged file
                raise CacheFileError(f"builder part {f!r} is unreadable ({exc}); delete it and rerun") from exc
            if int(part["length"].sum()) != part["tokens"].size:
                raise CacheFileError(f"builder part {f!r} is inconsistent; delete it and rerun")
            for k in cols:
                cols[k].append(part[k])
        empty = {"prompt_id": np.int64, "length": np.int64, "reward": np.float32, "correct": np.int8, "tokens": np.int32}
        return {k: np.concatenate(v) if v else np.zeros(0, dtype=empty[k]) for k, v in cols.items()}

    def done_ids(self) -> np.ndarray:
        return np.unique(self.read()["prompt_id"])

    def write(self, prompt_ids, token_seqs, rewards, correct) -> str:
        """Store finished responses as the next part (atomic)."""
        lengths = np.array([len(t) for t in token_seqs], dtype=np.int64)
        tokens = np.concatenate([np.asarray(t, dtype=np.int32) for t in token_seqs]) if len(token_seqs) else []
        existing = [int(_PART.search(f).group(1)) for f in self.part_files()]
        path = os.path.join(self.path, f"part_{(max(existing) + 1) if existing else 0:06d}.npz")
        atomic_write_npz(
            path,
            {
                "prompt_id": np.asarray(prompt_ids, dtype=np.int64),
                "length": lengths,
                "tokens": np.asarray(tokens, dtype=np.int32),
                "reward": np.asarray(rewards, dtype=np.float32),
                "correct": np.asarray(correct, dtype=np.int8),
            },
        )
        return path

    def merge(self, out_path: str, id_range: tuple[int, int], fingerprint: Optional[dict]) -> tuple[str, int]:
        """Write every finished record into one cache file (one record per prompt, writer step 0).

        Returns (path, number of records). A prompt present twice (never written so by the
        builder) keeps its first record, with a warning.
        """
        rec = self.read()
        ids = rec["prompt_id"]
        _, first = np.unique(ids, return_index=True)
        if first.size != ids.size:
            logger.warning("%s: %d duplicate prompt records dropped", self.path, ids.size - first.size)
        keep = np.sort(first)
        starts = np.cumsum(rec["length"]) - rec["length"]
        tokens = np.concatenate([rec["tokens"][s : s + n] for s, n in zip(starts[keep], rec["length"][keep])]) if keep.size else []
        store = CacheStore(id_range, 1, fingerprint=fingerprint)
        if keep.size:
            store.write_many(ids[keep], np.asarray(tokens, dtype=np.int32), rec["length"][keep], rec["reward"][keep],
                             rec["correct"][keep] > 0, 0)
        return store.save(out_path), int(keep.size)
