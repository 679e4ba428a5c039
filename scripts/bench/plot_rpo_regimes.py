#!/usr/bin/env python
"""Where RPO pays: token ratio and step-time ratio (RPO / full-path GRPO) against mean response length.

    python scripts/bench/plot_rpo_regimes.py [FILE ...] [--out scripts/bench/results/rpo_regimes.png]
    # default FILEs: scripts/bench/results/rpo_regimes_oneline.json and, when present,
    #                scripts/bench/results/rpo_long_chain*.json

Each FILE is one of
* a ``rpo_long_chain.py`` results file (``{"task", "commit", "runs": [...]}``): one point per seed
  with both arms;
* a ``rpo_vs_full.py`` report (``{"arms": {"grpo", "rpo_grpo"}, "settings"}``): one point;
* a list of measured points (``{"task", "source", "points": [{"mean_response_tokens",
  "tokens_ratio", "step_time_ratio", "grpo_rollout_share"}]}``), e.g. the one-line task's numbers
  transcribed from BENCHMARKS.md.

x is the GRPO arm's mean response length (tokens per sample). The physical limit: RPO removes
generation work only; the training phase (log-probs, update, weight sync) still runs over prefix +
suffix, so RPO's step time cannot fall below GRPO's non-rollout share ``1 - rollout_s / step_s``
(drawn per point). The token panel also draws the tail cut's ideal ``(max_cut + 1) / 2 / L``.
Writes the PNG and a JSON of the plotted points next to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _point(task: str, source: str, mean_len: float, tokens_ratio: float, step_ratio: float, rollout_share: float):
    return {"task": task, "source": source, "mean_response_tokens": float(mean_len), "tokens_ratio": float(tokens_ratio),
            "step_time_ratio": float(step_ratio), "step_time_floor": 1.0 - float(rollout_share)}


def points_from(path: Path) -> list[dict]:
    """The plotted points of one results file (see the module doc for the three formats)."""
    data = json.loads(Path(path).read_text())
    if "runs" in data:
        by = {(r["seed"], r["arm"]): r for r in data["runs"]}
        out = []
        for (seed, arm), g in sorted(by.items()):
            p = by.get((seed, "rpo"))
            if arm != "grpo" or p is None:
                continue
            out.append(_point(data.get("task", path.stem), f"{path.name} seed {seed}", g["mean_response_tokens"],
                              p["generated_tokens"] / g["generated_tokens"], p["step_s"] / g["step_s"],
                              g["rollout_s"] / g["step_s"]))
        return out
    if "arms" in data:
        g, p = data["arms"]["grpo"], data["arms"]["rpo_grpo"]
        settings = data["settings"]
        samples = len(g["steps"]) * settings["batch"] * settings["n"]
        return [_point("arith oneline", path.name, sum(g["generated_tokens"]) / samples,
                       sum(p["generated_tokens"]) / sum(g["generated_tokens"]), sum(p["step_s"]) / sum(g["step_s"]),
                       sum(g["rollout_s"]) / sum(g["step_s"]))]
    if "points" in data:
        return [_point(data.get("task", path.stem), q.get("source", data.get("source", path.name)),
                       q["mean_response_tokens"], q["tokens_ratio"], q["step_time_ratio"], q["grpo_rollout_share"])
                for q in data["points"]]
    raise ValueError(f"{path}: not a results file this script knows (no 'runs', 'arms' or 'points')")


def plot(points: list[dict], path: Path, max_cut: int = 24) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not points:
        raise ValueError("no points to plot")
    tasks = sorted({q["task"] for q in points})
    markers = dict(zip(tasks, "osD^v<>"))
    fig, (ax_tok, ax_step) = plt.subplots(1, 2, figsize=(12, 4.5))
    for task in tasks:
        mine = [q for q in points if q["task"] == task]
        xs = [q["mean_response_tokens"] for q in mine]
        ax_tok.scatter(xs, [q["tokens_ratio"] for q in mine], marker=markers[task], label=task)
        ax_step.scatter(xs, [q["step_time_ratio"] for q in mine], marker=markers[task], label=f"{task}: measured")
        ax_step.scatter(xs, [q["step_time_floor"] for q in mine], marker="_", s=300, color="black")
    lo = min(q["mean_response_tokens"] for q in points)
    hi = max(q["mean_response_tokens"] for q in points)
    span = (min(8.0, lo / 1.5), max(1000.0, hi * 1.5))  # always show the one-line to long-chain range
    grid = np.geomspace(*span, 100)
    ideal = np.minimum(1.0, (max_cut + 1) / 2 / grid)
    ax_tok.plot(grid, ideal, "--", color="gray", label=f"tail cut ideal, max_cut={max_cut}")
    ax_tok.axhline(0.10, color="red", lw=0.8, ls=":", label="goal <= 0.10")
    ax_step.axhline(0.5, color="red", lw=0.8, ls=":", label="goal <= 0.5")
    ax_step.scatter([], [], marker="_", s=300, color="black", label="floor: GRPO's non-rollout share")
    for ax, title in ((ax_tok, "generated tokens, RPO / GRPO"), (ax_step, "step time, RPO / GRPO")):
        ax.set_xscale("log")
        ax.set_xlim(*span)
        ax.set_xlabel("GRPO mean response length (tokens)")
        ax.set_ylim(0, 1.2)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_files() -> list[Path]:
    files = [RESULTS / "rpo_regimes_oneline.json", *sorted(RESULTS.glob("rpo_long_chain*.json"))]
    return [f for f in files if f.exists()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--out", type=Path, default=RESULTS / "rpo_regimes.png")
    p.add_argument("--max-cut", type=int, default=24, help="tail cut of the ideal-ratio curve")
    a = p.parse_args(argv)
    files = a.files or default_files()
    if not files:
        raise SystemExit("no results files given or found in scripts/bench/results/")
    points = [q for f in files for q in points_from(f)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot(points, a.out, a.max_cut)
    a.out.with_suffix(".json").write_text(json.dumps({"files": [str(f) for f in files], "points": points}, indent=1))
    for task in sorted({q["task"] for q in points}):
        mine = [q for q in points if q["task"] == task]
        print(f"[plot_rpo_regimes] {task}: {len(mine)} points, mean response "
              f"{statistics.fmean(q['mean_response_tokens'] for q in mine):.0f} tokens, tokens "
              f"x{statistics.fmean(q['tokens_ratio'] for q in mine):.3f}, step time "
              f"x{statistics.fmean(q['step_time_ratio'] for q in mine):.2f} "
              f"(floor {statistics.fmean(q['step_time_floor'] for q in mine):.2f})")
    print(f"[plot_rpo_regimes] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
