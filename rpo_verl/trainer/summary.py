"""A person-readable summary of a run from its metrics file (verl's file logger, JSON lines).

    python -m rpo_verl.trainer.summary <run folder | metrics.jsonl> [--json out.json]

Reads the run's metrics file and its earlier segments (a resumed run continues in a new file, see
``metrics_file``) and reports validation accuracy before/after training, reward during training,
tokens the policy generated, and time per phase (start-up, validation, training steps and their
parts: generation, log-probs, actor update, weight sync).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field

from rpo_verl.trainer.console import headline_val_key
from rpo_verl.trainer.metrics_file import read_records, run_files

# The trainer logs "features/<name>": 1 for each rpo_verl feature active in the run (first step).
FEATURE_METRIC_PREFIX = "features/"

# verl's timers (timing_s/<name>) that make up a step, in loop order, with readable names.
STEP_PHASES = {
    "gen": "generation (rollout + reward)",
    "old_log_prob": "old log-probs",
    "ref": "reference log-probs",
    "adv": "advantages",
    "update_actor": "actor update",
    "update_weights": "weight sync to rollout",
    "save_checkpoint": "checkpoint save",
}


@dataclass
class RunSummary:
    metrics_files: list[str]
    val_metric: str | None = None
    val_before: float | None = None
    val_before_step: int | None = None
    val_after: float | None = None
    val_after_step: int | None = None
    first_step: int | None = None
    last_step: int | None = None
    steps: int = 0
    reward_first: float | None = None  # mean training reward over the first steps (<= 3)
    reward_last: float | None = None  # ... and over the last steps (<= 3)
    gen_tokens: int = 0
    features_on: list[str] = field(default_factory=list)  # rpo_verl features active in the run
    # Full-path equivalent of the generated tokens (prefix + suffix), where a feature logged it
    # (``eff/full_path_equiv_tokens``: RPO), and the saving 1 - generated / full-path.
    full_path_equiv_tokens: int | None = None
    token_saving: float | None = None
    time_rollout_s: float = 0.0  # sum of timing_s/gen (generation + reward) over the training steps
    grad_norm_mean: float | None = None
    time_init_s: float = 0.0
    time_validation_s: list[float] = field(default_factory=list)
    time_train_s: float = 0.0
    step_time_mean_s: float | None = None
    phase_mean_s: dict[str, float] = field(default_factory=dict)


def _val_metric(records: list[tuple[int, dict]]) -> str | None:
    """The headline validation metric: verl's ``val-core/<data source>/acc|reward/mean@N``."""
    return headline_val_key({k for _, m in records for k in m})


