"""Converters for the upstream datasets, on hand-made fixtures in each upstream schema and file layout."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest

from rpo_verl.data import DATASETS, BadRowsError, convert_dataset
from rpo_verl.data.converters import last_boxed
from rpo_verl.data.validate import row_problem
from rpo_verl.reward import compute_score, route

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def _records(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def _check(rows, data_source):
    for row in rows:
        assert row_problem(row) is None, row
        assert row["data_source"] == data_source and route(data_source) != "arith"
    indices = [r["extra_info"]["index"] for r in rows]
    assert len(set(indices)) == len(indices)


def test_gsm8k():
    result = convert_dataset("gsm8k", FIXTURES / "gsm8k_train.jsonl")
    _check(result.rows, "openai/gsm8k")
    assert [r["reward_model"]["ground_truth"] for r in result.rows] == ["27", "52", "1550"]
    assert '"####"' in result.rows[0]["prompt"][0]["content"]
    reply = "12 + 15 = 27 rolls.\n#### 27"
    assert compute_score("openai/gsm8k", reply, result.rows[0]["reward_model"]["ground_truth"])["score"] == 1.0


def test_math_takes_the_last_boxed_answer():
    rows = convert_dataset("math", FIXTURES / "math_train.jsonl").rows
    _check(rows, "lighteval/MATH")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["\\frac{1}{2}", "3", "2\\sqrt{2}"]
    assert rows[0]["extra_info"]["level"] == "Level 1" and "\\boxed{}" in rows[0]["prompt"][0]["content"]
    assert compute_score("lighteval/MATH", "so $\\boxed{0.5}$", rows[0]["reward_model"]["ground_truth"])["acc"]


def test_last_boxed_balances_braces():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b^{2}}} end") == "\\frac{a}{b^{2}}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None


def test_dapo_keeps_prompt_and_drops_repeated_copies_with_a_count():
    result = convert_dataset("dapo", FIXTURES / "dapo_train.jsonl")
    _check(result.rows, "math_dapo")
    assert len(result.rows) == 3 and result.duplicates == 1
    assert result.rows[0]["prompt"] == _records("dapo_train.jsonl")[0]["prompt"]
    assert result.rows[0]["extra_info"]["source_id"].startswith("0f1c2d3e")
    assert len(convert_dataset("dapo", FIXTURES / "dapo_train.jsonl", keep_duplicates=True).rows) == 4
    assert compute_score("math_dapo", "so\nAnswer: 6", result.rows[0]["reward_model"]["ground_truth"])["acc"]


def test_math500():
    rows = convert_dataset("math500", FIXTURES / "math500_test.jsonl").rows
    _check(rows, "HuggingFaceH4/MATH-500")
    assert rows[1]["reward_model"]["ground_truth"] == "\\frac{3}{4}"
    assert rows[1]["extra_info"]["source_id"] == "test/prealgebra/2.json" and rows[0]["extra_info"]["split"] == "test"
    assert compute_score("HuggingFaceH4/MATH-500", "It is $\\boxed{0.75}$", "\\frac{3}{4}")["acc"]


@pytest.mark.parametrize("fixture,truths", [("aime24_h4.jsonl", ["8", "024"]), ("aime24_maxwell.jsonl", ["143"])])
def test_aime24_both_upstream_schemas(fixture, truths):
    rows = convert_dataset("aime24", FIXTURES / fixture).rows
    _check(rows, "aime24")
    assert [r["reward_model"]["ground_truth"] for r in rows] == truths
    assert compute_score("aime24", "... \\boxed{24}", "024")["acc"]


def test_amc23_float_answers_become_strings():
    rows = convert_dataset("amc23", FIXTURES / "amc23_test.jsonl").rows
    _check(rows, "amc23")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["25", "2.5"]
    assert compute_score("amc23", "The answer is $\\boxed{\\frac{5}{2}}$", "2.5")["acc"]


def test_every_dataset_has_a_fixture_tested_here():
    assert set(DATASETS) == {"gsm8k", "math", "dapo", "math500", "aime24", "amc23"}


def test_parquet_folder_with_splits_and_saved_dataset(tmp_path):
    """Hub-snapshot layout (main/{train,test}-*.parquet) and a datasets.save_to_disk DatasetDict."""
    records = _records("gsm8k_train.jsonl")
    snapshot = tmp_path / "gsm8k" / "main"
    snapshot.mkdir(parents=True)
    pd.DataFrame(records).to_parquet(snapshot / "train-00000-of-00001.parquet")
    pd.DataFrame(records[:1]).to_parquet(snapshot / "test-00000-of-00001.parquet")
    assert len(convert_dataset("gsm8k", tmp_path / "gsm8k", split="train").rows) == 3
    assert len(convert_dataset("gsm8k", tmp_path / "gsm8k", split="test").rows) == 1

    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(_records("math500_test.jsonl"))}).save_to_disk(saved)
    rows = convert_dataset("math500", saved).rows
    assert len(rows) == 2 and rows[0]["reward_model"]["ground_truth"] == "2"
    with pytest.raises(ValueError, match="split"):
        convert_dataset("math500", saved, split="train")


def test_malformed_rows_are_reported_with_file_and_row():
    with pytest.raises(BadRowsError) as info:
        convert_dataset("gsm8k", FIXTURES / "gsm8k_bad.jsonl", keep_duplicates=True)
    problems = info.value.problems
    where = [p.split(": ", 1)[0] for p in problems]
    assert where == [f"{FIXTURES / 'gsm8k_bad.jsonl'} row {n}" for n in (1, 2, 3, 4)]
    assert "non-empty string" in problems[0] and "####" in problems[1]
    assert "missing column 'question'" in problems[2] and "None" in problems[3]


def test_skip_bad_skips_and_counts(tmp_path):
    result = convert_dataset("gsm8k", FIXTURES / "gsm8k_bad.jsonl", skip_bad=True)
    assert len(result.rows) == 1 and len(result.problems) == 4 and result.duplicates == 1
    assert [r["extra_info"]["index"] for r in result.rows] == [0]

    cmd = [sys.executable, str(ROOT / "scripts/prepare_data.py"), "gsm8k", "--input", str(FIXTURES / "gsm8k_bad.jsonl"),
           "--out", str(tmp_path)]
    failed = subprocess.run(cmd, capture_output=True, text=True)
    assert failed.returncode == 1 and "4 malformed row(s)" in failed.stderr and "--skip-bad" in failed.stderr
    assert not (tmp_path / "train.parquet").exists()
    ok = subprocess.run(cmd + ["--skip-bad"], capture_output=True, text=True, check=True)
    assert "4 malformed skipped" in ok.stderr and ok.stdout.strip() == str(tmp_path / "train.parquet")
    assert len(pd.read_parquet(tmp_path / "train.parquet")) == 1


def test_other_layouts_fall_back_to_datasets_load_dataset(tmp_path):
    folder = tmp_path / "amc_csv"
    folder.mkdir()
    pd.DataFrame(_records("amc23_test.jsonl")).to_csv(folder / "test.csv", index=False)
    rows = convert_dataset("amc23", folder, split="test").rows
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["25", "2.5"]
