"""The run's metrics file (verl's ``file`` logger: one JSON object per line, ``{"step", "data"}``).

verl's file logger truncates its file when it opens it, so a resumed run would erase the history
of the run it continues. Before each launch the previous file is therefore kept as
``metrics.<k>.jsonl`` (k = 1 oldest) when the run resumes from a checkpoint, or moved into
``superseded-<time>/`` when it starts from scratch; ``run_files`` lists one run's files in order.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable


def _rotated_pattern(path: str) -> re.Pattern:
    stem, ext = os.path.splitext(os.path.basename(path))
    return re.compile(rf"^{re.escape(stem)}\.(\d+){re.escape(ext)}$")


def run_files(path: str) -> list[str]:
    """``path``'s earlier segments (oldest first) followed by ``path`` itself, those that exist."""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = _rotated_pattern(path)
    rotated = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            match = pattern.match(name)
            if match:
                rotated.append((int(match.group(1)), os.path.join(folder, name)))
    files = [p for _, p in sorted(rotated)]
    if os.path.exists(path):
        files.append(os.path.abspath(path))
    return files


def prepare(path: str, resuming: bool) -> str:
    """Make room for a new run writing ``path``; returns ``path`` (absolute)."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    previous = run_files(path)
    if not previous:
        return path
    if resuming:
        if os.path.exists(path):
            stem, ext = os.path.splitext(path)
            os.replace(path, f"{stem}.{len(previous)}{ext}")
    else:
        backup = os.path.join(os.path.dirname(path), f"superseded-{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(backup, exist_ok=True)
        for old in previous:
            os.replace(old, os.path.join(backup, os.path.basename(old)))
    return path


def read_records(paths: Iterable[str]) -> list[tuple[int, dict]]:
    """All ``(step, metrics)`` records of the files, in file and line order."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed run
                records.append((int(entry.get("step", 0)), dict(entry.get("data", {}))))
    return records
