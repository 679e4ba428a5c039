"""The RPO cache service's counters and its ``rpo/cache_*`` / ``rpo/prefix_*`` metrics.

Each shard of ``rpo_verl.rpo.cache_service.CacheService`` keeps ``COUNTERS`` and reports them with
its gauges as ``raw_metrics``; ``derive_metrics`` merges the raw metrics of one or more shards
into the step's metrics (the client calls it over all shards).
"""

from __future__ import annotations

# Cumulative counters (summed over shards; "window" = change since the previous metrics() read).
COUNTERS = (
    "sample_calls",
    "lookups",  # prompts asked for a prefix
    "hits",  # ... that had a cached record
    "prefixed",  # ... that got a non-empty prefix
    "full_path",  # ... that run full-path (no/empty entry, cut >= length, overlong)
    "overlong_full_path",
    "overlong_shortened",
    "align_fallback",
    "prefix_tokens",
    "budget_tokens",
    "prefix_fraction_sum",  # sum over prefixed prompts of prefix_len / cached_len
    "update_calls",
    "update_groups",
    "update_candidates",
    "writes",
    "seeded",  # writes to prompts that had no record
)


def derive_metrics(raws: list[dict]) -> dict[str, float]:
    """``rpo/...`` metrics from the raw metrics of one or more shards."""
    tot = {k: sum(r["total"][k] for r in raws) for k in COUNTERS}
    win = {k: sum(r["window"][k] for r in raws) for k in COUNTERS}
    gauge = {k: sum(r["gauges"][k] for r in raws) for k in raws[0]["gauges"]}

    def ratio(a, b):
        return float(a) / float(b) if b else 0.0

    return {
        "rpo/cache_size": float(gauge["prompts_cached"]),
        "rpo/cache_records": float(gauge["records"]),
        "rpo/cache_tokens": float(gauge["live_tokens"]),
        "rpo/cache_mean_length": ratio(gauge["live_tokens"], gauge["records"]),
        "rpo/cache_mean_reward": ratio(gauge["reward_sum"], gauge["records"]),
        "rpo/cache_correct_frac": ratio(gauge["correct_sum"], gauge["records"]),
        "rpo/cache_mean_writer_step": ratio(gauge["step_sum"], gauge["records"]),
        "rpo/cache_mem_mb": gauge["nbytes"] / 2**20,
        "rpo/cache_mem_ratio": ratio(gauge["nbytes"], 4 * gauge["live_tokens"]),
        "rpo/cache_compactions": float(gauge["compactions"]),
        "rpo/cache_service_restores": float(gauge["restores"]),
        "rpo/cache_hit_rate": ratio(win["hits"], win["lookups"]),
        "rpo/cache_hit_rate_total": ratio(tot["hits"], tot["lookups"]),
        "rpo/cache_updates": float(win["writes"]),
        "rpo/cache_updates_total": float(tot["writes"]),
        "rpo/cache_seeded": float(win["seeded"]),
        "rpo/cache_write_rate": ratio(win["writes"], win["update_groups"]),
        "rpo/prefix_lookups": float(win["lookups"]),
        "rpo/prefix_fraction_mean": ratio(win["prefix_fraction_sum"], win["prefixed"]),
        "rpo/prefix_mean_len": ratio(win["prefix_tokens"], win["lookups"]),
        "rpo/suffix_budget_mean": ratio(win["budget_tokens"], win["lookups"]),
        "rpo/full_path_frac": ratio(win["full_path"], win["lookups"]),
        "rpo/overlong_full_path": float(win["overlong_full_path"]),
        "rpo/overlong_shortened": float(win["overlong_shortened"]),
        "rpo/align_fallback": float(win["align_fallback"]),
    }
