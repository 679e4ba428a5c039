#!/usr/bin/env python
"""GRPO-clip vs on-policy R²VPO vs R²VPO + replay over several seeds (issue 15, item 3).

    python scripts/bench/r2vpo_replay.py --seeds 0,1,2 --steps 24 --batch 8 --n 8 \
        --out-dir outputs/bench/r2vpo_replay --lock /tmp/rpo_verl_e2e.lock

Each (seed, arm) is one ``python -m rpo_verl.main preset=cpu`` run through
``scripts/bench/r2vpo_cpu_run.py`` (its overrides, arms, metrics reader and resume-from-checkpoint
logic are imported, not copied): SmolLM2-135M-Instruct on the arith task, ``data.seed`` = the seed.
A finished run's numbers are cached in ``<out-dir>/runs/seed<s>_<arm>.json``; a rerun skips it
(and resumes an unfinished one from its last checkpoint). Rollouts counted are newly generated
responses only (``batch × n`` per step; replayed rows are not rollouts).

Target (``--target``, default): the mean over seeds of GRPO-clip's best validation accuracy after
step 0. The results file holds every finished run under ``<out-dir>/runs``, not only those of this
invocation's ``--seeds``/``--arms``. Writes ``--results`` (default ``scripts/bench/results/r2vpo_replay.json``) with exactly

    {"target": float, "runs": [{"seed", "arm", "rollouts_to_target": int | null, "val_acc": [...],
                                "train_reward": [...], "lambda_max": float}]}

(``val_acc`` at steps 0, test_freq, 2·test_freq, ...; ``train_reward`` = ``critic/score/mean`` per
step; ``lambda_max`` = the largest λ after any step, 0 for GRPO-clip) and a PNG next to it.
Everything after ``--`` is passed to every run as Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import r2vpo_cpu_run as base  # noqa: E402  (the single-seed runner: reused, not copied)

ARMS = ("grpo_clip", "r2vpo", "r2vpo_replay")
RUN_KEYS = ("seed", "arm", "rollouts_to_target", "val_acc", "train_reward", "lambda_max")
DIAG_KEYS = ("r2vpo/lambda_end", "r2vpo/v_hat", "r2vpo/v_hat_fresh", "r2vpo/v_hat_stale", "r2vpo/v_hat_behaviour",
             "r2vpo/replay_is_ess_frac", "r2vpo/replay_is_truncated_frac", "r2vpo/soft_clip_frac", "critic/score/mean",
             "actor/grad_norm", "actor/ppo_kl", "response_length/mean", "r2vpo/replay_behaviour_kl")


def run_path(out_dir: str, seed: int, arm: str) -> str:
    return os.path.join(out_dir, "runs", f"seed{seed}_{arm}.json")


def pending(out_dir: str, seeds, arms) -> list[tuple[int, str]]:
    """(seed, arm) pairs without a finished-run file, in run order (seed-major)."""
    return [(s, a) for s in seeds for a in arms if not os.path.exists(run_path(out_dir, s, a))]


def summarise(arm_result: dict, steps: int) -> dict:
    """What one finished run contributes: validation accuracy by step, per-step training reward,
    λ after each step and the diagnostics (V̂ fresh/stale, ESS, truncation)."""
    per_step = {int(s): m for s, m in arm_result["steps"].items()}
    if len(per_step) < steps:
        raise RuntimeError(f"run {arm_result['run_dir']} has {len(per_step)} of {steps} steps")
    return {
        "val_acc": {int(s): float(a) for s, a in arm_result["val_acc"].items()},
        "train_reward": [float(per_step[s].get("critic/score/mean", math.nan)) for s in sorted(per_step)],
        "lambda": [float(per_step[s].get("r2vpo/lambda_end", 0.0)) for s in sorted(per_step)],
        "diagnostics": {str(s): {k: per_step[s][k] for k in DIAG_KEYS if k in per_step[s]} for s in sorted(per_step)},
        "run_dir": arm_result["run_dir"],
    }


def default_target(cached: dict) -> float | None:
    """Mean over seeds of GRPO-clip's best validation accuracy after step 0."""
    best = [max(a for s, a in r["val_acc"].items() if s > 0) for (seed, arm), r in cached.items()
            if arm == "grpo_clip" and any(s > 0 for s in r["val_acc"])]
    return sum(best) / len(best) if best else None


