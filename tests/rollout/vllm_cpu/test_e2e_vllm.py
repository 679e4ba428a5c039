"""verl's own vLLM rollout on CPU (vLLM's CPU build) end to end: ``python -m rpo_verl.main
preset=cpu actor_rollout_ref.rollout.name=vllm`` with the tiny random model.

Run A: RPO-GRPO with a lazy cache, 4 prompts x 3 steps (batch 2): steps 1-2 are full-path GRPO
steps that seed the cache, step 3 sends suffix rollouts (token-id prompt ⊕ prefix, per-request
``max_tokens``) through verl's vLLM server; validation before training and at step 2,
checkpoints at steps 2 and 3, weights pushed to the vLLM engine after every update (lr 1e-2, so a
missed push shows in the rollout-vs-trainer log-probs). Run B resumes A's folder to step 4.
"""

import shutil
from pathlib import Path

import pytest

from rpo_verl.trainer.metrics_file import read_records

pytest.importorskip("vllm", reason="needs vLLM's CPU build (scripts/setup_env.sh --vllm)")

pytestmark = [pytest.mark.vllm, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[3]
DENSE_REWARD = REPO / "tests" / "trainer" / "dense_reward.py"
BATCH, N, RESPONSE = 2, 4, 16
# fp32 engine vs fp32 trainer: the same weights give log-probs equal to float rounding.
PROBS_DIFF_MAX = 1e-3


def _args(model, train, val, run_dir, steps, *extra):
    return [
        "preset=cpu", "actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.dtype=float32",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}", f"data.val_files={val}",
        f"data.train_batch_size={BATCH}", "data.max_prompt_length=64", f"data.max_response_length={RESPONSE}",
        f"actor_rollout_ref.rollout.n={N}", f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        f"reward.custom_reward_function.path={DENSE_REWARD}",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=2", "trainer.test_freq=2",
        f"trainer.default_local_dir={run_dir}", "trainer.experiment_name=e2e_vllm",
        "rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=lazy",
        "rpo_verl.rpo.prefix.mode=ratio", "rpo_verl.rpo.prefix.slack=4",
        *extra,
    ]


def _steps(path):
    return {step: m for step, m in read_records([str(path)]) if "training/global_step" in m}


@pytest.fixture(scope="session")
def vllm_runs(vllm_tiny_model_path, add_prompts, rpo_main, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_e2e")
    train = add_prompts(root / "train.parquet", 4, split="train")
    val = add_prompts(root / "val.parquet", 2, seed=5, split="train")
    run_dir = root / "run"
    first = rpo_main(_args(vllm_tiny_model_path, train, val, run_dir, 3), timeout=900, log_path=root / "a.log")
    assert first.returncode == 0, first.stdout[-8000:]
    shutil.copy(run_dir / "metrics.jsonl", root / "first_metrics.jsonl")
    resumed = rpo_main(_args(vllm_tiny_model_path, train, val, run_dir, 4, "trainer.val_before_train=false"),
                       timeout=900, log_path=root / "b.log")
    assert resumed.returncode == 0, resumed.stdout[-8000:]
    return {"dir": run_dir, "first": _steps(root / "first_metrics.jsonl"), "first_records":
            read_records([str(root / "first_metrics.jsonl")]), "resumed": resumed,
            "resumed_steps": _steps(run_dir / "metrics.jsonl")}


def test_grpo_steps_through_vllm_with_gradients(vllm_runs):
    steps = vllm_runs["first"]
    assert sorted(steps) == [1, 2, 3]
    for step, m in steps.items():
        assert m["actor/grad_norm"] > 0, step
        assert m["eff/gen_tokens"] > 0 and m["timing_s/gen"] > 0 and m["timing_s/update_weights"] > 0


def test_rollout_logprobs_match_trainer_after_weight_push(vllm_runs):
    # Steps 2 and 3 sampled from weights pushed after an lr-1e-2 update: vLLM's log-probs equal the
    # trainer's recomputed ones only if the push reached the engine (and vLLM repacked the weights).
    for step in (2, 3):
        m = vllm_runs["first"][step]
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < PROBS_DIFF_MAX, (step, m["training/rollout_probs_diff_max"])


def test_rpo_suffix_rollouts_through_vllm(vllm_runs):
    for step in (1, 2):
        assert vllm_runs["first"][step]["rpo/full_path_frac"] == 1
    for m in (vllm_runs["first"][3], vllm_runs["resumed_steps"][4]):
        assert m["rpo/cache_hit_rate"] == 1 and m["rpo/full_path_frac"] == 0
        assert 0 < m["eff/generated_tokens"] < m["eff/full_path_equiv_tokens"]
        assert m["eff/gen_tokens"] == m["eff/generated_tokens"]  # per-request max_tokens held
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < PROBS_DIFF_MAX


def test_validation_through_vllm(vllm_runs):
    val = [step for step, m in vllm_runs["first_records"] if "val-core/rpo_verl_test/add/acc/mean@1" in m]
    assert val[:2] == [0, 2]


def test_resume_from_checkpoint(vllm_runs):
    run_dir = vllm_runs["dir"]
    assert (run_dir / "global_step_2" / "actor").is_dir() and (run_dir / "global_step_3" / "actor").is_dir()
    assert "resumed from" in vllm_runs["resumed"].stdout
    assert sorted(vllm_runs["resumed_steps"]) == [4]
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text().strip() == "4"


def test_vllm_server_runs_with_the_cpu_settings(vllm_runs):
    out = vllm_runs["resumed"].stdout
    assert "Enforce eager set" in out  # the CPU preset's enforce_eager reached the engine


@pytest.fixture(scope="session")
def vllm_dps_r2vpo(vllm_tiny_model_path, add_prompts, rpo_main, tmp_path_factory):
    """Run C: DPS selection and the R²VPO loss (with replay) on top of verl's vLLM rollout, 2 steps."""
    root = tmp_path_factory.mktemp("vllm_dps_r2vpo")
    train = add_prompts(root / "train.parquet", 8, split="train")
    run_dir = root / "run"
    pl = "actor_rollout_ref.actor.policy_loss"
    args = [a for a in _args(vllm_tiny_model_path, train, train, run_dir, 2, "trainer.val_before_train=false",
                             "trainer.test_freq=-1", "rpo_verl.dps.enable=true", f"{pl}.loss_mode=r2vpo",
                             "rpo_verl.r2vpo.replay.enable=true")
            if not a.startswith("rpo_verl.rpo.")]
    done = rpo_main(args, timeout=900, log_path=root / "c.log")
    assert done.returncode == 0, done.stdout[-8000:]
    return _steps(run_dir / "metrics.jsonl")


def test_dps_and_r2vpo_on_top_of_vllm(vllm_dps_r2vpo):
    assert sorted(vllm_dps_r2vpo) == [1, 2]
    for step, m in vllm_dps_r2vpo.items():
        assert m["dps/prompts_step"] == BATCH and m["dps/select_calls_step"] == 1, step
        assert m["dps/rollouts_total"] == step * BATCH * N
        assert m["r2vpo/lambda"] >= 0 and 0 < m["r2vpo/ratio_min"] <= m["r2vpo/ratio_max"], step
        assert m["actor/grad_norm"] > 0
    assert vllm_dps_r2vpo[2]["r2vpo/replay_rows"] > 0  # step 2 replays step 1's stale group
