"""What a run prints: ``rpo_verl.console=steps|full|quiet`` (docs/console.md).

* ``steps`` (default): a start line, one line per validation pass and per training step, an end
  line. A step line reads::

      [rpo_verl] step 3/10 | reward 0.250 | val acc 0.312 | tokens 412 (-58% vs 981 full-path) |
      s: gen 9.1 update 14.2 sync 2.0 step 27.4 | rpo cache hits 100% | ETA 03:12

  (one line), from the step's metrics: verl's ``critic/score/mean`` and ``timing_s/*``, the headline
  validation metric (``val-core/<source>/acc/mean@N``), the shared efficiency metrics
  (``eff/generated_tokens`` and ``eff/full_path_equiv_tokens`` when a feature that generates only
  part of each path logs them, else rpo_verl's ``eff/gen_tokens``) and the fields each enabled
  feature declares in ``FeatureSpec.console``. Progress bars are switched off in every process
  (``console_env``): the step line replaces verl's.
* ``full``: verl's own console (``trainer.logger``'s ``console`` backend: every metric per step).
* ``quiet``: the start and end lines only (errors still print).

The console is one more backend of verl's ``Tracking`` (``attach``), next to the trackers the user
selected in ``trainer.logger``; every metric still goes to all of them (``metrics.jsonl`` included).
In ``steps``/``quiet`` mode verl's ``console`` backend is left out of that ``Tracking``.

Generic: this module imports no feature; features contribute through ``FeatureSpec.console``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from tqdm import tqdm

MODES = ("steps", "full", "quiet")
BACKEND = "rpo_verl_console"  # its name among verl's Tracking backends
PREFIX = "[rpo_verl]"

# verl's step timers (timing_s/<name>) shown on a step line, in loop order, with short names.
PHASES = {
    "gen": "gen",
    "old_log_prob": "logp",
    "ref": "ref",
    "adv": "adv",
    "update_actor": "update",
    "update_weights": "sync",
    "save_checkpoint": "save",
    "testing": "val",
}
MIN_PHASE_S = 0.05  # phases shorter than this are left off the line


def ray_logs_dir() -> str:
    """Where Ray keeps the full stdout/stderr of every process of this run (its session's logs)."""
    try:
        import ray

        return ray._private.worker.global_worker.node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - outside a Ray worker (tests); Ray's default location
        return "/tmp/ray/session_latest/logs"


def console_env(mode: str) -> dict[str, str]:
    """Environment for every process of the run: without verl's full console no progress bars
    (verl's per-step bar, weight loading, dataset preparation), which the step line replaces;
    ``quiet`` also raises verl's log level to WARNING (no INFO lines of start-up phases)."""
    if mode == "full":
        return {}
    env = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if mode == "quiet":
        env["VERL_LOGGING_LEVEL"] = "WARNING"
    return env


def headline_val_key(keys: Iterable[str]) -> str | None:
    """verl's headline validation metric: ``val-core/<data source>/acc|reward/mean@N`` (accuracy first)."""
    found = sorted(k for k in keys if k.startswith("val-core/") and "/mean@" in k)
    acc = [k for k in found if "/acc/" in k]
    return (acc or found or [None])[0]


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def tokens_field(metrics: Mapping[str, Any]) -> str | None:
    """``tokens N`` and, when a feature reports the full-path equivalent, the saving against it."""
    generated = _num(metrics, "eff/generated_tokens")
    if generated is None:
        generated = _num(metrics, "eff/gen_tokens")
    if generated is None:
        return None
    full = _num(metrics, "eff/full_path_equiv_tokens")
    text = f"tokens {generated:,.0f}"
    if full and full > generated:
        text += f" ({generated / full - 1:+.0%} vs {full:,.0f} full-path)"
    return text


def phases_field(metrics: Mapping[str, Any]) -> str | None:
    parts = [f"{short} {metrics[f'timing_s/{name}']:.1f}" for name, short in PHASES.items()
             if (_num(metrics, f"timing_s/{name}") or 0.0) >= MIN_PHASE_S]
    step = _num(metrics, "timing_s/step")
    if step is not None:
        parts.append(f"step {step:.1f}")
    return "s: " + " ".join(parts) if parts else None


def feature_fields(metrics: Mapping[str, Any], fields: Iterable[tuple[str, str, str, str]]) -> list[str]:
    """``(feature, metric, label, format spec)`` -> ``"<feature> <label> <value>"`` for the metrics present."""
    out = []
    for feature, metric, label, spec in fields:
        value = _num(metrics, metric)
        if value is not None:
            out.append(f"{feature} {label} {format(value, spec)}")
    return out


def validation_field(metrics: Mapping[str, Any]) -> str | None:
    key = headline_val_key(metrics)
    if key is None:
        return None
    kind = "acc" if "/acc/" in key else "reward"
    return f"val {kind} {float(metrics[key]):.3f}"


def step_line(metrics: Mapping[str, Any], step: int, total: int, eta_s: float | None,
              fields: Iterable[tuple[str, str, str, str]] = ()) -> str:
    """The one console line of a training step (see the module docstring)."""
    parts = [f"{PREFIX} step {step}/{total}"]
    reward = _num(metrics, "critic/score/mean")
    if reward is not None:
        parts.append(f"reward {reward:.3f}")
    parts += [p for p in (validation_field(metrics), tokens_field(metrics), phases_field(metrics)) if p]
    parts += feature_fields(metrics, fields)
    if eta_s is not None:
        parts.append(f"ETA {tqdm.format_interval(eta_s)}")
    return " | ".join(parts)


def validation_line(metrics: Mapping[str, Any], step: int) -> str | None:
    """The line of a validation pass logged on its own (before training)."""
    field = validation_field(metrics)
    if field is None:
        return None
    when = "before training" if step == 0 else f"at step {step}"
    seconds = _num(metrics, "timing_s/validate")
    return f"{PREFIX} validation {when}: {field}" + (f" ({seconds:.1f} s)" if seconds is not None else "")


class StepConsole:
    """verl ``Tracking`` backend (``log(data, step)``) printing rpo_verl's console lines."""

    def __init__(self, mode: str, total_steps: int, fields: Iterable[tuple[str, str, str, str]] = (),
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        if mode not in MODES:
            raise ValueError(f"rpo_verl.console: {mode!r} is not one of {list(MODES)}")
        self.mode = mode
        self.total_steps = int(total_steps)
        self.fields = tuple(fields)
        self.stream = stream
        self.clock = clock
        self._last = clock()
        self._step_walls: list[float] = []
        self.last_step: int | None = None
        self.val_first: float | None = None
        self.val_last: float | None = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    def start(self, what: str) -> None:
        if self.mode != "full":
            self._print(f"{PREFIX} {what}")
        self._last = self.clock()

    def log(self, data: Mapping[str, Any], step: int) -> None:
        now = self.clock()
        key = headline_val_key(data)
        if key is not None:
            self.val_last = float(data[key])
            if self.val_first is None:
                self.val_first = self.val_last
        if "training/global_step" not in data:
            line = validation_line(data, step)
            if self.mode == "steps" and line:
                self._print(line)
            self._last = now
            return
        self._step_walls.append(now - self._last)
        self._last = now
        self.last_step = int(step)
        remaining = max(self.total_steps - int(step), 0)
        mean_wall = sum(self._step_walls) / len(self._step_walls)
        if self.mode == "steps":
            self._print(step_line(data, int(step), self.total_steps, mean_wall * remaining, self.fields))

    def finish(self, where: str) -> None:
        """The end line (``steps`` and ``quiet``): steps done, validation first -> last, where things are."""
        if self.mode == "full":
            return
        done = (f"training finished at step {self.last_step}/{self.total_steps}" if self.last_step
                else "no training step ran")
        val = ""
        if self.val_first is not None:
            val = f"; validation {self.val_first:.3f} -> {self.val_last:.3f}"
        self._print(f"{PREFIX} {done}{val}; {where}")


# verl's fit() pprints the whole validation-metrics dict before and after training (7 lines each
# on a CPU run). Outside ``full`` mode the validation line, the end line and the run summary say
# the same, and the dict is in metrics.jsonl; nothing else verl pprints is dropped.
VERL_METRIC_DUMPS = ("Initial validation metrics:", "Final validation metrics:")


def drop_verl_metric_dumps(module: Any) -> None:
    """Wrap ``module.pprint`` (verl's ``trainer_base`` imports ``pprint`` by name) so that the two
    validation-metric dumps of ``VERL_METRIC_DUMPS`` are not printed; idempotent."""
    original = module.pprint
    if getattr(original, "_rpo_verl_drops", None) == VERL_METRIC_DUMPS:
        return

    def pprint(obj: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, str) and obj.startswith(VERL_METRIC_DUMPS):
            return None
        return original(obj, *args, **kwargs)

    pprint._rpo_verl_drops = VERL_METRIC_DUMPS
    module.pprint = pprint


def attach(tracking: Any, console: StepConsole) -> Any:
    """Add ``console`` to verl's ``Tracking`` (``tracking.logger``: backend name -> object with
    ``log(data, step)``); outside ``full`` mode drop verl's own ``console`` backend. Returns ``tracking``."""
    backends = getattr(tracking, "logger", None)
    if not isinstance(backends, dict):
        return tracking
    if console.mode != "full":
        backends.pop("console", None)
    backends[BACKEND] = console
    return tracking
