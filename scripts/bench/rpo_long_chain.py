#!/usr/bin/env python
"""Full-path GRPO vs RPO-GRPO on the long-chain reasoning task (issue 14), over seeds, on CPU.

    python scripts/bench/rpo_long_chain.py [--seeds 0,1,2 --steps 20 --batch 8 --n 8 --response 320
        --max-cut 24 --out outputs/bench/rpo_long_chain --results scripts/bench/results/rpo_long_chain.json]
        [--rpo-override KEY=VALUE ...] [-- extra Hydra overrides for every arm]

Task: ``arith`` with ``style=reasoning`` (``scripts/prepare_data.py arith --style reasoning``: 1-3
additions, "explain step by step ... Final answer: N"), written to ``--train``/``--val`` if missing.
For each seed, both arms run ``python -m rpo_verl.main preset=cpu`` with the same model, data,
dataloader seed, steps, batch, sampling and validation set (``rpo_vs_full.py``'s overrides and
measurement hooks, imported from there). The RPO arm starts from an offline cache built for that
seed by ``scripts/build_cache.py`` from the initial policy (T 0.9, top-p 0.9, as in the paper) and
cuts prefixes in ``tail`` mode: the last ``t ~ U{1..max_cut}`` tokens are regenerated, a mean
suffix budget of ``(max_cut + 1) / 2`` tokens, which should be <= 5-10 % of the mean cached length
(the script prints the share and warns above 10 %).

Per run (the issue's schema): ``generated_tokens`` (every generated response token, all steps),
``full_path_equivalent_tokens`` (prefix + suffix; = generated for GRPO), ``mean_response_tokens``
(full-path-equivalent tokens per sample), ``rollout_s`` and ``step_s`` (mean seconds per step of
``timing_s/gen`` and ``timing_s/step``), ``val_acc`` (greedy validation accuracy at each evaluation,
step order) and ``val_acc_final``. Resumable: a finished (seed, arm) run leaves
``<out>/seed<S>/<arm>.done.json`` and is skipped (``--fresh`` reruns); the results file is rewritten
after every finished run. ``<out>/rpo_long_chain.details.json`` keeps the per-step series, cache
builds and settings; ``--results`` with ``.png`` is the figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rpo_vs_full  # noqa: E402 - the shared overrides, runner and metric readers

REPO = rpo_vs_full.REPO
CACHE_ROOT = rpo_vs_full.CACHE_ROOT
ARMS = ("grpo", "rpo")
TASK = "rpo_verl/arith style=reasoning (1-3 additions, operands 1-9, 'Final answer: N')"
RUN_KEYS = ("seed", "arm", "steps", "generated_tokens", "full_path_equivalent_tokens", "mean_response_tokens",
            "rollout_s", "step_s", "val_acc", "val_acc_final")


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    data = CACHE_ROOT / "data" / "arith_reasoning"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/bench/rpo_long_chain")
    p.add_argument("--results", default=str(REPO / "scripts" / "bench" / "results" / "rpo_long_chain.json"))
    p.add_argument("--model", default=str(CACHE_ROOT / "models" / "smollm2-135m-instruct"))
    p.add_argument("--train", default=str(data / "train.parquet"))
    p.add_argument("--val", default=str(data / "val.parquet"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--response", type=int, default=320)
    p.add_argument("--train-samples", type=int, default=160, help="training prompts (and cache records)")
    p.add_argument("--val-samples", type=int, default=64)
    p.add_argument("--test-freq", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-cut", type=int, default=24, help="tail cut: t ~ U{1..max_cut} tokens regenerated")
    p.add_argument("--cache-temperature", type=float, default=0.9)
    p.add_argument("--cache-top-p", type=float, default=0.9)
    p.add_argument("--rpo-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override for the RPO arm only, e.g. rpo_verl.rpo.loss.include_prefix=true")
    p.add_argument("--fresh", action="store_true", help="rerun (seed, arm) runs that finished")
    a = p.parse_args(argv[:split])
    a.extra = argv[split + 1:]
    a.seed_list = [int(s) for s in a.seeds.split(",") if s != ""]
    if not a.seed_list:
        p.error("--seeds: give at least one seed")
    for key in ("steps", "batch", "n", "response", "max_cut", "train_samples", "val_samples"):
        if getattr(a, key) < 1:
            p.error(f"--{key.replace('_', '-')}: must be >= 1")
    return a


def ensure_data(a) -> None:
    """Write the reasoning task's parquet files if they are missing (deterministic, seed 0)."""
    train, val = Path(a.train), Path(a.val)
    if train.exists() and val.exists():
        return
    if train.parent != val.parent:
        raise SystemExit(f"--train {train} / --val {val}: missing, and not in one folder to be written together")
    from rpo_verl.data import prepare_arith
    from rpo_verl.data.arith import reasoning_config

    prepare_arith(train.parent, n_train=2048, n_val=256, seed=0, cfg=reasoning_config())
    if train.name != "train.parquet" or val.name != "val.parquet":
        raise SystemExit(f"wrote {train.parent}/{{train,val}}.parquet; pass those paths as --train/--val")


