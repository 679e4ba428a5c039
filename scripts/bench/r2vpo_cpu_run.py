#!/usr/bin/env python
"""GRPO with clipping vs R²VPO (on-policy) vs R²VPO + replay, end to end on CPU (issue 6, item 5).

    python scripts/bench/r2vpo_cpu_run.py --steps 12 --test-freq 4 --out-dir outputs/bench/r2vpo_cpu_run

Runs ``python -m rpo_verl.main preset=cpu`` once per arm, one after the other, on the same model,
data, seed and sizes (SmolLM2-135M-Instruct and the synthetic arithmetic task by default):

* ``grpo_clip``: verl's ``vanilla`` PPO-clip loss (ε = 0.2) with GRPO advantages;
* ``r2vpo``: ``policy_loss.loss_mode=r2vpo`` (δ, η, λ₀ from the YAML: the paper defaults);
* ``r2vpo_replay``: the same plus ``rpo_verl.r2vpo.replay.enable=true`` (K = 2, ρ = 0.5).

A rollout is one generated response; a step spends ``train_batch_size × rollout.n`` of them
(replayed rows are not new rollouts). Reported per arm: validation accuracy (greedy,
``val-core/<source>/acc/mean@1``) against rollouts spent, rollouts to reach the target accuracy
(``--target``; default: the best accuracy GRPO-clip reached after step 0), step time, and R²VPO's
λ / V̂ (fresh, stale). The loss-function overhead vs ``vanilla`` comes from
``scripts/bench/r2vpo_loss_overhead.py`` (run here with ``--loss-repeats``). Writes
``r2vpo_cpu_run.json`` and ``r2vpo_cpu_run.png`` into ``--out-dir``; each arm's run folder
(metrics.jsonl, log, last checkpoint) stays under it; a failed arm is resumed from its last
checkpoint (``--retries``), and ``--reuse`` re-reads finished arms and resumes unfinished ones.
Everything after ``--`` is passed to every arm as Hydra overrides. On a shared machine pass
``--lock /tmp/rpo_verl_e2e.lock``: each arm's run holds it (released between arms).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.expanduser("~/.cache/rpo_verl")
PL = "actor_rollout_ref.actor.policy_loss"
ARMS = {
    "grpo_clip": [f"{PL}.loss_mode=vanilla"],
    "r2vpo": [f"{PL}.loss_mode=r2vpo"],
    "r2vpo_replay": [f"{PL}.loss_mode=r2vpo", "rpo_verl.r2vpo.replay.enable=true"],
}
VAL_KEY = re.compile(r"^val-core/.+/acc/mean@1$")
STEP_KEYS = (
    "timing_s/step", "timing_s/gen", "timing_s/update_actor", "critic/score/mean", "actor/grad_norm",
    "r2vpo/lambda", "r2vpo/lambda_end", "r2vpo/v_hat", "r2vpo/v_hat_fresh", "r2vpo/v_hat_stale",
    "r2vpo/soft_clip_frac", "r2vpo/ratio_min", "r2vpo/ratio_max", "r2vpo/replay_share", "actor/pg_clipfrac",
    "actor/ppo_kl", "response_length/mean", "r2vpo/v_hat_behaviour", "r2vpo/replay_behaviour_kl",
    "r2vpo/replay_is_ess_frac", "r2vpo/replay_is_truncated_frac", "r2vpo/replay_mean_age",
)


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def _locked(path: str | None):
    """Hold an exclusive ``flock`` on ``path`` while one arm runs (shared machines: one trainer
    run at a time, released between arms so that others' runs can interleave)."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def arm_overrides(args, arm: str, run_dir: str) -> list[str]:
    return [
        "preset=cpu",
        f"actor_rollout_ref.model.path={args.model}",
        f"data.train_files={args.train}",
        f"data.val_files={args.val}",
        f"data.val_max_samples={args.val_samples}",
        "data.max_prompt_length=128",
        f"data.max_response_length={args.response_length}",
        f"data.train_batch_size={args.batch}",
        f"data.seed={args.seed}",
        f"actor_rollout_ref.rollout.n={args.n}",
        "actor_rollout_ref.rollout.temperature=1.0",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.mini_batch}",
        f"actor_rollout_ref.actor.optim.lr={args.lr}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        # fp32 rollout = fp32 trainer on CPU: the rollout's log-probs are the old (behaviour) log-probs.
        "algorithm.rollout_correction.bypass_mode=true",
        "reward.custom_reward_function.path=pkg://rpo_verl.reward.score",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={args.steps}",
        f"trainer.test_freq={args.test_freq}",
        "trainer.val_before_train=true",
        # Checkpoints at each validation (one kept) so that an arm killed on a shared machine resumes.
        f"trainer.save_freq={args.test_freq}",
        "trainer.max_actor_ckpt_to_keep=1",
        "trainer.resume_mode=auto",
        f"trainer.experiment_name=r2vpo_cpu_{arm}",
        f"trainer.default_local_dir={run_dir}",
        # Each validation pass's prompts, responses and scores (what a falling accuracy is made of).
        f"trainer.validation_data_dir={os.path.join(run_dir, 'validation_generations')}",
        *ARMS[arm],
        *args.overrides,
    ]


