"""The DPS scheduler as one named Ray actor (a thin wrapper around ``core.SchedulerCore``).

Driver side::

    client = DPSSchedulerClient.create(cfg, num_prompts=len(train_dataset), rollouts_per_prompt=n)
    ids = client.select(B)                       # before rollout: dataset row indices [B]
    metrics = client.update(ids, success_rates)  # after rewards: raw group accuracy in [0,1]
    client.save(path) / client.load(path)        # with verl's checkpoint

Fault tolerance: the actor is created with ``max_restarts``; after every ``snapshot_every``-th
update it writes its state atomically to ``snapshot_path``, and a restarted actor (same
constructor arguments) reloads that file, plus a small cursor file written after every select
(random stream, epoch position, last answer). The snapshot leaves out the per-prompt sample counts
(the one O(N) array): every update appends its counted ids to a journal (``count_journal``), which
is compacted into a new base once it holds more ids than N/4, so an update stays O(batch)
(amortised) at any dataset size; the restored counts are exact. The client retries a call after the actor died;
selects and updates carry their index, so a retried call that had already been executed returns
the same ids / is not applied twice.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import ray

from rpo_verl.dps.config import DPSConfig, build_dps_config
from rpo_verl.dps.core import SchedulerCore
from rpo_verl.dps.count_journal import CountJournal, journal_files
from rpo_verl.dps.state_io import COUNTS_JOURNAL_KEY, load_state, save_state

logger = logging.getLogger("rpo_verl.dps")

SCHEDULER_ACTOR_NAME = "rpo_verl_dps_scheduler"


class DPSScheduler:
    """Actor body (plain class; ``create_scheduler`` wraps it with ``ray.remote``)."""

    def __init__(self, config: dict, num_prompts: int, rollouts_per_prompt: int = 1):
        self.config: DPSConfig = build_dps_config(config)
        self.core = SchedulerCore(self.config, num_prompts, rollouts_per_prompt)
        self.restored_from: str | None = None
        self.journal: CountJournal | None = None
        path = self.config.snapshot_path
        if path and os.path.exists(path):
            self.core.load_state_dict(load_state(path))  # sample counts rebuilt from the snapshot's journal
            self.restored_from = path
            self._new_journal()  # O(N) once per restart; the snapshot then names it
            self._write_snapshot()
            logger.warning("DPS scheduler restored from snapshot %s (%d updates)", path, self.core.num_updates)
        if path:
            self._drop_journals(keep=self.journal)
        if self.restored_from and os.path.exists(self._cursor_path):
            self.core.load_cursor_state(load_state(self._cursor_path))

    @property
    def _cursor_path(self) -> str:
        return f"{self.config.snapshot_path}.cursor"

    def select(self, batch_size: int, exclude=None, select_index: int | None = None) -> np.ndarray:
        ids = self.core.select(batch_size, exclude, select_index)
        if self.config.snapshot_path:
            # Tiny file: the random stream after this select, so a restart does not replay it differently.
            save_state(self._cursor_path, self.core.cursor_state())
        return ids

    def update(self, prompt_ids, success_rates, num_rollouts=None, update_index: int | None = None) -> dict:
        before = self.core.num_updates
        metrics = self.core.update(prompt_ids, success_rates, num_rollouts, update_index)
        path = self.config.snapshot_path
        if path and self.core.num_updates != before:
            t0 = time.perf_counter()
            if self.journal is None:
                self._new_journal(counts_before_last_update=True)
            self.journal.append(self.core.num_updates - 1, self.core.last_counted)
            if self.core.num_updates % self.config.snapshot_every == 0:
                self._write_snapshot()
                if self.journal.logged_ids > self.core.num_prompts // 4:
                    self._new_journal()  # compaction: O(N), once per ~N / (4 B) updates
                    self._write_snapshot()
                    self._drop_journals(keep=self.journal)
                metrics["dps/snapshot_time_s"] = time.perf_counter() - t0
        return metrics

    def _new_journal(self, counts_before_last_update: bool = False) -> None:
        counts, n = self.core.sample_counts, self.core.num_updates
        if not counts_before_last_update:
            self.journal = CountJournal.start(self.config.snapshot_path, counts, n)
            return
        # The base is the state before the update about to be journalled: undo it in place (no O(N) copy).
        last = self.core.last_counted
        counts[last] -= 1
        try:
            self.journal = CountJournal.start(self.config.snapshot_path, counts, n - 1)
        finally:
            counts[last] += 1

    def _write_snapshot(self) -> None:
        save_state(self.config.snapshot_path,
                   {**self.core.state_dict(include_counts=False), COUNTS_JOURNAL_KEY: self.journal.jid})

    def _drop_journals(self, keep: CountJournal | None) -> None:
        """Remove journal files the current snapshot does not name (earlier runs, compacted journals)."""
        kept = {keep.base_path, keep.log_path} if keep is not None else set()
        for stale in journal_files(self.config.snapshot_path):
            if stale not in kept:
                os.remove(stale)

    def metrics(self) -> dict:
        return self.core.metrics()

    def state_dict(self) -> dict:
        return self.core.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state)
        self._resnapshot()

    def save(self, path: str) -> None:
        save_state(path, self.core.state_dict())

    def load(self, path: str) -> None:
        self.core.load_state_dict(load_state(path))
        self._resnapshot()

    def _resnapshot(self) -> None:
        """After an explicit load (resume from a checkpoint) the snapshot must describe the loaded
        state, or a restart before the next update would bring back the older/newer snapshot."""
        path = self.config.snapshot_path
        if path:
            self._new_journal()
            self._write_snapshot()
            self._drop_journals(keep=self.journal)
            if os.path.exists(self._cursor_path):
                os.remove(self._cursor_path)

    def info(self) -> dict:
        return {"num_prompts": self.core.num_prompts, "num_updates": self.core.num_updates,
                "num_selects": self.core.num_selects,
                "selector": self.config.selector, "restored_from": self.restored_from, "pid": os.getpid()}


def create_scheduler(config, num_prompts: int, rollouts_per_prompt: int = 1, namespace: str | None = None):
    """Create (or attach to an existing) named scheduler actor; returns the actor handle."""
    cfg = config if isinstance(config, DPSConfig) else build_dps_config(config)
    from dataclasses import asdict

    options = dict(name=cfg.actor_name, get_if_exists=True, max_restarts=cfg.max_restarts, num_cpus=0)
    if namespace is not None:
        options["namespace"] = namespace
    return ray.remote(DPSScheduler).options(**options).remote(asdict(cfg), num_prompts, rollouts_per_prompt)


def get_scheduler(name: str = SCHEDULER_ACTOR_NAME, namespace: str | None = None):
    """Handle of the running scheduler actor (e.g. from a worker process)."""
    return ray.get_actor(name, namespace=namespace)


class DPSSchedulerClient:
    """Blocking driver-side wrapper: ``ray.get`` plus one retry after an actor restart."""

    def __init__(self, handle, retry_wait_s: float = 60.0):
        self.handle = handle
        self.retry_wait_s = retry_wait_s
        self._sync_counters()

    def _sync_counters(self) -> None:
        info = self._call("info")
        self._next_update, self._next_select = int(info["num_updates"]), int(info["num_selects"])

    @classmethod
    def create(cls, config, num_prompts: int, rollouts_per_prompt: int = 1, namespace: str | None = None):
        return cls(create_scheduler(config, num_prompts, rollouts_per_prompt, namespace))

    def _call(self, method: str, *args, **kwargs):
        try:
            return ray.get(getattr(self.handle, method).remote(*args, **kwargs))
        except ray.exceptions.RayActorError as exc:
            logger.warning("DPS scheduler call %s failed (%s); retrying once after its restart", method, exc)
            deadline = time.monotonic() + self.retry_wait_s
            while True:
                try:
                    return ray.get(getattr(self.handle, method).remote(*args, **kwargs))
                except ray.exceptions.RayActorError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def select(self, batch_size: int, exclude=None) -> np.ndarray:
        ids = np.asarray(self._call("select", batch_size, exclude, self._next_select), dtype=np.int64)
        self._next_select += 1
        return ids

    def update(self, prompt_ids, success_rates, num_rollouts=None) -> dict:
        metrics = self._call("update", np.asarray(prompt_ids), np.asarray(success_rates, dtype=np.float64),
                             num_rollouts, self._next_update)
        self._next_update += 1
        return metrics

    def metrics(self) -> dict:
        return self._call("metrics")

    def state_dict(self) -> dict:
        return self._call("state_dict")

    def load_state_dict(self, state: dict) -> None:
        self._call("load_state_dict", state)
        self._sync_counters()

    def save(self, path: str) -> None:
        self._call("save", path)

    def load(self, path: str) -> None:
        self._call("load", path)
        self._sync_counters()

    def info(self) -> dict:
        return self._call("info")
