"""A dense reward for end-to-end tests with the tiny random model.

An exact-match reward is always 0 for a random model, so every GRPO advantage (and gradient) would
be 0. This one scores the fraction of vowels among the letters of the decoded response: random
text gives different values within a group, so advantages and gradients are non-zero.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    letters = [c for c in solution_str.lower() if c.isalpha()]
    score = sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0
    return {"score": score, "acc": score}