MICRO_BATCH_KEYS = ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
                    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu")


def arm_args(a, seed: int) -> argparse.Namespace:
    """The Namespace ``rpo_vs_full.common_overrides`` / ``train_overrides`` read, for one seed.

    The CPU preset's micro-batches of 8 must divide the step's ``batch x n`` samples; unless the
    extra overrides set them, they become ``gcd(batch x n, 8)`` (8 for the campaign's 64 samples).
    """
    micro = math.gcd(a.batch * a.n, 8)
    fixed = [f"{key}={micro}" for key in MICRO_BATCH_KEYS if not any(x.startswith(f"{key}=") for x in a.extra)]
    return argparse.Namespace(**{**vars(a), "seed": seed, "extra": [*fixed, *a.extra]})


def rpo_overrides(a, seed: int, cache: Path) -> list[str]:
    return [
        "rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=offline", f"rpo_verl.rpo.cache.path={cache}",
        f"rpo_verl.rpo.cache.seed={seed}", "rpo_verl.rpo.prefix.mode=tail", f"rpo_verl.rpo.prefix.max_cut={a.max_cut}",
        *a.rpo_override,
    ]


def cache_stats(cache: Path, max_cut: int) -> dict:
    from rpo_verl.rpo.cache_file import read_cache_file

    state = read_cache_file(str(cache))
    mean_length = float(state["length"].mean())
    budget = (max_cut + 1) / 2
    return {"path": str(cache), "records": int(len(state["length"])), "tokens": int(state["length"].sum()),
            "mean_length": mean_length, "correct_frac": float(state["correct"].mean()),
            "mean_suffix_budget": budget, "suffix_budget_share": budget / mean_length if mean_length else float("nan")}


def build_cache(a, seed: int, folder: Path) -> dict:
    """The seed's offline cache from the initial policy (built once, reused afterwards)."""
    cache = folder / "cache.npz"
    info = {}
    if not cache.exists():
        started = time.monotonic()
        rpo_vs_full.run([sys.executable, "scripts/build_cache.py", "--out", str(cache), "--seed", str(seed),
                         "--temperature", str(a.cache_temperature), "--top-p", str(a.cache_top_p), "--",
                         *rpo_vs_full.common_overrides(arm_args(a, seed))],
                        folder / "build_cache.log", dict(os.environ, PYTHONUNBUFFERED="1"))
        info["wall_s"] = time.monotonic() - started
    info.update(cache_stats(cache, a.max_cut))
    if info["suffix_budget_share"] > 0.10:
        print(f"[rpo_long_chain] warning: mean suffix budget {info['mean_suffix_budget']:.1f} tokens is "
              f"{100 * info['suffix_budget_share']:.1f} % of the mean cached length {info['mean_length']:.1f} "
              "(goal <= 5-10 %): lower --max-cut", flush=True)
    return info


