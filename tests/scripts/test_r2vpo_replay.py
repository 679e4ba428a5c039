"""scripts/bench/r2vpo_replay.py: resume (finished (seed, arm) skipped), the results schema, the
target and rollouts-to-target, without running a trainer (``run_arm`` is replaced by a fake)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "r2vpo_replay.py"
STEPS, FREQ = 4, 2


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("r2vpo_replay", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeRunArm:
    """``r2vpo_cpu_run.run_arm``'s result for (seed, arm): accuracy and λ that depend on both."""

    ACC = {"grpo_clip": [0.5, 0.6, 0.7], "r2vpo": [0.5, 0.7, 0.7], "r2vpo_replay": [0.5, 0.75, 0.8]}

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, args, arm):
        self.calls.append((args.seed, arm))
        assert args.reuse and args.out_dir.endswith(f"seed{args.seed}")  # resumes its own folder
        if (args.seed, arm) in self.fail:
            raise SystemExit(f"[{arm}] run failed")
        bump = 0.05 * args.seed
        steps = {str(s): {"critic/score/mean": 0.1 * s + bump, **({} if arm == "grpo_clip" else
                          {"r2vpo/lambda_end": float(s + args.seed), "r2vpo/v_hat_stale": 0.01})}
                 for s in range(1, STEPS + 1)}
        val = {str(s): a + bump for s, a in zip(range(0, STEPS + 1, FREQ), self.ACC[arm])}
        return {"run_dir": f"{args.out_dir}/{arm}/run", "steps": steps, "val_acc": val}


def _argv(tmp_path, *extra):
    return ["--out-dir", str(tmp_path / "out"), "--results", str(tmp_path / "res" / "r2vpo_replay.json"),
            "--seeds", "0,1", "--steps", str(STEPS), "--test-freq", str(FREQ), "--batch", "2", "--n", "3", *extra]


def test_results_have_exactly_the_issue_schema(bench, tmp_path):
    fake = FakeRunArm()
    assert bench.main(_argv(tmp_path), run_arm=fake) == 0
    results = json.loads((tmp_path / "res" / "r2vpo_replay.json").read_text())
    bench.check_schema(results)
    assert set(results) == {"target", "runs"}
    assert results["target"] == pytest.approx((0.7 + 0.75) / 2)  # mean of GRPO-clip's best after step 0
    runs = {(r["seed"], r["arm"]): r for r in results["runs"]}
    assert sorted(runs) == [(s, a) for s in (0, 1) for a in bench.ARMS]
    for r in results["runs"]:
        assert list(r) == ["seed", "arm", "rollouts_to_target", "val_acc", "train_reward", "lambda_max"]
        assert len(r["val_acc"]) == 3 and len(r["train_reward"]) == STEPS
    per_step = 2 * 3  # newly generated responses per step
    assert runs[(0, "grpo_clip")]["rollouts_to_target"] is None  # 0.70 < 0.725
    assert runs[(1, "grpo_clip")]["rollouts_to_target"] == 4 * per_step  # 0.75 ≥ 0.725 at step 4
    assert runs[(0, "r2vpo_replay")]["rollouts_to_target"] == 2 * per_step
    assert runs[(1, "r2vpo")]["lambda_max"] == STEPS + 1.0 and runs[(0, "grpo_clip")]["lambda_max"] == 0.0
    assert (tmp_path / "res" / "r2vpo_replay.png").stat().st_size > 0


def test_finished_runs_are_skipped_and_a_failed_one_is_retried(bench, tmp_path):
    first = FakeRunArm(fail={(1, "r2vpo")})
    with pytest.raises(SystemExit):
        bench.main(_argv(tmp_path), run_arm=first)
    assert first.calls == [(0, "grpo_clip"), (0, "r2vpo"), (0, "r2vpo_replay"), (1, "grpo_clip"), (1, "r2vpo")]
    assert bench.pending(str(tmp_path / "out"), [0, 1], bench.ARMS) == [(1, "r2vpo"), (1, "r2vpo_replay")]
    second = FakeRunArm()
    assert bench.main(_argv(tmp_path), run_arm=second) == 0
    assert second.calls == [(1, "r2vpo"), (1, "r2vpo_replay")]  # finished (seed, arm) not rerun
    third = FakeRunArm()
    assert bench.main(_argv(tmp_path, "--target", "0.6"), run_arm=third) == 0 and third.calls == []
    results = json.loads((tmp_path / "res" / "r2vpo_replay.json").read_text())
    assert results["target"] == 0.6 and len(results["runs"]) == 6


def test_a_partial_invocation_keeps_every_finished_run_in_the_results(bench, tmp_path):
    """A sitting that runs one arm (or one seed) rewrites the results file with all runs so far."""
    assert bench.main(_argv(tmp_path, "--seeds", "0", "--arms", "grpo_clip,r2vpo"), run_arm=FakeRunArm()) == 0
    fake = FakeRunArm()
    assert bench.main(_argv(tmp_path, "--seeds", "1", "--arms", "r2vpo_replay"), run_arm=fake) == 0
    assert fake.calls == [(1, "r2vpo_replay")]
    results = json.loads((tmp_path / "res" / "r2vpo_replay.json").read_text())
    assert [(r["seed"], r["arm"]) for r in results["runs"]] == [(0, "grpo_clip"), (0, "r2vpo"), (1, "r2vpo_replay")]
    assert results["target"] == pytest.approx(0.7)  # seed 0's GRPO-clip, the only one finished


def test_an_unfinished_run_is_not_cached(bench, tmp_path):
    short = FakeRunArm()
    with pytest.raises(RuntimeError, match="of 6 steps"):
        bench.main(_argv(tmp_path)[:-8] + ["--steps", "6", "--test-freq", "2", "--batch", "2", "--n", "3"],
                   run_arm=short)
    assert bench.pending(str(tmp_path / "out"), [0, 1], bench.ARMS)[0] == (0, "grpo_clip")


def test_schema_check_rejects_extra_or_wrong_fields(bench):
    good = {"target": 0.5, "runs": [{"seed": 0, "arm": "r2vpo", "rollouts_to_target": None, "val_acc": [0.5],
                                      "train_reward": [0.1], "lambda_max": 1.0}]}
    bench.check_schema(good)
    for bad in ({**good, "commit": "x"}, {**good, "target": 1},
                {**good, "runs": [{**good["runs"][0], "arm": "ppo"}]},
                {**good, "runs": [{**good["runs"][0], "rollouts_to_target": 1.5}]},
                {**good, "runs": [{**good["runs"][0], "extra": 1}]}):
        with pytest.raises(ValueError):
            bench.check_schema(bad)


def test_every_diagnostic_is_kept_by_the_single_seed_runner(bench):
    """The per-run diagnostics are read from what ``r2vpo_cpu_run`` keeps of each step: a key missing
    there silently vanished from the results (ESS and weight truncation did, before this test)."""
    assert set(bench.DIAG_KEYS) <= set(bench.base.STEP_KEYS)
