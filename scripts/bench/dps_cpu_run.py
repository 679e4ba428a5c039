#!/usr/bin/env python
"""DPS vs uniform vs DAPO dynamic sampling on a real CPU run (SmolLM2-135M-Instruct, arithmetic task).

    python scripts/bench/dps_cpu_run.py --steps 8 --out outputs/bench/dps_cpu_run

One ``python -m rpo_verl.main preset=cpu`` run per method, identical except for prompt selection:

- ``uniform``: ``rpo_verl.dps.selector=uniform`` (verl's sampler semantics: shuffled epochs), run
  through the DPS scheduler only so that the same ``dps/…`` metrics are logged;
- ``dps``: the HMM top-B selector (paper defaults λ = 0.7, whole dataset as candidates);
- ``dapo_ds``: uniform + verl's ``algorithm.filter_groups`` (metric ``acc``): rounds of prompts until
  the batch has B groups with mixed outcomes, surplus dropped; every generated rollout counts.

Per method: effective prompt ratio (share of generated groups that were partially solved, from
``dps/effective_ratio``), rollouts spent (``dps/rollouts_total``, DAPO's dropped groups included),
validation accuracy (pass@1 sampled at ``--val-temperature``, default 1.0 like training: greedy
SmolLM2 already solves ~94 % of the task, which leaves no room to compare) at steps 0 / test_freq /
... and its value per rollout spent, and wall
time. Validation before training is run once (first method) and used as step 0 for all: every
method starts from the same weights and the validation prompts and sampling settings are fixed.
Writes ``<out>/dps_cpu_run.json`` and ``<out>/dps_cpu_run.png``; run logs in ``<out>/<method>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time

CACHE = os.environ.get("RPO_VERL_CACHE", os.path.expanduser("~/.cache/rpo_verl"))
METHODS = {
    "uniform": ["rpo_verl.dps.selector=uniform"],
    "dps": ["rpo_verl.dps.selector=dps"],
    "mopps": ["rpo_verl.dps.selector=mopps"],
    "dapo_ds": ["rpo_verl.dps.selector=uniform", "algorithm.filter_groups.enable=true",
                "algorithm.filter_groups.metric=acc"],
}


def overrides(args, method: str, run_dir: str, validate_first: bool) -> list[str]:
    return [
        "preset=cpu",
        f"actor_rollout_ref.model.path={args.model}",
        f"data.train_files={args.train}", f"data.val_files={args.val}",
        f"data.train_max_samples={args.train_max}", f"data.val_max_samples={args.val_max}",
        # verl draws the train_max / val_max subsets at random unless data.seed is set: every
        # method must train on the same prompt pool and be validated on the same prompts
        f"data.seed={args.seed}",
        "data.max_prompt_length=128", f"data.max_response_length={args.response}",
        f"data.train_batch_size={args.batch}", f"actor_rollout_ref.rollout.n={args.n}",
        "actor_rollout_ref.rollout.temperature=1.0",
        *val_sampling(args.val_temperature),
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.batch}",
        # micro-batches of 4 sequences: lower peak memory on a shared 24 GiB machine
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        f"actor_rollout_ref.actor.optim.lr={args.lr}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        "algorithm.rollout_correction.bypass_mode=true",
        "reward.custom_reward_function.path=pkg://rpo_verl.reward.score",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={args.steps}", f"trainer.test_freq={args.test_freq}",
        f"trainer.val_before_train={str(validate_first).lower()}", "trainer.save_freq=-1",
        "trainer.resume_mode=disable", f"trainer.default_local_dir={run_dir}",
        f"trainer.experiment_name=dps_cpu_{method}",
        "rpo_verl.dps.enable=true", f"rpo_verl.dps.seed={args.seed}",
        *METHODS[method],
    ]


def val_sampling(temperature: float) -> list[str]:
    if temperature <= 0:
        return ["actor_rollout_ref.rollout.val_kwargs.do_sample=false"]
    return ["actor_rollout_ref.rollout.val_kwargs.do_sample=true",
            f"actor_rollout_ref.rollout.val_kwargs.temperature={temperature}"]


@contextlib.contextmanager
def locked(path: str | None):
    """Hold ``flock(path)`` (the machine-wide one-trainer-run-at-a-time lock) for one run."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_run(run_dir: str) -> dict:
    from rpo_verl.trainer.metrics_file import read_records, run_files

    steps, val = {}, {}
    for step, m in read_records(run_files(os.path.join(run_dir, "metrics.jsonl"))):
        acc = [v for k, v in m.items() if k.startswith("val-core/") and "/acc/mean@" in k]
        if acc:
            val[step] = float(acc[0])
        if "training/global_step" in m:
            steps[step] = m
    return {"steps": steps, "val": val}


