"""compute_score: formats, math equivalence, robustness, and use from threads like verl's reward managers."""

import asyncio
import sys
import threading
import time

import pytest

from rpo_verl.reward import compute_score, route
from rpo_verl.reward.extract import extract_gsm8k_answer, extract_tagged_answer, normalize_number
from rpo_verl.reward import math_check

MATH = "HuggingFaceH4/MATH-500"


def _acc(source, text, truth):
    result = compute_score(source, text, truth)
    assert set(result) == {"score", "acc", "pred"} and result["score"] == result["acc"]
    return result["acc"]


@pytest.mark.parametrize(
    "text,truth,ok",
    [
        ("3 + 4 = 7. Answer: 7", "7", True),
        ("Tom has 3 apples and gets 4 more, so he has 7 apples.", "7", True),  # lenient: last number
        ("Answer: 7\nBut if he then gets 2 more it is 9.", "7", True),  # the tagged answer wins
        ("The answer is 12.", "12", True),
        ("**Answer:** 1,000", "1000", True),
        ("3 + 4 = 7. Answer: 8", "7", False),
        ("I do not know.", "7", False),
        # the reasoning style: 'Final answer: N', boxed, whichever tag comes last, then the last number
        ("Step 1: 3 + 4 = 7.\nStep 2: 7 + 5 = 12.\nFinal answer: 12", "12", True),
        ("**Final Answer:** 12 apples.", "12", True),
        ("3 + 4 = 7, so the total is \\boxed{7}.", "7", True),
        ("The answer is \\boxed{5}.\nWait: 5 + 2 = 7. Final answer: 7", "7", True),
        ("Final answer: 7. Check: \\boxed{9}", "9", True),
        ("3 + 4 = 7.\nFinal answer: N", "7", True),  # no number after the tag: the last number
        ("Step 1: 3 + 4 = 7.\nFinal answer: 8", "7", False),
    ],
)
def test_arith(text, truth, ok):
    assert _acc("rpo_verl/arith", text, truth) == float(ok)


@pytest.mark.parametrize(
    "text,truth,ok",
    [
        ("She buys 3 * 20 = 60.\n#### 60", "60", True),
        ("#### $1,550", "1550", True),
        ("So the total is \\boxed{42}.", "42", True),
        ("First 5, then 10, so 15 in all", "15", True),
        ("#### 61\nwait, 60", "60", False),
        ("#### 59", "60", False),
    ],
)
def test_gsm8k(text, truth, ok):
    assert _acc("openai/gsm8k", text, truth) == float(ok)


@pytest.mark.parametrize(
    "text,truth,ok",
    [
        ("The answer is $\\boxed{\\frac{1}{2}}$.", "0.5", True),
        ("The answer is $\\boxed{0.5}$.", "\\frac{1}{2}", True),
        ("so $x = \\boxed{\\dfrac{3}{4}}$", "\\frac{3}{4}", True),
        ("We get $\\boxed{2\\sqrt{2}}$", "\\sqrt{8}", True),
        ("Therefore the final answer is $\\boxed{(1, 2)}$.", "(1,2)", True),
        ("The answer is $\\boxed{\\frac{1}{3}}$.", "0.5", False),
        ("blah\nAnswer: 42", "42", True),
        ("The answer is \\boxed{x^2 + 2x + 1}", "(x+1)^2", True),
    ],
)
def test_math_with_math_verify(text, truth, ok):
    assert _acc(MATH, text, truth) == float(ok)


def test_routing():
    assert route("rpo_verl/arith") == "arith" and route("openai/gsm8k") == "gsm8k"
    for source in ("lighteval/MATH", MATH, "math_dapo", "aime24", "amc23"):
        assert route(source) == "math"
    assert route("my/unknown-set") == "math"  # degrade to math-verify, with a warning


def test_number_helpers():
    assert normalize_number("1,000.50") == "1000.5" and normalize_number("$7.") == "7" and normalize_number("x") is None
    assert extract_tagged_answer("2 then 3. Answer: 5 apples") == "5"
    assert extract_gsm8k_answer("no numbers here") is None


