"""DPS end to end on CPU: verl's real v1 trainer (``python -m rpo_verl.main preset=cpu``), tiny model.

Run A: DPS selector, 4 steps, checkpoints at 2 and 4, rollouts dumped. Run B: A's step-2
checkpoint copied to a new folder and resumed to step 4; the scheduler actor is killed at the
start of step 4 (fault injection) and Ray restarts it from its snapshot. Run C: uniform selector with DAPO
dynamic sampling (``algorithm.filter_groups``) and RPO (lazy cache), 3 steps.

A and B use ``dps_reward.compute_score_fixed``: a group's accuracy is a function of its prompt
(class in ``ground_truth``), while the shaped score (vowel fraction) depends on the sampled text.
So the scheduler's inputs are deterministic even though rollouts are sampled, and (1) a plain
``SchedulerCore`` fed with the class accuracies must reproduce A's selections and its saved
arrays exactly, (2) B's arrays at step 4 must equal A's. The first step's selection depends only
on the seed, so the test gives one of those prompts the class "nan" (scoring failed) and the other
"0.5" (partially solved): the NaN path and all three states occur for sure.
Each run is a subprocess killed after a hard timeout (a Ray hang fails instead of blocking CI).
"""

import shutil

import numpy as np
import pytest
import torch

from rpo_verl.dps.config import DPSConfig
from rpo_verl.dps.core import SchedulerCore
from rpo_verl.dps.state_io import diff_states, load_state
from rpo_verl.dps.trainer_ext import KILL_ENV
from rpo_verl.trainer.metrics_file import read_records, run_files
from rpo_verl.trainer.trainer import EXTENSION_STATE_FILE

pytestmark = pytest.mark.e2e

BATCH, N, RESPONSE, SEED = 2, 4, 16, 1
N_PROMPTS = 10


def _args(helpers, model, train, reward_name, run_dir, steps, *extra):
    return [
        "preset=cpu", f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}", f"data.val_files={train}", "data.val_max_samples=2",
        f"data.train_batch_size={BATCH}", "data.max_prompt_length=64", f"data.max_response_length={RESPONSE}",
        f"actor_rollout_ref.rollout.n={N}", f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
        f"reward.custom_reward_function.path={helpers['reward']}", f"reward.custom_reward_function.name={reward_name}",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=2", "trainer.test_freq=-1",
        "trainer.val_before_train=false", f"trainer.default_local_dir={run_dir}",
        f"trainer.rollout_data_dir={run_dir}/rollouts", "trainer.experiment_name=e2e_dps",
        "rpo_verl.dps.enable=true", f"rpo_verl.dps.seed={SEED}", *extra,
    ]


def _fixed_classes() -> list[str]:
    classes = ["0", "1", "0.5", "0", "1"] * 2
    first = SchedulerCore(DPSConfig(enable=True, seed=SEED), N_PROMPTS, N).select(BATCH)
    classes[int(first[0])], classes[int(first[1])] = "nan", "0.5"
    return classes


def _accuracy(cls: str) -> float:
    return float("nan") if cls == "nan" else float(cls)


def _ext_state(run_dir, step):
    return torch.load(run_dir / f"global_step_{step}" / EXTENSION_STATE_FILE, weights_only=False)["dps"]


def _trained_rows(run_dir, step, pattern) -> list[int]:
    """Dataset rows of the prompts trained at ``step``, from verl's rollout dump (one per trajectory)."""
    lines = (run_dir / "rollouts" / f"{step}.jsonl").read_text().splitlines()
    import json

    return sorted({int(pattern.search(json.loads(line)["input"]).group(1)) for line in lines})


def _steps(run_dir):
    return {step: m for step, m in read_records(run_files(str(run_dir / "metrics.jsonl"))) if "training/global_step" in m}


@pytest.fixture(scope="module")
def dps_runs(tiny_model_path, dps_helpers, tmp_path_factory):
    root = tmp_path_factory.mktemp("dps_e2e")
    classes = _fixed_classes()
    train = dps_helpers["write_prompts"](root / "train.parquet", classes)
    run = dps_helpers["run_main"]
    a, b = root / "a", root / "b"
    first = run(_args(dps_helpers, tiny_model_path, train, "compute_score_fixed", a, 4),
                timeout=420, log_path=root / "a.log")
    assert first.returncode == 0, first.stdout[-6000:]
    b.mkdir()
    shutil.copytree(a / "global_step_2", b / "global_step_2")
    (b / "latest_checkpointed_iteration.txt").write_text("2")
    resumed = run(_args(dps_helpers, tiny_model_path, train, "compute_score_fixed", b, 4),
                  timeout=300, log_path=root / "b.log", env={KILL_ENV: "4"})
    assert resumed.returncode == 0, resumed.stdout[-6000:]
    return {"a": a, "b": b, "classes": classes, "first": first, "resumed": resumed}


def test_trained_prompts_are_the_schedulers_selections(dps_runs, dps_helpers):
    """A plain SchedulerCore fed with the raw accuracies replays run A: same prompts every step,
    identical arrays in both checkpoints and in the actor's snapshot."""
    a, classes, pattern = dps_runs["a"], dps_runs["classes"], dps_helpers["row_pattern"]
    core = SchedulerCore(DPSConfig(enable=True, seed=SEED), N_PROMPTS, N)
    for step in range(1, 5):
        ids = core.select(BATCH)
        assert _trained_rows(a, step, pattern) == sorted(ids.tolist()), f"step {step}"
        core.update(ids, [_accuracy(classes[i]) for i in ids], N)
        if step in (2, 4):
            assert diff_states(core.state_dict(), _ext_state(a, step)) == [], f"checkpoint {step}"
    assert diff_states(core.state_dict(), load_state(str(a / "dps_snapshot.npz"))) == []


