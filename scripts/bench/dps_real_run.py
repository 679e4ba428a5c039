#!/usr/bin/env python
"""DPS vs uniform vs MoPPS vs DAPO dynamic sampling on a revisited prompt pool (issue 16), 3 seeds.

    python scripts/bench/dps_real_run.py                      # the campaign: 4 arms x 3 seeds x 40 steps
    python scripts/bench/dps_real_run.py --arms dps --seeds 0 --steps 2 --model <tiny> ...   # smoke

1. Pool (once, cached in ``<out>/pool/``): ``--candidates`` arithmetic problems of mixed difficulty
   (``rpo_verl.data.arith``: 1..``--steps-max`` operations of ``--ops``) are sampled ``--n`` times
   each with the start model (``calibrate_task.sample``: HF generate, T 1.0, graded by
   ``rpo_verl.reward``), and ``--pool-size`` of them are kept, a third each never / partly / always
   solved (a short stratum is filled from the partly solved, then the rest; the mix reached is
   recorded in ``pool/calibration.json``). Validation: ``--val-size`` disjoint problems of the same
   mix, the same for every run.
2. Runs: one ``python -m rpo_verl.main preset=cpu`` per (seed, arm), built by ``dps_cpu_run.overrides``,
   identical except for prompt selection; every arm goes through the DPS scheduler actor so the same
   ``dps/...`` metrics are logged. ``uniform`` = verl's shuffled epochs; ``dapo_ds`` = uniform + verl's
   ``algorithm.filter_groups`` (acc), every generated group counted; ``mopps``; ``dps`` (λ 0.7, all
   prompts candidates). With 16 prompts/step x 40 steps over 128 prompts each prompt is drawn 5 times.
3. Per run: effective prompt ratio per step (``dps/effective_ratio``: share of the step's generated
   groups with mixed outcomes; for the arms without filtering these are the trained groups, DAPO
   trains only mixed ones by construction), rollouts generated, rollouts to ``--target`` validation
   accuracy (cumulative rollouts at the first validation at or above it; null if never), wall time,
   mean visits per prompt (``dps/sample_count_mean``).
Results: ``--results`` (default ``scripts/bench/results/dps_real_run.json``), schema of the issue plus
per-run extras; finished (seed, arm) runs in it are skipped (resumable). PNG next to it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
ARMS = ("uniform", "dapo_ds", "mopps", "dps")
ISSUE_KEYS = ("seed", "arm", "rollouts_to_target", "effective_prompt_ratio", "visits_per_prompt_mean", "val_acc")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dps_cpu_run = _load("dps_cpu_run")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default="0,1,2")
    dps_cpu_run.add_training_args(ap, steps=40, test_freq=5, batch=16, n=8, timeout=6 * 3600)
    ap.add_argument("--target", type=float, default=0.5, help="validation accuracy for rollouts_to_target")
    ap.add_argument("--pool-size", type=int, default=128)
    ap.add_argument("--candidates", type=int, default=384, help="problems calibrated to draw the pool from")
    ap.add_argument("--val-size", type=int, default=64)
    ap.add_argument("--steps-max", type=int, default=3, help="operations per problem: 1..steps_max")
    ap.add_argument("--ops", default="add,sub,mul")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench/dps_real_run")
    ap.add_argument("--results", default=str(HERE / "results" / "dps_real_run.json"))
    args = ap.parse_args(argv)
    unknown = sorted(set(args.arms.split(",")) - set(ARMS))
    if unknown:
        ap.error(f"--arms: unknown {unknown}; choose from {list(ARMS)}")
    return args


# ---------------------------------------------------------------------------- pure parts
def stratify(hits: list[int], k: int, size: int, rng: np.random.Generator) -> tuple[list[int], dict]:
    """Indices of ``size`` candidates, about a third each with 0, 1..k-1 and k of k correct.

    A stratum with too few candidates is filled from the partly solved ones first, then from any."""
    hits = np.asarray(hits)
    if size > hits.size:
        raise ValueError(f"pool of {size} from only {hits.size} candidates")
    groups = {"never": np.flatnonzero(hits == 0), "partly": np.flatnonzero((hits > 0) & (hits < k)),
              "always": np.flatnonzero(hits == k)}
    groups = {name: rng.permutation(ids) for name, ids in groups.items()}
    quota = {"never": size // 3, "always": size // 3}
    quota["partly"] = size - 2 * (size // 3)
    chosen = {name: list(groups[name][: quota[name]]) for name in groups}
    missing = size - sum(map(len, chosen.values()))
    for name in ("partly", "never", "always"):  # fill order for short strata
        if missing <= 0:
            break
        extra = list(groups[name][len(chosen[name]): len(chosen[name]) + missing])
        chosen[name] += extra
        missing -= len(extra)
    picked = sorted(int(i) for ids in chosen.values() for i in ids)
    mix = {name: len(ids) for name, ids in chosen.items()} | {f"available_{n}": int(g.size) for n, g in groups.items()}
    return picked, mix


def val_curve(run: dict) -> list[dict]:
    """``[{"step", "rollouts", "val_acc"}]`` from ``dps_cpu_run.read_run`` output (step 0: 0 rollouts)."""
    steps = run["steps"]
    return [{"step": s, "rollouts": 0 if s == 0 else int(steps[s]["dps/rollouts_total"]), "val_acc": float(run["val"][s])}
            for s in sorted(run["val"]) if s == 0 or s in steps]


def rollouts_to_target(curve: list[dict], target: float) -> int | None:
    """Rollouts spent at the first validation with accuracy >= ``target`` (None if never)."""
    for point in sorted(curve, key=lambda c: c["step"]):
        if point["val_acc"] >= target:
            return int(point["rollouts"])
    return None


def run_record(seed: int, arm: str, run: dict, wall_s: float, target: float) -> dict:
    steps = run["steps"]
    order = sorted(steps)
    if not order:
        raise ValueError(f"seed {seed} {arm}: the run logged no training step")
    last = steps[order[-1]]
    eff = [steps[s].get("dps/effective_ratio", float("nan")) for s in order]
    observed = np.array([steps[s].get("dps/observed_prompts_step", 0.0) for s in order])
    partial = np.nan_to_num(np.array(eff)) * observed
    curve = val_curve(run)
    return {
        "seed": seed, "arm": arm,
        "rollouts_to_target": rollouts_to_target(curve, target),
        "effective_prompt_ratio": float(partial.sum() / observed.sum()) if observed.sum() else float("nan"),
        "visits_per_prompt_mean": float(last["dps/sample_count_mean"]),
        "val_acc": [c["val_acc"] for c in curve],
        "val_steps": [c["step"] for c in curve], "val_rollouts": [c["rollouts"] for c in curve],
        "effective_ratio_per_step": eff,
        "rollouts_generated": int(last["dps/rollouts_total"]),
        "groups_generated_per_step": [steps[s].get("dps/groups_generated_step") for s in order],
        "steps": len(order), "wall_s": float(wall_s),
        "step_time_s_mean": float(np.mean([steps[s].get("timing_s/step", np.nan) for s in order])),
    }


def aggregate(runs: list[dict]) -> dict:
    """Per arm over seeds: mean/std of the effective ratio, visits, rollouts; rollouts-to-target mean
    over the seeds that reached it, and DPS's ratio to dapo_ds (only when every seed of both reached it)."""
    out = {}
    for arm in sorted({r["arm"] for r in runs}):
        rs = [r for r in runs if r["arm"] == arm]
        reached = [r["rollouts_to_target"] for r in rs if r["rollouts_to_target"] is not None]
        out[arm] = {
            "seeds": [r["seed"] for r in rs],
            "effective_prompt_ratio_mean": float(np.mean([r["effective_prompt_ratio"] for r in rs])),
            "effective_prompt_ratio_std": float(np.std([r["effective_prompt_ratio"] for r in rs])),
            "visits_per_prompt_mean": float(np.mean([r["visits_per_prompt_mean"] for r in rs])),
            "rollouts_generated_mean": float(np.mean([r["rollouts_generated"] for r in rs])),
            "reached_target": f"{len(reached)}/{len(rs)}",
            "rollouts_to_target_mean": float(np.mean(reached)) if reached else None,
            "val_acc_final_mean": float(np.mean([r["val_acc"][-1] for r in rs])),
        }
    dps, dapo = out.get("dps"), out.get("dapo_ds")
    if dps and dapo and dps["rollouts_to_target_mean"] and dapo["rollouts_to_target_mean"] and \
            dps["reached_target"].split("/")[0] == dps["reached_target"].split("/")[1] and \
            dapo["reached_target"].split("/")[0] == dapo["reached_target"].split("/")[1]:
        out["dps_rollouts_to_target_vs_dapo_ds"] = dps["rollouts_to_target_mean"] / dapo["rollouts_to_target_mean"]
    return out


