#!/usr/bin/env python
"""Step-time breakdown and peak memory of ``python -m rpo_verl.main`` (one run, on this machine).

    python scripts/bench/trainer_steps.py --name tiny --out runs/bench/trainer -- preset=cpu \
        actor_rollout_ref.model.path=... data.train_files=... trainer.total_training_steps=4 ...

Everything after ``--`` is passed to ``rpo_verl.main`` (``trainer.default_local_dir`` is set to
``<out>/<name>/run``). While the run lasts, the proportional set size (PSS, shared pages split
between processes) of the launched process and all its descendants (Ray's head processes and every
worker) is sampled once a second. Afterwards verl's per-step timers are read from the metrics file.
Writes ``<out>/<name>.json`` and ``<out>/<name>.png`` (per-step phase times and memory over time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import psutil

PHASES = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "save_checkpoint", "testing")


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", default="runs/bench/trainer")
    parser.add_argument("--skip-steps", type=int, default=1, help="steps left out of the steady-state means")
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1:]

    run_dir = os.path.abspath(os.path.join(args.out, args.name, "run"))
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    log_path = os.path.join(args.out, f"{args.name}.log")
    cmd = [sys.executable, "-m", "rpo_verl.main", *overrides, f"trainer.default_local_dir={run_dir}",
           "trainer.resume_mode=disable"]
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic() - start, tree_pss(root)))
                stop.wait(1.0)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        rc = proc.wait()
        stop.set()
        thread.join()
    wall = time.monotonic() - start
    if rc != 0:
        print(f"run failed (exit {rc}); see {log_path}", file=sys.stderr)
        return rc

    from rpo_verl.trainer.metrics_file import read_records, run_files

    records = read_records(run_files(os.path.join(run_dir, "metrics.jsonl")))
    steps = {s: m for s, m in records if "training/global_step" in m}
    steady = [steps[s] for s in sorted(steps)][args.skip_steps:] or [steps[s] for s in sorted(steps)]
    phase_mean = {p: statistics.fmean(m.get(f"timing_s/{p}", 0.0) for m in steady) for p in PHASES}
    result = {
        "name": args.name,
        "command": " ".join(["python -m rpo_verl.main", *overrides]),
        "wall_s": wall,
        "init_s": next((m["timing_s/init"] for _, m in records if "timing_s/init" in m), None),
        "steps": len(steps),
        "steady_steps": len(steady),
        "step_s_mean": statistics.fmean(m["timing_s/step"] for m in steady),
        "first_step_s": steps[min(steps)]["timing_s/step"],
        "phase_s_mean": phase_mean,
        "gen_tokens_per_step": statistics.fmean(m.get("eff/gen_tokens", 0) for m in steady),
        "peak_pss_gib": max(b for _, b in samples) / 2**30,
        "per_step": {s: {p: m.get(f"timing_s/{p}", 0.0) for p in (*PHASES, "step")} for s, m in steps.items()},
        "memory_gib": [(round(t, 1), round(b / 2**30, 3)) for t, b in samples],
    }
    json_path = os.path.join(args.out, f"{args.name}.json")
    with open(json_path, "w") as fh:
        json.dump(result, fh, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    order = sorted(steps)
    bottom = [0.0] * len(order)
    for phase in PHASES:
        values = [result["per_step"][s][phase] for s in order]
        if any(values):
            ax1.bar(order, values, bottom=bottom, label=phase)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax1.set_xlabel("training step")
    ax1.set_ylabel("seconds")
    ax1.set_title(f"{args.name}: time per step by phase")
    ax1.legend(fontsize=7)
    ax2.plot([t for t, _ in samples], [b / 2**30 for _, b in samples])
    ax2.set_xlabel("seconds since launch")
    ax2.set_ylabel("PSS of all run processes (GiB)")
    ax2.set_title(f"{args.name}: memory (peak {result['peak_pss_gib']:.1f} GiB)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"{args.name}.png"), dpi=100)
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_step", "memory_gib")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
