"""Equivalence of math answers with ``math-verify``, with a timeout that works in any thread.

math-verify bounds parsing and comparison with ``signal.alarm``, which only works in the main
thread and cancels any alarm already set (pytest-timeout, for one). verl's reward managers call the
scoring function from executor threads, so off the main thread (or while an alarm is pending) the
check runs in a small pool of persistent worker subprocesses (``python -m
rpo_verl.reward.math_worker``), where math-verify's own signal timeouts work, and a worker that still
overruns its deadline is killed: a pathological answer costs at most ``deadline`` seconds and a 0.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

MAX_CHARS = 4096  # final answers sit at the end; the tail bounds regex and parser work on huge strings
TIMEOUT_S = 5  # math-verify's own per-parse / per-compare limit (integer seconds: signal.alarm)
STARTUP_S = 120.0  # a cold worker imports sympy; generous on a loaded 2-core machine


def verify_inline(solution: str, ground_truth: str, timeout_s: int = TIMEOUT_S) -> tuple[bool, str]:
    """math-verify in this thread (must be the main thread when ``timeout_s`` > 0). Returns (equal, pred)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    solution = solution[-MAX_CHARS:]
    gold_text = ground_truth if ("$" in ground_truth or "\\boxed" in ground_truth) else f"${ground_truth}$"
    targets = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = parse(gold_text, extraction_config=targets, parsing_timeout=timeout_s)
    pred = parse(solution, extraction_config=targets, parsing_timeout=timeout_s)
    if not pred:
        return False, ""
    shown = pred[-1] if isinstance(pred[-1], str) else str(pred[0])
    if not gold:
        logger.warning("math-verify could not parse the ground truth %r", ground_truth[:200])
        return False, shown
    return bool(verify(gold, pred, timeout_seconds=timeout_s)), shown


WORKER_CMD = (sys.executable, "-m", "rpo_verl.reward.math_worker")


class _Worker:
    def __init__(self, cmd: tuple[str, ...]):
        self.proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.ready = False

    def _read_line(self, deadline: float) -> str | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.proc.stdout], [], [], remaining)[0]:
            return None
        return self.proc.stdout.readline() or None

    def ask(self, solution: str, ground_truth: str, timeout_s: int, deadline_s: float) -> tuple[bool, str] | None:
        if not self.ready:
            if self._read_line(time.monotonic() + STARTUP_S) is None:
                return None
            self.ready = True
        request = {"solution": solution, "ground_truth": ground_truth, "timeout": timeout_s}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self._read_line(time.monotonic() + deadline_s)
        if line is None:
            return None
        reply = json.loads(line)
        return bool(reply["ok"]), str(reply["pred"])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class _Pool:
    def __init__(self, size: int, cmd: tuple[str, ...] = WORKER_CMD):
        self.size, self.cmd, self.idle, self.live = size, cmd, [], 0
        self.cond = threading.Condition()

    def _acquire(self) -> _Worker:
        with self.cond:
            while not self.idle and self.live >= self.size:
                self.cond.wait()
            if self.idle:
                return self.idle.pop()
            self.live += 1
        try:
            return _Worker(self.cmd)
        except Exception:
            with self.cond:
                self.live -= 1
                self.cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool):
        if not healthy:
            worker.kill()
        with self.cond:
            if healthy:
                self.idle.append(worker)
            else:
                self.live -= 1
            self.cond.notify()

    def verify(self, solution: str, ground_truth: str, timeout_s: int, deadline_s: float) -> tuple[bool, str]:
        worker = self._acquire()
        reply = None
        try:
            reply = worker.ask(solution, ground_truth, timeout_s, deadline_s)
        except (OSError, ValueError) as exc:  # broken pipe, garbled reply: replace the worker
            logger.warning("math-verify worker failed: %s", exc)
        finally:
            self._release(worker, healthy=reply is not None)
        if reply is None:
            logger.warning("math-verify gave no answer within %.0f s; scoring 0", deadline_s)
            return False, ""
        return reply

    def close(self):
        with self.cond:
            workers, self.idle = self.idle, []
        for worker in workers:
            worker.kill()


_POOL = _Pool(int(os.environ.get("RPO_VERL_MATH_WORKERS", "2")))
atexit.register(_POOL.close)


def _signals_usable() -> bool:
    return threading.current_thread() is threading.main_thread() and signal.getitimer(signal.ITIMER_REAL)[0] == 0


def verify_math(solution: str, ground_truth: str, timeout_s: int = TIMEOUT_S) -> tuple[bool, str]:
    """(equal, extracted prediction) for a model response and a reference answer; never hangs."""
    solution = solution[-MAX_CHARS:]
    if _signals_usable():
        return verify_inline(solution, ground_truth, timeout_s)
    # parse + parse + verify each get timeout_s inside the worker; the kill deadline covers all three
    return _POOL.verify(solution, ground_truth, timeout_s, deadline_s=3 * timeout_s + 2.0)