def summarize(method: str, run: dict, val0: float | None, wall_s: float) -> dict:
    steps = run["steps"]
    order = sorted(steps)
    rollouts = {s: steps[s].get("dps/rollouts_total", float("nan")) for s in order}
    eff = [steps[s].get("dps/effective_ratio", float("nan")) for s in order]
    generated = sum(steps[s].get("dps/groups_generated_step", 0) for s in order)
    partial = sum(steps[s].get("dps/effective_ratio", 0) * steps[s].get("dps/observed_prompts_step", 0) for s in order)
    observed = sum(steps[s].get("dps/observed_prompts_step", 0) for s in order)
    val = dict(run["val"])
    if 0 not in val and val0 is not None:
        val[0] = val0
    curve = [{"step": s, "rollouts": 0 if s == 0 else rollouts.get(s), "val_acc": val[s]} for s in sorted(val)]
    final = curve[-1] if curve else {}
    total = rollouts[order[-1]] if order else float("nan")
    return {
        "method": method, "steps": len(order), "wall_s": wall_s,
        "effective_ratio_mean": partial / observed if observed else float("nan"),
        "effective_ratio_per_step": eff,
        "groups_generated": generated, "rollouts_total": total,
        "rollouts_per_step": [steps[s].get("dps/rollouts_step") for s in order],
        "train_acc_per_step": [steps[s].get("critic/score/mean") for s in order],
        "step_time_s_mean": sum(steps[s].get("timing_s/step", 0) for s in order) / max(len(order), 1),
        "val_curve": curve,
        "val_gain": (final.get("val_acc", float("nan")) - val[0]) if 0 in val and final else float("nan"),
        "val_gain_per_1k_rollouts": ((final.get("val_acc", float("nan")) - val[0]) / total * 1000)
        if 0 in val and final and total else float("nan"),
    }


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        curve = r["val_curve"]
        ax1.plot([c["rollouts"] for c in curve], [c["val_acc"] for c in curve], marker="o", label=r["method"])
        ax2.plot(range(1, r["steps"] + 1), r["effective_ratio_per_step"], marker=".",
                 label=f"{r['method']} (mean {r['effective_ratio_mean']:.2f})")
    ax1.set_xlabel("rollouts spent (cumulative)")
    ax1.set_ylabel("validation accuracy (pass@1)")
    ax1.set_title("Validation accuracy per rollout spent")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("share of generated groups partially solved")
    ax2.set_title("Effective prompt ratio")
    ax2.set_ylim(-0.05, 1.05)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def add_training_args(parser, *, steps: int, test_freq: int, batch: int, n: int, timeout: float) -> None:
    """The trainer-run options ``overrides`` reads (shared with dps_real_run.py)."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--test-freq", type=int, default=test_freq)
    parser.add_argument("--batch", type=int, default=batch, help="prompts per step")
    parser.add_argument("--n", type=int, default=n, help="rollouts per prompt")
    parser.add_argument("--response", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--val-temperature", type=float, default=1.0, help="0: greedy validation")
    parser.add_argument("--model", default=os.path.join(CACHE, "models", "smollm2-135m-instruct"))
    parser.add_argument("--timeout", type=float, default=timeout, help="per run, seconds")
    parser.add_argument("--lock", default="/tmp/rpo_verl_e2e.lock",
                        help="file locked (flock) around each run so trainer runs never overlap; '' = none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="uniform,dps,dapo_ds")
    add_training_args(parser, steps=8, test_freq=4, batch=4, n=4, timeout=3600)
    parser.add_argument("--train-max", type=int, default=128, help="training prompts used (data.train_max_samples)")
    parser.add_argument("--val-max", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", default=os.path.join(CACHE, "data", "arith", "train.parquet"))
    parser.add_argument("--val", default=os.path.join(CACHE, "data", "arith", "val.parquet"))
    parser.add_argument("--out", default="outputs/bench/dps_cpu_run")
    parser.add_argument("--reuse", action="store_true", help="summarise existing runs in --out without training")
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a method whose run failed")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {sorted(METHODS)}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

    results, val0, walls = [], None, {}
    for i, method in enumerate(methods):
        run_dir = os.path.join(out, method, "run")
        if not args.reuse:
            os.makedirs(os.path.dirname(run_dir), exist_ok=True)
            cmd = [sys.executable, "-m", "rpo_verl.main", *overrides(args, method, run_dir, validate_first=i == 0)]
            print(f"[dps_cpu_run] {method}: {' '.join(cmd[3:])}", flush=True)
            for attempt in range(args.retries + 1):
                # A failed attempt (e.g. Ray's OOM killer while another job shares the machine) starts over.
                subprocess.run(["rm", "-rf", run_dir])
                with locked(args.lock), open(os.path.join(out, method, "log.txt"), "w") as log:
                    start = time.monotonic()
                    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
                    walls[method] = time.monotonic() - start
                if rc == 0:
                    break
                print(f"[dps_cpu_run] {method} attempt {attempt + 1} failed (exit {rc})", flush=True)
            if rc != 0:
                print(f"[dps_cpu_run] {method} failed (exit {rc}); see {out}/{method}/log.txt", flush=True)
                return rc
        run = read_run(run_dir)
        if val0 is None:
            val0 = run["val"].get(0)
        results.append(summarize(method, run, val0, walls.get(method, float("nan"))))
        r = results[-1]
        print(f"[dps_cpu_run] {method}: effective ratio {r['effective_ratio_mean']:.3f}, rollouts {r['rollouts_total']}, "
              f"val {[(c['step'], c['val_acc']) for c in r['val_curve']]}", flush=True)

    report = {"commit": commit, "machine": "2-core CPU, 24 GiB, no GPU (shared)", "args": vars(args),
              "results": results}
    with open(os.path.join(out, "dps_cpu_run.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot(results, os.path.join(out, "dps_cpu_run.png"))
    print(f"[dps_cpu_run] wrote {out}/dps_cpu_run.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