def summarize(path: str) -> RunSummary:
    """Summary of the run whose metrics file is ``path`` (or ``<path>/metrics.jsonl``)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    files = run_files(path)
    if not files:
        raise FileNotFoundError(f"no metrics file at {path} (the run's trainer.logger must include 'file')")
    records = read_records(files)
    summary = RunSummary(metrics_files=files)

    metric = _val_metric(records)
    summary.val_metric = metric
    validations = [(step, m[metric]) for step, m in records if metric and metric in m]
    if validations:
        (summary.val_before_step, summary.val_before), (summary.val_after_step, summary.val_after) = (
            validations[0], validations[-1])
    summary.time_validation_s = [m["timing_s/validate"] for _, m in records if "timing_s/validate" in m]

    # Training steps; a step logged twice (re-run after a crash before its checkpoint) counts once.
    steps: dict[int, dict] = {}
    for step, m in records:
        if "training/global_step" in m:
            steps[step] = m
    if steps:
        ordered = [steps[s] for s in sorted(steps)]
        summary.first_step, summary.last_step, summary.steps = min(steps), max(steps), len(steps)
        rewards = [m["critic/score/mean"] for m in ordered if "critic/score/mean" in m]
        if rewards:
            summary.reward_first = statistics.fmean(rewards[:3])
            summary.reward_last = statistics.fmean(rewards[-3:])
        # A feature that generates part of each path counts what it generated (groups dropped by
        # DAPO included) as eff/generated_tokens; eff/gen_tokens is the trained batch's response mask.
        gen_key = "eff/generated_tokens" if any("eff/generated_tokens" in m for m in ordered) else "eff/gen_tokens"
        summary.gen_tokens = int(sum(m.get(gen_key, 0) for m in ordered))
        if any("eff/full_path_equiv_tokens" in m for m in ordered):
            summary.full_path_equiv_tokens = int(sum(m.get("eff/full_path_equiv_tokens", 0) for m in ordered))
            if summary.full_path_equiv_tokens:
                summary.token_saving = 1.0 - summary.gen_tokens / summary.full_path_equiv_tokens
        summary.time_rollout_s = float(sum(m.get("timing_s/gen", 0.0) for m in ordered))
        grad_norms = [m["actor/grad_norm"] for m in ordered if "actor/grad_norm" in m]
        summary.grad_norm_mean = statistics.fmean(grad_norms) if grad_norms else None
        step_times = [m["timing_s/step"] for m in ordered if "timing_s/step" in m]
        summary.time_train_s = float(sum(step_times))
        summary.step_time_mean_s = statistics.fmean(step_times) if step_times else None
        for phase in STEP_PHASES:
            values = [m[f"timing_s/{phase}"] for m in ordered if f"timing_s/{phase}" in m]
            if values:
                summary.phase_mean_s[phase] = statistics.fmean(values)
    summary.time_init_s = float(sum(m["timing_s/init"] for _, m in records if "timing_s/init" in m))
    summary.features_on = sorted({k[len(FEATURE_METRIC_PREFIX):] for _, m in records for k in m
                                  if k.startswith(FEATURE_METRIC_PREFIX) and m[k]})
    return summary


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def render(summary: RunSummary) -> str:
    lines = ["", "=" * 72, "rpo_verl run summary", "=" * 72]
    lines.append(f"Methods on: {', '.join(summary.features_on) or 'none (verl only)'}")
    if summary.val_metric:
        change = (None if summary.val_before is None or summary.val_after is None
                  else summary.val_after - summary.val_before)
        lines.append(f"Validation accuracy ({summary.val_metric}):")
        lines.append(f"  before training (step {summary.val_before_step}): {_fmt(summary.val_before)}")
        lines.append(f"  after training  (step {summary.val_after_step}): {_fmt(summary.val_after)}"
                     f"   change: {'n/a' if change is None else format(change, '+.3f')}")
    else:
        lines.append("Validation: none logged")
    if summary.steps:
        lines.append(f"Training: {summary.steps} steps (steps {summary.first_step}-{summary.last_step}); "
                     f"mean reward {_fmt(summary.reward_first)} (first steps) -> {_fmt(summary.reward_last)} "
                     f"(last steps); mean grad norm {_fmt(summary.grad_norm_mean)}")
        lines.append(f"Tokens generated by the policy in training: {summary.gen_tokens:,}")
        if summary.full_path_equiv_tokens is not None:
            saving = "n/a" if summary.token_saving is None else f"{summary.token_saving:.0%} fewer"
            lines.append(f"  full-path equivalent (cached prefix + generated suffix): "
                         f"{summary.full_path_equiv_tokens:,}, so {saving} tokens generated")
        per_step = summary.time_rollout_s / summary.steps
        lines.append(f"Rollout (generation + reward) in training: {summary.time_rollout_s:.1f} s "
                     f"({per_step:.1f} s per step)")
    else:
        lines.append("Training: no step logged")
    lines.append("Time:")
    lines.append(f"  start-up (workers, rollout servers, checkpoint load): {summary.time_init_s:7.1f} s")
    if summary.time_validation_s:
        parts = ", ".join(f"{t:.1f}" for t in summary.time_validation_s)
        lines.append(f"  validation passes: {sum(summary.time_validation_s):7.1f} s  ({parts})")
    if summary.steps:
        lines.append(f"  training steps:    {summary.time_train_s:7.1f} s  "
                     f"({_fmt(summary.step_time_mean_s, '.1f')} s per step), of which per step on average:")
        for phase, seconds in summary.phase_mean_s.items():
            lines.append(f"    {STEP_PHASES[phase]:<32} {seconds:7.2f} s")
    lines.append(f"Metrics: {', '.join(summary.metrics_files)}")
    lines.append("=" * 72)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="run folder (trainer.default_local_dir) or its metrics.jsonl")
    parser.add_argument("--json", help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.path)
    except FileNotFoundError as exc:
        print(f"summary: {exc}", file=sys.stderr)
        return 1
    print(render(summary))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(asdict(summary), fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
