#!/usr/bin/env python3
"""Turn logged training metrics into PNG figures, for one run or several overlaid.

    python scripts/plot_metrics.py --run grpo=runs/grpo/metrics.jsonl --run rpo=runs/rpo/ --out plots/
    python scripts/plot_metrics.py tensorboard_log/rpo_verl/exp1 --out plots/

A run is a verl 'file' logger JSONL ($VERL_FILE_LOGGER_PATH, default
<project_name>/<experiment_name>.jsonl), a tensorboard event file, or a directory holding either
(searched recursively; several JSONL files, e.g. one per Slurm restart, are merged oldest first).
Writes reward.png, tokens.png, timing.png and rpo/dps/r2vpo/eff diagnostics when logged.
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from rpo_verl.viz import MetricsError, plot_runs  # noqa: E402


def unnamed_run(spec: str) -> tuple[str, Path]:
    p = Path(spec)
    return (p.stem if p.is_file() else p.name) or spec, p


def named_run(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got '{spec}'")
    return name, Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=unnamed_run, help="run PATH (named after the file/folder)")
    ap.add_argument("--run", action="append", default=[], type=named_run, metavar="NAME=PATH",
                    help="a named run; repeat to overlay runs")
    ap.add_argument("--out", default="plots", help="output folder (default: plots)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="responses per step, to count tokens when no token metric was logged")
    ap.add_argument("--smooth", type=int, default=1, help="rolling-mean window in steps (default 1: off)")
    ap.add_argument("--dpi", type=int, default=110)
    args = ap.parse_args(argv)

    runs = {}
    for name, path in [*args.paths, *args.run]:
        if name in runs:
            ap.error(f"run name '{name}' given twice; name runs with --run NAME=PATH")
        runs[name] = path
    if not runs:
        ap.error("give at least one run: PATH or --run NAME=PATH")
    try:
        report = plot_runs(runs, args.out, batch_size=args.batch_size, smooth=args.smooth, dpi=args.dpi)
    except (MetricsError, ValueError) as exc:
        print(f"plot_metrics: {exc}", file=sys.stderr)
        return 1
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.files:
        print("plot_metrics: nothing to plot in the given runs", file=sys.stderr)
        return 1
    print(f"wrote {len(report.files)} figure(s) to {Path(args.out).resolve()}:")
    for f in report.files:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
