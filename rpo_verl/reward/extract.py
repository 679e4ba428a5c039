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


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    last = None
    for last in pattern.finditer(text):
        pass
    return last


def extract_tagged_answer(text: str) -> str | None:
    """The final answer of a number-answer response (synthetic arithmetic, both prompt styles).

    Order: the number in the last ``\\boxed{...}`` or after the last answer tag ('Answer:', 'Final
    answer:', 'answer is'), whichever of the two comes later in the text; else (no tag, or no number
    after it) the last number in the text, the lenient fallback for responses that never state
    the answer in the asked form.
    """
    text = text[-MAX_CHARS:]
    tag, boxed = _last_match(_ANSWER_TAG, text), _last_match(_BOXED, text)
    found = None
    if boxed is not None and (tag is None or boxed.start() >= tag.start()):
        found = _first_number(boxed.group(1))
    elif tag is not None:
        found = _first_number(text[tag.end():])
    return found or _last_number(text)


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
