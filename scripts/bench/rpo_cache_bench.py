#!/usr/bin/env python
"""RPO cache service microbenchmark: prefixes + update latency for a batch of prompts, and memory
of the experience cache at 10^6 records.

  python scripts/bench/rpo_cache_bench.py --records 1000000 --mean-len 256 --batch 1024 --n 8 \
      --iters 60 --out-dir outputs/bench/rpo_cache [--ray]

1. Fills one ``CacheService`` (what the Ray actor runs) with ``--records`` trajectories of
   ``U[mean/2, 3*mean/2]`` random tokens, in write_many chunks, and reports the store's allocated
   bytes (token blocks at capacity + metadata + slot table) against the bare int32 size of the
   tokens (target <= 1.2x), plus the process RSS growth.
2. Times ``--iters`` steps of ``sample_prefix_batch`` for ``--batch`` distinct prompts followed by
   ``update`` with ``--n`` trajectories per prompt (prefix + random suffix up to the budget,
   eps-greedy), for ``tail`` cuts and for ``tail`` + newline alignment. Building the update batch
   (the trainer's side) is not timed. Compactions triggered by replaced records are counted and
   show up in the max column.
3. ``--ray``: the same calls through the Ray cache service (``--ray-records`` records,
   ``--ray-shards`` actors, the same fill), step by step alternately with the in-process service
   on the same prompts, so both see the same machine load: medians of each and of their ratio.
   Floors: an empty Ray actor round trip, and shipping all of a step's candidate arrays to an
   actor that discards them (what the single-call update used to send).

Writes ``rpo_cache_bench.json`` and ``rpo_cache_bench.png`` in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil

from rpo_verl.rpo.batches import UpdateBatch
from rpo_verl.rpo.cache_service import CacheService
from rpo_verl.rpo.config import RPOCacheConfig, RPOConfig, RPOPrefixConfig

TARGET_MS = 10.0
TARGET_MEM_RATIO = 1.2
VOCAB = 49152  # SmolLM2's vocabulary size
NEWLINE_IDS = np.array([198, 271, 624])  # arbitrary ids standing in for newline tokens (~1.5% of tokens)


def rss() -> int:
    return psutil.Process().memory_info().rss


def make_service(records: int, align: str, response_length: int) -> CacheService:
    cfg = RPOConfig(
        cache=RPOCacheConfig(init="lazy", update="eps_greedy"),
        prefix=RPOPrefixConfig(mode="tail", max_cut=299, align=align),
    )
    return CacheService(
        cfg,
        id_range=(0, records),
        response_length=response_length,
        fingerprint={"vocab_size": VOCAB},
        newline_ids=NEWLINE_IDS,
    )


def random_tokens(rng, size: int) -> np.ndarray:
    tokens = rng.integers(0, VOCAB, size=size, dtype=np.int32)
    tokens[rng.random(size) < 0.015] = NEWLINE_IDS[0]
    return tokens


def fill_chunks(records: int, mean_len: int, chunk: int = 1 << 16):
    """(ids, tokens, lengths, rewards, correct) chunks of U[mean/2, 3*mean/2] random trajectories (seed 0)."""
    rng = np.random.default_rng(0)
    for start in range(0, records, chunk):
        ids = np.arange(start, min(start + chunk, records))
        lengths = rng.integers(mean_len // 2, 3 * mean_len // 2 + 1, size=ids.size)
        yield ids, random_tokens(rng, int(lengths.sum())), lengths, rng.random(ids.size), rng.random(ids.size) < 0.5


def fill(service: CacheService, records: int, mean_len: int) -> dict:
    gc.collect()
    rss0 = rss()
    t0 = time.perf_counter()
    for ids, tokens, lengths, rewards, correct in fill_chunks(records, mean_len):
        service.store.write_many(ids, tokens, lengths, rewards, correct, 0)
    seconds = time.perf_counter() - t0
    gc.collect()
    st = service.store
    return {
        "records": st.num_records,
        "mean_len": st.live_tokens / st.num_records,
        "fill_s": seconds,
        "raw_int32_bytes": st.raw_token_bytes,
        "store_bytes": st.nbytes,
        "ratio": st.nbytes / st.raw_token_bytes,
        "rss_growth_bytes": rss() - rss0,
        "rss_ratio": (rss() - rss0) / st.raw_token_bytes,
        "blocks": len(st._blocks),
    }


def update_batch(rng, ids: np.ndarray, prefixes: list, budgets: np.ndarray, n: int, step: int) -> UpdateBatch:
    """n trajectories per prompt: its prefix + a random suffix of 1..budget tokens."""
    suffix_len = rng.integers(1, np.repeat(budgets, n) + 1)
    prefix_len = np.repeat([len(p) for p in prefixes], n)
    pieces = []
    suffix = random_tokens(rng, int(suffix_len.sum()))
    pos = 0
    for i, prefix in enumerate(prefixes):
        for j in range(n):
            k = suffix_len[i * n + j]
            pieces.append(prefix)
            pieces.append(suffix[pos : pos + k])
            pos += k
    return UpdateBatch(
        np.repeat(ids, n),
        prefix_len + suffix_len,
        np.concatenate(pieces),
        rng.integers(0, 2, size=ids.size * n),
        np.full(ids.size * n, -1),
        step,
    )


def time_steps(call_sample, call_update, records: int, batch: int, n: int, iters: int, compactions=None) -> dict:
    rng = np.random.default_rng(1)
    sample_ms, update_ms = [], []
    before = compactions() if compactions else 0
    garbage = []
    for step in range(iters):
        ids = rng.choice(records, size=batch, replace=False)
        t0 = time.perf_counter()
        plan = call_sample(ids, step)
        t1 = time.perf_counter()
        ub = update_batch(rng, ids, plan.prefixes(), plan.budget, n, step)
        t2 = time.perf_counter()
        written = call_update(ub)
        t3 = time.perf_counter()
        garbage.append(written)
        sample_ms.append(1e3 * (t1 - t0))
        update_ms.append(1e3 * (t3 - t2))
    total = np.add(sample_ms, update_ms)

    def stats(values):
        values = np.asarray(values)
        return {
            "min": float(values.min()),
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
            "max": float(values.max()),
        }

    return {
        "sample_ms": stats(sample_ms),
        "update_ms": stats(update_ms),
        "total_ms": stats(total),
        "compactions": (compactions() - before) if compactions else None,
        "garbage_tokens_per_step": float(np.mean([g for g in garbage if g is not None])) if compactions else None,
    }


def bench_in_process(args) -> tuple[dict, dict]:
    svc = make_service(args.records, "none", args.response_length)
    memory = fill(svc, args.records, args.mean_len)
    print(f"memory: {json.dumps(memory)}", flush=True)
    latency = {}
    for align in ("none", "newline"):
        view = make_service(1, align, args.response_length) if align != "none" else svc
        if align != "none":  # same records, other cut policy
            view.store = svc.store

        def update(batch, view=view):
            # dead tokens this update leaves behind (compaction work it causes), compactions excluded
            before, n_compact = view.store.garbage_tokens, view.store.compactions
            view.update(batch)
            return None if view.store.compactions != n_compact else view.store.garbage_tokens - before

        latency[f"tail_{align}"] = time_steps(
            lambda ids, step: view.sample_prefix_batch(ids, rng_seed=step),
            update,
            args.records,
            args.batch,
            args.n,
            args.iters,
            compactions=lambda: svc.store.compactions,
        )
        print(f"latency tail/{align}: {json.dumps(latency[f'tail_{align}'])}", flush=True)
    # compaction: one full rebuild, and its cost spread over the steps that fill the garbage budget
    st = svc.store
    garbage_per_step = latency["tail_none"].pop("garbage_tokens_per_step")
    latency["tail_newline"].pop("garbage_tokens_per_step")
    t0 = time.perf_counter()
    st.compact()
    compact_s = time.perf_counter() - t0
    steps_between = st.compact_garbage_frac * st.live_tokens / max(garbage_per_step, 1)
    memory["compaction"] = {
        "seconds": compact_s,
        "garbage_tokens_per_step": garbage_per_step,
        "steps_between_compactions": steps_between,
        "amortised_ms_per_step": 1e3 * compact_s / steps_between,
    }
    print(f"compaction: {json.dumps(memory['compaction'])}", flush=True)
    return memory, latency, svc


class _Echo:
    """Empty Ray actor: the floor of a round trip (no argument) and of shipping a step's arrays."""

    def ping(self) -> bool:
        return True

    def take(self, *arrays) -> int:
        return len(arrays)


