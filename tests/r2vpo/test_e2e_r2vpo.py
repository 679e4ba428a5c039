"""R²VPO end to end on CPU: ``python -m rpo_verl.main preset=cpu`` with ``loss_mode=r2vpo`` and replay.

Tiny random model, dense reward, 2 prompts × 4 responses per step, actor mini-batch of 2 prompts.
Run 1 trains steps 1–2 (checkpoint at 2); run 2 resumes and trains step 3. Step 1 has nothing to
replay; steps 2 and 3 replay round(0.5 × 2) = 1 group (4 rows) plus 4 no-op rows, so each update
has 2 mini-batches. Step 3 replays from the buffer restored from the checkpoint and starts from the
λ restored from ``actor/r2vpo_dual.json``. Each run is a subprocess killed after a hard timeout.
"""

import json
import math
from pathlib import Path

import pytest

from rpo_verl.trainer.metrics_file import read_records, run_files

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DENSE_REWARD = REPO / "tests" / "trainer" / "dense_reward.py"
BATCH, N, RESPONSE = 2, 4, 16
CORE = ("lambda", "v_hat", "soft_clip_frac", "ratio_min", "ratio_max", "lambda_start", "lambda_end")


def _args(model, train, run_dir, steps):
    pl = "actor_rollout_ref.actor.policy_loss"
    return [
        "preset=cpu",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}", f"data.val_files={train}",
        f"data.train_batch_size={BATCH}", "data.max_prompt_length=64", f"data.max_response_length={RESPONSE}",
        f"actor_rollout_ref.rollout.n={N}", f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        f"{pl}.loss_mode=r2vpo", f"{pl}.r2vpo.delta=1e-4", f"{pl}.r2vpo.eta=0.5",
        "rpo_verl.r2vpo.replay.enable=true",
        f"reward.custom_reward_function.path={DENSE_REWARD}",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=2", "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        f"trainer.default_local_dir={run_dir}", "trainer.experiment_name=e2e_r2vpo",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_path, add_prompts, rpo_main):
    model = tiny_model_path
    root = tmp_path_factory.mktemp("e2e_r2vpo")
    train = add_prompts(root / "train.parquet", 16)
    run_dir = root / "run"
    first = rpo_main(_args(model, train, run_dir, 2), timeout=420, log_path=root / "first.log")
    assert first.returncode == 0, first.stdout[-6000:]
    resumed = rpo_main(_args(model, train, run_dir, 3), timeout=300, log_path=root / "resumed.log")
    assert resumed.returncode == 0, resumed.stdout[-6000:]
    steps = {s: m for s, m in read_records(run_files(str(run_dir / "metrics.jsonl"))) if "training/global_step" in m}
    return {"dir": run_dir, "steps": steps, "resumed": resumed}


@pytest.mark.timeout(900)
def test_r2vpo_metrics_every_step(runs):
    assert sorted(runs["steps"]) == [1, 2, 3]
    for step, m in runs["steps"].items():
        for name in CORE:
            assert math.isfinite(m[f"r2vpo/{name}"]), (step, name, m.get(f"r2vpo/{name}"))
        assert m["actor/r2vpo/v_hat"] == m["r2vpo/v_hat"]  # verl's name, repeated under r2vpo/
        assert 0 < m["r2vpo/ratio_min"] <= m["r2vpo/ratio_mean"] <= m["r2vpo/ratio_max"]
        assert 0.0 <= m["r2vpo/soft_clip_frac"] <= 1.0
        assert m["r2vpo/lambda_rank_spread"] == 0.0
        assert m["actor/grad_norm"] > 0
        assert math.isfinite(m["r2vpo/v_hat_fresh"])
        # Replayed rows are not generated this step: verl's rollout metrics count the fresh ones only.
        assert 0 < m["eff/gen_tokens"] <= BATCH * N * RESPONSE


@pytest.mark.timeout(900)
def test_replayed_rows_are_trained(runs):
    first, second, third = (runs["steps"][s] for s in (1, 2, 3))
    assert first["r2vpo/replay_share"] == 0.0 and first["r2vpo/replay_rows"] == 0.0
    for m in (second, third):  # step 3 replays the buffer restored from the checkpoint
        assert m["r2vpo/replay_share"] == pytest.approx(1 / 3)
        assert m["r2vpo/replay_rows"] == N and m["r2vpo/replay_pad_rows"] == N
        assert m["r2vpo/replay_mean_age"] >= 1.0
        # The stale rows reached the loss (r2vpo_stale = 1) with a ratio taken against their
        # behaviour log-probs from an earlier policy: non-zero stale variance.
        # (Whether it exceeds the fresh rows' variance depends on the sampled data: fresh rows in
        # the second mini-batch are off-policy too after the first update at lr 1e-2. The ordering
        # is tested deterministically in test_r2vpo_loss.py and test_r2vpo_verl_integration.py.)
        assert m["r2vpo/stale_token_share"] > 0 and m["r2vpo/v_hat_stale"] > 0
    assert "r2vpo/v_hat_stale" not in first or first["r2vpo/stale_token_share"] == 0


@pytest.mark.timeout(900)
def test_lambda_saved_with_actor_checkpoint_and_restored_exactly(runs):
    saved = json.loads((runs["dir"] / "global_step_2" / "actor" / "r2vpo_dual.json").read_text())
    second, third = runs["steps"][2], runs["steps"][3]
    assert saved["lambda"] > 0  # V̂ ≫ δ = 1e-4 with stale rows and lr 1e-2: λ rose
    assert saved["lambda"] == second["r2vpo/lambda_end"]
    assert third["r2vpo/lambda_start"] == saved["lambda"]  # bit-exact, read back from the resumed workers
    assert third["r2vpo/dual_steps"] == saved["steps"] + 2  # two optimiser steps (mini-batches) in step 3
    assert "the next training step is 3" in runs["resumed"].stdout
