"""Data files are checked before Ray starts: readable, verl's columns, a scorer per data_source,
over-long prompts counted (rpo_verl/data/checks.py)."""

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rpo_verl.data import checks
from rpo_verl.models.paths import default_model_path

REPO = Path(__file__).resolve().parents[2]


def _rows(n, source="openai/gsm8k", content="What is 2 + 3?", truth="5"):
    return [{"data_source": source, "prompt": [{"role": "user", "content": content}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": truth}, "extra_info": {"split": "train", "index": i}}
            for i in range(n)]


def _write(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture
def tiny_model():
    path = default_model_path(tiny=True)
    if not (path / "config.json").exists():
        pytest.skip(f"{path} missing: run `python scripts/prepare_model.py --tiny`")
    return str(path)


@pytest.fixture
def config(compose_config, tiny_model, tmp_path):
    def _make(train_rows, *overrides, val_rows=None):
        train = _write(tmp_path / "train.parquet", train_rows)
        val = _write(tmp_path / "val.parquet", val_rows if val_rows is not None else _rows(2))
        return compose_config("preset=cpu", f"actor_rollout_ref.model.path={tiny_model}",
                              f"data.train_files={train}", f"data.val_files={val}", *overrides)

    return _make


def test_good_files_pass(config):
    assert checks.check_data_files(config(_rows(8))) == []


def test_corrupt_file_is_named(config, tmp_path):
    cfg = config(_rows(2))
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(b"PAR1xyz")  # 7 bytes: pyarrow's "smaller than the minimum file footer"
    cfg.data.train_files = str(bad)
    (problem,) = checks.check_data_files(cfg)
    assert problem.key == "data.train_files" and problem.environment
    assert str(bad) in problem.message and "not a readable parquet file" in problem.message


def test_missing_reward_model_column_is_named(config):
    rows = [{k: v for k, v in row.items() if k != "reward_model"} for row in _rows(3)]
    (problem,) = checks.check_data_files(config(rows))
    assert problem.key == "data.train_files"
    assert "no column(s) reward_model" in problem.message and "train.parquet" in problem.message


def test_missing_ground_truth_field_and_prompt_column(config):
    rows = [dict(row, reward_model={"style": "rule"}) for row in _rows(2)]
    (problem,) = checks.check_data_files(config(rows))
    assert "reward_model.ground_truth" in problem.message
    rows = [{k: v for k, v in row.items() if k != "prompt"} for row in _rows(2)]
    (problem,) = checks.check_data_files(config(rows))
    assert "no column(s) prompt" in problem.message and "data.prompt_key" in problem.message


def test_rows_without_ground_truth_are_counted(config):
    rows = _rows(4)
    rows[1]["reward_model"] = {"style": "rule", "ground_truth": None}
    (problem,) = checks.check_data_files(config(rows))
    assert "1 of 4 rows have no reward_model.ground_truth" in problem.message


def test_unknown_data_source_needs_a_scorer(config):
    cfg = config(_rows(2, source="my/dataset"))
    (problem,) = checks.check_data_files(cfg)
    assert problem.key == "reward.custom_reward_function.path"
    assert "'my/dataset'" in problem.message and "default_compute_score" in problem.message
    # rpo_verl's scorer grades every source; an unknown custom function is trusted.
    cfg = config(_rows(2, source="my/dataset"), "reward.custom_reward_function.path=pkg://rpo_verl.reward.score")
    assert checks.check_data_files(cfg) == []


def test_default_scorer_sources_match_verl():
    """The parsed dispatch of verl's default_compute_score agrees with calling it."""
    from verl.utils.reward_score import default_compute_score

    names, prefixes = checks.default_scorer_sources()
    assert {"openai/gsm8k", "lighteval/MATH", "math_dapo", "hiyouga/geometry3k"} <= names
    assert "aime" in prefixes
    for source in ("openai/gsm8k", "math_dapo", "aime2025"):
        default_compute_score(source, "The answer is #### 5", "5")  # has a scorer: no raise
    with pytest.raises(NotImplementedError):
        default_compute_score("rpo_verl/arith", "<answer>5</answer>", "5")
    assert not ("rpo_verl/arith" in names or "rpo_verl/arith".startswith(prefixes))


def test_overlong_prompts_error_or_note(config, capsys):
    rows = _rows(6) + _rows(2, content="word " * 300)
    cfg = config(rows, "data.max_prompt_length=64", "data.filter_overlong_prompts=false")
    (problem,) = checks.check_data_files(cfg)
    assert problem.key == "data.max_prompt_length"
    assert "2 of 8 prompts are longer than data.max_prompt_length=64" in problem.message
    assert "longest: row 6," in problem.message
    notes = []
    cfg = config(rows, "data.max_prompt_length=64", "data.filter_overlong_prompts=true")
    assert checks.check_data_files(cfg, note=notes.append) == []
    assert len(notes) == 1 and "verl leaves them out" in notes[0]
    cfg = config(rows, "data.max_prompt_length=64", "data.truncation=left")
    assert checks.check_data_files(cfg, note=notes.append) == [] and "truncates" in notes[-1]


def test_gsm8k_size_file_takes_seconds(config):
    cfg = config(_rows(7500, content="Natalia sold clips to 48 of her friends in April. " * 4))
    start = time.monotonic()
    assert checks.check_data_files(cfg) == []
    assert time.monotonic() - start < 10


def test_bad_training_file_stops_main_before_ray(tiny_model, tmp_path):
    train = _write(tmp_path / "train.parquet", [{k: v for k, v in r.items() if k != "reward_model"} for r in _rows(4)])
    val = _write(tmp_path / "val.parquet", _rows(2))
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "rpo_verl.main", "preset=cpu", f"actor_rollout_ref.model.path={tiny_model}",
                          f"data.train_files={train}", f"data.val_files={val}"], cwd=REPO, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"  - data.train_files: {train} has no column(s) reward_model" in out.stderr
    assert "ray init kwargs" not in out.stdout and "Traceback" not in out.stderr
    assert time.monotonic() - start < 120


def test_one_file_as_train_and_val_data_is_reported_once(config):
    from rpo_verl.config.checks import run_checks

    cfg = config(_rows(2, source="bench/unknown"))
    cfg.data.val_files = cfg.data.train_files
    problems = [p for p in run_checks(cfg) if "no scorer" in p.message]
    assert len(problems) == 1 and "bench/unknown" in problems[0].message