DIAGNOSTICS = ("rpo/prefix_age_mean", "rpo/prefix_age_max", "rpo/zero_variance_group_frac", "rpo/cache_correct_frac",
               "response_length/mean")


def with_diagnostics(series: dict, run_dir: Path) -> dict:
    """Add the per-step item-5 diagnostics the run logged (prefix age, zero-variance groups, ...)."""
    steps, _ = rpo_vs_full.read_steps(run_dir / "metrics.jsonl")
    order = sorted(steps)
    for key in DIAGNOSTICS:
        if order and all(key in steps[s] for s in order):
            series[f"diag:{key}"] = [float(steps[s][key]) for s in order]
    return series


def verl_runner(a) -> Callable[[int, str, Path], dict]:
    """``runner(seed, arm, folder) -> rpo_vs_full.arm_result(...)``: one real training run."""

    def runner(seed: int, arm: str, folder: Path) -> dict:
        s = arm_args(a, seed)
        extra = rpo_overrides(a, seed, folder / "cache.npz") if arm == "rpo" else []
        run_dir, dropped = folder / arm, folder / f"{arm}.dropped.jsonl"
        dropped.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "rpo_verl.main", *rpo_vs_full.common_overrides(s), *extra,
               *rpo_vs_full.train_overrides(s, run_dir)]
        wall = rpo_vs_full.run(cmd, folder / f"{arm}.log", rpo_vs_full.bench_env(dropped))
        return with_diagnostics(rpo_vs_full.arm_result(arm, run_dir, dropped, wall), run_dir)

    return runner


def run_record(seed: int, arm: str, series: dict, samples_per_step: int) -> dict:
    """The issue's per-run record from ``rpo_vs_full.arm_result``'s per-step series."""
    steps = len(series["steps"])
    generated = sum(series["generated_tokens"])
    full_path = sum(series.get("full_path_equiv_tokens", series["generated_tokens"]))
    val = [series["val_acc"][k] for k in sorted(series["val_acc"], key=int)]
    return {
        "seed": seed, "arm": arm, "steps": steps,
        "generated_tokens": int(round(generated)), "full_path_equivalent_tokens": int(round(full_path)),
        "mean_response_tokens": full_path / (steps * samples_per_step) if steps else float("nan"),
        "rollout_s": statistics.fmean(series["rollout_s"]) if steps else float("nan"),
        "step_s": statistics.fmean(series["step_s"]) if steps else float("nan"),
        "val_acc": val, "val_acc_final": val[-1] if val else float("nan"),
    }