GARBAGE = ["", "   ", "\x00\xff garbage }}}{{ \\boxed{", "9" * 1_000_000, "x" * 1_000_000, None, 12]


@pytest.mark.parametrize("source", ["rpo_verl/arith", "openai/gsm8k", MATH, "math_dapo"])
@pytest.mark.parametrize("text", GARBAGE, ids=["empty", "blank", "garbage", "digits_1MB", "x_1MB", "none", "int"])
def test_garbage_empty_huge_score_zero_without_raising(source, text):
    started = time.perf_counter()
    result = compute_score(source, text, "1")
    assert result["score"] == 0.0 and result["acc"] == 0.0 and isinstance(result["pred"], str)
    assert time.perf_counter() - started < 10


def test_huge_response_with_the_answer_at_the_end_still_counts():
    assert _acc(MATH, "filler " * 200_000 + "so $\\boxed{\\frac{1}{2}}$", "0.5") == 1.0
    assert _acc("rpo_verl/arith", "blah " * 200_000 + "Answer: 7", "7") == 1.0


def test_verl_style_call_with_extra_kwargs_and_numpy_truth():
    import numpy as np

    result = compute_score(
        data_source=MATH, solution_str="$\\boxed{3}$", ground_truth=np.str_("3"),
        extra_info={"index": 0, "num_turns": 2, "rollout_reward_scores": {}}, reward_router_address=None,
    )
    assert result["score"] == 1.0
    assert compute_score("aime24", "\\boxed{24}", ["25", "24"])["acc"] == 1.0  # any of several answers


def test_math_from_threads_and_event_loop_executor():
    """verl's NaiveRewardManager runs compute_score via loop.run_in_executor: signals are unusable there."""
    cases = [("$\\boxed{\\frac{1}{2}}$", "0.5", 1.0), ("$\\boxed{2}$", "3", 0.0)] * 4
    results = {}

    def work(i, text, truth):
        results[i] = compute_score(MATH, text, truth)["score"]

    threads = [threading.Thread(target=work, args=(i, *case[:2])) for i, case in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[i] for i in range(len(cases))] == [c[2] for c in cases]

    async def via_executor():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(None, compute_score, MATH, t, g) for t, g, _ in cases))

    assert [r["score"] for r in asyncio.run(via_executor())] == [c[2] for c in cases]


def test_a_hung_worker_is_killed_at_the_deadline_and_replaced():
    """A worker that never answers costs ``deadline_s`` and a 0; the next call gets a fresh worker."""
    script = "import sys, time; print('ready', flush=True); sys.stdin.readline(); time.sleep(600)"
    silent = (sys.executable, "-c", script)
    pool = math_check._Pool(1, cmd=silent)
    out = {}

    def work():
        started = time.perf_counter()
        out["hung"] = pool.verify("$\\boxed{1}$", "1", timeout_s=1, deadline_s=1.0)
        out["seconds"] = time.perf_counter() - started
        stuck = pool.idle[:] + [None]
        pool.cmd = math_check.WORKER_CMD
        out["next"] = pool.verify("$\\boxed{1}$", "1", timeout_s=1, deadline_s=60.0)
        out["stuck_idle"] = stuck

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=180)
    pool.close()
    assert out["hung"] == (False, "") and out["seconds"] < 30
    assert out["stuck_idle"] == [None]  # the silent worker was not put back
    assert out["next"] == (True, "1")


def test_loads_through_verls_custom_reward_function_config():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": "pkg://rpo_verl.reward.score", "name": "compute_score",
                                               "reward_kwargs": {}}}}
    )
    fn = get_custom_reward_fn(config)
    result = fn(data_source="rpo_verl/arith", solution_str="2 + 3 = 5. Answer: 5", ground_truth="5", extra_info={})
    assert result == {"score": 1.0, "acc": 1.0, "pred": "5"}
