"""Checks that rows are what verl's RL dataset and ``rpo_verl.reward.compute_score`` expect.

Every problem is reported with its file and 0-based row; nothing is dropped unless the caller asks
(``skip_bad``), and then the count and the reasons are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REQUIRED_KEYS = ("data_source", "prompt", "ability", "reward_model", "extra_info")
MAX_LISTED = 20


class BadRowsError(ValueError):
    """Raised when rows are malformed; ``problems`` lists '<file> row <n>: <what>' strings."""

    def __init__(self, problems: list[str], hint: str = ""):
        self.problems = problems
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{len(problems)} malformed row(s):\n  {listed}{more}{hint}")


def _as_list(value):
    return value.tolist() if hasattr(value, "tolist") else value


def row_problem(row: dict) -> str | None:
    """What is wrong with one verl row (``None`` if nothing)."""
    if not isinstance(row, dict):
        return f"row is a {type(row).__name__}, not a mapping"
    missing = [k for k in REQUIRED_KEYS if k not in row or row[k] is None]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if not isinstance(row["data_source"], str) or not row["data_source"]:
        return "data_source must be a non-empty string"
    prompt = _as_list(row["prompt"])
    if not isinstance(prompt, list) or not prompt:
        return "prompt must be a non-empty list of chat messages"
    for message in prompt:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"prompt message without a string 'role': {message!r:.80}"
        if not isinstance(message.get("content"), str):
            return f"prompt message content must be a string: {message!r:.80}"
    if not any(m["content"].strip() for m in prompt):
        return "prompt is empty (every message has empty content)"
    reward = row["reward_model"]
    if not isinstance(reward, dict) or "ground_truth" not in reward:
        return "reward_model must be a mapping with ground_truth"
    truth = reward["ground_truth"]
    if not isinstance(truth, str):
        return f"reward_model.ground_truth must be a string, got {type(truth).__name__} {truth!r:.40}"
    if not truth.strip():
        return "reward_model.ground_truth is empty"
    extra = row["extra_info"]
    if not isinstance(extra, dict) or "index" not in extra or extra["index"] is None:
        return "extra_info.index is missing"
    if isinstance(extra["index"], bool) or not isinstance(extra["index"], (int, str)):
        return f"extra_info.index must be an int or string, got {type(extra['index']).__name__}"
    if not isinstance(extra.get("split"), str):
        return "extra_info.split is missing"
    return None


@dataclass
class ValidationReport:
    good: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def validate_rows(located_rows, skip_bad: bool = False) -> ValidationReport:
    """``located_rows``: iterable of (location, row). Raises ``BadRowsError`` unless ``skip_bad``.

    Duplicate ``extra_info.index`` values are reported on every row after the first.
    """
    report, seen = ValidationReport(), {}
    for where, row in located_rows:
        problem = row_problem(row)
        if problem is None:
            index = row["extra_info"]["index"]
            if index in seen:
                problem = f"duplicate extra_info.index {index!r} (first at {seen[index]})"
            else:
                seen[index] = where
        if problem is None:
            report.good.append(row)
        else:
            report.problems.append(f"{where}: {problem}")
    if report.problems and not skip_bad:
        raise BadRowsError(report.problems, hint="\nFix them, or pass --skip-bad to leave them out (counted).")
    return report