def load_results(path: Path, target: float) -> dict:
    if not path.exists():
        return {"target": target, "runs": []}
    data = json.loads(path.read_text())
    if data["target"] != target:
        raise SystemExit(f"{path} was written with --target {data['target']}, not {target}: use the same target "
                         f"or another --results file")
    return data


def campaign(args, runner, commit: str, pool_builder) -> list[dict]:
    """Every (seed, arm) not yet in the results file: run, record, write the file. Returns all runs."""
    path = Path(args.results)
    data = load_results(path, args.target)
    done = {(r["seed"], r["arm"]) for r in data["runs"]}
    folder = Path(args.out)
    pool = None
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        for arm in args.arms.split(","):
            if (seed, arm) in done:
                print(f"[dps_real_run] seed {seed} {arm}: in {path}, skipped", flush=True)
                continue
            pool = pool or pool_builder(args, folder / "pool")
            run, wall = runner(args, seed, arm, folder / f"seed{seed}" / arm, pool)
            data["runs"].append(run_record(seed, arm, run, wall, args.target))
            data["commit"], data["pool"] = commit, pool["calibration"]
            data["summary"] = aggregate(data["runs"])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
            r = data["runs"][-1]
            print(f"[dps_real_run] seed {seed} {arm}: eff {r['effective_prompt_ratio']:.3f}, rollouts "
                  f"{r['rollouts_generated']}, to target {r['rollouts_to_target']}, visits "
                  f"{r['visits_per_prompt_mean']:.2f}, val {r['val_acc']}, {r['wall_s']:.0f} s", flush=True)
    return data["runs"]


