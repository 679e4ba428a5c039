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
