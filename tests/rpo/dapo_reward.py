"""Test reward for the RPO-DAPO end-to-end run: constant for even prompt indices (DAPO's
filter_groups drops those groups), the dense vowel fraction otherwise (groups with signal)."""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if int((extra_info or {}).get("index", 0)) % 2 == 0:
        return {"score": 0.0, "acc": 0.0}
    letters = [c for c in solution_str.lower() if c.isalpha()]
    score = sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0
    return {"score": score, "acc": score}
