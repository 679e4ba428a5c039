"""Test rewards for DPS end-to-end runs with the tiny random model.

The prompt's ``ground_truth`` names its accuracy class; ``score`` is always the dense vowel
fraction (non-zero advantages for a random model), so the raw accuracy and the shaped reward differ
and a trainer that reported the score instead of ``acc`` would feed the scheduler other states.

- ``compute_score_fixed``: acc = float(class) for "0" / "0.5" / "1", NaN for "nan" (scoring
  failed): every group's success rate is a function of the prompt alone, so a run's scheduler
  arrays do not depend on what the model sampled (resume equivalence is checkable exactly).
- ``compute_score_sampled``: "0" / "1" constant, "mix" = parity of the response's letter count
  (random text: mixed groups), so DAPO's filter evicts the constant groups and keeps most mixed.
"""

import math


def _dense(solution_str: str) -> float:
    letters = [c for c in solution_str.lower() if c.isalpha()]
    return sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0


def fixed_accuracy(ground_truth: str) -> float:
    return math.nan if ground_truth == "nan" else float(ground_truth)


def compute_score_fixed(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return {"score": _dense(solution_str), "acc": fixed_accuracy(ground_truth)}


def compute_score_sampled(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if ground_truth == "mix":
        acc = float(sum(c.isalpha() for c in solution_str) % 2 == 0)
    else:
        acc = float(ground_truth)
    return {"score": _dense(solution_str), "acc": acc}
