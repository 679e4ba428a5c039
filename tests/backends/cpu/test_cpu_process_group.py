"""The process-group backend fix: fails loudly if verl moves or changes the code it wraps, refuses
other verl versions, and works for real with two gloo ranks (process group + FSDP2)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
from pathlib import Path

import pytest

from rpo_verl.backends.cpu import process_group

from .cpu_test_utils import HERE, fresh_env

RANKS_SCRIPT = HERE / "cpu_backend_ranks.py"


def _source_of(module_name: str) -> str:
    return Path(importlib.util.find_spec(module_name).origin).read_text(encoding="utf-8")


def test_verl_still_builds_the_duplicate_backend_string_where_the_fix_expects_it():
    function = process_group.original_function()
    assert function.__module__ == process_group.TARGET_MODULE
    assert list(inspect.signature(function).parameters) == ["timeout_second", "backend"]
    assert process_group.VERL_BACKEND_EXPRESSION in inspect.getsource(function), (
        "verl changed verl/utils/distributed.py::initialize_global_process_group_ray: re-check whether "
        "rpo_verl/backends/cpu/process_group.py is still needed and correct"
    )
    assert process_group.check_target() is None
    # TrainingWorker (actor/ref/critic) binds the name at import and relies on verl's default backend.
    workers = _source_of("verl.workers.engine_workers")
    assert "from verl.utils.distributed import initialize_global_process_group_ray" in workers
    assert "initialize_global_process_group_ray(timeout_second=None)" in workers


@pytest.fixture
def unpatched_target(monkeypatch):
    """verl's function as the attribute (restored after the test), whatever this process did."""
    import verl.utils.distributed as distributed

    monkeypatch.setattr(distributed, process_group.TARGET_FUNCTION, process_group.original_function())
    return distributed


def test_other_verl_version_is_refused_with_a_clear_log(unpatched_target, monkeypatch, caplog):
    monkeypatch.setattr(process_group.metadata, "version", lambda name: "0.9.2")
    reason = process_group.check_target()
    assert "verl==0.9.2" in reason and "verl==0.9.1" in reason
    with caplog.at_level(logging.ERROR, logger=process_group.__name__):
        assert process_group.apply_process_group_fix() is False
    assert "NOT installing" in caplog.text and "verl==0.9.2" in caplog.text
    assert not process_group.is_installed()


def test_changed_verl_source_is_refused(unpatched_target, monkeypatch, caplog):
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return backend or "cpu:gloo"

    monkeypatch.setattr(unpatched_target, process_group.TARGET_FUNCTION, initialize_global_process_group_ray)
    assert "no longer contains" in process_group.check_target()
    with caplog.at_level(logging.ERROR, logger=process_group.__name__):
        assert process_group.apply_process_group_fix() is False
    assert unpatched_target.initialize_global_process_group_ray is initialize_global_process_group_ray


def test_changed_verl_signature_is_refused(unpatched_target, monkeypatch):
    def initialize_global_process_group_ray(timeout_second=None):
        return None

    monkeypatch.setattr(unpatched_target, process_group.TARGET_FUNCTION, initialize_global_process_group_ray)
    assert "now takes ['timeout_second']" in process_group.check_target()


def test_backend_choice_only_on_cpu_platform(cpu_platform, monkeypatch):
    assert process_group.cpu_backend_for(None) == "cpu:gloo"
    assert process_group.cpu_backend_for("gloo") == "gloo"  # an explicit backend is kept
    monkeypatch.setattr(process_group, "_platform_is_cpu", lambda: False)
    assert process_group.cpu_backend_for(None) is None  # verl's own default elsewhere


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    import subprocess
    import sys

    out_dir = tmp_path_factory.mktemp("ranks")
    env = fresh_env(VERL_PLATFORM="cpu", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(RANKS_SCRIPT), str(out_dir)], capture_output=True, text=True, env=env, timeout=240
    )
    reports = [
        json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2) if (out_dir / f"rank{r}.json").exists()
    ]
    assert done.returncode == 0 and len(reports) == 2, done.stderr[-6000:]
    for report in reports:
        assert "error" not in report, report["error"]
    return reports


def test_two_gloo_ranks_through_verls_initialiser(two_ranks):
    for report in two_ranks:
        assert report["platform"] == "CPUPlatform" and report["fix_installed"]
        assert report["backend"] == "cpu:gloo" and report["world_size"] == 2
        assert report["all_reduce_sum"] == 3.0  # 1 + 2


def test_two_rank_fsdp2_gradients_match_an_unsharded_model(two_ranks):
    for report in two_ranks:
        assert report["device_id"] == "cpu" and report["sharded"]
        assert report["compared_params"] > 10
        assert report["max_grad_diff"] < 1e-5
        assert report["own_batch_grad_diff"] > 1e-3, "ranks' gradients were not averaged"
        assert report["grad_norm"] == pytest.approx(report["ref_grad_norm"], rel=1e-5)
    assert two_ranks[0]["loss"] != two_ranks[1]["loss"]  # each rank trained on its own batch
