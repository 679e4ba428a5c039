"""Per-step rollout metrics from the agent loop's per-sample fields."""

import numpy as np
import pytest

from rpo_verl.rpo.metrics import rollout_metrics, zero_variance_group_frac


def test_token_accounting():
    m = rollout_metrics(
        prefix_len=[90, 90, 0, 0], suffix_len=[10, 10, 100, 50], truncated=[1, 0, 0, 0], fallback=[0, 0, 1, 0]
    )
    assert m["eff/generated_tokens"] == 170
    assert m["eff/full_path_equiv_tokens"] == 350
    assert m["eff/token_saving_ratio"] == pytest.approx(1 - 170 / 350)
    assert m["rpo/prefix_fraction"] == pytest.approx((0.9 + 0.9 + 0 + 0) / 4)
    assert m["rpo/prefixed_sample_frac"] == 0.5
    assert m["rpo/suffix_truncation_rate"] == 0.25 and m["rpo/agent_prefix_fallbacks"] == 1


def test_zero_variance_groups():
    rewards = np.array([1, 1, 0, 1, 0, 0, 0.5])
    group = np.array(["a", "a", "b", "b", "c", "c", "d"])
    assert zero_variance_group_frac(rewards, group) == 0.75
    m = rollout_metrics([0] * 7, [1] * 7, rewards=rewards, group=group)
    assert m["rpo/zero_variance_group_frac"] == 0.75


def test_empty_step():
    m = rollout_metrics([], [])
    assert m["eff/generated_tokens"] == 0 and m["eff/token_saving_ratio"] == 0.0


def test_prefix_age_counts_used_prefixes_only():
    from rpo_verl.rpo.metrics import prefix_age_metrics

    m = prefix_age_metrics(10, record_step=[0, 0, 7, 9, 3], prefix_len=[5, 0, 4, 2, 1])
    assert m == {"rpo/prefix_age_mean": pytest.approx((10 + 3 + 1 + 7) / 4), "rpo/prefix_age_median": 5.0,
                 "rpo/prefix_age_max": 10.0, "rpo/prefix_age_count": 4.0}
    assert prefix_age_metrics(3, [0, 1], [0, 0])["rpo/prefix_age_count"] == 0.0
    with pytest.raises(ValueError, match="newer than the current step 2"):
        prefix_age_metrics(2, [5], [1])
    with pytest.raises(ValueError, match="same shape"):
        prefix_age_metrics(2, [0, 1], [1])