def _stats(values) -> dict:
    values = np.asarray(values)
    return {"min": float(values.min()), "median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def bench_ray(args, svc: CacheService) -> dict:
    """Through Ray actor(s) and in process, step by step alternately on the same prompts (the load
    of a shared machine hits both alike), plus the floors of the Ray round trip."""
    import ray

    from rpo_verl.rpo.service_client import start_cache_service

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = RPOConfig(
            cache=RPOCacheConfig(init="lazy", update="eps_greedy", num_shards=args.ray_shards),
            prefix=RPOPrefixConfig(mode="tail", max_cut=299),
        )
        client = start_cache_service(cfg, id_range=(0, args.ray_records), response_length=args.response_length)
        for ids, tokens, lengths, rewards, correct in fill_chunks(args.ray_records, args.mean_len):
            client.update(UpdateBatch(ids, lengths, tokens, rewards, correct.astype(np.int8)))
        echo = ray.remote(_Echo).remote()
        ray.get(echo.ping.remote())
        rng = np.random.default_rng(2)
        parts = ("ray", "ray_sample", "ray_update", "ray_flush", "in_process", "in_process_sample", "in_process_update")
        times: dict[str, list] = {k: [] for k in (*parts, "ping", "ship_all_tokens")}
        writes = []
        for step in range(args.iters):
            ids = rng.choice(args.ray_records, size=args.batch, replace=False)
            for name, target in (("ray", client), ("in_process", svc)):
                t0 = time.perf_counter()
                plan = target.sample_prefix_batch(ids, rng_seed=step)
                t1 = time.perf_counter()
                ub = update_batch(np.random.default_rng([3, step]), ids, plan.prefixes(), plan.budget, args.n, step)
                t2 = time.perf_counter()
                summary = target.update(ub)
                t3 = time.perf_counter()
                times[name].append(1e3 * (t1 - t0 + t3 - t2))
                times[f"{name}_sample"].append(1e3 * (t1 - t0))
                times[f"{name}_update"].append(1e3 * (t3 - t2))
            t0 = time.perf_counter()
            client.flush()  # the writes the Ray update left running (the trainer does not wait here)
            times["ray_flush"].append(1e3 * (time.perf_counter() - t0))
            writes.append(summary["writes"])
            t0 = time.perf_counter()
            ray.get(echo.ping.remote())
            t1 = time.perf_counter()
            ray.get(echo.take.remote(ub.prompt_ids, ub.lengths, ub.tokens, ub.rewards, ub.correct))
            times["ping"].append(1e3 * (t1 - t0))
            times["ship_all_tokens"].append(1e3 * (time.perf_counter() - t1))
        out = {f"{k}_ms": _stats(v) for k, v in times.items()}
        out["ratio_ray_to_in_process"] = _stats(np.divide(times["ray"], times["in_process"]))
        out["writes_per_step"] = float(np.mean(writes))
        out["all_tokens_bytes_per_step"] = int(ub.tokens.nbytes)
        return out
    finally:
        ray.shutdown()


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result["latency"])
    x = np.arange(len(names))
    for i, part in enumerate(("sample_ms", "update_ms", "total_ms")):
        med = [result["latency"][k][part]["median"] for k in names]
        p90 = [result["latency"][k][part]["p90"] for k in names]
        ax1.bar(x + (i - 1) * 0.27, med, 0.27, label=f"{part[:-3]} (median)")
        ax1.scatter(x + (i - 1) * 0.27, p90, marker="_", color="k", s=200, zorder=3)
    if result.get("ray"):
        ray_parts = ("in_process_ms", "ray_ms", "ping_ms", "ship_all_tokens_ms")
        xr = len(names) + np.arange(len(ray_parts))
        ax1.bar(xr, [result["ray"][k]["median"] for k in ray_parts], 0.5, color="C3", label="total, paired (median)")
        ax1.scatter(xr, [result["ray"][k]["p90"] for k in ray_parts], marker="_", color="k", s=200, zorder=3)
        names = names + ["paired\nin-process", "paired\nRay", "Ray empty\nround trip", "Ray: ship all\ncandidates"]
        x = np.arange(len(names))
    ax1.axhline(TARGET_MS, color="r", ls="--", label=f"target {TARGET_MS:g} ms")
    ax1.set_xticks(x, names, fontsize=7)
    ax1.set_ylabel("ms per step (bars: median, ticks: p90)")
    ax1.set_title(f"{result['args']['batch']} prompts x n={result['args']['n']}")
    ax1.legend(fontsize=8)
    mem = result["memory"]
    ax2.bar(["store / raw int32", "RSS growth / raw"], [mem["ratio"], mem["rss_ratio"]], color=["C0", "C1"])
    ax2.axhline(TARGET_MEM_RATIO, color="r", ls="--", label=f"target {TARGET_MEM_RATIO}x")
    ax2.set_title(f"memory at {mem['records']:,} records (mean {mem['mean_len']:.0f} tokens)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--mean-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--response-length", type=int, default=2048)
    parser.add_argument("--ray", action="store_true", help="also time the calls through a Ray actor")
    parser.add_argument("--ray-records", type=int, default=1_000_000, help="<= --records")
    parser.add_argument("--ray-shards", type=int, default=1, help="rpo_verl.rpo.cache.num_shards of the Ray service")
    parser.add_argument("--out-dir", default="outputs/bench/rpo_cache")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    memory, latency, svc = bench_in_process(args)
    ray_result = None
    if args.ray:
        ray_result = bench_ray(args, svc)
        print(f"ray vs in process: {json.dumps(ray_result)}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "args": vars(args),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "commit": commit,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "targets": {"total_ms": TARGET_MS, "memory_ratio": TARGET_MEM_RATIO},
        "memory": memory,
        "latency": latency,
        "ray": ray_result,
    }
    (out / "rpo_cache_bench.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "rpo_cache_bench.png")
    print(f"wrote {out / 'rpo_cache_bench.json'} and {out / 'rpo_cache_bench.png'}")


if __name__ == "__main__":
    main()
