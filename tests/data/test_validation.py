"""Row validation of verl parquet files: every malformed row is named with its file and row."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from rpo_verl.data import BadRowsError, check_files, make_rows, validate_rows, write_parquet
from rpo_verl.data.validate import row_problem

ROOT = Path(__file__).resolve().parents[2]


def _good():
    return make_rows(1, seed=0, split="train")[0]


def _broken(edit):
    row = copy.deepcopy(_good())
    edit(row)
    return row


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda r: r.pop("reward_model"), "missing key(s) reward_model"),
        (lambda r: r.update(prompt=[]), "non-empty list"),
        (lambda r: r.update(prompt=[{"role": "user", "content": "  "}]), "prompt is empty"),
        (lambda r: r.update(prompt="just text"), "non-empty list"),
        (lambda r: r["reward_model"].update(ground_truth=7), "must be a string, got int"),
        (lambda r: r["reward_model"].update(ground_truth=None), "must be a string, got NoneType"),
        (lambda r: r["reward_model"].pop("ground_truth"), "with ground_truth"),
        (lambda r: r["extra_info"].pop("index"), "extra_info.index is missing"),
        (lambda r: r["extra_info"].pop("split"), "extra_info.split"),
        (lambda r: r.update(data_source=""), "data_source"),
    ],
)
def test_row_problem_names_the_fault(edit, expected):
    assert row_problem(_good()) is None
    assert expected in row_problem(_broken(edit))


def test_duplicate_index_points_at_both_rows():
    rows = make_rows(3, seed=0, split="train")
    rows[2]["extra_info"]["index"] = 0
    with pytest.raises(BadRowsError) as info:
        validate_rows((f"f.parquet row {i}", r) for i, r in enumerate(rows))
    assert info.value.problems == ["f.parquet row 2: duplicate extra_info.index 0 (first at f.parquet row 0)"]
    report = validate_rows(((f"f row {i}", r) for i, r in enumerate(rows)), skip_bad=True)
    assert len(report.good) == 2 and len(report.problems) == 1


def test_check_reads_parquet_and_reports_file_and_row(tmp_path):
    rows = make_rows(4, seed=0, split="train")
    rows[1]["prompt"] = [{"role": "user", "content": ""}]
    rows[3]["reward_model"]["ground_truth"] = ""
    path = write_parquet(rows, tmp_path / "bad.parquet")
    with pytest.raises(BadRowsError, match=r"bad\.parquet row 1: prompt is empty"):
        check_files([path])
    assert len(check_files([path], skip_bad=True)[str(path)].good) == 2

    result = subprocess.run([sys.executable, str(ROOT / "scripts/prepare_data.py"), "check", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{path} row 1: prompt is empty" in result.stderr and f"{path} row 3" in result.stderr
