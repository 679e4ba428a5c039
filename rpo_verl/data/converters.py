"""Upstream math datasets -> verl rows. Each converter maps one raw record or raises ``RowError``.

Upstream schemas (Hugging Face):
  gsm8k    openai/gsm8k                   question, answer ("... #### 72")
  math     lighteval/MATH                 problem, level, type, solution (answer in the last \\boxed{})
  dapo     BytedTsinghua-SIA/DAPO-Math-17k data_source, prompt [{role, content}], ability,
                                           reward_model {ground_truth, style}, extra_info {index}
  math500  HuggingFaceH4/MATH-500         problem, solution, answer, subject, level, unique_id
  aime24   HuggingFaceH4/aime_2024        id, problem, solution, answer, url, year
           (or Maxwell-Jia/AIME_2024      ID, Problem, Solution, Answer)
  amc23    math-ai/amc23                  id, question, answer (a float such as 27.0)
Column names are matched case-insensitively. ``data_source`` values are ones
``rpo_verl.reward.compute_score`` routes (GSM8K by its '####' format, the rest with math-verify).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

GSM8K_INSTRUCTION = "Let's think step by step and output the final answer after \"####\"."
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class RowError(ValueError):
    """A raw record that cannot become a training row; the message says what is wrong."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    data_source: str
    default_split: str  # output label when the input has no split of its own
    convert: Callable[[dict], dict]  # raw record -> {"prompt", "ground_truth", "extra"}


def _field(record: dict, *names: str) -> Any:
    lowered = {str(k).lower(): v for k, v in record.items()}
    for name in names:
        if name in lowered:
            return lowered[name]
    raise RowError(f"missing column {' / '.join(repr(n) for n in names)} (has {sorted(record)})")


def _text(record: dict, *names: str) -> str:
    value = _field(record, *names)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"column {names[0]!r} must be a non-empty string, got {value!r:.80}")
    return value.strip()


def _answer(value: Any, column: str = "answer") -> str:
    """Answers as strings; integral numbers (AIME's int64, AMC23's 27.0) print without a decimal point."""
    if isinstance(value, bool) or value is None:
        raise RowError(f"column {column!r} must be a string or number, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise RowError(f"column {column!r} is {value}")
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise RowError(f"column {column!r} must be a non-empty string or number, got {value!r:.80}")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_at = text.find("{", start)
    if open_at < 0:
        return None
    depth = 0
    for pos in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[open_at + 1 : pos].strip() or None
    return None


def _user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def _gsm8k(record: dict) -> dict:
    question, solution = _text(record, "question"), _text(record, "answer")
    match = re.search(r"####\s*(.+?)\s*$", solution)
    if not match:
        raise RowError("answer has no '#### <number>' line")
    return {
        "prompt": _user(f"{question} {GSM8K_INSTRUCTION}"),
        "ground_truth": match.group(1).replace(",", ""),
        "extra": {"question": question, "solution": solution},
    }


def _math(record: dict) -> dict:
    problem, solution = _text(record, "problem"), _text(record, "solution")
    answer = last_boxed(solution)
    if answer is None:
        raise RowError("solution has no \\boxed{...} answer")
    extra = {"question": problem, "solution": solution}
    extra.update({k: str(record.get(k, "")) for k in ("level", "type")})
    return {"prompt": _user(f"{problem}\n{BOXED_INSTRUCTION}"), "ground_truth": answer, "extra": extra}


def _dapo(record: dict) -> dict:
    prompt = _field(record, "prompt")
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if not isinstance(prompt, list) or not prompt:
        raise RowError(f"prompt must be a non-empty list of chat messages, got {prompt!r:.80}")
    messages = []
    for message in prompt:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or not message.get("role"):
            raise RowError(f"prompt message must have string 'role' and 'content', got {message!r:.80}")
        messages.append({"role": str(message["role"]), "content": message["content"]})
    if not any(m["content"].strip() for m in messages):
        raise RowError("prompt messages are all empty")
    reward = _field(record, "reward_model")
    if not isinstance(reward, dict):
        raise RowError(f"reward_model must be a struct with ground_truth, got {reward!r:.80}")
    truth = _answer(reward.get("ground_truth"), "reward_model.ground_truth")
    source_id = (record.get("extra_info") or {}).get("index")
    return {"prompt": messages, "ground_truth": truth, "extra": {"source_id": str(source_id)}}


def _with_answer(question_cols: tuple[str, ...], id_cols: tuple[str, ...]) -> Callable[[dict], dict]:
    def convert(record: dict) -> dict:
        problem = _text(record, *question_cols)
        answer = _answer(_field(record, "answer"))
        lowered = {str(k).lower(): v for k, v in record.items()}
        source_id = next((str(lowered[c]) for c in id_cols if c in lowered), "")
        extra = {"question": problem, "source_id": source_id}
        for key in ("subject", "level", "year"):
            if key in lowered:
                extra[key] = str(lowered[key])
        return {"prompt": _user(f"{problem}\n{BOXED_INSTRUCTION}"), "ground_truth": answer, "extra": extra}

    return convert


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("gsm8k", "openai/gsm8k", "train", _gsm8k),
        DatasetSpec("math", "lighteval/MATH", "train", _math),
        DatasetSpec("dapo", "math_dapo", "train", _dapo),
        DatasetSpec("math500", "HuggingFaceH4/MATH-500", "test", _with_answer(("problem",), ("unique_id",))),
        DatasetSpec("aime24", "aime24", "test", _with_answer(("problem",), ("id",))),
        DatasetSpec("amc23", "amc23", "test", _with_answer(("question", "problem"), ("id",))),
    )
}