def read_arm(run_dir: str) -> tuple[dict[int, dict], dict[int, float]]:
    """(training steps' metrics by step, validation accuracy by step) from the run's metrics file."""
    from rpo_verl.trainer.metrics_file import read_records, run_files

    steps, val = {}, {}
    for step, m in read_records(run_files(os.path.join(run_dir, "metrics.jsonl"))):
        if "training/global_step" in m:
            steps[step] = m
        accs = [v for k, v in m.items() if VAL_KEY.match(k)]
        if accs:
            val[step] = float(sum(accs) / len(accs))
    return steps, val


def run_arm(args, arm: str) -> dict:
    run_dir = os.path.abspath(os.path.join(args.out_dir, arm, "run"))
    log_path = os.path.join(args.out_dir, f"{arm}.log")
    wall = None
    done = os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and len(read_arm(run_dir)[0]) >= args.steps
    if args.reuse and done:
        print(f"[{arm}] reusing {run_dir}", flush=True)
    else:
        if not args.reuse and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)  # a fresh measurement; --reuse resumes an unfinished run instead
        os.makedirs(os.path.dirname(run_dir), exist_ok=True)
        cmd = [sys.executable, "-m", "rpo_verl.main", *arm_overrides(args, arm, run_dir)]
        print(f"[{arm}] {' '.join(cmd)}", flush=True)
        wall = 0.0
        for attempt in range(args.retries + 1):  # e.g. Ray's OOM killer on a shared machine: resume
            with open(log_path, "w" if attempt == 0 else "a") as log, _locked(args.lock):
                start = time.monotonic()
                rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                wall += time.monotonic() - start
            if rc == 0:
                break
            print(f"[{arm}] run failed (exit {rc}, attempt {attempt + 1}); see {log_path}", flush=True)
        else:
            raise SystemExit(f"[{arm}] run failed {args.retries + 1} times; see {log_path}")
        print(f"[{arm}] done in {wall / 60:.1f} min", flush=True)
    steps, val = read_arm(run_dir)
    per_step = args.batch * args.n
    return {
        "run_dir": run_dir,
        "wall_s": wall,
        "attempts_log": log_path,
        "overrides": ARMS[arm],
        "val_acc": {str(s): a for s, a in sorted(val.items())},
        "val_rollouts": {str(s): s * per_step for s in sorted(val)},
        "steps": {str(s): {k: m[k] for k in STEP_KEYS if k in m} for s, m in sorted(steps.items())},
    }


def rollouts_to(target: float, arm: dict) -> int | None:
    """Rollouts spent at the first validation point with accuracy ≥ target (None: never)."""
    for step, acc in sorted(((int(s), a) for s, a in arm["val_acc"].items())):
        if acc >= target - 1e-12:
            return arm["val_rollouts"][str(step)]
    return None


