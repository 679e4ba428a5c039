"""Synthetic arithmetic word problems (data_source ``rpo_verl/arith``), deterministic from a seed.

A problem is a start amount followed by ``steps`` changes (gains, losses or multiplications). The
default instruction hands the model the expression to complete ("Sam has 8 + 6 = N coins. Answer: N")
and asks for that one line: every response carries a little working (RPO caches reasoning
prefixes) and fits in ~48 new tokens, and SmolLM2-135M-Instruct solves a useful share of them at
temperature 1: pass@1 0.21 with 58% of 4-sample groups partially solved at the default (one
addition, operands 1-9), where free-form working or a bare number scored ~6% (BENCHMARKS.md,
``scripts/bench/calibrate_task.py``). ``instruction`` is a template with the fields {name}, {item},
{expr}; ``PLAIN_INSTRUCTION`` (no expression given) is the harder variant.

``style="reasoning"`` is the long-chain variant (issue 14, ``reasoning_config()``): the prompt asks
for step-by-step reasoning and a last line ``Final answer: N`` (``REASONING_INSTRUCTION``), and each
problem draws its number of operations uniformly from ``steps..steps_max`` (1-3 by default there),
so the model writes chains of ~100-300 tokens that RPO can cut short. The grader
(``rpo_verl.reward.extract.extract_tagged_answer``) reads the number after the last ``\\boxed{}`` or
answer tag ("Final answer:", "answer is"), whichever comes last, and falls back to the last number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

DATA_SOURCE = "rpo_verl/arith"
ABILITY = "math"
HINT_INSTRUCTION = "Reply with one line in this form: '{name} has {expr} = N {item}. Answer: N', where N is the number."
PLAIN_INSTRUCTION = "Write the calculation in one short sentence, then finish with 'Answer: <number>'."
REASONING_INSTRUCTION = (
    "Explain your reasoning step by step, then write the final answer on the last line as 'Final answer: N'."
)
STYLE_INSTRUCTIONS = {"oneline": HINT_INSTRUCTION, "reasoning": REASONING_INSTRUCTION}
QUESTION_FORMS = ("word", "bare")  # the story with a question, or only "What is <expr>?"

NAMES = ["Tom", "Mia", "Sam", "Ava", "Leo", "Zoe", "Ben", "Lily", "Max", "Emma", "Noah", "Ella"]
ITEMS = ["apples", "pens", "stickers", "marbles", "books", "cookies", "cards", "shells", "coins", "toys"]


@dataclass(frozen=True)
class ArithConfig:
    """Difficulty knobs. ``steps`` changes of size ``min_operand..max_operand`` applied to a start amount.

    ``steps_max`` (default: ``steps``) makes a difficulty mix: each problem draws its number of
    changes uniformly from ``steps..steps_max``. ``style`` only labels the rows (``extra_info.style``);
    the prompt is the ``question`` (``word``: the story; ``bare``: "What is 8 + 6?") followed by
    ``instruction`` (use ``reasoning_config()`` for the long-chain task).
    """

    steps: int = 1
    steps_max: Optional[int] = None
    min_operand: int = 1
    max_operand: int = 9
    ops: tuple[str, ...] = ("add",)  # any of add, sub, mul (add+sub: pass@1 0.17 vs 0.21 for add alone)
    instruction: str = HINT_INSTRUCTION  # a template: {name}, {item}, {expr}
    names: tuple[str, ...] = field(default=tuple(NAMES), repr=False)
    style: str = "oneline"  # oneline | reasoning
    question: str = "word"  # word: the story ("Sam has 8 coins. Sam gets 6 more. ..."); bare: "What is 8 + 6?"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError("steps: must be >= 1")
        if self.steps_max is not None and self.steps_max < self.steps:
            raise ValueError(f"steps_max: must be >= steps ({self.steps}), got {self.steps_max}")
        if self.style not in STYLE_INSTRUCTIONS:
            raise ValueError(f"style: choose from {', '.join(STYLE_INSTRUCTIONS)} (got {self.style!r})")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError("min_operand/max_operand: need 0 <= min_operand <= max_operand")
        if self.question not in QUESTION_FORMS:
            raise ValueError(f"question: choose from {', '.join(QUESTION_FORMS)} (got {self.question!r})")
        unknown = set(self.ops) - {"add", "sub", "mul"}
        if not self.ops or unknown:
            raise ValueError(f"ops: choose from add, sub, mul (got {sorted(unknown) or 'none'})")
        try:
            self.instruction.format(name="", item="", expr="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"instruction: only the fields {{name}}, {{item}}, {{expr}} are allowed ({exc})") from exc


def reasoning_config(**overrides) -> ArithConfig:
    """The long-chain task: step-by-step reasoning, 'Final answer: N', 1-3 additions (operands 1-9)."""
    knobs = {"steps": 1, "steps_max": 3, "ops": ("add",), "instruction": REASONING_INSTRUCTION, "style": "reasoning"}
    return ArithConfig(**{**knobs, **overrides})


def task_config(style: str = "oneline", plain: bool = False, **knobs) -> ArithConfig:
    """The task of a prompt style with the style's defaults, then the given knobs (None = default).

    ``plain`` (the expression-free one-line prompt) only exists for ``style="oneline"``.
    """
    knobs = {key: value for key, value in knobs.items() if value is not None}
    if style == "reasoning":
        if plain:
            raise ValueError("plain: only for style oneline (the reasoning prompt gives no expression)")
        return reasoning_config(**knobs)
    if style != "oneline":
        raise ValueError(f"style: choose from {', '.join(STYLE_INSTRUCTIONS)} (got {style!r})")
    return ArithConfig(**knobs, **({"instruction": PLAIN_INSTRUCTION} if plain else {}))


def make_problem(rng: random.Random, cfg: ArithConfig) -> dict:
    """One problem: ``{"question", "answer" (int), "expr", "name", "item", "steps": [(op, operand), ...]}``."""
    name, item = rng.choice(cfg.names), rng.choice(ITEMS)
    n_steps = cfg.steps if cfg.steps_max is None else rng.randint(cfg.steps, cfg.steps_max)
    value = rng.randint(max(cfg.min_operand, 1), cfg.max_operand)
    sentences = [f"{name} has {value} {item}."]
    steps, expr = [], str(value)
    for _ in range(n_steps):
        op = rng.choice(cfg.ops)
        if op == "sub" and value < max(cfg.min_operand, 1):
            op = "add"  # nothing left to give away: keep every intermediate amount non-negative
        if op == "add":
            b = rng.randint(cfg.min_operand, cfg.max_operand)
            value += b
            expr = f"{expr} + {b}"
            sentences.append(rng.choice([f"{name} gets {b} more.", f"A friend gives {name} {b} more {item}."]))
        elif op == "sub":
            b = rng.randint(max(cfg.min_operand, 1), min(cfg.max_operand, value))
            value -= b
            expr = f"{expr} - {b}"
            sentences.append(rng.choice([f"{name} gives away {b}.", f"{name} loses {b} of them."]))
        else:
            b = rng.randint(max(cfg.min_operand, 2), max(cfg.max_operand, 2))
            value *= b
            expr = f"({expr}) * {b}" if " " in expr else f"{expr} * {b}"
            sentences.append(f"Then the number of {item} becomes {b} times as many.")
        steps.append((op, b))
    sentences.append(f"How many {item} does {name} have now?")
    question = " ".join(sentences) if cfg.question == "word" else f"What is {expr}?"
    return {"question": question, "answer": value, "expr": expr, "name": name, "item": item, "steps": steps}


def make_rows(
    n: int, seed: int, split: str, cfg: ArithConfig | None = None, index_offset: int = 0,
    exclude: frozenset[str] = frozenset(),
) -> list[dict]:
    """``n`` verl rows; the same arguments always give the same rows and indices.

    Questions in ``exclude`` (e.g. the validation questions, when building train) are skipped.
    """
    cfg = cfg or ArithConfig()
    rng = random.Random(f"{seed}:{split}")  # str seeds hash deterministically (sha512), unlike hash()
    rows, attempts = [], 0
    while len(rows) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} {split} problems outside the excluded set: raise max_operand/steps")
        problem = make_problem(rng, cfg)
        if problem["question"] in exclude:
            continue
        instruction = cfg.instruction.format(name=problem["name"], item=problem["item"], expr=problem["expr"])
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"{problem['question']} {instruction}"}],
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": str(problem["answer"])},
                "extra_info": {
                    "split": split,
                    "index": index_offset + len(rows),
                    "question": problem["question"],
                    "expr": problem["expr"],
                    "steps": len(problem["steps"]),
                    "max_operand": cfg.max_operand,
                    "style": cfg.style,
                },
            }
        )
    return rows


def make_splits(n_train: int, n_val: int, seed: int, cfg: ArithConfig | None = None) -> tuple[list, list]:
    """Disjoint train/val rows. Val does not depend on ``n_train``; indices are 0..n_train-1 for train
    and n_train.. for val, so they are unique across both files."""
    val = make_rows(n_val, seed, "val", cfg, index_offset=n_train)
    train = make_rows(n_train, seed, "train", cfg, exclude=frozenset(r["extra_info"]["question"] for r in val))
    return train, val
