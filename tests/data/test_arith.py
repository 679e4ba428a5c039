"""The synthetic arithmetic task: determinism, correctness of answers, difficulty knobs, splits, parquet."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rpo_verl.data import ArithConfig, make_rows, make_splits, prepare_arith
from rpo_verl.data.arith import PLAIN_INSTRUCTION
from rpo_verl.data.validate import row_problem
from rpo_verl.reward import compute_score

ROOT = Path(__file__).resolve().parents[2]


def _replay(row) -> int:
    """Recompute the answer from the question text alone."""
    question = row["extra_info"]["question"]
    value = int(re.search(r"has (\d+)", question).group(1))
    for sentence in question.split(". ")[1:]:
        numbers = [int(n) for n in re.findall(r"\d+", sentence)]
        if not numbers:
            continue
        if "times" in sentence:
            value *= numbers[0]
        elif "gives away" in sentence or "loses" in sentence:
            value -= numbers[0]
        else:
            value += numbers[0]
    return value


def test_rows_are_deterministic_valid_and_correct():
    a, b = make_rows(200, seed=3, split="train"), make_rows(200, seed=3, split="train")
    assert a == b
    assert make_rows(50, seed=4, split="train") != a[:50]
    for row in a:
        assert row_problem(row) is None
        assert row["data_source"] == "rpo_verl/arith"
        assert int(row["reward_model"]["ground_truth"]) == _replay(row) >= 0
        content, expr = row["prompt"][0]["content"], row["extra_info"]["expr"]
        assert content.startswith(row["extra_info"]["question"]) and f"has {expr} = N " in content
        assert "Answer: N'" in content and eval(expr) == int(row["reward_model"]["ground_truth"])
    assert [r["extra_info"]["index"] for r in a] == list(range(200))


@pytest.mark.parametrize("steps,max_operand,ops", [(1, 9, ("add",)), (3, 20, ("add", "sub", "mul")), (2, 99, ("sub",))])
def test_difficulty_knobs(steps, max_operand, ops):
    rows = make_rows(100, seed=0, split="train", cfg=ArithConfig(steps=steps, max_operand=max_operand, ops=ops))
    for row in rows:
        assert int(row["reward_model"]["ground_truth"]) == _replay(row) >= 0
        assert row["extra_info"]["steps"] == steps
        assert len(row["extra_info"]["question"].split(". ")) == steps + 2
        assert eval(row["extra_info"]["expr"]) == int(row["reward_model"]["ground_truth"])  # digits, + - * ( )
    if max_operand == 99:
        assert max(int(n) for r in rows for n in re.findall(r"\d+", r["extra_info"]["question"])) > 9


def test_bad_knobs_name_the_field():
    with pytest.raises(ValueError, match="steps"):
        ArithConfig(steps=0)
    with pytest.raises(ValueError, match="ops"):
        ArithConfig(ops=("div",))
    with pytest.raises(ValueError, match="instruction"):
        ArithConfig(instruction="Say {answer}")


def test_plain_instruction_gives_no_expression():
    row = make_rows(1, seed=0, split="train", cfg=ArithConfig(instruction=PLAIN_INSTRUCTION))[0]
    assert row["prompt"][0]["content"] == f"{row['extra_info']['question']} {PLAIN_INSTRUCTION}"


def test_splits_are_disjoint_with_unique_indices():
    train, val = make_splits(500, 100, seed=0)
    assert {r["extra_info"]["question"] for r in train}.isdisjoint(r["extra_info"]["question"] for r in val)
    indices = [r["extra_info"]["index"] for r in train + val]
    assert len(set(indices)) == len(indices) == 600
    assert {r["extra_info"]["split"] for r in val} == {"val"}
    moved = make_splits(300, 100, seed=0)[1]  # val questions do not move when train grows
    assert [r["prompt"] for r in moved] == [r["prompt"] for r in val]


def test_reference_answer_in_the_prompted_format_scores_one():
    for row in make_rows(20, seed=1, split="val"):
        truth = row["reward_model"]["ground_truth"]
        assert compute_score(row["data_source"], f"So it is {truth}. Answer: {truth}", truth)["score"] == 1.0


def test_cli_writes_parquet_that_round_trips(tmp_path):
    out = tmp_path / "arith"
    cmd = [sys.executable, str(ROOT / "scripts/prepare_data.py"), "arith", "--n-train", "64", "--n-val", "16",
           "--out", str(out)]
    printed = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    assert printed == [str(out / "train.parquet"), str(out / "val.parquet")]
    frame = pd.read_parquet(out / "train.parquet")
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert frame.iloc[0]["reward_model"]["style"] == "rule" and len(frame) == 64
    paths = prepare_arith(tmp_path / "again", n_train=64, n_val=16)
    assert pd.read_parquet(paths["train"]).equals(frame)


def test_reasoning_style_mixes_one_to_three_operations():
    from rpo_verl.data.arith import REASONING_INSTRUCTION, reasoning_config

    cfg = reasoning_config()
    rows = make_rows(300, seed=0, split="train", cfg=cfg)
    assert rows == make_rows(300, seed=0, split="train", cfg=cfg)
    counts = {s: sum(r["extra_info"]["steps"] == s for r in rows) for s in (1, 2, 3)}
    assert sum(counts.values()) == 300 and min(counts.values()) > 60  # uniform over 1..3
    for row in rows:
        assert row_problem(row) is None and row["extra_info"]["style"] == "reasoning"
        content, steps = row["prompt"][0]["content"], row["extra_info"]["steps"]
        assert content == f"{row['extra_info']['question']} {REASONING_INSTRUCTION}"
        assert "Final answer: N" in content and row["extra_info"]["expr"] not in content.split("?")[-1]
        assert int(row["reward_model"]["ground_truth"]) == _replay(row) == eval(row["extra_info"]["expr"])
        assert len(row["extra_info"]["question"].split(". ")) == steps + 2
    assert make_rows(5, seed=0, split="train")[0]["extra_info"]["style"] == "oneline"


def test_task_config_styles_and_bad_knobs():
    from rpo_verl.data.arith import HINT_INSTRUCTION, task_config

    assert task_config() == ArithConfig() and task_config("oneline", ops=None).instruction == HINT_INSTRUCTION
    assert task_config("oneline", plain=True).instruction == PLAIN_INSTRUCTION
    mixed = task_config("reasoning", steps=2, max_operand=20)
    assert (mixed.steps, mixed.steps_max, mixed.max_operand, mixed.style) == (2, 3, 20, "reasoning")
    with pytest.raises(ValueError, match="style"):
        task_config("essay")
    with pytest.raises(ValueError, match="plain"):
        task_config("reasoning", plain=True)
    with pytest.raises(ValueError, match="steps_max"):
        ArithConfig(steps=3, steps_max=2)
    with pytest.raises(ValueError, match="style"):
        ArithConfig(style="essay")


def test_reasoning_answer_forms_score_one():
    from rpo_verl.data.arith import reasoning_config

    for row in make_rows(20, seed=2, split="val", cfg=reasoning_config()):
        truth = row["reward_model"]["ground_truth"]
        wrong = str(int(truth) + 1)
        for text in (f"Step 1: she has {wrong} first.\nFinal answer: {truth}", f"So the answer is \\boxed{{{truth}}}.",
                     f"First {wrong}, then {truth}."):
            assert compute_score(row["data_source"], text, truth)["score"] == 1.0, text


def test_cli_reasoning_style(tmp_path):
    out = tmp_path / "reasoning"
    cmd = [sys.executable, str(ROOT / "scripts/prepare_data.py"), "arith", "--style", "reasoning", "--n-train", "30",
           "--n-val", "10", "--out", str(out)]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    frame = pd.read_parquet(out / "train.parquet")
    assert set(frame["extra_info"].map(lambda e: e["steps"])) == {1, 2, 3}
    assert all(e["style"] == "reasoning" for e in frame["extra_info"])
    bad = subprocess.run(cmd[:3] + ["--style", "reasoning", "--plain", "--out", str(out)], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "plain" in bad.stderr


def test_bare_question_is_the_expression_and_keeps_the_answer():
    from rpo_verl.data.arith import reasoning_config

    word = make_rows(12, seed=5, split="val", cfg=reasoning_config())
    bare = make_rows(12, seed=5, split="val", cfg=reasoning_config(question="bare", instruction="Go."))
    for w, b in zip(word, bare):  # same draws, only the wording differs
        assert b["prompt"][0]["content"] == f"What is {w['extra_info']['expr']}? Go."
        assert b["reward_model"] == w["reward_model"] and eval(b["extra_info"]["expr"]) == int(w["reward_model"]["ground_truth"])
    with pytest.raises(ValueError, match="question"):
        ArithConfig(question="riddle")


def test_cli_bare_question_and_instruction(tmp_path):
    out = tmp_path / "bare"
    cmd = [sys.executable, str(ROOT / "scripts/prepare_data.py"), "arith", "--style", "reasoning", "--question", "bare",
           "--instruction", "Explain, then state the final answer.", "--n-train", "40", "--n-val", "10", "--out", str(out)]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    frame = pd.read_parquet(out / "val.parquet")
    assert all(re.fullmatch(r"What is [\d + ]+\? Explain, then state the final answer\.", p[0]["content"])
               for p in frame["prompt"])
