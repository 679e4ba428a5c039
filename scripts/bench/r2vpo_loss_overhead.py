"""Loss-function overhead of R²VPO vs verl's ``vanilla`` PPO-clip loss (issue 6 target: ≤ 1.1×).

Both are called through verl's policy-loss registry exactly as ``ppo_loss`` calls them (same
ActorConfig, ``token-mean``, verl's global batch info), forward + backward to the log-probs, on
random ``[B*G, L]`` tensors with ~25% padding. Timings are interleaved (vanilla, r2vpo, vanilla,
...) and summarised by the median, so background load hits both alike; by default the clock is the
thread's CPU time with one torch thread, which other processes on a shared machine barely disturb. The r2vpo call includes
its metrics and the dual-variable bookkeeping (single process: no all-reduce), with λ held at 1
so that the variance penalty and the soft-clip metric are always computed.

    python scripts/bench/r2vpo_loss_overhead.py --out-dir outputs/bench/r2vpo_loss_overhead
Writes ``r2vpo_loss_overhead.json`` and ``r2vpo_loss_overhead.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _inputs(rows: int, length: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(rows, length, generator=g) * 4
    new = old + 0.05 * torch.randn(rows, length, generator=g)
    adv = torch.randn(rows, 1, generator=g).expand(rows, length).contiguous()
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return old, new, adv, mask


def _config(loss_mode: str):
    from verl.workers.config import ActorConfig

    from rpo_verl.r2vpo.config import R2VPOPolicyLossConfig

    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        # λ fixed at 1 (η = 0): the penalty and soft-clip paths are always exercised.
        policy_loss=R2VPOPolicyLossConfig(loss_mode=loss_mode, r2vpo={"lambda_init": 1.0, "eta": 0.0}),
    )


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def _time_once(fn, config, old, new, adv, mask, clock) -> float:
    leaf = new.clone().requires_grad_(True)
    start = clock()
    loss, _ = fn(old, leaf, adv, mask, loss_agg_mode="token-mean", config=config, rollout_is_weights=None)
    loss.backward()
    return clock() - start


def run(shapes: list[tuple[int, int]], repeats: int, threads: int, clock_name: str) -> dict:
    import torch
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    import rpo_verl.r2vpo as r2vpo
    from rpo_verl.r2vpo import dual

    torch.set_num_threads(threads)
    clock = CLOCKS[clock_name]
    if clock_name == "cpu" and threads != 1:
        raise SystemExit("--clock cpu measures this thread's CPU time: use --threads 1")
    r2vpo.register()
    fns = {"vanilla": get_policy_loss_fn("vanilla"), "r2vpo": get_policy_loss_fn("r2vpo")}
    configs = {name: _config(name) for name in fns}
    results = []
    for rows, length in shapes:
        tensors = _inputs(rows, length, seed=rows * 7 + length)
        for config in configs.values():
            config.global_batch_info.update(dp_size=1, batch_num_tokens=int(tensors[3].sum()), global_batch_size=rows)
        dual.reset_dual()
        for name in fns:  # warm-up
            for _ in range(3):
                _time_once(fns[name], configs[name], *tensors, clock)
        samples = {name: [] for name in fns}
        for _ in range(repeats):
            for name in fns:
                samples[name].append(_time_once(fns[name], configs[name], *tensors, clock))
        med = {name: statistics.median(v) for name, v in samples.items()}
        results.append(
            {
                "rows": rows,
                "length": length,
                "tokens": rows * length,
                "vanilla_ms": 1e3 * med["vanilla"],
                "r2vpo_ms": 1e3 * med["r2vpo"],
                "ratio": med["r2vpo"] / med["vanilla"],
                "vanilla_iqr_ms": 1e3 * (statistics.quantiles(samples["vanilla"], n=4)[2] - statistics.quantiles(samples["vanilla"], n=4)[0]),
                "r2vpo_iqr_ms": 1e3 * (statistics.quantiles(samples["r2vpo"], n=4)[2] - statistics.quantiles(samples["r2vpo"], n=4)[0]),
            }
        )
        print(
            f"[{rows}x{length}] vanilla {results[-1]['vanilla_ms']:.2f} ms  r2vpo {results[-1]['r2vpo_ms']:.2f} ms  "
            f"ratio {results[-1]['ratio']:.3f}",
            flush=True,
        )
    return {
        "benchmark": "r2vpo_loss_overhead",
        "what": "policy loss forward+backward to log-probs via verl's registry, token-mean, median of interleaved runs",
        "target_ratio": 1.1,
        "repeats": repeats,
        "torch_threads": threads,
        "clock": clock_name,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "commit": _commit(),
        "results": results,
    }


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    labels = [f"{r['rows']}x{r['length']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x = range(len(rows))
    ax1.bar([i - 0.2 for i in x], [r["vanilla_ms"] for r in rows], width=0.4, label="vanilla (PPO-clip)")
    ax1.bar([i + 0.2 for i in x], [r["r2vpo_ms"] for r in rows], width=0.4, label="r2vpo")
    ax1.set_xticks(list(x), labels)
    ax1.set_ylabel(f"forward+backward, ms {report['clock']} time (median)")
    ax1.set_xlabel("[B*G, L]")
    ax1.legend()
    ax2.plot(labels, [r["ratio"] for r in rows], marker="o")
    ax2.axhline(report["target_ratio"], color="red", linestyle="--", label="target 1.1x")
    ax2.set_ylabel("r2vpo / vanilla")
    ax2.set_xlabel("[B*G, L]")
    ax2.legend()
    fig.suptitle(f"R²VPO loss overhead ({report['machine'].split(',')[0]}, commit {report['commit']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="outputs/bench/r2vpo_loss_overhead")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this thread's CPU time (robust on a shared machine, needs --threads 1); wall: elapsed time",
    )
    parser.add_argument(
        "--shapes", default="64x256,256x512,256x2048,512x4096", help="comma-separated [B*G]x[L] shapes"
    )
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    report = run(shapes, args.repeats, args.threads, args.clock)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "r2vpo_loss_overhead.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot(report, os.path.join(args.out_dir, "r2vpo_loss_overhead.png"))
    print(f"wrote {args.out_dir}/r2vpo_loss_overhead.json and .png")


if __name__ == "__main__":
    main()
