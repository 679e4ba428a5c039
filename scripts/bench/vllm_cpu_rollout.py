#!/usr/bin/env python
"""Rollout speed inside verl on CPU: verl's vLLM server (vLLM's CPU build) vs rpo_verl's HF server.

    .venv-vllm/bin/python scripts/bench/vllm_cpu_rollout.py [--styles chain,oneline] [--steps 2]

For each prompt style and engine, one ``python -m rpo_verl.main preset=cpu`` run of
SmolLM2-135M-Instruct on the same 16 arithmetic prompts x n=4 samples (batch 64), ``--steps``
steps; the figures are those of the *last* step, so engine start-up, the first request's warm-up
and the first weight push stay outside the timed step. The actor update is skipped
(``trainer.critic_warmup`` past the last step): a step is rollout + reward + log-prob
recomputation + weight push, so the rollout dominates as it does with a larger model.
Styles: ``chain`` ("Explain your reasoning step by step, then state the final answer.", up to
``--chain-tokens``) and ``oneline`` ("Reply with just the number.", up to ``--oneline-tokens``).
Both engines run in the same invocation (needs the vLLM virtualenv: scripts/setup_env.sh --vllm).
Resumable: a (style, engine) pair already in the results file is skipped. Writes
scripts/bench/results/vllm_cpu_rollout.json and .png; the 1-minute load average before/after each
run is recorded (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rpo_verl.models.paths import default_model_path  # noqa: E402
from rpo_verl.trainer.metrics_file import read_records  # noqa: E402

RESULTS = ROOT / "scripts" / "bench" / "results" / "vllm_cpu_rollout.json"
STYLES = {
    "chain": "Explain your reasoning step by step, then state the final answer.",
    "oneline": "Reply with just the number.",
}
PROMPTS, N = 16, 4


def write_prompts(path: Path, style: str) -> None:
    rows = []
    for i in range(PROMPTS):
        a, b = 12 + 7 * i, 5 + 3 * i
        rows.append({"data_source": "rpo_verl/arith", "ability": "math",
                     "prompt": [{"role": "user", "content": f"What is {a} + {b}? {STYLES[style]}"}],
                     "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                     "extra_info": {"split": "train", "index": i}})
    pd.DataFrame(rows).to_parquet(path)


def run_one(engine: str, style: str, max_tokens: int, steps: int, work: Path, model: str) -> dict:
    data = work / f"{style}.parquet"
    write_prompts(data, style)
    run_dir = work / f"{style}_{engine}"
    args = [
        "preset=cpu", f"actor_rollout_ref.rollout.name={engine}", f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data}", f"data.val_files={data}", f"data.train_batch_size={PROMPTS}",
        "data.max_prompt_length=128", f"data.max_response_length={max_tokens}", f"actor_rollout_ref.rollout.n={N}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS}", "actor_rollout_ref.rollout.temperature=1.0",
        f"trainer.total_training_steps={steps}", f"trainer.critic_warmup={steps + 1}",
        "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1",
        "trainer.resume_mode=disable", "reward.custom_reward_function.path=pkg://rpo_verl.reward.score",
        "reward.custom_reward_function.name=compute_score", f"trainer.default_local_dir={run_dir}", "trainer.experiment_name=bench",
    ]
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    with open(work / f"{style}_{engine}.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "rpo_verl.main", *args], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{engine}/{style} failed (rc {done.returncode}); log {work / f'{style}_{engine}.log'}")
    steps_m = {s: m for s, m in read_records([str(run_dir / "metrics.jsonl")]) if "training/global_step" in m}
    m = steps_m[max(steps_m)]
    batch = PROMPTS * N
    mean_len = float(m["response_length/mean"])
    return {"engine": engine, "style": style, "tokens_per_s": batch * mean_len / float(m["timing_s/gen"]),
            "step_s": float(m["timing_s/step"]), "gen_s": float(m["timing_s/gen"]), "batch": batch,
            "mean_response_tokens": mean_len, "max_tokens": max_tokens, "step": max(steps_m),
            "run_wall_s": time.monotonic() - start, "load1_before": load_before, "load1_after": os.getloadavg()[0]}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = sorted({r["style"] for r in runs})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in ((axes[0], "tokens_per_s", "generated tokens / s"), (axes[1], "step_s", "step time (s)")):
        for j, engine in enumerate(("hf", "vllm")):
            vals = [next((r[key] for r in runs if r["style"] == s and r["engine"] == engine), 0) for s in styles]
            ax.bar([i + 0.4 * j for i in range(len(styles))], vals, width=0.4, label=engine)
        ax.set_xticks([i + 0.2 for i in range(len(styles))], styles)
        ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle("verl rollout on CPU, SmolLM2-135M, batch 64 (last step)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", default="chain,oneline")
    parser.add_argument("--engines", default="vllm,hf")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--chain-tokens", type=int, default=128)
    parser.add_argument("--oneline-tokens", type=int, default=32)
    parser.add_argument("--work", default=str(ROOT / "outputs" / "bench" / "vllm_cpu_rollout"))
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    for style in args.styles.split(","):
        for engine in args.engines.split(","):
            if any(r["engine"] == engine and r["style"] == style for r in results["runs"]):
                print(f"[bench] {style}/{engine}: already measured, skipped")
                continue
            tokens = args.chain_tokens if style == "chain" else args.oneline_tokens
            run = run_one(engine, style, tokens, args.steps, work, args.model)
            run["commit"] = commit
            results["runs"].append(run)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
            print(f"[bench] {style}/{engine}: {run['tokens_per_s']:.1f} tok/s, step {run['step_s']:.1f} s, "
                  f"mean {run['mean_response_tokens']:.1f} tokens, load {run['load1_before']:.1f}")
    plot(results["runs"], RESULTS.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
