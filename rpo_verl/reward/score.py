"""One scoring function for every rpo_verl dataset, in the form verl's custom reward function takes.

verl 0.9.1's reward managers (``verl.experimental.reward_loop.reward_manager.naive`` and friends) call
``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)``
from executor threads and keep every key of the returned dict as per-sample extra info, so the dict
always has the same keys. Select it with::

    reward.custom_reward_function.path=pkg://rpo_verl.reward.score
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

import logging
from typing import Any

from rpo_verl.reward.extract import extract_gsm8k_answer, extract_tagged_answer, numbers_equal
from rpo_verl.reward.math_check import verify_math

logger = logging.getLogger(__name__)

ARITH_SOURCES = frozenset({"rpo_verl/arith"})
GSM8K_SOURCES = frozenset({"openai/gsm8k", "gsm8k"})
MATH_SOURCES = frozenset(
    {
        "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500", "math_dapo",
        "BytedTsinghua-SIA/DAPO-Math-17k", "aime24", "aime25", "amc23", "math",
    }
)
_warned_sources: set[str] = set()


def _result(correct: bool, pred: str | None) -> dict[str, Any]:
    return {"score": 1.0 if correct else 0.0, "acc": 1.0 if correct else 0.0, "pred": pred or ""}


def _truths(ground_truth: Any) -> list[str]:
    """Ground truths as strings; a list/array means any of them is accepted."""
    if isinstance(ground_truth, str):
        return [ground_truth]
    if isinstance(ground_truth, (int, float)) and not isinstance(ground_truth, bool):
        return [str(ground_truth)]
    if hasattr(ground_truth, "tolist"):  # numpy values/arrays come out of parquet
        ground_truth = ground_truth.tolist()
    if isinstance(ground_truth, (list, tuple)):
        return [t for item in ground_truth for t in _truths(item)]
    raise TypeError(f"ground_truth must be a string (or a list of them), got {type(ground_truth).__name__}")


def route(data_source: str) -> str:
    """Which grader a data_source uses: 'arith', 'gsm8k' or 'math' (unknown sources: math, with a warning)."""
    if data_source in ARITH_SOURCES:
        return "arith"
    if data_source in GSM8K_SOURCES:
        return "gsm8k"
    if data_source not in MATH_SOURCES and not data_source.startswith(("aime", "amc")):
        if data_source not in _warned_sources:
            _warned_sources.add(data_source)
            logger.warning("rpo_verl reward: unknown data_source %r, grading it with math-verify", data_source)
    return "math"


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any]:
    """``{"score": 0/1, "acc": 0/1, "pred": extracted answer}``; bad or huge responses score 0, never raise.

    ``kwargs`` absorbs what reward managers add (e.g. ``reward_router_address``) and ``reward_kwargs``.
    """
    if not isinstance(solution_str, str) or not solution_str.strip():
        return _result(False, "")
    truths = _truths(ground_truth)  # a malformed dataset row is a bug to report, not a zero
    grader = route(str(data_source))
    try:
        if grader == "math":
            pred = ""
            for truth in truths:
                correct, pred = verify_math(solution_str, truth)
                if correct:
                    return _result(True, pred)
            return _result(False, pred)
        extract = extract_tagged_answer if grader == "arith" else extract_gsm8k_answer
        pred = extract(solution_str)
        return _result(any(numbers_equal(pred, truth) for truth in truths), pred)
    except Exception:  # noqa: BLE001 - one odd response must not stop training
        logger.warning("rpo_verl reward: scoring failed for data_source %r; scoring 0", data_source, exc_info=True)
        return _result(False, "")
