"""scripts/bench/rpo_long_chain.py: resume/skip of (seed, arm) runs, the results file's schema, ratios.

The runner is a fake that writes a verl ``file``-logger metrics file; everything after it (reading
the metrics with ``rpo_vs_full.arm_result``, the per-run records, the resume logic, the results file
and the figure) is the script's real code. The end-to-end smoke run on the real model is recorded
in BENCHMARKS.md (too slow for the suite).
"""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "rpo_long_chain.py"
ISSUE_RUN_KEYS = {"seed", "arm", "steps", "generated_tokens", "full_path_equivalent_tokens", "mean_response_tokens",
                  "rollout_s", "step_s", "val_acc", "val_acc_final"}


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("rpo_long_chain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeRunner:
    """Writes ``<folder>/<arm>/metrics.jsonl`` as verl's file logger would, then reads it like the real runner."""

    def __init__(self, lc, steps=2, fail_on=None):
        self.lc, self.steps, self.fail_on, self.calls = lc, steps, fail_on, []

    def __call__(self, seed, arm, folder):
        self.calls.append((seed, arm))
        if (seed, arm) == self.fail_on:
            raise SystemExit(f"seed {seed} {arm} failed")
        run_dir = folder / arm
        run_dir.mkdir(parents=True, exist_ok=True)
        acc = self.lc.rpo_vs_full.ACC_KEY
        lines = [{"step": 0, "data": {acc: 0.25}}]
        for step in range(1, self.steps + 1):
            m = {"training/global_step": step, "timing_s/gen": 10.0, "timing_s/step": 20.0, "critic/score/mean": 0.2}
            if arm == "grpo":
                m["eff/gen_tokens"] = 1000.0 + seed
            else:  # RPO: the suffix-only response mask, and the extension's own counters
                m.update({"eff/gen_tokens": 60.0, "eff/generated_tokens": 50.0 + seed,
                          "eff/full_path_equiv_tokens": 1000.0, "rpo/prefix_fraction": 0.95, "rpo/cache_hit_rate": 1.0,
                          "rpo/zero_variance_group_frac": 0.5, "timing_s/gen": 1.0, "timing_s/step": 8.0})
            lines.append({"step": step, "data": m})
        lines.append({"step": self.steps, "data": {acc: 0.5 if arm == "grpo" else 0.25 + 0.25 * seed}})
        (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        series = self.lc.rpo_vs_full.arm_result(arm, run_dir, folder / f"{arm}.dropped.jsonl", 1.0)
        return self.lc.with_diagnostics(series, run_dir)


def _args(lc, tmp_path, *extra):
    return lc.parse_args(["--out", str(tmp_path / "out"), "--results", str(tmp_path / "res" / "lc.json"),
                          "--seeds", "0,1", "--steps", "2", "--batch", "2", "--n", "2", "--test-freq", "2", *extra])


def _fake_cache(calls):
    def build(a, seed, folder):
        calls.append(seed)
        return {"mean_length": 200.0, "suffix_budget_share": 0.06}

    return build


def test_results_schema_and_values(lc, tmp_path):
    a, builds = _args(lc, tmp_path), []
    runs = lc.campaign(a, FakeRunner(lc), "abc1234", _fake_cache(builds))
    data = json.loads((tmp_path / "res" / "lc.json").read_text())
    assert set(data) == {"task", "commit", "runs"} and data["commit"] == "abc1234" and "reasoning" in data["task"]
    assert [(r["seed"], r["arm"]) for r in data["runs"]] == [(0, "grpo"), (0, "rpo"), (1, "grpo"), (1, "rpo")]
    assert data["runs"] == runs and builds == [0, 1]
    for r in data["runs"]:
        assert set(r) == ISSUE_RUN_KEYS
        assert isinstance(r["generated_tokens"], int) and isinstance(r["full_path_equivalent_tokens"], int)
        assert r["steps"] == 2 and isinstance(r["val_acc"], list) and r["val_acc_final"] == r["val_acc"][-1]
    g0, p1 = data["runs"][0], data["runs"][3]
    assert (g0["generated_tokens"], g0["full_path_equivalent_tokens"]) == (2000, 2000)
    assert g0["mean_response_tokens"] == pytest.approx(2000 / (2 * 4)) and g0["step_s"] == 20.0
    assert g0["val_acc"] == [0.25, 0.5]
    # RPO counts the extension's generated suffix tokens, not the response-mask sum
    assert (p1["generated_tokens"], p1["full_path_equivalent_tokens"]) == (102, 2000)
    assert p1["rollout_s"] == 1.0 and p1["val_acc"] == [0.25, 0.5]
    assert (tmp_path / "res" / "lc.png").stat().st_size > 0
    s = lc.summary(runs)
    assert [p["seed"] for p in s["pairs"]] == [0, 1]
    assert s["tokens_ratio"]["mean"] == pytest.approx((100 / 2000 + 102 / 2002) / 2)
    assert s["step_time_ratio"]["mean"] == pytest.approx(0.4) and s["step_time_ratio"]["std"] == 0.0
    assert s["val_acc_delta_points"]["mean"] == pytest.approx((-25 + 0) / 2)
    details = json.loads((tmp_path / "out" / "rpo_long_chain.details.json").read_text())
    assert set(details["series"]) == {"0/grpo", "0/rpo", "1/grpo", "1/rpo"} and set(details["caches"]) == {"0", "1"}
    assert details["series"]["0/rpo"]["diag:rpo/zero_variance_group_frac"] == [0.5, 0.5]
    assert "diag:rpo/zero_variance_group_frac" not in details["series"]["0/grpo"]


def test_finished_runs_are_skipped_and_a_failure_resumes(lc, tmp_path):
    a = _args(lc, tmp_path)
    failing = FakeRunner(lc, fail_on=(1, "grpo"))
    with pytest.raises(SystemExit, match="seed 1 grpo failed"):
        lc.campaign(a, failing, "c1", _fake_cache([]))
    assert failing.calls == [(0, "grpo"), (0, "rpo"), (1, "grpo")]
    kept = json.loads((tmp_path / "res" / "lc.json").read_text())  # the finished runs' numbers survive the failure
    assert [(r["seed"], r["arm"]) for r in kept["runs"]] == [(0, "grpo"), (0, "rpo")]

    again, builds = FakeRunner(lc), []
    runs = lc.campaign(a, again, "c2", _fake_cache(builds))
    assert again.calls == [(1, "grpo"), (1, "rpo")] and builds == [1] and len(runs) == 4
    assert runs[:2] == kept["runs"]

    third = FakeRunner(lc)
    assert lc.campaign(a, third, "c3", _fake_cache([])) == runs and third.calls == []
    (tmp_path / "out" / "seed0" / "rpo.done.json").unlink()
    fourth = FakeRunner(lc)
    lc.campaign(a, fourth, "c4", _fake_cache([]))
    assert fourth.calls == [(0, "rpo")]
    fresh = FakeRunner(lc)
    lc.campaign(_args(lc, tmp_path, "--fresh"), fresh, "c5", _fake_cache([]))
    assert len(fresh.calls) == 4


def test_rpo_overrides_and_bad_arguments(lc, tmp_path):
    a = _args(lc, tmp_path, "--max-cut", "16", "--rpo-override", "rpo_verl.rpo.loss.include_prefix=true", "--",
              "trainer.foo=1")
    over = lc.rpo_overrides(a, 1, Path("/c.npz"))
    assert "rpo_verl.rpo.prefix.mode=tail" in over and "rpo_verl.rpo.prefix.max_cut=16" in over
    assert "rpo_verl.rpo.cache.seed=1" in over and over[-1] == "rpo_verl.rpo.loss.include_prefix=true"
    assert a.extra == ["trainer.foo=1"] and a.seed_list == [0, 1]
    common = lc.rpo_vs_full.common_overrides(lc.arm_args(a, 2))
    assert "data.seed=2" in common and "data.max_response_length=320" in common and common[-1] == "trainer.foo=1"
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4" in common  # gcd(2 x 2, 8)
    mine = lc.parse_args(["--", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"])
    common = lc.rpo_vs_full.common_overrides(lc.arm_args(mine, 0))
    assert [x for x in common if "micro_batch" in x] == ["actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
                                                        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]
    with pytest.raises(SystemExit):
        lc.parse_args(["--seeds", ""])
    with pytest.raises(SystemExit):
        lc.parse_args(["--max-cut", "0"])


def test_cache_stats_reads_a_real_cache_file(lc, tmp_path):
    import numpy as np

    from rpo_verl.rpo.cache_file import read_cache_file
    from rpo_verl.rpo.cache_store import CacheStore

    store = CacheStore((0, 2))
    for pid, length in enumerate((100, 300)):
        store.write(pid, np.arange(length, dtype=np.int32), reward=float(pid), correct=bool(pid), step=0)
    path = tmp_path / "c.npz"
    store.save(str(path))
    assert len(read_cache_file(str(path))["length"]) == 2
    stats = lc.cache_stats(path, max_cut=23)
    assert stats["records"] == 2 and stats["mean_length"] == 200.0 and stats["correct_frac"] == 0.5
    assert stats["mean_suffix_budget"] == 12.0 and stats["suffix_budget_share"] == pytest.approx(0.06)
