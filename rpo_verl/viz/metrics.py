"""Reading a run's logged metrics into one step-indexed table, and the series the plots derive.

Sources (what verl 0.9.1's ``trainer.logger`` backends write, see ``verl/utils/tracking.py``):

- ``file``: JSON lines ``{"step": <int>, "data": {"<metric>": <number>, ...}}`` at
  ``$VERL_FILE_LOGGER_PATH``, else ``$VERL_FILE_LOGGER_ROOT/<project_name>/<experiment_name>.jsonl``
  (root defaults to the working directory). rpo_verl's launcher points it at
  ``rpo_verl.metrics_file`` (default ``<trainer.default_local_dir>/metrics.jsonl``) and keeps the
  file of each earlier segment of a resumed run as ``metrics.<k>.jsonl``
  (``rpo_verl/trainer/metrics_file.py``); those segments are read here, oldest first, and
  ``superseded-*`` folders (runs restarted from scratch) are left out.
- ``tensorboard``: event files under ``$TENSORBOARD_DIR``, else
  ``tensorboard_log/<project_name>/<experiment_name>``; each metric is a scalar tag.

One step may be logged in several records (validation before training, the step's metrics): they
are merged, later values winning.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

TB_PATTERN = "events.out.tfevents.*"

# verl's validation accuracy: val-core/<data_source>/<acc|reward>/mean@<n>
VAL_CORE = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/mean@(?P<n>\d+)$")
TRAIN_REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")
DIAGNOSTIC_NAMESPACES = ("rpo", "dps", "r2vpo", "eff")


class MetricsError(ValueError):
    """A path that holds no readable metrics."""


def _scalar(value) -> float | None:
    """A float for numbers and booleans (None/NaN logged by orjson as null -> NaN); None otherwise."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list) and len(value) == 1:  # numpy 0-d/1-element arrays serialised as lists
        return _scalar(value[0])
    return None


def read_jsonl(path: str | Path) -> dict[int, dict[str, float]]:
    """Step -> {metric: value} from one verl file-logger JSONL. Non-numeric values are skipped;
    an unparsable line (e.g. the last one of a run killed mid-write) is skipped with a warning."""
    rows: dict[int, dict[str, float]] = {}
    bad = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                step = int(record["step"])
                data = record["data"]
                if not isinstance(data, dict):
                    raise TypeError("'data' is not an object")
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            row = rows.setdefault(step, {})
            for key, value in data.items():
                v = _scalar(value)
                if v is not None:
                    row[key] = v
    if bad:
        warnings.warn(f"{path}: skipped {bad} line(s) that are not verl file-logger records", stacklevel=2)
    return rows


def read_tensorboard(path: str | Path) -> dict[int, dict[str, float]]:
    """Step -> {tag: value} from tensorboard event file(s): a file, or a directory holding them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    rows: dict[int, dict[str, float]] = {}
    for tag in acc.Tags().get("scalars", []):
        for event in acc.Scalars(tag):
            rows.setdefault(int(event.step), {})[tag] = float(event.value)
    return rows


def _segments(jsonl: Path) -> list[Path]:
    from rpo_verl.trainer.metrics_file import run_files

    return [Path(f) for f in run_files(str(jsonl))]


def find_metric_sources(path: str | Path) -> list[Path]:
    """The JSONL files and tensorboard event files that make up a run, oldest first. ``path`` is a
    .jsonl file (its earlier ``<stem>.<k>.jsonl`` segments join it), an event file, or a directory:
    its ``metrics.jsonl`` run if it has one, else every JSONL/event file below it by age."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MetricsError(f"{p}: no such file or directory")
    if p.is_file():
        return _segments(p) if p.suffix == ".jsonl" else [p]
    if _segments(p / "metrics.jsonl"):
        return _segments(p / "metrics.jsonl")

    def keep(f: Path) -> bool:
        return f.is_file() and not any(part.startswith("superseded-") for part in f.relative_to(p).parts)

    found = [f for f in p.rglob("*.jsonl") if keep(f)]
    found += [f for f in p.rglob(TB_PATTERN) if keep(f)]
    if not found:
        raise MetricsError(f"{p}: no *.jsonl (verl 'file' logger) or {TB_PATTERN} (tensorboard) files in it")
    return sorted(found, key=lambda f: (f.stat().st_mtime, str(f)))


def load_run(path: str | Path) -> pd.DataFrame:
    """Every metric of a run as a float DataFrame indexed by step (sorted), one column per metric.

    Several files (a directory, e.g. one JSONL per Slurm restart) are merged oldest first, so the
    metrics of a step that was redone after a resume are the later ones.
    """
    merged: dict[int, dict[str, float]] = {}
    for src in find_metric_sources(path):
        if src.name.startswith("events.out.tfevents"):
            rows = read_tensorboard(src)
        elif src.suffix == ".jsonl" or src.suffix == ".json":
            rows = read_jsonl(src)
        else:
            raise MetricsError(f"{src}: not a .jsonl (verl 'file' logger) or tensorboard event file")
        for step, row in rows.items():
            merged.setdefault(step, {}).update(row)
    if not merged:
        raise MetricsError(f"{path}: no metrics found (is trainer.logger set to include 'file' or 'tensorboard'?)")
    df = pd.DataFrame.from_dict(merged, orient="index").sort_index()
    df.index.name = "step"
    return df.astype(float)


# ----------------------------------------------------------------------------- derived series


def train_reward(df: pd.DataFrame) -> pd.Series | None:
    for key in TRAIN_REWARD_KEYS:
        if key in df and df[key].notna().any():
            return df[key].dropna()
    return None


