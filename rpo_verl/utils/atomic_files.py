"""Crash-safe file writes for snapshots and cache files: a temporary file in the same directory,
flushed and fsynced, then ``os.replace`` onto the target. A crash (or SIGKILL) at any point leaves
either the previous file or the new one, never a truncated file under the target name."""

from __future__ import annotations

import json
import os
import tempfile
from typing import BinaryIO, Callable

import numpy as np


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on a temporary binary file and move it onto ``path`` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` of ``arrays`` onto ``path`` atomically (a file object: numpy adds no ``.npz``)."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def atomic_write_json(path: str, value, **dump_kwargs) -> None:
    """``json.dump`` of ``value`` onto ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(json.dumps(value, **dump_kwargs).encode()))