def loss_overhead(args) -> dict | None:
    out = os.path.join(args.out_dir, "loss_overhead")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench", "r2vpo_loss_overhead.py"),
           "--repeats", str(args.loss_repeats), "--out-dir", out]
    if subprocess.call(cmd, cwd=ROOT) != 0:
        return None
    with open(os.path.join(out, "r2vpo_loss_overhead.json")) as f:
        report = json.load(f)
    return {"ratios": {f"{r['rows']}x{r['length']}": r["ratio"] for r in report["results"]},
            "max_ratio": max(r["ratio"] for r in report["results"]), "clock": report["clock"],
            "target_ratio": report["target_ratio"]}


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = report["arms"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for name, arm in arms.items():
        xs = [arm["val_rollouts"][s] for s in arm["val_acc"]]
        ax.plot(xs, list(arm["val_acc"].values()), marker="o", label=name)
    if report.get("target") is not None:
        ax.axhline(report["target"], color="grey", linestyle="--", label=f"target {report['target']:.3f}")
    ax.set_xlabel("rollouts spent (generated responses)")
    ax.set_ylabel("validation accuracy (greedy)")
    ax.legend()
    ax = axes[1]
    per_step = report["settings"]["batch"] * report["settings"]["n"]
    for name, arm in arms.items():
        steps = sorted(int(s) for s in arm["steps"])
        ax.plot([s * per_step for s in steps], [arm["steps"][str(s)].get("critic/score/mean", math.nan) for s in steps],
                marker=".", label=name)
    ax.set_xlabel("rollouts spent")
    ax.set_ylabel("training reward (mean score)")
    ax.legend()
    ax = axes[2]
    for name, arm in arms.items():
        steps = sorted(int(s) for s in arm["steps"])
        if not any("r2vpo/lambda_end" in arm["steps"][str(s)] for s in steps):
            continue
        ax.plot(steps, [arm["steps"][str(s)].get("r2vpo/lambda_end", math.nan) for s in steps], marker=".", label=f"{name} λ")
        ax.plot(steps, [arm["steps"][str(s)].get("r2vpo/v_hat", math.nan) / report["settings"]["delta"] for s in steps],
                linestyle=":", label=f"{name} V̂/δ")
    ax.set_xlabel("training step")
    ax.set_ylabel("λ after the step; V̂/δ")
    ax.legend()
    fig.suptitle(f"R²VPO vs GRPO-clip on CPU ({report['settings']['model_name']}, commit {report['commit']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="outputs/bench/r2vpo_cpu_run")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {list(ARMS)}")
    parser.add_argument("--model", default=os.path.join(CACHE, "models", "smollm2-135m-instruct"))
    parser.add_argument("--train", default=os.path.join(CACHE, "data", "arith", "train.parquet"))
    parser.add_argument("--val", default=os.path.join(CACHE, "data", "arith", "val.parquet"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--test-freq", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="responses per prompt")
    parser.add_argument("--mini-batch", type=int, default=2, help="prompts per optimiser step")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--val-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=None, help="accuracy target (default: GRPO-clip's best)")
    parser.add_argument("--loss-repeats", type=int, default=15, help="0: skip the loss-overhead measurement")
    parser.add_argument("--reuse", action="store_true", help="re-read arms whose run already finished")
    parser.add_argument("--retries", type=int, default=2, help="resume a failed arm from its last checkpoint")
    parser.add_argument("--lock", default=None, help="flock this file while each arm runs (e.g. /tmp/rpo_verl_e2e.lock)")
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1:]
    args.out_dir = os.path.abspath(args.out_dir)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arm(s) {sorted(unknown)}; choose from {list(ARMS)}")
    os.makedirs(args.out_dir, exist_ok=True)

    started = time.time()
    commit = _commit()
    load_before = os.getloadavg()
    results = {arm: run_arm(args, arm) for arm in arms}

    target = args.target
    if target is None and "grpo_clip" in results:
        clip = {int(s): a for s, a in results["grpo_clip"]["val_acc"].items()}
        after = [a for s, a in clip.items() if s > 0]
        if after and max(after) > clip.get(0, -1.0):
            target = max(after)
    to_target = {arm: (rollouts_to(target, r) if target is not None else None) for arm, r in results.items()}
    ratio = {}
    clip_rollouts = to_target.get("grpo_clip")
    for arm, value in to_target.items():
        ratio[arm] = value / clip_rollouts if value is not None and clip_rollouts else None

    from omegaconf import OmegaConf

    delta = OmegaConf.load(os.path.join(ROOT, "rpo_verl", "config", "rpo_trainer.yaml"))
    delta = float(OmegaConf.select(delta, f"{PL}.r2vpo.delta"))
    for override in args.overrides:
        if override.startswith(f"{PL}.r2vpo.delta="):
            delta = float(override.split("=", 1)[1])
    report = {
        "benchmark": "r2vpo_cpu_run",
        "commit": commit,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "wall_min": (time.time() - started) / 60,
        "settings": {
            "model": args.model, "model_name": os.path.basename(args.model.rstrip("/")), "train": args.train,
            "val": args.val, "steps": args.steps, "test_freq": args.test_freq, "batch": args.batch, "n": args.n,
            "mini_batch": args.mini_batch, "lr": args.lr, "response_length": args.response_length,
            "val_samples": args.val_samples, "seed": args.seed, "delta": delta, "extra_overrides": args.overrides,
        },
        "target": target,
        "target_source": "--target" if args.target is not None else "best GRPO-clip validation accuracy after step 0",
        "rollouts_to_target": to_target,
        "rollouts_to_target_vs_grpo_clip": ratio,
        "paper_anchor": "rollouts to target <= 0.5 x GRPO-clip; loss overhead <= 1.1 x vanilla",
        "arms": results,
        "loss_overhead": loss_overhead(args) if args.loss_repeats > 0 else None,
    }
    json_path = os.path.join(args.out_dir, "r2vpo_cpu_run.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    plot(report, os.path.join(args.out_dir, "r2vpo_cpu_run.png"))
    print(json.dumps({"target": target, "rollouts_to_target": to_target, "vs_grpo_clip": ratio,
                      "val_acc": {a: r["val_acc"] for a, r in results.items()},
                      "loss_overhead_max": (report["loss_overhead"] or {}).get("max_ratio")}, indent=1))
    print(f"wrote {json_path} and r2vpo_cpu_run.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
