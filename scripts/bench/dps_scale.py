#!/usr/bin/env python
"""Time and memory of one DPS scheduler step (select + update) at N = 10^6 ... 10^8 prompts.

  python scripts/bench/dps_scale.py --num-prompts 1e6,1e7,1e8 --batch 256 --out-dir scripts/bench/results

Each (N, B, selector) point runs in a fresh child process, so its peak RSS (``ru_maxrss``) minus
the RSS before the scheduler is built is that point's alone; the point is appended to
``dps_scale.json`` as soon as it finishes, and points already in the file are skipped (resumable).

Runs ``SchedulerCore`` (what the Ray actor executes: HMM filter, top-B selection, metric
bookkeeping) for ``--warmup`` steps so the filter's active set reaches its steady size (~λ-settling
time × B prompts), then times ``--steps`` select + update calls. Success rates are random (a third
each unsolved / partial / solved), which keeps the active set at its largest. Memory: the
scheduler's resident state (tracemalloc, numpy allocations included) and the extra peak of one
step; plus the child's RSS and peak-RSS deltas. ``--dense`` also times the plain O(N) filter (``DenseHMMFilter``, float32)
with an argpartition top-B, i.e. the straightforward vectorisation, for comparison.
Writes ``dps_scale.json`` and ``dps_scale.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
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
TARGET = {"time_s": 0.25, "memory_gib": 0.5}  # issue 5, at 10^7 prompts
TARGET_1E8 = {"time_s": 0.1, "memory_gib": 1.0}  # issue 16, at 10^8 prompts


def rss() -> int:
    return psutil.Process().memory_info().rss


def peak_rss() -> int:
    """Peak resident set of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
    peak1 = peak_rss()
    m = core.metrics()
    res = {
        "impl": f"SchedulerCore({args.selector}, active-set HMM)",
        "step_time_s_median": float(np.median(times)),
        "step_time_s_max": float(np.max(times)),
        "step_time_s_p95": float(np.percentile(times, 95)),
        "state_bytes": int(state),
        "step_peak_extra_bytes": int(max(peaks)),
        "total_peak_gib": (state + max(peaks)) / GIB,
        "rss_delta_gib": (rss1 - rss0) / GIB,
        "peak_rss_delta_gib": (peak1 - rss0) / GIB,
    }
    if args.selector == "dps":
        res["active_prompts"] = int(m["dps/active_prompts"])
    del core
    gc.collect()
    return res


