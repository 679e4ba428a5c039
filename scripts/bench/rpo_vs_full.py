#!/usr/bin/env python
"""Full-path GRPO vs RPO-GRPO (and, with --dapo, DAPO vs RPO-DAPO) in one invocation, on CPU.

    python scripts/bench/rpo_vs_full.py --out runs/bench/rpo_vs_full [--steps 8 --batch 4 --n 4 --dapo]
        [--cache-temperature 0.9 --rpo-override rpo_verl.rpo.cache.update=best ...]
        [-- extra Hydra overrides for every arm]

Every arm is ``python -m rpo_verl.main preset=cpu`` with the same model (SmolLM2-135M-Instruct),
data (the synthetic arithmetic task from ``scripts/prepare_data.py``, a fixed subset of
``--train-samples`` prompts), dataloader seed, batch, steps and validation set. The RPO arms start
from an offline cache built first by ``scripts/build_cache.py`` from the same config (its time
and tokens are reported separately: they are RPO's one-off cost), and cut prefixes with
``prefix.mode=ratio`` (the answers of this task are one short line; the paper's ``tail`` cut of up
to 299 tokens would remove whole responses).

Measurement (``rpo_bench_hooks.py``, loaded in every arm's processes): verl's replay-buffer poll
interval lowered from 2 s to 0.05 s so that the rollout phase (``timing_s/gen``) is not rounded to
2 s steps; tokens of groups the replay buffer drops (DAPO) are counted. Generated tokens per step
= ``eff/gen_tokens`` (response_mask sum of the trained batch: suffixes only under RPO) + dropped
groups' response_mask sums (baseline arms); ``eff/generated_tokens`` (RPO arms: the extension's
count of generated suffix tokens, dropped groups included, which stays right when
``rpo_verl.rpo.loss.include_prefix=true`` puts the prefix under the response mask).

Writes ``<out>/rpo_vs_full.json`` (per-step values, totals and ratios RPO/baseline) and
``<out>/rpo_vs_full.png``. Arms already finished in ``<out>`` are reused (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_ROOT = Path(os.environ.get("RPO_VERL_CACHE", Path.home() / ".cache" / "rpo_verl"))
ACC_KEY = "val-core/rpo_verl/arith/acc/mean@1"


def parse_args():
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench/rpo_vs_full")
    p.add_argument("--model", default=str(CACHE_ROOT / "models" / "smollm2-135m-instruct"))
    p.add_argument("--train", default=str(CACHE_ROOT / "data" / "arith" / "train.parquet"))
    p.add_argument("--val", default=str(CACHE_ROOT / "data" / "arith" / "val.parquet"))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--response", type=int, default=48)
    p.add_argument("--train-samples", type=int, default=64)
    p.add_argument("--val-samples", type=int, default=32)
    p.add_argument("--test-freq", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=0, help="dataloader and RPO seeds")
    p.add_argument("--ratio-lo", type=float, default=0.5)
    p.add_argument("--ratio-hi", type=float, default=0.9)
    p.add_argument("--slack", type=int, default=16)
    p.add_argument("--cache-temperature", type=float, default=0.9,
                   help="offline cache sampling temperature (paper 0.9; 0 = greedy)")
    p.add_argument("--cache-top-p", type=float, default=0.9)
    p.add_argument("--rpo-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override for the RPO arms only (repeatable), e.g. rpo_verl.rpo.cache.update=best")
    p.add_argument("--dapo", action="store_true", help="also DAPO vs RPO-DAPO")
    p.add_argument("--fresh", action="store_true", help="rerun arms whose results exist")
    args = p.parse_args(argv[:split])
    args.extra = argv[split + 1:]
    return args


def common_overrides(a) -> list[str]:
    return [
        "preset=cpu",
        f"actor_rollout_ref.model.path={a.model}",
        f"data.train_files={a.train}", f"data.val_files={a.val}",
        f"data.train_max_samples={a.train_samples}", f"data.val_max_samples={a.val_samples}",
        f"data.seed={a.seed}",
        "data.max_prompt_length=128", f"data.max_response_length={a.response}",
        f"data.train_batch_size={a.batch}", f"actor_rollout_ref.rollout.n={a.n}",
        "actor_rollout_ref.rollout.temperature=1.0",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={a.batch}", f"actor_rollout_ref.actor.optim.lr={a.lr}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        "algorithm.rollout_correction.bypass_mode=true",
        "reward.custom_reward_function.path=pkg://rpo_verl.reward.score",
        "reward.custom_reward_function.name=compute_score",
        *a.extra,
    ]


def train_overrides(a, run_dir: Path) -> list[str]:
    return [
        f"trainer.total_training_steps={a.steps}", f"trainer.test_freq={a.test_freq}", "trainer.save_freq=-1",
        "trainer.val_before_train=true", f"trainer.default_local_dir={run_dir}", "trainer.resume_mode=disable",
        f"trainer.experiment_name={run_dir.name}",
    ]


def dapo_overrides(a) -> list[str]:
    return [
        "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc",
        "actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean", "reward.reward_manager.name=dapo",
        f"+reward.reward_kwargs.max_resp_len={a.response}",
        "+reward.reward_kwargs.overlong_buffer_cfg.enable=true",
        f"+reward.reward_kwargs.overlong_buffer_cfg.len={max(1, a.response // 4)}",
        "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
        "+reward.reward_kwargs.overlong_buffer_cfg.log=false",
    ]


def rpo_overrides(a, cache: Path) -> list[str]:
    return [
        "rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=offline", f"rpo_verl.rpo.cache.path={cache}",
        f"rpo_verl.rpo.cache.seed={a.seed}", "rpo_verl.rpo.prefix.mode=ratio",
        f"rpo_verl.rpo.prefix.ratio_lo={a.ratio_lo}", f"rpo_verl.rpo.prefix.ratio_hi={a.ratio_hi}",
        f"rpo_verl.rpo.prefix.slack={a.slack}",
        *a.rpo_override,
    ]


def bench_env(dropped_file: Path) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RPO_BENCH_DROPPED_FILE=str(dropped_file))
    modules = [m for m in env.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    env["VERL_USE_EXTERNAL_MODULES"] = ",".join([*modules, "rpo_bench_hooks"])
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run(cmd: list[str], log: Path, env: dict) -> float:
    start = time.monotonic()
    with open(log, "w") as handle:
        rc = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (rc={rc}); see {log}")
    return time.monotonic() - start


def read_steps(metrics_file: Path) -> tuple[dict, dict]:
    """(training steps {step: metrics}, validation {step: accuracy})."""
    from rpo_verl.trainer.metrics_file import read_records

    steps, val = {}, {}
    for step, m in read_records([str(metrics_file)]):
        if ACC_KEY in m:
            val[step] = float(m[ACC_KEY])
        if "training/global_step" in m:
            steps[step] = m
    return steps, val


def arm_result(name: str, run_dir: Path, dropped_file: Path, wall_s: float) -> dict:
    steps, val = read_steps(run_dir / "metrics.jsonl")
    dropped: dict[int, list] = {}
    if dropped_file.exists():
        for line in dropped_file.read_text().splitlines():
            r = json.loads(line)
            dropped.setdefault(int(r["step"]), []).append(r)
    order = sorted(steps)
    gen = [float(steps[s]["eff/gen_tokens"]) + sum(r["tokens"] for r in dropped.get(s, [])) for s in order]
    out = {
        "name": name, "steps": order, "wall_s": wall_s,
        "generated_tokens": gen,
        "rollout_s": [float(steps[s]["timing_s/gen"]) for s in order],
        "step_s": [float(steps[s]["timing_s/step"]) for s in order],
        "dropped_samples": [sum(r["samples"] for r in dropped.get(s, [])) for s in order],
        "val_acc": {str(k): v for k, v in sorted(val.items())},
        "train_reward": [float(steps[s].get("critic/score/mean", float("nan"))) for s in order],
    }
    if "eff/generated_tokens" in steps[order[0]]:  # RPO arm: the extension's own accounting
        out["rpo_generated_tokens"] = [float(steps[s]["eff/generated_tokens"]) for s in order]
        out["full_path_equiv_tokens"] = [float(steps[s]["eff/full_path_equiv_tokens"]) for s in order]
        out["prefix_fraction"] = [float(steps[s]["rpo/prefix_fraction"]) for s in order]
        out["cache_hit_rate"] = [float(steps[s]["rpo/cache_hit_rate"]) for s in order]
        out["zero_variance_group_frac"] = [float(steps[s]["rpo/zero_variance_group_frac"]) for s in order]
        out["suffix_truncation_rate"] = [float(steps[s].get("rpo/suffix_truncation_rate", 0.0)) for s in order]
        # The response_mask sum counts the cached prefix as well under include_prefix=true; the
        # extension counts the tokens actually generated (dropped groups included).
        out["loss_tokens"], out["generated_tokens"] = gen, out["rpo_generated_tokens"]
    return out


def compare(base: dict, rpo: dict) -> dict:
    def ratio(key):
        b, r = sum(base[key]), sum(rpo[key])
        return r / b if b else float("nan")

    last = max(base["val_acc"], key=int)
    return {
        "generated_tokens_ratio": ratio("generated_tokens"),
        "rollout_time_ratio": ratio("rollout_s"),
        "step_time_ratio": ratio("step_s"),
        "per_step_generated_tokens_ratio": [r / b if b else None for b, r in zip(base["generated_tokens"], rpo["generated_tokens"])],
        "per_step_rollout_time_ratio": [r / b if b else None for b, r in zip(base["rollout_s"], rpo["rollout_s"])],
        "per_step_step_time_ratio": [r / b if b else None for b, r in zip(base["step_s"], rpo["step_s"])],
        "final_val_step": int(last),
        "final_val_acc_baseline": base["val_acc"][last],
        "final_val_acc_rpo": rpo["val_acc"].get(last),
        "final_val_acc_delta_points": 100 * (rpo["val_acc"].get(last, float("nan")) - base["val_acc"][last]),
    }


def plot(results: dict, pairs: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    panels = [("generated_tokens", "generated tokens / step"), ("rollout_s", "rollout phase (s) / step"),
              ("step_s", "step time (s)")]
    for ax, (key, title) in zip(axes, panels):
        for name, arm in results.items():
            ax.plot(arm["steps"], arm[key], marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    ax = axes[3]
    for name, arm in results.items():
        xs = sorted(int(k) for k in arm["val_acc"])
        ax.plot(xs, [arm["val_acc"][str(x)] for x in xs], marker="o", label=name)
    ax.set_title("validation accuracy")
    ax.set_xlabel("step")
    axes[0].legend()
    text = "; ".join(f"{r}/{b}: tokens x{c['generated_tokens_ratio']:.2f}, rollout x{c['rollout_time_ratio']:.2f}, "
                     f"step x{c['step_time_ratio']:.2f}" for b, r, c in pairs)
    fig.suptitle(text, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    a = parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    common = common_overrides(a)

    # 1. RPO's offline cache (one response per training prompt, initial policy; paper: T=0.9, top-p 0.9)
    cache = out / "cache" / "arith_cache.npz"
    build = {"path": str(cache)}
    if a.fresh and cache.parent.exists():
        shutil.rmtree(cache.parent)
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        build["wall_s"] = run([sys.executable, "scripts/build_cache.py", "--out", str(cache),
                               "--temperature", str(a.cache_temperature), "--top-p", str(a.cache_top_p), "--", *common],
                              out / "build_cache.log", dict(os.environ, PYTHONUNBUFFERED="1"))
    from rpo_verl.rpo.cache_file import read_cache_file

    state = read_cache_file(str(cache))
    build.update({"records": int(len(state["length"])), "tokens": int(state["length"].sum()),
                  "mean_length": float(state["length"].mean()), "correct_frac": float(state["correct"].mean())})
    print(f"[rpo_vs_full] cache: {build}")

    # 2. the arms
    arms = [("grpo", []), ("rpo_grpo", rpo_overrides(a, cache))]
    if a.dapo:
        arms += [("dapo", dapo_overrides(a)), ("rpo_dapo", dapo_overrides(a) + rpo_overrides(a, cache))]
    results = {}
    for name, extra in arms:
        run_dir = out / name
        dropped = out / f"{name}.dropped.jsonl"
        done_file = out / f"{name}.done.json"
        if a.fresh or not done_file.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            dropped.unlink(missing_ok=True)
            print(f"[rpo_vs_full] running {name} ...", flush=True)
            wall = run([sys.executable, "-m", "rpo_verl.main", *common, *extra, *train_overrides(a, run_dir)],
                       out / f"{name}.log", bench_env(dropped))
            done_file.write_text(json.dumps({"wall_s": wall, "commit": commit}))
        done = json.loads(done_file.read_text())
        results[name] = arm_result(name, run_dir, dropped, done["wall_s"])
        results[name]["commit"] = done.get("commit")  # a reused arm ran at its own commit
        r = results[name]
        print(f"[rpo_vs_full] {name}: tokens {sum(r['generated_tokens']):.0f}, rollout {sum(r['rollout_s']):.1f} s, "
              f"steps {sum(r['step_s']):.1f} s, val {r['val_acc']}", flush=True)

    pairs = [("grpo", "rpo_grpo", compare(results["grpo"], results["rpo_grpo"]))]
    if a.dapo:
        pairs.append(("dapo", "rpo_dapo", compare(results["dapo"], results["rpo_dapo"])))
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), no GPU",
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "settings": {k: v for k, v in vars(a).items() if k != "extra"} | {"extra": a.extra},
        "cache_build": build, "arms": results,
        "comparisons": {f"{r}_vs_{b}": c for b, r, c in pairs},
    }
    (out / "rpo_vs_full.json").write_text(json.dumps(report, indent=1))
    plot(results, pairs, out / "rpo_vs_full.png")
    for b, r, c in pairs:
        print(f"[rpo_vs_full] {r} vs {b}: generated tokens x{c['generated_tokens_ratio']:.3f}, rollout time "
              f"x{c['rollout_time_ratio']:.3f}, step time x{c['step_time_ratio']:.3f}, val acc at step "
              f"{c['final_val_step']}: {c['final_val_acc_rpo']} vs {c['final_val_acc_baseline']}")
    print(f"[rpo_vs_full] wrote {out / 'rpo_vs_full.json'} and {out / 'rpo_vs_full.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