def rollouts_to_target(val_acc: dict[int, float], target: float, per_step: int) -> int | None:
    for step in sorted(val_acc):
        if val_acc[step] >= target - 1e-12:
            return step * per_step
    return None


def build_results(cached: dict, target: float, per_step: int) -> dict:
    """The results file: exactly ``{"target", "runs": [...]}`` with :data:`RUN_KEYS` per run."""
    runs = []
    for (seed, arm), r in sorted(cached.items(), key=lambda kv: (kv[0][0], ARMS.index(kv[0][1]))):
        runs.append({
            "seed": int(seed),
            "arm": arm,
            "rollouts_to_target": rollouts_to_target(r["val_acc"], target, per_step),
            "val_acc": [r["val_acc"][s] for s in sorted(r["val_acc"])],
            "train_reward": list(r["train_reward"]),
            "lambda_max": float(max(r["lambda"], default=0.0)),
        })
    return {"target": float(target), "runs": runs}


def check_schema(results: dict) -> None:
    """Raise ValueError unless ``results`` has exactly the issue's schema."""
    if set(results) != {"target", "runs"} or not isinstance(results["target"], float):
        raise ValueError(f"results: keys {sorted(results)} / target {results.get('target')!r}")
    for run in results["runs"]:
        if tuple(run) != RUN_KEYS:
            raise ValueError(f"results: run keys {list(run)} != {list(RUN_KEYS)}")
        if run["arm"] not in ARMS or not isinstance(run["seed"], int) or not isinstance(run["lambda_max"], float):
            raise ValueError(f"results: bad run {run['seed']!r}/{run['arm']!r}")
        if run["rollouts_to_target"] is not None and not isinstance(run["rollouts_to_target"], int):
            raise ValueError("results: rollouts_to_target must be an int or null")
        if not all(isinstance(v, float) for v in run["val_acc"] + run["train_reward"]):
            raise ValueError("results: val_acc / train_reward must be lists of floats")


def load_cached(out_dir: str) -> dict:
    """Every finished run under ``<out_dir>/runs`` (any seed, any arm), so that an invocation that
    runs only some seeds or arms still writes a results file with all runs finished so far."""
    cached = {}
    folder = os.path.join(out_dir, "runs")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in names:
        seed, _, arm = name[len("seed"):-len(".json")].partition("_")
        if not (name.startswith("seed") and name.endswith(".json") and seed.isdigit() and arm in ARMS):
            continue
        with open(os.path.join(folder, name)) as f:
            r = json.load(f)
        r["val_acc"] = {int(s): a for s, a in r["val_acc"].items()}
        cached[(int(seed), arm)] = r
    return dict(sorted(cached.items(), key=lambda kv: (kv[0][0], ARMS.index(kv[0][1]))))