# ---------------------------------------------------------------------------- model / trainer parts
def build_pool(args, folder: Path) -> dict:
    """Calibrate candidates with the start model, write the stratified pool and the validation set."""
    calib = folder / "calibration.json"
    params = pool_params(args)
    if calib.exists():
        info = json.loads(calib.read_text())
        differ = {k: (info[k], v) for k, v in params.items() if k in info and info[k] != v}
        if differ:
            raise SystemExit(f"{calib} was calibrated with other settings (saved, now): {differ}; use another --out "
                             f"or delete {folder}")
        return {"train": str(folder / "train.parquet"), "val": str(folder / "val.parquet"), "calibration": info}
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rpo_verl.data.arith import ArithConfig, make_rows
    from rpo_verl.reward import compute_score

    sample = _load("calibrate_task").sample
    cfg = ArithConfig(steps=1, steps_max=args.steps_max, ops=tuple(args.ops.split(",")))
    val = make_rows(args.val_size, args.data_seed, "val", cfg, index_offset=args.pool_size)
    cands = make_rows(args.candidates, args.data_seed, "train", cfg,
                      exclude=frozenset(r["extra_info"]["question"] for r in val))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    t0 = time.monotonic()
    groups = sample(model, tokenizer, [r["prompt"] for r in cands], args.n, args.response, 32, args.data_seed)
    hits = [sum(compute_score(r["data_source"], text, r["reward_model"]["ground_truth"], r["extra_info"])["acc"] > 0
                for text, _, _ in g) for r, g in zip(cands, groups, strict=True)]
    picked, mix = stratify(hits, args.n, args.pool_size, np.random.default_rng(args.data_seed))
    pool = []
    for new_index, i in enumerate(picked):
        row = {**cands[i], "extra_info": {**cands[i]["extra_info"], "index": new_index, "start_hits": int(hits[i])}}
        pool.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(pool).to_parquet(folder / "train.parquet")
    pd.DataFrame(val).to_parquet(folder / "val.parquet")
    info = {**params, "mix": mix, "candidate_hits_histogram": np.bincount(hits, minlength=args.n + 1).tolist(),
            "calibration_s": time.monotonic() - t0}
    calib.write_text(json.dumps(info, indent=1))
    return {"train": str(folder / "train.parquet"), "val": str(folder / "val.parquet"), "calibration": info}


