#!/usr/bin/env python
"""RPO-GRPO vs GRPO over several cache settings and seeds: is RPO's accuracy drop on SmolLM2 real?

    python scripts/bench/rpo_study.py --out outputs/bench/rpo_study [--variants paper_cache_seed1,...]

Each variant is one ``scripts/bench/rpo_vs_full.py`` invocation (GRPO and RPO-GRPO on the same
data, seed, steps and validation set) in ``<out>/<variant>``; finished invocations are reused.
Variants (all: 8 steps x 4 prompts x 4 samples, ratio cut keeping 50-90 %, eps-greedy update):

* ``paper_cache_seed{1,2}``: offline cache sampled as in the paper (T 0.9, top-p 0.9) (seed 0 is
  ``rpo_vs_full.py``'s default run);
* ``greedy_cache``: offline cache decoded greedily (the initial policy's most likely path, which is
  what greedy validation measures);
* ``include_prefix``: paper cache, prefix tokens under the loss (the paper's released code), old
  log-probs recomputed by the trainer (``bypass_mode=false``);
* ``paper_cache_lr1e-5``, ``include_prefix_lr1e-5``: the same at learning rate 1e-5 instead of 3e-5
  (both arms).

Writes ``<out>/rpo_study.json`` (per variant: the two arms' validation accuracy per step, mean
validation accuracy over the steps after 0, final delta in points, token and rollout-time ratios)
and ``<out>/rpo_study.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX_ON_LOSS = ["--rpo-override", "rpo_verl.rpo.loss.include_prefix=true",
                  "--rpo-override", "algorithm.rollout_correction.bypass_mode=false"]
VARIANTS = {
    "paper_cache_seed1": ["--seed", "1"],
    "paper_cache_seed2": ["--seed", "2"],
    "greedy_cache": ["--cache-temperature", "0"],
    "include_prefix": PREFIX_ON_LOSS,
    "paper_cache_lr1e-5": ["--lr", "1e-5"],
    "include_prefix_lr1e-5": ["--lr", "1e-5", *PREFIX_ON_LOSS],
}


def summarise(report: dict) -> dict:
    grpo, rpo = report["arms"]["grpo"], report["arms"]["rpo_grpo"]
    comparison = report["comparisons"]["rpo_grpo_vs_grpo"]
    later = [k for k in grpo["val_acc"] if int(k) > 0]

    def mean_val(arm):
        return sum(arm["val_acc"][k] for k in later) / len(later)

    return {
        "commit": report["commit"], "command": report["command"],
        "arm_commits": {name: arm.get("commit") for name, arm in report["arms"].items()},
        "cache_correct_frac": report["cache_build"]["correct_frac"],
        "cache_mean_length": report["cache_build"]["mean_length"],
        "val_acc_grpo": grpo["val_acc"], "val_acc_rpo": rpo["val_acc"],
        "mean_val_after_0_grpo": mean_val(grpo), "mean_val_after_0_rpo": mean_val(rpo),
        "final_delta_points": comparison["final_val_acc_delta_points"],
        "generated_tokens_ratio": comparison["generated_tokens_ratio"],
        "rollout_time_ratio": comparison["rollout_time_ratio"],
        "zero_variance_group_frac_rpo": sum(rpo["zero_variance_group_frac"]) / len(rpo["zero_variance_group_frac"]),
        "train_reward_grpo": grpo["train_reward"], "train_reward_rpo": rpo["train_reward"],
    }


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(study), figsize=(4 * len(study), 3.6), sharey=True, squeeze=False)
    for ax, (name, s) in zip(axes[0], study.items()):
        for label, key, style in (("GRPO", "val_acc_grpo", "--"), ("RPO-GRPO", "val_acc_rpo", "-")):
            xs = sorted(int(k) for k in s[key])
            ax.plot(xs, [s[key][str(x)] for x in xs], style, marker="o", label=label)
        ax.set_title(f"{name}\ntokens x{s['generated_tokens_ratio']:.2f}, rollout x{s['rollout_time_ratio']:.2f}",
                     fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("greedy validation accuracy")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/bench/rpo_study")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    a = p.parse_args()
    out = Path(a.out).resolve()
    study = {}
    for name in a.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r}; choose from {list(VARIANTS)}")
        folder = out / name
        print(f"[rpo_study] {name} ...", flush=True)
        subprocess.run([sys.executable, str(REPO / "scripts" / "bench" / "rpo_vs_full.py"), "--out", str(folder),
                        *VARIANTS[name]], cwd=REPO, check=True)
        study[name] = summarise(json.loads((folder / "rpo_vs_full.json").read_text()))
        s = study[name]
        print(f"[rpo_study] {name}: mean val after step 0 GRPO {s['mean_val_after_0_grpo']:.3f} vs RPO "
              f"{s['mean_val_after_0_rpo']:.3f}; final delta {s['final_delta_points']:+.1f} points; tokens "
              f"x{s['generated_tokens_ratio']:.2f}", flush=True)
    (out / "rpo_study.json").write_text(json.dumps(study, indent=1))
    plot(study, out / "rpo_study.png")
    print(f"[rpo_study] wrote {out / 'rpo_study.json'} and {out / 'rpo_study.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