def summary(runs: list[dict]) -> dict:
    """Per-seed RPO/GRPO ratios and their mean and spread (sample standard deviation)."""
    by = {(r["seed"], r["arm"]): r for r in runs}
    pairs = []
    for seed in sorted({r["seed"] for r in runs}):
        g, p = by.get((seed, "grpo")), by.get((seed, "rpo"))
        if g and p:
            pairs.append({"seed": seed, "tokens_ratio": p["generated_tokens"] / g["generated_tokens"],
                          "step_time_ratio": p["step_s"] / g["step_s"], "rollout_time_ratio": p["rollout_s"] / g["rollout_s"],
                          "val_acc_delta_points": 100 * (p["val_acc_final"] - g["val_acc_final"]),
                          "grpo_mean_response_tokens": g["mean_response_tokens"]})
    out = {"pairs": pairs}
    for key in ("tokens_ratio", "step_time_ratio", "rollout_time_ratio", "val_acc_delta_points",
                "grpo_mean_response_tokens"):
        values = [pair[key] for pair in pairs]
        if values:
            out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def plot(runs: list[dict], test_freq: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"grpo": "tab:blue", "rpo": "tab:orange"}
    for r in runs:
        xs = [i * test_freq for i in range(len(r["val_acc"]))]
        axes[0].plot(xs, r["val_acc"], marker="o", color=colors[r["arm"]], alpha=0.7, label=f"{r['arm']} seed {r['seed']}")
    axes[0].set_title("greedy validation accuracy")
    axes[0].set_xlabel("step (evaluations every test_freq)")
    axes[0].legend(fontsize=7)
    for ax, key, title in ((axes[1], "generated_tokens", "generated tokens (all steps)"),
                           (axes[2], "step_s", "mean step time (s)")):
        for i, arm in enumerate(ARMS):
            mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
            ax.bar([f"s{r['seed']}" for r in mine], [r[key] for r in mine], color=colors[arm], alpha=0.6 + 0.2 * i,
                   label=arm)
        ax.set_title(title)
        ax.legend()
    s = summary(runs)
    if "tokens_ratio" in s:
        fig.suptitle(f"RPO/GRPO over {len(s['pairs'])} seeds: tokens x{s['tokens_ratio']['mean']:.3f}, step time "
                     f"x{s['step_time_ratio']['mean']:.2f}, final val {s['val_acc_delta_points']['mean']:+.1f} points",
                     fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(path: Path, commit: str, runs: list[dict]) -> None:
    from rpo_verl.utils.atomic_files import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(runs, key=lambda r: (r["seed"], ARMS.index(r["arm"])))
    atomic_write_json(str(path), {"task": TASK, "commit": commit, "runs": ordered}, indent=1)


def campaign(a, runner: Callable[[int, str, Path], dict], commit: str,
             cache_builder: Callable | None = None) -> list[dict]:
    """Every (seed, arm) run, finished ones skipped; results and figure rewritten after each run."""
    out, results = Path(a.out).resolve(), Path(a.results).resolve()
    cache_builder = cache_builder or build_cache
    samples = a.batch * a.n
    details_path = out / "rpo_long_chain.details.json"
    details = json.loads(details_path.read_text()) if details_path.exists() else {}
    details.update(command=" ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                   settings={k: v for k, v in vars(a).items() if k not in ("seed_list",)})
    details.setdefault("caches", {})
    details.setdefault("series", {})
    runs = []
    for seed in a.seed_list:
        folder = out / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        for arm in ARMS:
            done = folder / f"{arm}.done.json"
            if done.exists() and not a.fresh:
                print(f"[rpo_long_chain] seed {seed} {arm}: finished, skipped", flush=True)
            else:
                if arm == "rpo":
                    details["caches"][str(seed)] = cache_builder(a, seed, folder)
                print(f"[rpo_long_chain] seed {seed} {arm}: running ...", flush=True)
                series = runner(seed, arm, folder)
                record = run_record(seed, arm, series, samples)
                done.write_text(json.dumps({"record": record, "series": series, "commit": commit}))
            finished = json.loads(done.read_text())
            runs.append(finished["record"])
            details["series"][f"{seed}/{arm}"] = {**finished["series"], "commit": finished.get("commit")}
            r = runs[-1]
            print(f"[rpo_long_chain] seed {seed} {arm}: tokens {r['generated_tokens']}, mean response "
                  f"{r['mean_response_tokens']:.1f}, step {r['step_s']:.1f} s, val {r['val_acc']}", flush=True)
            write_results(results, commit, runs)
            details["summary"] = summary(runs)
            details_path.write_text(json.dumps(details, indent=1))
            plot(runs, a.test_freq, results.with_suffix(".png"))
    return runs


def main() -> int:
    a = parse_args()
    ensure_data(a)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    runs = campaign(a, verl_runner(a), commit)
    s = summary(runs)
    if "tokens_ratio" in s:
        print(f"[rpo_long_chain] RPO/GRPO over {len(s['pairs'])} seeds: tokens x{s['tokens_ratio']['mean']:.3f} "
              f"(sd {s['tokens_ratio']['std']:.3f}), step time x{s['step_time_ratio']['mean']:.3f}, final val "
              f"{s['val_acc_delta_points']['mean']:+.1f} points; GRPO mean response "
              f"{s['grpo_mean_response_tokens']['mean']:.0f} tokens")
    print(f"[rpo_long_chain] wrote {a.results} and {Path(a.results).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