def pool_params(args) -> dict:
    """The settings a cached pool was calibrated with (a resumed campaign must use the same)."""
    return {"model": args.model, "candidates": args.candidates, "k": args.n, "max_new_tokens": args.response,
            "task": {"steps": [1, args.steps_max], "ops": args.ops}, "pool_size": args.pool_size,
            "val_size": args.val_size, "data_seed": args.data_seed}


def train_run(args, seed: int, arm: str, folder: Path, pool: dict) -> tuple[dict, float]:
    """One trainer run; returns (``dps_cpu_run.read_run`` output, wall seconds)."""
    ns = SimpleNamespace(model=args.model, train=pool["train"], val=pool["val"], train_max=args.pool_size,
                         val_max=args.val_size, seed=seed, response=args.response, batch=args.batch, n=args.n,
                         val_temperature=args.val_temperature, lr=args.lr, steps=args.steps, test_freq=args.test_freq)
    run_dir = folder / "run"
    cmd = [sys.executable, "-m", "rpo_verl.main", *dps_cpu_run.overrides(ns, arm, str(run_dir), validate_first=True),
           f"trainer.experiment_name=dps_real_{arm}_s{seed}"]
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[dps_real_run] seed {seed} {arm}: {' '.join(cmd[3:])}", flush=True)
    with dps_cpu_run.locked(args.lock), open(folder / "log.txt", "w") as log:
        start = time.monotonic()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
        wall = time.monotonic() - start
    if rc != 0:
        raise SystemExit(f"seed {seed} {arm} failed (exit {rc}); see {folder / 'log.txt'}")
    return dps_cpu_run.read_run(str(run_dir)), wall


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(ARMS, ("tab:gray", "tab:orange", "tab:green", "tab:blue"), strict=True))
    for r in runs:
        label = r["arm"] if r["seed"] == min(x["seed"] for x in runs if x["arm"] == r["arm"]) else None
        ax1.plot(r["val_rollouts"], r["val_acc"], marker="o", color=colors[r["arm"]], alpha=0.7, label=label)
        ax2.plot(range(1, r["steps"] + 1), r["effective_ratio_per_step"], color=colors[r["arm"]], alpha=0.7, label=label)
    ax1.set_xlabel("rollouts generated (cumulative)")
    ax1.set_ylabel("validation accuracy (pass@1)")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("effective prompt ratio")
    ax2.set_ylim(-0.05, 1.05)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("DPS real run (every seed shown)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    runs = campaign(args, train_run, commit, build_pool)
    if runs:
        plot(runs, Path(args.results).with_suffix(".png"))
    print(json.dumps(aggregate(runs), indent=1) if runs else "no runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
