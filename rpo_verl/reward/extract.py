"""Final-answer extraction for the number-answer formats (synthetic arithmetic, GSM8K)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_CHARS = 4096  # answers are at the end; scanning only the tail keeps 1 MB responses cheap

# 1,234.5 / -7 / $12 ; thousands separators only in groups of three so "3,4" reads as 3 and 4
_NUMBER = re.compile(r"-?\$?\d+(?:,\d{3})*(?:\.\d+)?")
_ANSWER_TAG = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
_HASHES = re.compile(r"####")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number ("1,000.50" -> "1000.5", "$7" -> "7"), or None."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    normal = value.normalize()
    return format(normal, "f") if normal != normal.to_integral() else str(int(normal))


def _first_number(text: str) -> str | None:
    match = _NUMBER.search(text)
    return normalize_number(match.group()) if match else None


def _last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return normalize_number(matches[-1]) if matches else None


def _after_last(pattern: re.Pattern, text: str) -> str | None:
    last = None
    for last in pattern.finditer(text):
        pass
    return _first_number(text[last.end():]) if last else None


def extract_tagged_answer(text: str) -> str | None:
    """The number after the last 'Answer:' / 'answer is', else the last number in the text."""
    text = text[-MAX_CHARS:]
    return _after_last(_ANSWER_TAG, text) or _last_number(text)


def extract_gsm8k_answer(text: str) -> str | None:
    """GSM8K: the number after the last '####', else in the last \\boxed{}, else as ``extract_tagged_answer``."""
    text = text[-MAX_CHARS:]
    found = _after_last(_HASHES, text)
    if found is None:
        boxed = _BOXED.findall(text)
        found = _first_number(boxed[-1]) if boxed else None
    return found or extract_tagged_answer(text)


def numbers_equal(pred: str | None, truth: str) -> bool:
    gold = normalize_number(truth)
    return pred is not None and gold is not None and Decimal(pred) == Decimal(gold)
