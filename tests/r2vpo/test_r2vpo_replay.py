"""Replay buffer for stale rollout batches: keeps behaviour log-probs and generation-time
advantages, samples whole groups at fraction ρ, evicts by age, resumes from its state."""

import io

import numpy as np
import pytest
import torch

from rpo_verl.config import ConfigError
from rpo_verl.r2vpo.replay import ReplayBuffer, ReplayConfig, build_replay_config


def _rollout(step, groups=4, n=2, length=5):
    """A rollout batch of `groups` prompts × n responses whose values encode (step, row)."""
    size = groups * n
    rows = torch.arange(size, dtype=torch.float32)
    return (
        {
            "behaviour_log_probs": -(step * 100 + rows).unsqueeze(-1).expand(size, length).clone(),
            "advantages": (step + rows / 100).unsqueeze(-1).expand(size, length).clone(),
            "response_mask": torch.ones(size, length, dtype=torch.int64),
            "uid": [f"s{step}-g{i // n}" for i in range(size)],
        },
        [f"s{step}-g{i // n}" for i in range(size)],
    )


def test_keeps_behaviour_logprobs_and_advantages_and_samples_whole_groups():
    buf = ReplayBuffer(ReplayConfig(enable=True, max_batches=2, fraction=0.5, seed=1))
    fields, uids = _rollout(step=1)
    buf.add(1, fields, uids)
    out, metrics = buf.sample(num_fresh_groups=4, current_step=2)
    assert metrics["r2vpo/replay_groups"] == 2 and metrics["r2vpo/replay_share"] == pytest.approx(2 / 6)
    assert out["behaviour_log_probs"].shape == (4, 5)  # 2 groups × n = 2
    # Every sampled row is a stored row, unchanged, with its own advantage and behaviour log-prob.
    rows = (-out["behaviour_log_probs"][:, 0] - 100).long()
    torch.testing.assert_close(out["advantages"][:, 0], 1 + rows.float() / 100)
    assert list(out["uid"]) == [fields["uid"][i] for i in rows.tolist()]
    assert list(out["group_id"]) == list(out["uid"])
    groups = {}
    for g in out["group_id"]:
        groups[g] = groups.get(g, 0) + 1
    assert set(groups.values()) == {2}  # whole groups only
    assert out["replay_age"].tolist() == [1, 1, 1, 1] and metrics["r2vpo/replay_mean_age"] == 1.0


def test_eviction_by_age_and_capacity():
    buf = ReplayBuffer(ReplayConfig(enable=True, max_batches=2, fraction=1.0))
    for step in (1, 2, 3):
        buf.add(step, *_rollout(step))
    assert buf.num_batches == 2  # capacity K
    out, _ = buf.sample(num_fresh_groups=8, current_step=4)  # ages 2 (= K) and 1: both kept
    assert buf.num_batches == 2
    assert set(out["replay_age"].tolist()) == {1, 2} and len(out["group_id"]) == 8 * 2
    out, _ = buf.sample(num_fresh_groups=8, current_step=5)  # step 2 now has age 3 > K: evicted
    assert buf.num_batches == 1
    assert set(out["replay_age"].tolist()) == {2} and len(out["group_id"]) == 8
    assert buf.evict(current_step=10) == 1 and len(buf) == 0
    out, metrics = buf.sample(num_fresh_groups=4, current_step=10)
    assert out is None and metrics["r2vpo/replay_share"] == 0.0


def test_fraction_is_capped_by_what_is_held_and_mixed_widths_are_padded():
    buf = ReplayBuffer(ReplayConfig(enable=True, max_batches=3, fraction=4.0))
    buf.add(1, *_rollout(1, groups=2, length=3))
    buf.add(2, *_rollout(2, groups=2, length=6))
    out, metrics = buf.sample(num_fresh_groups=4, current_step=3)
    assert metrics["r2vpo/replay_groups"] == 4  # wanted 16, only 4 held
    assert out["response_mask"].shape == (8, 6)
    short = out["replay_age"] == 2
    assert (out["response_mask"][short, 3:] == 0).all() and (out["response_mask"][short, :3] == 1).all()


def test_sampling_is_seeded_and_state_dict_resumes_the_same_draws():
    def run(state=None):
        buf = ReplayBuffer(ReplayConfig(enable=True, max_batches=3, fraction=0.5, seed=7))
        if state is not None:
            buf.load_state_dict(state)
        return buf

    a = run()
    a.add(1, *_rollout(1, groups=8))
    a.add(2, *_rollout(2, groups=8))
    a.sample(4, current_step=3)
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    blob.seek(0)
    b = run(torch.load(blob, weights_only=False))
    for step in (3, 4):
        out_a, _ = a.sample(4, current_step=step)
        out_b, _ = b.sample(4, current_step=step)
        assert list(out_a["group_id"]) == list(out_b["group_id"])
        torch.testing.assert_close(out_a["advantages"], out_b["advantages"])
    c = ReplayBuffer(ReplayConfig(enable=True, max_batches=2, fraction=0.5, seed=8))
    c.add(1, *_rollout(1, groups=8))
    c.add(2, *_rollout(2, groups=8))
    draws = {tuple(c.sample(4, current_step=3)[0]["group_id"]) for _ in range(5)}
    assert len(draws) > 1  # actually random


def test_bad_input_is_named():
    buf = ReplayBuffer(ReplayConfig(enable=True))
    fields, uids = _rollout(1)
    with pytest.raises(ValueError, match="lacks.*advantages"):
        buf.add(1, {k: v for k, v in fields.items() if k != "advantages"}, uids)
    with pytest.raises(ValueError, match="behaviour_log_probs has shape"):
        buf.add(1, {**fields, "behaviour_log_probs": torch.zeros(8, 4)}, uids)
    with pytest.raises(ValueError, match="group ids"):
        buf.add(1, fields, uids[:-1])
    buf.add(1, fields, uids)
    with pytest.raises(ValueError, match="not after"):
        buf.add(1, fields, uids)
    with pytest.raises(ValueError, match="fields"):
        buf.add(2, {**fields, "extra": np.zeros(8)}, uids)


def test_config_defaults_and_validation():
    cfg = build_replay_config(None)
    assert cfg == ReplayConfig() and not cfg.enable and cfg.max_batches == 2 and cfg.fraction == 0.5
    with pytest.raises(ConfigError, match=r"rpo_verl\.r2vpo\.replay\.max_batches"):
        build_replay_config({"max_batches": 0})
    with pytest.raises(ConfigError, match=r"rpo_verl\.r2vpo\.replay\.fraction"):
        build_replay_config({"fraction": "half"})
    with pytest.raises(ConfigError, match=r"rpo_verl\.r2vpo\.replay\.size"):
        build_replay_config({"size": 3})


@pytest.mark.parametrize("mapping, key", [
    ({"is_cap": 0.0}, "is_cap"), ({"is_cap": -1.0}, "is_cap"), ({"is_cap": float("inf")}, "is_cap"),
    ({"is_level": "trajectory"}, "is_level"),
])
def test_behaviour_weight_settings_are_validated(mapping, key):
    with pytest.raises(ConfigError, match=f"rpo_verl.r2vpo.replay.{key}"):
        build_replay_config(mapping)
    assert (ReplayConfig().is_cap, ReplayConfig().is_level) == (2.0, "token")