def plot(results: dict, cached: dict, per_step: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for arm in ARMS:
        curves = [r for (s, a), r in cached.items() if a == arm]
        if not curves:
            continue
        steps = sorted(curves[0]["val_acc"])
        acc = np.array([[c["val_acc"].get(s, np.nan) for s in steps] for c in curves])
        x = np.array(steps) * per_step
        line, = axes[0].plot(x, np.nanmean(acc, 0), marker="o", label=f"{arm} (n={len(curves)})")
        axes[0].fill_between(x, np.nanmin(acc, 0), np.nanmax(acc, 0), color=line.get_color(), alpha=0.15)
        rew = np.array([c["train_reward"] for c in curves])
        xs = (np.arange(rew.shape[1]) + 1) * per_step
        axes[1].plot(xs, rew.mean(0), color=line.get_color(), label=arm)
        axes[1].fill_between(xs, rew.min(0), rew.max(0), color=line.get_color(), alpha=0.15)
        if arm != "grpo_clip":
            lam = np.array([c["lambda"] for c in curves])
            axes[2].plot(np.arange(lam.shape[1]) + 1, lam.mean(0), color=line.get_color(), label=f"{arm} λ")
    axes[0].axhline(results["target"], color="grey", linestyle="--", label=f"target {results['target']:.3f}")
    axes[0].set(xlabel="rollouts (generated responses)", ylabel="validation accuracy (greedy), mean; band min–max")
    axes[1].set(xlabel="rollouts", ylabel="training reward")
    axes[2].set(xlabel="training step", ylabel="λ after the step (mean over seeds)")
    for ax in axes:
        ax.legend()
    fig.suptitle("GRPO-clip vs R²VPO vs R²VPO + replay (SmolLM2-135M-Instruct, arith, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse(argv):
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="outputs/bench/r2vpo_replay")
    p.add_argument("--results", default=os.path.join(HERE, "results", "r2vpo_replay.json"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--model", default=os.path.join(base.CACHE, "models", "smollm2-135m-instruct"))
    p.add_argument("--train", default=os.path.join(base.CACHE, "data", "arith", "train.parquet"))
    p.add_argument("--val", default=os.path.join(base.CACHE, "data", "arith", "val.parquet"))
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--test-freq", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--n", type=int, default=8, help="responses per prompt")
    p.add_argument("--mini-batch", type=int, default=4, help="prompts per optimiser step (2 steps per batch)")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--response-length", type=int, default=48)
    p.add_argument("--val-samples", type=int, default=64)
    p.add_argument("--target", type=float, default=None)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--lock", default=None)
    p.add_argument("--plan", action="store_true", help="print the runs still to do and exit")
    args = p.parse_args(argv[:split])
    args.overrides = argv[split + 1:]
    args.seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    args.arms = [a for a in args.arms.split(",") if a]
    bad = set(args.arms) - set(ARMS)
    if bad:
        p.error(f"unknown arm(s) {sorted(bad)}; choose from {list(ARMS)}")
    args.out_dir = os.path.abspath(args.out_dir)
    return args


def seed_args(args, seed: int):
    """The namespace ``r2vpo_cpu_run.run_arm`` reads, for one seed (its own run folders)."""
    ns = types.SimpleNamespace(**vars(args))
    ns.seed, ns.reuse = seed, True
    ns.out_dir = os.path.join(args.out_dir, f"seed{seed}")
    return ns


def main(argv=None, run_arm=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    run_arm = run_arm or base.run_arm
    todo = pending(args.out_dir, args.seeds, args.arms)
    print(f"{len(todo)} run(s) to do: {todo}", flush=True)
    if args.plan:
        return 0
    for seed, arm in todo:
        os.makedirs(os.path.join(args.out_dir, f"seed{seed}"), exist_ok=True)
        summary = summarise(run_arm(seed_args(args, seed), arm), args.steps)
        summary["val_acc"] = {str(s): a for s, a in summary["val_acc"].items()}
        path = run_path(args.out_dir, seed, arm)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"seed": seed, "arm": arm, "commit": base._commit(), **summary}, f, indent=1)
        os.replace(path + ".tmp", path)  # written only once the run finished: a rerun skips it
    cached = load_cached(args.out_dir)
    target = args.target if args.target is not None else default_target(cached)
    if target is None:
        raise SystemExit("no target: run the grpo_clip arm or pass --target")
    per_step = args.batch * args.n
    results = build_results(cached, target, per_step)
    check_schema(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(results, f, indent=1)
    plot(results, cached, per_step, os.path.splitext(args.results)[0] + ".png")
    print(json.dumps({(f"{r['seed']}/{r['arm']}"): r["rollouts_to_target"] for r in results["runs"]}, indent=1))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
