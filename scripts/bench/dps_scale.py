#!/usr/bin/env python
"""Time and memory of one DPS scheduler step (select + update) at N = 10^7 prompts.

  python scripts/bench/dps_scale.py --num-prompts 10000000 --batch 256 --out-dir outputs/bench/dps_scale

Runs ``SchedulerCore`` (what the Ray actor executes: HMM filter, top-B selection, metric
bookkeeping) for ``--warmup`` steps so the filter's active set reaches its steady size (~λ-settling
time × B prompts), then times ``--steps`` select + update calls. Success rates are random (a third
each unsolved / partial / solved), which keeps the active set at its largest. Memory: the
scheduler's resident state (tracemalloc, numpy allocations included) and the extra peak of one
step; plus process RSS. ``--dense`` also times the plain O(N) filter (``DenseHMMFilter``, float32)
with an argpartition top-B, i.e. the straightforward vectorisation, for comparison.
Writes ``dps_scale.json`` and ``dps_scale.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

from rpo_verl.dps.config import DPSConfig
from rpo_verl.dps.core import SchedulerCore
from rpo_verl.dps.hmm import DenseHMMFilter, observed_states

GIB = 1024**3
AUTHORS = {"time_s": 2.4, "memory_gib": 0.9}  # DPS paper's reference implementation at 10^7 prompts
TARGET = {"time_s": 0.25, "memory_gib": 0.5}


def rss() -> int:
    return psutil.Process().memory_info().rss


def random_rates(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    kind = rng.integers(0, 3, n)
    return np.where(kind == 0, 0.0, np.where(kind == 2, 1.0, rng.integers(1, k, n) / k))


def bench_scheduler(args) -> dict:
    gc.collect()
    rss0 = rss()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    core = SchedulerCore(DPSConfig(enable=True, selector=args.selector, pool_ratio=args.pool_ratio, seed=0),
                         args.num_prompts, rollouts_per_prompt=args.k)
    rng = np.random.default_rng(0)
    for _ in range(args.warmup):
        ids = core.select(args.batch)
        core.update(ids, random_rates(rng, ids.size, args.k))
    times, peaks = [], []
    for _ in range(args.steps):
        rates = random_rates(rng, args.batch, args.k)
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        ids = core.select(args.batch)
        core.update(ids, rates)
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
    state = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss1 = rss()
    m = core.metrics()
    res = {
        "impl": f"SchedulerCore({args.selector}, active-set HMM)",
        "step_time_s_median": float(np.median(times)),
        "step_time_s_max": float(np.max(times)),
        "state_bytes": int(state),
        "step_peak_extra_bytes": int(max(peaks)),
        "total_peak_gib": (state + max(peaks)) / GIB,
        "rss_delta_gib": (rss1 - rss0) / GIB,
    }
    if args.selector == "dps":
        res["active_prompts"] = int(m["dps/active_prompts"])
    del core
    gc.collect()
    return res


def bench_dense(args) -> dict:
    """Plain all-prompts filter in float32 + argpartition top-B (one step, after a short warm-up)."""
    gc.collect()
    rss0 = rss()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    f = DenseHMMFilter(args.num_prompts, dtype=np.float32)
    rng = np.random.default_rng(0)
    times, peaks = [], []
    for i in range(3):
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        scores = f.scores()
        ids = np.argpartition(-(scores + 1e-6 * rng.random(scores.size, dtype=np.float32)), args.batch)[: args.batch]
        f.update(ids, observed_states(random_rates(rng, ids.size, args.k)))
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
    state = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss1 = rss()
    del f
    gc.collect()
    return {
        "impl": "DenseHMMFilter(float32) + argpartition",
        "step_time_s_median": float(np.median(times)),
        "step_time_s_max": float(np.max(times)),
        "state_bytes": int(state),
        "step_peak_extra_bytes": int(max(peaks)),
        "total_peak_gib": (state + max(peaks)) / GIB,
        "rss_delta_gib": (rss1 - rss0) / GIB,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["impl"].split(" ")[0].split("(")[0] for r in results] + ["DPS authors"]
    t = [r["step_time_s_median"] for r in results] + [AUTHORS["time_s"]]
    mem = [r["total_peak_gib"] for r in results] + [AUTHORS["memory_gib"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, vals, target, label in ((axes[0], t, TARGET["time_s"], "seconds per select+update"),
                                    (axes[1], mem, TARGET["memory_gib"], "peak memory (GiB)")):
        ax.bar(names, vals, color=["tab:blue", "tab:gray", "tab:red"][: len(vals)])
        ax.axhline(target, ls="--", color="k", lw=1, label=f"target {target}")
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"DPS scheduler at N = {results[0]['num_prompts']:,} prompts, B = {results[0]['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-prompts", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--k", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--selector", default="dps", choices=["dps", "mopps", "uniform"])
    ap.add_argument("--pool-ratio", type=float, default=None)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dense", action="store_true", help="also run the O(N) dense filter")
    ap.add_argument("--out-dir", default="outputs/bench/dps_scale")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"num_prompts": args.num_prompts, "batch": args.batch, "k": args.k, "pool_ratio": args.pool_ratio}
    results = [{**meta, **bench_scheduler(args)}]
    if args.dense:
        results.append({**meta, **bench_dense(args)})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"results": results, "targets": TARGET, "authors_reference": AUTHORS, "commit": commit,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
              "warmup_steps": args.warmup, "timed_steps": args.steps}
    (out / "dps_scale.json").write_text(json.dumps(report, indent=2))
    plot(results, out / "dps_scale.png")
    for r in results:
        print(f"{r['impl']}: {r['step_time_s_median'] * 1e3:.2f} ms median ({r['step_time_s_max'] * 1e3:.2f} max), "
              f"state {r['state_bytes'] / GIB:.3f} GiB + step peak {r['step_peak_extra_bytes'] / GIB:.3f} GiB, "
              f"RSS delta {r['rss_delta_gib']:.3f} GiB" + (f", active {r['active_prompts']}" if "active_prompts" in r else ""))
    print(f"wrote {out / 'dps_scale.json'} and {out / 'dps_scale.png'}")


if __name__ == "__main__":
    main()
