"""Fail fast: the first error in any Ray worker ends the run within seconds, with a short message.

verl keeps going after many worker errors: an agent loop that raised (the reward function, the
rollout server, a dead actor) only marks its prompt group "failure", and the trainer trains on
what is left or later stops on a consequence ("no materializable trajectories", "empty list as
keys") that hides the cause. Here:

* ``report`` (called where an error is caught and swallowed, e.g. by rpo_verl's agent-loop worker,
  ``rpo_verl/trainer/agent_loop.py``) files a ``FailureReport`` with the ``FailureBoard``, a
  small named actor the driver starts;
* ``WatchedRunner`` wraps the task-runner actor class handed to verl's ``run_ppo``: it starts the
  board and a watchdog thread that kills the task runner (and with it every actor it owns) as soon
  as a failure is filed, so verl's ``ray.get`` on the runner returns at once;
* ``exit_on_run_failure`` (driver, on any exception once Ray is up) picks the first filed failure
  (the cause) over the driver's own exception (often a consequence), writes the full text to
  ``failure.log`` next to the run's metrics file, shuts Ray down (no more worker output after it),
  prints the short message last and exits with ``failures.EXIT_CODE``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from rpo_verl.trainer.failures import EXIT_CODE, FailureReport, describe, ray_log_paths

logger = logging.getLogger(__name__)

BOARD_NAME = "rpo_verl_failure_board"
POLL_S = 1.0
MAX_RECORDS = 20


class FailureBoard:
    """Failures filed by the run's workers, first first (a Ray actor; ``start_board``)."""

    def __init__(self):
        self.records: list[dict] = []
        self.dropped = 0

    def report(self, record: dict) -> None:
        if len(self.records) < MAX_RECORDS:
            self.records.append(record)
        else:
            self.dropped += 1

    def all(self) -> list[dict]:
        return list(self.records)

    def count(self) -> int:
        return len(self.records) + self.dropped


# This process's handle. The driver's keeps the board alive (Ray ends an actor, named or not,
# when its owner holds no handle to it any more) until Ray shuts down.
_board_handle = None


def start_board():
    global _board_handle
    import ray

    _board_handle = ray.remote(FailureBoard).options(name=BOARD_NAME, get_if_exists=True, num_cpus=0,
                                                     max_restarts=0).remote()
    return _board_handle


def report(failure: FailureReport) -> None:
    """File ``failure`` with this run's board (fire and forget); outside such a run, only log it."""
    global _board_handle
    import ray

    try:
        if _board_handle is None:
            _board_handle = ray.get_actor(BOARD_NAME)
        _board_handle.report.remote(failure.as_dict())
    except (ValueError, ray.exceptions.RayError) as exc:  # no board: not started by rpo_verl's driver
        logger.warning("rpo_verl: could not file the failure with %s (%s): %s", BOARD_NAME, exc, failure.cause)


def filed_failures() -> list[FailureReport]:
    import ray

    try:
        board = _board_handle or ray.get_actor(BOARD_NAME)
        return [FailureReport(**record) for record in ray.get(board.all.remote(), timeout=10)]
    except (ValueError, ray.exceptions.RayError):
        return []


def _watch(board, runner, stop: threading.Event) -> None:
    import ray

    while not stop.wait(POLL_S):
        if not ray.is_initialized():  # the run ended (ray.shutdown): a call now would start a new Ray
            return
        try:
            filed = ray.get(board.count.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - Ray shut down or the board is gone: nothing left to watch
            return
        if filed:
            ray.kill(runner, no_restart=True)  # verl's ray.get(runner.run.remote()) raises at once
            return


class WatchedRunner:
    """Stands in for a task-runner actor class in verl's ``run_ppo`` (``.options(...)``,
    ``.remote()``); ``.remote()`` also starts the failure board and the watchdog."""

    def __init__(self, actor_class, options: dict | None = None):
        self.actor_class = actor_class
        self._options = dict(options or {})
        self.stop = threading.Event()

    def options(self, **options) -> WatchedRunner:
        return WatchedRunner(self.actor_class, {**self._options, **options})

    def remote(self, *args, **kwargs):
        board = start_board()
        cls = self.actor_class.options(**self._options) if self._options else self.actor_class
        runner = cls.remote(*args, **kwargs)
        threading.Thread(target=_watch, args=(board, runner, self.stop), name="rpo_verl-failure-watch",
                         daemon=True).start()
        return runner


def choose_failure(exc: BaseException, filed: list[FailureReport]) -> FailureReport:
    """The first filed failure (the cause) if any, else ``exc`` described."""
    own = describe(exc)
    if not filed:
        return own
    first = filed[0]
    first.details = (first.details + "\n--- what the trainer saw then ---\n" + own.details).strip()
    return first


def write_failure_log(path: str, failure: FailureReport, others: list[FailureReport]) -> str | None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"component: {failure.component}\ncause: {failure.cause}\ninput: {failure.item}\n"
                     f"pid: {failure.pid}\n\n{failure.details}\n")
            for other in others:
                fh.write(f"\n--- also filed: {other.component}: {other.cause} ({other.item})\n{other.details}\n")
        return path
    except OSError:
        return None


def exit_on_run_failure(exc: BaseException, failure_log: str) -> None:
    """Print the short report of a failed run (after Ray's own output) and exit non-zero."""
    import ray

    filed = filed_failures() if ray.is_initialized() else []
    failure = choose_failure(exc, filed)
    paths = [p for p in [write_failure_log(failure_log, failure, filed[1:])] if p]
    paths += ray_log_paths(failure.pid) if ray.is_initialized() else []
    if ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    print("\n" + failure.message(paths), file=sys.stderr, flush=True)
    sys.exit(EXIT_CODE)


def failure_log_path(config: Any) -> str:
    from rpo_verl.trainer.runtime import metrics_file_path

    return os.path.join(os.path.dirname(metrics_file_path(config)), "failure.log")