def validation_accuracy(df: pd.DataFrame) -> dict[str, pd.Series]:
    """{"<data_source> <acc|reward> mean@n": series} from verl's val-core metrics (acc preferred)."""
    out: dict[str, pd.Series] = {}
    matches = [(VAL_CORE.match(c), c) for c in df.columns]
    sources_with_acc = {m["source"] for m, _ in matches if m and m["var"] == "acc"}
    for m, col in matches:
        if not m or (m["var"] == "reward" and m["source"] in sources_with_acc):
            continue
        series = df[col].dropna()
        if len(series):
            out[f"{m['source']} {m['var']} mean@{m['n']}"] = series
    return out


def _token_metric_columns(columns: Iterable[str]) -> dict[str, list[str]]:
    """Generated-token metrics the RPO/efficiency code logs (eff/... preferred over rpo/...),
    sorted into per-step counts, cumulative counts and full-path-equivalent counts."""
    kinds: dict[str, list[str]] = {"step": [], "cum": [], "full_step": [], "full_cum": []}
    for col in columns:
        ns, _, name = col.partition("/")
        words = set(re.split(r"[/_.\-]+", name.lower()))
        if ns not in ("eff", "rpo") or not words & {"token", "tokens"}:
            continue
        if words & {"ratio", "frac", "fraction", "saving", "savings", "rate", "mean", "avg", "max", "min", "per"}:
            continue
        cum = bool(words & {"cum", "cumulative", "cumsum"})
        if words & {"full", "equiv", "equivalent", "fullpath"}:
            kinds["full_cum" if cum else "full_step"].append(col)
        elif words & {"gen", "generated", "generation", "rollout"}:
            kinds["cum" if cum else "step"].append(col)
    for cols in kinds.values():
        cols.sort(key=lambda c: (not c.startswith("eff/"), c))
    return kinds


def _cumulative(df: pd.DataFrame, cum_cols: list[str], step_cols: list[str]) -> tuple[pd.Series, str] | None:
    if cum_cols:
        return df[cum_cols[0]].dropna(), cum_cols[0]
    if step_cols:
        return df[step_cols[0]].dropna().cumsum(), f"cumsum of {step_cols[0]}"
    return None


def cumulative_generated_tokens(df: pd.DataFrame, batch_size: int | None = None) -> tuple[pd.Series, str] | None:
    """(cumulative generated rollout tokens per step, how it was obtained), or None.

    Preference: the plugin's own token counters (eff/…, rpo/…; they count every generated token,
    filtered groups included); else verl's perf/total_num_tokens × response share
    (perf/total_num_tokens sums prompt+response tokens of the trained batch, so
    × mean_response / (mean_prompt + mean_response) is its response part); else
    response_length/mean × batch_size. verl's own metrics see only the trained batch: with DAPO's
    group filter they undercount what was generated.
    """
    kinds = _token_metric_columns(df.columns)
    found = _cumulative(df, kinds["cum"], kinds["step"])
    if found is not None:
        return found
    need = ("perf/total_num_tokens", "response_length/mean", "prompt_length/mean")
    if all(k in df for k in need):
        resp, prompt = df["response_length/mean"], df["prompt_length/mean"]
        per_step = (df["perf/total_num_tokens"] * resp / (resp + prompt)).dropna()
        if len(per_step):
            return per_step.cumsum(), "perf/total_num_tokens × response share (trained batch)"
    if batch_size and "response_length/mean" in df:
        per_step = (df["response_length/mean"] * batch_size).dropna()
        if len(per_step):
            return per_step.cumsum(), f"response_length/mean × {batch_size} (trained batch)"
    return None


def cumulative_full_path_tokens(df: pd.DataFrame) -> tuple[pd.Series, str] | None:
    """Cumulative full-path-equivalent tokens (prefix + suffix) when the plugin logs them."""
    kinds = _token_metric_columns(df.columns)
    return _cumulative(df, kinds["full_cum"], kinds["full_step"])


# verl v1 trainer phases inside timing_s/step (verl/trainer/ppo/v1/trainer_base.py), in order.
STEP_PHASES = (
    "gen",
    "reward",
    "old_log_prob",
    "ref",
    "values",
    "adv",
    "update_critic",
    "update_actor",
    "update_weights",
    "save_checkpoint",
)


def step_time_breakdown(df: pd.DataFrame) -> pd.DataFrame | None:
    """Seconds per step by phase: verl's phases found in timing_s/*, "other" = timing_s/step minus
    their sum (clipped at 0), and "testing" (validation runs outside the step timer)."""
    cols = {p: f"timing_s/{p}" for p in STEP_PHASES if f"timing_s/{p}" in df}
    if not cols and "timing_s/step" not in df:
        return None
    out = pd.DataFrame({p: df[c] for p, c in cols.items()}, index=df.index)
    if "timing_s/step" in df:
        out["other"] = (df["timing_s/step"] - out.sum(axis=1, min_count=0)).clip(lower=0)
    if "timing_s/testing" in df:
        out["testing"] = df["timing_s/testing"]
    present = df.filter(like="timing_s/").notna().any(axis=1)
    out = out[present].fillna(0.0)
    return out if len(out) else None


def timing_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("timing_s/") and c != "timing_s/step"]


def diagnostics(df: pd.DataFrame, namespace: str) -> list[str]:
    """Columns under ``<namespace>/`` that hold at least one value."""
    prefix = namespace + "/"
    return sorted(c for c in df.columns if c.startswith(prefix) and df[c].notna().any())