def bench_actor(args) -> dict:
    """The Ray actor's body (``DPSScheduler``, no Ray) with its default per-update snapshot: select +
    cursor file, update + count journal + snapshot file, in ``--snapshot-dir``. Rare O(N) steps
    (journal compaction, about every N / (4 B) updates) are outside this window unless it is long."""
    import tempfile

    from rpo_verl.dps.scheduler import DPSScheduler

    gc.collect()
    rss0 = rss()
    folder = tempfile.mkdtemp(prefix="dps_scale_", dir=args.snapshot_dir)
    actor = DPSScheduler({"enable": True, "selector": args.selector, "pool_ratio": args.pool_ratio, "seed": 0,
                          "snapshot_path": os.path.join(folder, "dps_snapshot.npz")}, args.num_prompts, args.k)
    rng = np.random.default_rng(0)
    times, first = [], None
    for i in range(args.warmup + args.steps):
        rates = random_rates(rng, args.batch, args.k)
        t0 = time.perf_counter()
        ids = actor.select(args.batch)
        actor.update(ids, rates)
        if i == 0:
            first = time.perf_counter() - t0  # starts the journal: one O(N) base write
        elif i >= args.warmup:
            times.append(time.perf_counter() - t0)
    snapshot_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    rss1, peak1 = rss(), peak_rss()
    subprocess.run(["rm", "-rf", folder], check=True)
    return {
        "impl": f"DPSScheduler actor body ({args.selector}, snapshot every update)",
        "step_time_s_median": float(np.median(times)), "step_time_s_max": float(np.max(times)),
        "step_time_s_p95": float(np.percentile(times, 95)), "first_step_time_s": float(first), "snapshot_files_bytes": int(snapshot_bytes),
        "state_bytes": 0, "step_peak_extra_bytes": 0, "total_peak_gib": 0.0,
        "rss_delta_gib": (rss1 - rss0) / GIB, "peak_rss_delta_gib": (peak1 - rss0) / GIB,
    }


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
    peak1 = peak_rss()
    del f
    gc.collect()
    return {
        "impl": "DenseHMMFilter(float32) + argpartition",
        "step_time_s_median": float(np.median(times)),
        "step_time_s_max": float(np.max(times)),
        "step_time_s_p95": float(np.percentile(times, 95)),
        "state_bytes": int(state),
        "step_peak_extra_bytes": int(max(peaks)),
        "total_peak_gib": (state + max(peaks)) / GIB,
        "rss_delta_gib": (rss1 - rss0) / GIB,
        "peak_rss_delta_gib": (peak1 - rss0) / GIB,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    series: dict[str, list[dict]] = {}
    for r in results:
        series.setdefault(f"{r['impl'].split('(')[0]} B={r['batch']}", []).append(r)
    for label, rs in sorted(series.items()):
        label = label.replace("DPSScheduler actor body", "actor + snapshot")
        rs = sorted(rs, key=lambda r: r["num_prompts"])
        n = [r["num_prompts"] for r in rs]
        axes[0].plot(n, [r["step_time_s_median"] for r in rs], marker="o", label=label)
        axes[1].plot(n, [max(r["peak_rss_delta_gib"], r["total_peak_gib"]) for r in rs], marker="o", label=label)
    for ax, key, label in ((axes[0], "time_s", "seconds per select+update (median)"),
                           (axes[1], "memory_gib", "peak memory (GiB, max of RSS and tracemalloc)")):
        ax.scatter([1e7], [AUTHORS[key]], color="tab:red", marker="x", label="DPS authors (10^7)")
        ax.scatter([1e8], [TARGET_1E8[key]], color="k", marker="_", s=400, label="target at 10^8")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("prompts N")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("DPS scheduler step: time and memory against dataset size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def point_key(impl: str, n: int, batch: int, selector: str) -> str:
    return f"{impl}:{selector}:N={n}:B={batch}"


def run_child(args, impl: str, n: int, batch: int) -> dict:
    """One point in a fresh interpreter (its peak RSS is this point's alone); returns its result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--num-prompts", str(n), "--batch", str(batch),
           "--k", str(args.k), "--selector", args.selector, "--warmup", str(args.warmup), "--steps", str(args.steps)]
    if args.pool_ratio is not None:
        cmd += ["--pool-ratio", str(args.pool_ratio)]
    if args.snapshot_dir:
        cmd += ["--snapshot-dir", args.snapshot_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-prompts", default="1e7", help="comma-separated dataset sizes (1e8 style allowed)")
    ap.add_argument("--batch", default="256", help="comma-separated prompts per step")
    ap.add_argument("--k", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--selector", default="dps", choices=["dps", "mopps", "uniform"])
    ap.add_argument("--pool-ratio", type=float, default=None)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dense", action="store_true", help="also run the O(N) dense filter")
    ap.add_argument("--dense-max", type=float, default=1e7, help="largest N for --dense (it is O(N) memory)")
    ap.add_argument("--actor", action="store_true", help="also time the actor body with its per-update snapshot")
    ap.add_argument("--snapshot-dir", default=None, help="where --actor writes its snapshot (default: the temp dir)")
    ap.add_argument("--redo", action="store_true", help="re-measure points already in the JSON")
    ap.add_argument("--out-dir", default="scripts/bench/results")
    ap.add_argument("--child", choices=["scheduler", "dense", "actor"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.num_prompts, args.batch = int(float(args.num_prompts)), int(args.batch)
        res = {"scheduler": bench_scheduler, "dense": bench_dense, "actor": bench_actor}[args.child](args)
        print(json.dumps({"num_prompts": args.num_prompts, "batch": args.batch, "k": args.k,
                          "selector": args.selector, "pool_ratio": args.pool_ratio, **res}))
        return
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dps_scale.json"
    report = json.loads(path.read_text()) if path.exists() else {"results": []}
    done = {r["key"]: r for r in report["results"] if "key" in r}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    for n in [int(float(x)) for x in args.num_prompts.split(",") if x]:
        for batch in [int(x) for x in args.batch.split(",") if x]:
            impls = ["scheduler"] + (["actor"] if args.actor else []) + (
                ["dense"] if args.dense and n <= args.dense_max else [])
            for impl in impls:
                key = point_key(impl, n, batch, args.selector)
                if key in done and not args.redo:
                    print(f"skip {key} (in {path})")
                    continue
                r = {"key": key, **run_child(args, impl, n, batch), "commit": commit, "machine": machine,
                     "warmup_steps": args.warmup, "timed_steps": args.steps}
                done[key] = r
                report = {"results": list(done.values()), "targets": TARGET, "targets_1e8": TARGET_1E8,
                          "authors_reference": AUTHORS}
                path.write_text(json.dumps(report, indent=2))
                print(f"{key}: {r['step_time_s_median'] * 1e3:.2f} ms median ({r['step_time_s_max'] * 1e3:.2f} max"
                      + (f", first {r['first_step_time_s']:.2f} s" if "first_step_time_s" in r else "") + "), "
                      f"state {r['state_bytes'] / GIB:.3f} GiB + step peak {r['step_peak_extra_bytes'] / GIB:.3f} GiB, "
                      f"RSS delta {r['rss_delta_gib']:.3f}, peak RSS delta {r['peak_rss_delta_gib']:.3f} GiB"
                      + (f", active {r['active_prompts']}" if "active_prompts" in r else ""), flush=True)
    plot(list(done.values()), out / "dps_scale.png")
    print(f"wrote {path} and {out / 'dps_scale.png'}")


if __name__ == "__main__":
    main()
