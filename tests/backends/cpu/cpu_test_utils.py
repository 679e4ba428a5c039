"""Helpers for the CPU backend tests: run scripts in fresh processes with a chosen environment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment without VERL_* selectors, plus ``overrides`` (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_json(args: list[str], env: dict[str, str], timeout: int = 300) -> dict:
    """Run ``python args...``; return the JSON object on its last stdout line."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-6000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def world_of_one(**overrides: str) -> dict[str, str]:
    """Env for one torch.distributed rank (verl's initialiser reads these)."""
    return fresh_env(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), **overrides
    )
