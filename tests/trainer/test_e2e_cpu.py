"""End to end on CPU: verl's real v1 trainer through ``python -m rpo_verl.main preset=cpu``.

One short GRPO run of the tiny random model (2 steps, dense reward, validation, checkpoint at
step 2), then one resumed run to step 3 on the same folder. Each run is a subprocess killed after
a hard timeout, so a Ray hang fails instead of blocking CI.
"""

import json
import subprocess
import sys

import pytest

from rpo_verl.trainer.metrics_file import read_records, run_files
from rpo_verl.trainer.summary import summarize

pytestmark = pytest.mark.e2e

BATCH, N, RESPONSE = 2, 4, 16


def _hf_registered() -> bool:
    code = "import verl; from rpo_verl.config.checks import registered_rollouts; print('hf' in registered_rollouts())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.strip().endswith("True")


def _args(model, train, val, reward, run_dir, steps, *extra):
    return [
        "preset=cpu",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}", f"data.val_files={val}",
        f"data.train_batch_size={BATCH}", "data.max_prompt_length=64", f"data.max_response_length={RESPONSE}",
        f"actor_rollout_ref.rollout.n={N}", f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
        # A large step so that a missed weight push would show up in the rollout-vs-trainer log-probs.
        "actor_rollout_ref.actor.optim.lr=1e-2",
        f"reward.custom_reward_function.path={reward}",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=2", "trainer.test_freq=2",
        f"trainer.default_local_dir={run_dir}", "trainer.experiment_name=e2e_tiny",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_runs(tiny_model_path, prompt_files, dense_reward, rpo_main, tmp_path_factory):
    if not _hf_registered():
        pytest.skip("the 'hf' rollout backend is not registered in this checkout")
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    train, val = prompt_files
    first = rpo_main(_args(tiny_model_path, train, val, dense_reward, run_dir, 2), timeout=420, log_path=run_dir.parent / "first.log")
    assert first.returncode == 0, first.stdout[-6000:]
    first_records = read_records(run_files(str(run_dir / "metrics.jsonl")))
    # the resumed run also trains with a KL loss: verl's reference model (a forward-only FSDP2
    # engine, CPU-offloaded by verl) must build and run on CPU
    resumed = rpo_main(_args(tiny_model_path, train, val, dense_reward, run_dir, 3, "trainer.val_before_train=false",
                             "actor_rollout_ref.actor.use_kl_loss=true"),
                       timeout=300, log_path=run_dir.parent / "resumed.log")
    assert resumed.returncode == 0, resumed.stdout[-6000:]
    return {"dir": run_dir, "first": first, "first_records": first_records, "resumed": resumed}


def _steps(records):
    return {step: m for step, m in records if "training/global_step" in m}


def test_grpo_steps_complete_with_gradients(tiny_runs):
    steps = _steps(tiny_runs["first_records"])
    assert sorted(steps) == [1, 2]
    for step, m in steps.items():
        assert m["actor/grad_norm"] > 0, f"step {step}: no gradient (advantages all zero?)"
        assert m["critic/advantages/max"] > 0
        assert m["eff/gen_tokens"] > 0
        for phase in ("gen", "old_log_prob", "update_actor", "update_weights", "step"):
            assert m[f"timing_s/{phase}"] > 0


def test_rollout_logprobs_match_trainer_after_weight_push(tiny_runs):
    # Step 2's rollout ran on the weights pushed after step 1's update (lr 1e-2): the server's
    # log-probs must equal the trainer's recomputed ones (both fp32 on CPU).
    m = _steps(tiny_runs["first_records"])[2]
    assert m["training/rollout_probs_diff_valid"] == 1
    assert m["training/rollout_probs_diff_max"] < 1e-3, m["training/rollout_probs_diff_max"]


def test_validation_before_and_during_training(tiny_runs):
    val = [(step, m) for step, m in tiny_runs["first_records"] if "val-core/rpo_verl_test/add/acc/mean@1" in m]
    assert [step for step, _ in val] == [0, 2]
    assert all(m["timing_s/validate"] > 0 for _, m in val)


def test_checkpoint_written(tiny_runs):
    run_dir = tiny_runs["dir"]
    for step in (2, 3):
        assert (run_dir / f"global_step_{step}" / "actor").is_dir()
        assert (run_dir / f"global_step_{step}" / "data.pt").is_file()
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text().strip() == "3"


def test_resume_continues_at_next_step(tiny_runs):
    run_dir = tiny_runs["dir"]
    assert "resumed from" in tiny_runs["resumed"].stdout and "the next training step is 3" in tiny_runs["resumed"].stdout
    # the resumed run logged step 3 only, into a new file; the first run's file was kept
    assert sorted(_steps(read_records([str(run_dir / "metrics.jsonl")]))) == [3]
    assert sorted(_steps(read_records([str(run_dir / "metrics.1.jsonl")]))) == [1, 2]


def test_reference_model_runs_on_cpu(tiny_runs):
    (m,) = _steps(read_records([str(tiny_runs["dir"] / "metrics.jsonl")])).values()
    assert m["timing_s/ref"] > 0 and "actor/kl_loss" in m


def test_summary_covers_the_whole_run(tiny_runs, tmp_path):
    summary = summarize(str(tiny_runs["dir"]))
    assert (summary.first_step, summary.last_step, summary.steps) == (1, 3, 3)
    assert summary.val_before_step == 0 and summary.val_after_step == 3
    assert 0 < summary.gen_tokens <= 3 * BATCH * N * RESPONSE
    assert summary.time_init_s > 0 and summary.phase_mean_s["update_actor"] > 0
    out = subprocess.run([sys.executable, "-m", "rpo_verl.trainer.summary", str(tiny_runs["dir"]),
                          "--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Validation accuracy" in out.stdout
    assert json.loads((tmp_path / "s.json").read_text())["steps"] == 3
