"""scripts/bench/dps_real_run.py: pool stratification, rollouts-to-target, per-run records, aggregation, resume.

The trainer runner and the pool builder are fakes; the metrics they return have the shape of
``dps_cpu_run.read_run`` (verl's file logger read back). The end-to-end smoke run on the tiny model
is recorded in BENCHMARKS.md (too slow for the suite).
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "dps_real_run.py"


@pytest.fixture(scope="module")
def rr():
    spec = importlib.util.spec_from_file_location("dps_real_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_read_run(arm, seed, steps=4, k=8, batch=4, pool=8):
    """What read_run returns: per-step metrics and validation accuracy at steps 0, 2, 4."""
    eff = {"uniform": 0.25, "dapo_ds": 0.5, "mopps": 0.5, "dps": 1.0}[arm]
    groups = 2 * batch if arm == "dapo_ds" else batch
    run = {"steps": {}, "val": {}}
    for s in range(1, steps + 1):
        run["steps"][s] = {"training/global_step": s, "dps/effective_ratio": eff, "dps/observed_prompts_step": groups,
                           "dps/rollouts_total": s * groups * k, "dps/groups_generated_step": groups,
                           "dps/sample_count_mean": s * groups / pool, "timing_s/step": 2.0}
    gain = {"uniform": 0.1, "dapo_ds": 0.2, "mopps": 0.2, "dps": 0.3}[arm]
    run["val"] = {0: 0.2, 2: 0.2 + gain / 2 + 0.01 * seed, 4: 0.2 + gain}
    return run


def test_stratify_thirds_and_fill(rr):
    rng = np.random.default_rng(0)
    hits = [0] * 10 + [3] * 10 + [8] * 10
    picked, mix = rr.stratify(hits, 8, 9, rng)
    assert len(picked) == len(set(picked)) == 9
    assert [sum(1 for i in picked if hits[i] == h) for h in (0, 3, 8)] == [3, 3, 3]
    # too few always-solved: filled from the partly solved ones first
    hits = [0] * 10 + [5] * 10 + [8] * 1
    picked, mix = rr.stratify(hits, 8, 12, rng)
    assert mix["never"] == 4 and mix["always"] == 1 and mix["partly"] == 7 and mix["available_always"] == 1
    assert len(set(picked)) == 12
    with pytest.raises(ValueError):
        rr.stratify([0, 1], 8, 3, rng)


def test_rollouts_to_target(rr):
    curve = [{"step": 0, "rollouts": 0, "val_acc": 0.2}, {"step": 5, "rollouts": 640, "val_acc": 0.45},
             {"step": 10, "rollouts": 1280, "val_acc": 0.55}, {"step": 15, "rollouts": 1920, "val_acc": 0.4}]
    assert rr.rollouts_to_target(curve, 0.5) == 1280
    assert rr.rollouts_to_target(curve, 0.45) == 640
    assert rr.rollouts_to_target(curve, 0.2) == 0
    assert rr.rollouts_to_target(curve, 0.6) is None


def test_run_record_and_aggregate(rr):
    runs = [rr.run_record(seed, arm, fake_read_run(arm, seed), 10.0, target=0.35)
            for seed in (0, 1) for arm in rr.ARMS]
    dapo = next(r for r in runs if r["arm"] == "dapo_ds" and r["seed"] == 0)
    assert set(rr.ISSUE_KEYS) <= set(dapo)
    assert dapo["effective_prompt_ratio"] == 0.5 and dapo["rollouts_generated"] == 4 * 8 * 8
    assert dapo["visits_per_prompt_mean"] == 4.0 and dapo["val_acc"] == pytest.approx([0.2, 0.3, 0.4])
    assert dapo["val_rollouts"] == [0, 128, 256] and dapo["rollouts_to_target"] == 256
    dps = next(r for r in runs if r["arm"] == "dps" and r["seed"] == 0)
    assert dps["rollouts_to_target"] == 64  # 0.2 + 0.15 at step 2 = 2 steps x 4 groups x 8
    uniform = next(r for r in runs if r["arm"] == "uniform" and r["seed"] == 0)
    assert uniform["rollouts_to_target"] is None
    agg = rr.aggregate(runs)
    assert agg["dps"]["reached_target"] == "2/2" and agg["uniform"]["reached_target"] == "0/2"
    assert agg["uniform"]["rollouts_to_target_mean"] is None
    assert agg["dps_rollouts_to_target_vs_dapo_ds"] == pytest.approx(64 / 256)
    assert agg["dapo_ds"]["visits_per_prompt_mean"] == 4.0


def test_campaign_resumes_and_writes_schema(rr, tmp_path):
    calls, pools = [], []

    def runner(args, seed, arm, folder, pool):
        calls.append((seed, arm))
        return fake_read_run(arm, seed), 3.0

    def pool_builder(args, folder):
        pools.append(folder)
        return {"train": "t", "val": "v", "calibration": {"mix": {"never": 1}}}

    res = tmp_path / "res" / "dps_real_run.json"
    args = rr.parse_args(["--seeds", "0,1", "--arms", "uniform,dps", "--results", str(res), "--out", str(tmp_path),
                          "--target", "0.35"])
    rr.campaign(args, runner, "abc1234", pool_builder)
    assert calls == [(0, "uniform"), (0, "dps"), (1, "uniform"), (1, "dps")] and len(pools) == 1
    data = json.loads(res.read_text())
    assert data["target"] == 0.35 and data["commit"] == "abc1234"
    assert [(r["seed"], r["arm"]) for r in data["runs"]] == calls
    for r in data["runs"]:
        assert isinstance(r["val_acc"], list) and r["arm"] in rr.ARMS
        assert r["rollouts_to_target"] is None or isinstance(r["rollouts_to_target"], int)
    # resume: finished runs are skipped, a new arm is run, the pool is not rebuilt when nothing is to run
    calls.clear()
    args = rr.parse_args(["--seeds", "0,1", "--arms", "uniform,dps,mopps", "--results", str(res), "--out",
                          str(tmp_path), "--target", "0.35"])
    rr.campaign(args, runner, "abc1234", pool_builder)
    assert calls == [(0, "mopps"), (1, "mopps")]
    assert len(json.loads(res.read_text())["runs"]) == 6
    calls.clear()
    rr.campaign(args, runner, "abc1234", pool_builder)
    assert calls == [] and len(pools) == 2
    # a different target would mix incomparable results
    with pytest.raises(SystemExit):
        rr.campaign(rr.parse_args(["--results", str(res), "--target", "0.5"]), runner, "x", pool_builder)


def test_unknown_arm_rejected(rr):
    with pytest.raises(SystemExit):
        rr.parse_args(["--arms", "uniform,best"])


def test_cached_pool_must_match_the_calibration_settings(rr, tmp_path):
    args = rr.parse_args(["--n", "8", "--pool-size", "48"])
    (tmp_path / "calibration.json").write_text(json.dumps({**rr.pool_params(args), "mix": {"never": 48}}))
    assert rr.build_pool(args, tmp_path)["calibration"]["mix"] == {"never": 48}  # reused, nothing sampled
    with pytest.raises(SystemExit, match="calibrated with other settings"):
        rr.build_pool(rr.parse_args(["--n", "4", "--pool-size", "48"]), tmp_path)