def test_dps_metrics_logged_each_step(dps_runs):
    steps = _steps(dps_runs["a"])
    assert sorted(steps) == [1, 2, 3, 4]
    for step, m in steps.items():
        assert m["dps/step"] == step and m["dps/prompts_step"] == BATCH == m["dps/groups_generated_step"]
        assert m["dps/rollouts_total"] == step * BATCH * N and m["dps/select_calls_step"] == 1
        for key in ("dps/selected_mu_partial_mean", "dps/sample_count_std", "dps/scheduler_time_s",
                    "dps/driver_time_s", "dps/active_prompts"):
            assert key in m, (step, key)
    # step 1: the 'nan' prompt is unobserved (logged), the '0.5' one is partially solved
    assert steps[1]["dps/nan_prompts_step"] == 1 and steps[1]["dps/observed_prompts_step"] == 1
    assert steps[1]["dps/effective_ratio"] == 1.0
    assert "stay unobserved" in dps_runs["first"].stdout


def test_nan_prompt_stays_at_the_prior(dps_runs):
    state = _ext_state(dps_runs["a"], 4)
    nan_row = dps_runs["classes"].index("nan")
    core = SchedulerCore(DPSConfig(enable=True, seed=SEED), N_PROMPTS, N)
    core.load_state_dict(state)
    np.testing.assert_allclose(core.selector.predict(np.array([nan_row])), 1 / 3, atol=1e-12)
    assert state["nan_total"] >= 1 and state["sample_counts"][nan_row] >= 1


def test_resume_and_actor_restart_give_identical_scheduler_arrays(dps_runs, dps_helpers):
    a, b, out = dps_runs["a"], dps_runs["b"], dps_runs["resumed"].stdout
    assert "the next training step is 3" in out
    assert "killed the DPS scheduler at step 4" in out and "DPS scheduler restored from snapshot" in out
    assert diff_states(_ext_state(a, 4), _ext_state(b, 4)) == []
    for step in (3, 4):
        assert _trained_rows(b, step, dps_helpers["row_pattern"]) == _trained_rows(a, step, dps_helpers["row_pattern"])


@pytest.fixture(scope="module")
def dapo_run(tiny_model_path, dps_helpers, tmp_path_factory):
    root = tmp_path_factory.mktemp("dps_dapo_e2e")
    # 'mix' groups are mostly mixed (kept by DAPO); '0'/'1' groups are always evicted and refilled.
    # 8 prompts, 3 steps of >= 4 groups: at least 4 selections revisit a prompt of an earlier step.
    classes = ["mix", "0", "1", "mix", "mix", "0", "1", "mix"]
    train = dps_helpers["write_prompts"](root / "train.parquet", classes)
    c = root / "c"
    out = dps_helpers["run_main"](
        _args(dps_helpers, tiny_model_path, train, "compute_score_sampled", c, 3, "rpo_verl.dps.selector=uniform",
              "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc",
              # RPO on the same run: prefixes are attached to whatever the DPS scheduler selected
              "rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=lazy", "rpo_verl.rpo.prefix.mode=ratio",
              "rpo_verl.rpo.prefix.slack=4"),
        timeout=420, log_path=root / "c.log")
    assert out.returncode == 0, out.stdout[-6000:]
    return {"dir": c, "out": out, "classes": classes}


def test_uniform_selector_with_dapo_reports_every_generated_group(dapo_run, dps_helpers):
    c = dapo_run["dir"]
    steps = _steps(c)
    assert sorted(steps) == [1, 2, 3]
    refills = 0
    for step, m in steps.items():
        evicted = m.get("training/filter_groups/evicted_samples", 0)
        surplus = m.get("training/filter_groups/discarded_surplus_samples", 0)
        assert m["dps/groups_generated_step"] == BATCH + evicted + surplus, (step, m)
        assert m["dps/groups_discarded_step"] == evicted + surplus
        assert m["dps/prompts_step"] == m["dps/groups_generated_step"]
        refills += m["dps/select_calls_step"] - 1
        # every trained prompt was one the scheduler selected (all of them 'mix': the rest was evicted)
        rows = _trained_rows(c, step, dps_helpers["row_pattern"])
        assert len(rows) == BATCH and all(dapo_run["classes"][r] == "mix" for r in rows)
    assert refills >= 1, "DAPO never refilled: the test data no longer exercises the refill path"
    state = _ext_state(c, 3)
    # distinct prompts within a step, and every generated group counted once
    assert int(state["sample_counts"].sum()) == sum(m["dps/groups_generated_step"] for m in steps.values())
    assert state["selector_name"] == "uniform"


def test_rpo_prefixes_the_prompts_dps_selects(dapo_run):
    """RPO's before_rollout saw every prompt the scheduler chose, refill rounds included, and a
    prompt selected again in a later step got a prefix cached from its earlier group (RPO offers
    trained and dropped groups to its lazy cache)."""
    steps = _steps(dapo_run["dir"])
    for step, m in steps.items():
        assert m["rpo/prefix_lookups"] == m["dps/groups_generated_step"], step
    assert steps[1]["rpo/full_path_frac"] == 1  # lazy cache: nothing cached before step 1
    counts = _ext_state(dapo_run["dir"], 3)["sample_counts"]
    revisits = int(counts.sum() - (counts > 0).sum())
    hits = sum(round(m["rpo/cache_hit_rate"] * m["rpo/prefix_lookups"]) for m in steps.values())
    assert revisits >= 4 and 1 <= hits <= revisits, (revisits, hits)
