"""Per-prompt sample counts persisted in O(batch) per update (pure numpy, no Ray).

``sample_counts [N]`` is the only part of the DPS scheduler state that grows with the dataset
(2 bytes a prompt; the HMM stores only its active prompts). Rewriting it in every per-update
snapshot would make each step O(N) (about 0.4-1.8 s for 190 MiB at N = 10^8). Instead the actor's
snapshot leaves it out and names a journal:

- ``<prefix>.counts.<jid>.npz``: the base, counts as of update ``base_updates`` (sparse ids/values
  while few prompts were counted, dense otherwise), written atomically once per journal;
- ``<prefix>.counts.<jid>.log``: append-only records ``[update_index, n, id_1 .. id_n]`` (int64),
  one per update, fsynced.

Counts after ``u`` updates = base + one per id of every record with ``base_updates <= index < u``
(a record repeated by a retried update counts once: the last copy wins; a torn last record is
ignored). A new journal (``CountJournal.start``) gets a fresh ``jid``, so a snapshot always names
files that describe its own timeline; the caller deletes the previous journal only after the
snapshot naming the new one is written.
"""

from __future__ import annotations

import glob
import os
import uuid

import numpy as np

from rpo_verl.utils.atomic_files import atomic_write_npz

_WIDE_AT = int(np.iinfo(np.uint16).max)  # SchedulerCore widens uint16 counts to int64 past this


class CountJournalError(ValueError):
    """The files a snapshot names are missing or do not belong to it."""


class CountJournal:
    def __init__(self, prefix: str, jid: str):
        self.prefix, self.jid = prefix, jid
        self.base_path = f"{prefix}.counts.{jid}.npz"
        self.log_path = f"{prefix}.counts.{jid}.log"
        self.logged_ids = 0

    @classmethod
    def start(cls, prefix: str, counts: np.ndarray, num_updates: int) -> "CountJournal":
        """A new journal whose base is ``counts`` after ``num_updates`` updates (O(N) once)."""
        journal = cls(prefix, uuid.uuid4().hex[:12])
        nz = np.flatnonzero(counts)
        arrays = {"num_prompts": np.int64(counts.size), "base_updates": np.int64(num_updates),
                  "dtype": np.array(counts.dtype.str)}
        if nz.size * 10 < counts.nbytes:  # sparse: 8-byte id + 2-byte count per counted prompt
            arrays |= {"ids": nz.astype(np.int64), "values": counts[nz].astype(np.int64)}
        else:
            arrays["dense"] = counts
        atomic_write_npz(journal.base_path, arrays)
        with open(journal.log_path, "wb") as f:
            os.fsync(f.fileno())
        return journal

    def append(self, update_index: int, ids: np.ndarray) -> None:
        """Record that ``ids`` (distinct) were counted by update ``update_index``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        record = np.concatenate([np.array([update_index, ids.size], np.int64), ids])
        with open(self.log_path, "ab") as f:
            f.write(record.tobytes())
            f.flush()
            os.fsync(f.fileno())
        self.logged_ids += ids.size

    def counts(self, num_updates: int, num_prompts: int) -> np.ndarray:
        """The counts after ``num_updates`` updates, with the dtype the live scheduler had."""
        if not (os.path.exists(self.base_path) and os.path.exists(self.log_path)):
            raise CountJournalError(f"DPS sample-count journal {self.jid} is missing ({self.base_path} / "
                                    f"{self.log_path}); delete the snapshot to start the scheduler afresh")
        with np.load(self.base_path, allow_pickle=False) as base:
            if int(base["num_prompts"]) != num_prompts:
                raise CountJournalError(f"DPS sample-count journal {self.jid} is for {int(base['num_prompts'])} "
                                        f"prompts, not {num_prompts}")
            start, dtype = int(base["base_updates"]), np.dtype(str(base["dtype"]))
            if "dense" in base.files:
                counts = base["dense"].astype(np.int64)
            else:
                counts = np.zeros(num_prompts, np.int64)
                counts[base["ids"]] = base["values"]
        records: dict[int, np.ndarray] = {}
        log = np.fromfile(self.log_path, dtype=np.int64)
        pos = 0
        while pos + 2 <= log.size and pos + 2 + log[pos + 1] <= log.size:
            index, n = int(log[pos]), int(log[pos + 1])
            if start <= index < num_updates:
                records[index] = log[pos + 2 : pos + 2 + n]
            pos += 2 + n
        self.logged_ids = pos
        missing = sorted(set(range(start, num_updates)) - set(records))
        if missing:
            raise CountJournalError(f"DPS sample-count journal {self.jid} lacks updates {missing[:5]}...; delete the "
                                    f"snapshot to start the scheduler afresh")
        for ids in records.values():
            counts[ids] += 1
        if dtype == np.uint16 and counts.max(initial=0) <= _WIDE_AT:
            return counts.astype(np.uint16)
        return counts.astype(np.int64) if dtype == np.uint16 else counts.astype(dtype)

    def remove(self) -> None:
        for path in (self.base_path, self.log_path):
            if os.path.exists(path):
                os.remove(path)


def journal_files(prefix: str) -> list[str]:
    """Every journal file beside the snapshot ``prefix`` (for clean-up of stale runs)."""
    return sorted(glob.glob(glob.escape(prefix) + ".counts.*.npz") + glob.glob(glob.escape(prefix) + ".counts.*.log"))
