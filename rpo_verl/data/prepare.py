"""Write verl-format parquet files: the synthetic arithmetic task and converted upstream datasets.

Default outputs live under ``$RPO_VERL_CACHE/data`` (default ``~/.cache/rpo_verl/data``):
``arith/{train,val}.parquet`` and ``<dataset>/<split>.parquet``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rpo_verl.data import arith
from rpo_verl.data.converters import DATASETS, RowError
from rpo_verl.data.sources import Location, read_records
from rpo_verl.data.validate import BadRowsError, validate_rows
from rpo_verl.models.paths import cache_root

ABILITY = "math"


def default_data_dir(name: str) -> Path:
    return cache_root() / "data" / name


def write_parquet(rows: list[dict], path: Path) -> Path:
    """Write rows atomically (temporary file, then rename) so readers never see half a file."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@dataclass
class Conversion:
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # skipped rows (only with skip_bad)
    duplicates: int = 0  # identical (prompt, answer) rows dropped, e.g. DAPO-Math-17k's repeated copies

    def summary(self) -> str:
        return f"{len(self.rows)} rows, {len(self.problems)} malformed skipped, {self.duplicates} duplicates dropped"


def convert_dataset(
    name: str, source: str | Path, split: str | None = None, skip_bad: bool = False, keep_duplicates: bool = False
) -> Conversion:
    """Convert a local copy of dataset ``name`` (a key of ``DATASETS``) into validated verl rows.

    ``extra_info.index`` is the record's ordinal in the input, so skipping a bad row never renumbers
    the others. Malformed records raise ``BadRowsError`` (file and row of each) unless ``skip_bad``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    label = split or spec.default_split
    located, problems, result, seen = [], [], Conversion(), set()
    for ordinal, (where, record) in enumerate(read_records(source, split)):
        try:
            if not isinstance(record, dict):
                raise RowError(f"record is a {type(record).__name__}, not a mapping")
            converted = spec.convert(record)
        except RowError as exc:
            problems.append(f"{where}: {exc}")
            continue
        key = (json.dumps(converted["prompt"], sort_keys=True), converted["ground_truth"])
        if not keep_duplicates and key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        row = {
            "data_source": spec.data_source,
            "prompt": converted["prompt"],
            "ability": ABILITY,
            "reward_model": {"style": "rule", "ground_truth": converted["ground_truth"]},
            "extra_info": {"split": label, "index": ordinal, **converted["extra"]},
        }
        located.append((where, row))
    report = validate_rows(located, skip_bad=True)
    problems += report.problems
    if problems and not skip_bad:
        raise BadRowsError(problems, hint="\nFix them, or pass --skip-bad to leave them out (counted).")
    result.rows, result.problems = report.good, problems
    if not result.rows:
        raise ValueError(f"{source}: no usable rows for {name} (split {label!r})")
    return result


def check_files(paths: list[Path], skip_bad: bool = False):
    """Validate existing verl parquet files (indices must be unique within each file)."""
    reports = {}
    for path in paths:
        rows = read_parquet_rows(path)
        reports[str(path)] = validate_rows(((Location(str(path), i), r) for i, r in enumerate(rows)), skip_bad)
    return reports


def prepare_arith(
    out_dir: Path | None = None, n_train: int = 2048, n_val: int = 256, seed: int = 0,
    cfg: arith.ArithConfig | None = None,
) -> dict[str, Path]:
    """Write ``train.parquet`` and ``val.parquet`` of the synthetic task; returns their paths."""
    out_dir = Path(out_dir) if out_dir else default_data_dir("arith")
    train, val = arith.make_splits(n_train, n_val, seed, cfg)
    for split, rows in (("train", train), ("val", val)):
        validate_rows((Location(split, i), r) for i, r in enumerate(rows))
    splits = {"train": train, "val": val}
    return {split: write_parquet(rows, out_dir / f"{split}.parquet") for split, rows in splits.items()}
