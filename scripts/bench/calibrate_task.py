#!/usr/bin/env python
"""Measure a model's pass@1 on the synthetic arithmetic task (HF generate, chat template, sampling).

  python scripts/bench/calibrate_task.py --n-prompts 64 --k 4 --seed 0
  python scripts/bench/calibrate_task.py --style reasoning --max-new-tokens 320 --n-prompts 64 --k 4

Samples k responses per prompt at temperature 1 (top-k/top-p off, as verl's rollout default),
grades them with ``rpo_verl.reward.compute_score`` and reports pass@1, the fraction of groups that
are partially solved (what GRPO learns from), response lengths and the share cut at the token
budget (mean / median / p90, overall and per number of operations). Writes JSON and a PNG bar plot
of correct-answers-per-group.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rpo_verl.data.arith import make_rows, task_config
from rpo_verl.models import default_model_path
from rpo_verl.reward import compute_score


def sample(model, tokenizer, prompts: list[list[dict]], k: int, max_new_tokens: int, batch: int, seed: int):
    """k sampled completions per prompt: list (per prompt) of list of (text, n_tokens, hit_budget)."""
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    per_call = max(1, batch // k)
    results = []
    torch.manual_seed(seed)
    for start in range(0, len(texts), per_call):
        enc = tokenizer(texts[start : start + per_call], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                num_return_sequences=k, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        new = out[:, enc.input_ids.shape[1] :]
        for i in range(0, new.shape[0], k):
            group = []
            for row in new[i : i + k]:
                ended = (row == tokenizer.eos_token_id).nonzero()
                length = int(ended[0]) + 1 if len(ended) else int((row != tokenizer.pad_token_id).sum())
                group.append((tokenizer.decode(row[:length], skip_special_tokens=True), length, not len(ended)))
            results.append(group)
        print(f"[calibrate] {len(results)}/{len(texts)} prompts", flush=True)
    return results


def length_stats(lengths: list[int]) -> dict:
    """mean / median / p90 of response lengths (tokens)."""
    import numpy as np

    values = np.asarray(lengths, dtype=np.float64)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def summarize(rows, groups, k: int) -> dict:
    correct_per_group, lengths, cut, tagged, examples, per_group = [], [], 0, 0, [], []
    for row, group in zip(rows, groups):
        truth = row["reward_model"]["ground_truth"]
        hits = 0
        for text, length, hit_budget in group:
            res = compute_score(row["data_source"], text, truth, row["extra_info"])
            hits += int(res["acc"])
            lengths.append(length)
            cut += hit_budget
            tagged += "answer:" in text.lower() or "\\boxed{" in text
            if len(examples) < 12:
                examples.append({"prompt": row["prompt"][0]["content"], "truth": truth, "response": text, **res})
        correct_per_group.append(hits)
        per_group.append({"expr": row["extra_info"].get("expr"), "steps": row["extra_info"].get("steps"),
                          "truth": truth, "correct": hits, "lengths": [g[1] for g in group]})
    n = len(lengths)
    hist = Counter(correct_per_group)
    by_steps = {}
    for steps in sorted({g["steps"] for g in per_group}):
        mine = [g for g in per_group if g["steps"] == steps]
        by_steps[str(steps)] = {"prompts": len(mine), "pass_at_1": sum(g["correct"] for g in mine) / (k * len(mine)),
                                **length_stats([x for g in mine for x in g["lengths"]])}
    return {
        **{f"{key}_response_tokens": value for key, value in length_stats(lengths).items()},
        "by_steps": by_steps,
        "pass_at_1": sum(correct_per_group) / n,
        "groups_partially_solved": sum(0 < c < k for c in correct_per_group) / len(groups),
        "groups_all_correct": hist[k] / len(groups),
        "groups_all_wrong": hist[0] / len(groups),
        "correct_per_group_histogram": {str(c): hist[c] for c in range(k + 1)},
        "max_response_tokens_seen": max(lengths),
        "frac_hit_token_budget": cut / n,
        "frac_with_answer_tag": tagged / n,
        "examples": examples,
        "groups": per_group,
    }


def plot(result: dict, k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["correct_per_group_histogram"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([int(c) for c in hist], list(hist.values()), color="tab:blue")
    ax.set_xlabel(f"correct answers in a group of {k}")
    ax.set_ylabel("prompts")
    ax.set_title(f"pass@1 {result['pass_at_1']:.2f}, partially solved {result['groups_partially_solved']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder (default: prepared SmolLM2-135M-Instruct)")
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="task seed and sampling seed")
    parser.add_argument("--split", default="val")
    parser.add_argument("--style", choices=("oneline", "reasoning"), default="oneline")
    parser.add_argument("--steps", type=int, default=None, help="default: the style's (1)")
    parser.add_argument("--steps-max", type=int, default=None, help="difficulty mix (reasoning default: 3)")
    parser.add_argument("--max-operand", type=int, default=None, help="default: 9")
    parser.add_argument("--ops", default=None, help="comma list of add,sub,mul (default: add)")
    parser.add_argument("--instruction", default=None, help="instruction template ({name}, {item}, {expr})")
    parser.add_argument("--question", choices=("word", "bare"), default=None,
                        help="word: the story (default); bare: only 'What is <expr>?'")
    parser.add_argument("--plain", action="store_true", help="use the harder PLAIN_INSTRUCTION")
    parser.add_argument("--batch", type=int, default=64, help="sequences per generate call")
    parser.add_argument("--out", default="outputs/bench/calibrate_task", help="output prefix (.json, .png)")
    args = parser.parse_args()

    model_path = args.model or str(default_model_path())
    cfg = task_config(args.style, args.plain, steps=args.steps, steps_max=args.steps_max,
                      max_operand=args.max_operand, ops=tuple(args.ops.split(",")) if args.ops else None,
                      instruction=args.instruction, question=args.question)
    rows = make_rows(args.n_prompts, args.seed, args.split, cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    started = time.time()
    groups = sample(model, tokenizer, [r["prompt"] for r in rows], args.k, args.max_new_tokens, args.batch, args.seed)
    result = summarize(rows, groups, args.k)
    result.update(
        seconds=round(time.time() - started, 1), args=vars(args), task=repr(cfg), model=model_path,
        commit=commit, machine=f"{platform.machine()}, {os.cpu_count()} logical CPUs, torch threads "
        f"{torch.get_num_threads()}",
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, args.k, out.with_suffix(".png"))
    brief = {key: result[key] for key in ("pass_at_1", "groups_partially_solved", "mean_response_tokens",
                                           "median_response_tokens", "p90_response_tokens",
                                           "frac_hit_token_budget", "frac_with_answer_tag", "seconds")}
    print(json.dumps(brief), f"-> {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
