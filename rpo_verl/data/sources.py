"""Read a local copy of a Hugging Face dataset as (location, record) pairs.

Accepted inputs: a ``datasets.save_to_disk`` folder (Dataset or DatasetDict), a parquet / json /
jsonl file, a folder of such files (e.g. a hub snapshot such as ``gsm8k/main/train-00000-of-00001.parquet``),
or anything else ``datasets.load_dataset(<local path>)`` understands. Every record keeps its file and
0-based row number so that validation can point at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

FILE_SUFFIXES = (".parquet", ".jsonl", ".json")


@dataclass(frozen=True)
class Location:
    file: str
    row: int

    def __str__(self) -> str:
        return f"{self.file} row {self.row}"


def _read_file(path: Path) -> Iterator[tuple[Location, dict]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        records = pq.read_table(path).to_pylist()
    elif path.suffix == ".jsonl":
        records = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path} row {number}: not valid JSON ({exc.msg})") from exc
    else:  # .json: a list of records, or {"data"/split: [...]}
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"{path}: expected a JSON list of records (or one list inside an object)")
            data = lists[0]
        records = data
    for row, record in enumerate(records):
        yield Location(str(path), row), record


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _read_saved(folder: Path, split: str | None) -> Iterator[tuple[Location, dict]]:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            split = next(iter(loaded))
        if split not in loaded:
            raise ValueError(f"{folder}: choose a split with --split, one of {sorted(loaded)} (got {split!r})")
        loaded, label = loaded[split], f"{folder}[{split}]"
    else:
        label = str(folder)
    for row, record in enumerate(loaded):
        yield Location(label, row), record


def _split_files(folder: Path, split: str | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in FILE_SUFFIXES and p.is_file())
    files = [p for p in files if not p.name.startswith(".") and p.name != "dataset_info.json"]
    if files and split is not None:
        matching = [p for p in files if p.name.startswith(split) or p.parent.name == split]
        if not matching:
            names = ", ".join(str(p.relative_to(folder)) for p in files)
            raise ValueError(f"{folder}: no data file for split {split!r} (files: {names})")
        files = matching
    return files


def read_records(path: str | Path, split: str | None = None) -> Iterator[tuple[Location, dict]]:
    """Yield ``(Location, record)`` for every row of the local dataset copy at ``path``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass the folder or file of the local dataset copy")
    if path.is_file():
        if path.suffix not in FILE_SUFFIXES:
            raise ValueError(f"{path}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")
        yield from _read_file(path)
    elif _is_saved_dataset(path):
        yield from _read_saved(path, split)
    else:
        files = _split_files(path, split)
        if files:
            for file in files:
                yield from _read_file(file)
        else:  # a dataset script or another layout: let `datasets` try
            import datasets

            loaded = datasets.load_dataset(str(path), split=split or "train")
            for row, record in enumerate(loaded):
                yield Location(f"{path}[{split or 'train'}]", row), record
