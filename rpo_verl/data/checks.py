"""Start-up checks of the training and validation files' *contents*, before Ray starts.

``check_data_files(config)`` returns ``Problem``s (the start-up checks' format, check name ``data``)
for what would otherwise fail minutes later inside a Ray worker:

* a file pyarrow cannot read (corrupt, truncated, not parquet): the message names the file;
* a column verl needs is missing or has empty rows: ``data.prompt_key`` (``prompt``),
  ``data_source`` and ``reward_model.ground_truth`` (verl's reward managers read
  ``non_tensor_batch["reward_model"]["ground_truth"]``);
* a ``data_source`` no scorer handles: with no ``reward.custom_reward_function`` and no reward
  model, verl 0.9.1 scores with ``verl.utils.reward_score.default_compute_score``, which raises
  ``NotImplementedError`` for a source it does not list (in the reward worker, mid-run);
  ``rpo_verl.reward.score`` grades every source; another custom function is trusted;
* prompts longer than ``data.max_prompt_length`` tokens (after the chat template): counted, the
  longest shown. With ``data.filter_overlong_prompts=true`` (verl's default) verl drops them, so
  this is a note; with it off and ``data.truncation=error`` verl raises on the first one, so it
  is a problem.

Only the needed columns are read (pyarrow column projection); a GSM8K-size file takes well under
a second, the prompt-length pass about a second per 10k prompts with a fast tokenizer.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rpo_verl.config.problems import Problem

CHECK = "data"
FILE_KEYS = ("data.train_files", "data.val_files")
# Custom reward functions known to grade every data_source (rpo_verl.reward.score.route).
ALL_SOURCE_SCORERS = ("rpo_verl.reward.score", "rpo_verl/reward/score.py")
MAX_SHOWN = 5


def _get(config: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(config, key, default=default)


def _files(config: DictConfig, key: str) -> list[str]:
    value = _get(config, key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _local(path: str) -> str | None:
    if "://" in path:
        return None  # remote (hdfs://...): verl copies it to local later; not checked here
    local = os.path.expanduser(path)
    return local if os.path.isfile(local) else None


# ----------------------------------------------------------------------------- scorers


@functools.lru_cache(maxsize=1)
def default_scorer_sources() -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact names, prefixes) of the data_sources verl's ``default_compute_score`` handles.

    Read from the function's source: its ``if data_source == "..."`` / ``in [...]`` /
    ``.startswith("...")`` branches (verl keeps no table of them). ``tests/data`` checks the result
    against calling the function, so a verl that changes the dispatch breaks that test.
    """
    from verl.utils.reward_score import default_compute_score

    tree = ast.parse(inspect.getsource(default_compute_score))
    names: set[str] = set()
    prefixes: list[str] = []

    def constants(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return [c.value for c in node.elts if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "data_source":
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, (ast.Eq, ast.In)):
                    names.update(constants(right))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "data_source"):
            for arg in node.args:
                prefixes.extend(constants(arg))
    return frozenset(names), tuple(prefixes)


def scorer_for(config: DictConfig) -> tuple[str, Callable[[str], bool] | None]:
    """(description of what scores the rewards, predicate 'has a scorer for this data_source' or None
    when every source is accepted or it cannot be known)."""
    path = _get(config, "reward.custom_reward_function.path")
    if path:
        path = str(path)
        if any(path.endswith(s) or path.removeprefix("pkg://") == s for s in ALL_SOURCE_SCORERS):
            return "rpo_verl.reward.score (grades every data_source)", None
        return f"the custom reward function {path}", None  # user code: cannot tell
    if _get(config, "reward.reward_model.enable"):
        return "the reward model", None
    if _get(config, "reward.reward_manager.source") not in (None, "register"):
        return "a custom reward manager", None
    names, prefixes = default_scorer_sources()
    return ("verl's default_compute_score (no reward.custom_reward_function)",
            lambda source: source in names or source.startswith(prefixes))


# ----------------------------------------------------------------------------- prompt lengths


def _tokenizer(config: DictConfig):
    path = _get(config, "actor_rollout_ref.model.tokenizer_path") or _get(config, "actor_rollout_ref.model.path")
    if not path or not os.path.isdir(os.path.expanduser(str(path))):
        return None  # the model check reports it
    from transformers import AutoTokenizer

    trust = bool(_get(config, "actor_rollout_ref.model.trust_remote_code", False))
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(str(path)), trust_remote_code=trust)
    except Exception:  # noqa: BLE001 - an unloadable tokenizer is the model check's (or verl's) to report
        return None


def prompt_lengths(tokenizer, prompts: list, template_kwargs: dict | None = None) -> list[int]:
    """Token count of each chat prompt as verl's RLHFDataset measures it (chat template with the
    generation prompt, no extra special tokens)."""
    kwargs = dict(template_kwargs or {})
    for key in ("tokenize", "return_dict", "return_tensors"):
        kwargs.pop(key, None)
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False, **kwargs) for p in prompts]
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return [len(ids) for ids in encoded]


def _length_problems(config: DictConfig, key: str, path: str, prompts: list, tokenizer, note) -> list[Problem]:
    limit = int(_get(config, "data.max_prompt_length", 1024))
    template_kwargs = _get(config, "data.apply_chat_template_kwargs") or {}
    if not isinstance(template_kwargs, dict):
        template_kwargs = OmegaConf.to_container(template_kwargs, resolve=True)
    lengths = prompt_lengths(tokenizer, [list(p) for p in prompts], template_kwargs)
    over = [(n, i) for i, n in enumerate(lengths) if n > limit]
    if not over:
        return []
    longest = max(n for n, _ in over)
    row = next(i for n, i in over if n == longest)
    what = (f"{path}: {len(over)} of {len(lengths)} prompts are longer than data.max_prompt_length={limit} "
            f"tokens (longest: row {row}, {longest} tokens)")
    if _get(config, "data.filter_overlong_prompts", True):
        note(f"[rpo_verl] note: {what}; verl leaves them out (data.filter_overlong_prompts=true).")
        return []
    truncation = _get(config, "data.truncation", "error")
    if truncation == "error":
        return [Problem(CHECK, "data.max_prompt_length", f"{what}; with data.filter_overlong_prompts=false and "
                        "data.truncation=error verl stops on the first of them. Fix: raise data.max_prompt_length, "
                        "set data.filter_overlong_prompts=true (drop them) or data.truncation=left|right|middle.",
                        environment=True)]
    note(f"[rpo_verl] note: {what}; verl truncates them (data.truncation={truncation}).")
    return []


# ----------------------------------------------------------------------------- one file


def _column_problems(key: str, path: str, table, prompt_key: str) -> list[Problem]:
    problems = []
    for column in (prompt_key, "data_source", "ground_truth"):
        if column not in table.column_names:
            continue
        nulls = table.column(column).null_count
        if nulls:
            name = "reward_model.ground_truth" if column == "ground_truth" else column
            problems.append(Problem(CHECK, key, f"{path}: {nulls} of {table.num_rows} rows have no {name}. Fix: "
                                    "fill them in or drop those rows (scripts/prepare_data.py validates rows).",
                                    environment=True))
    return problems


def check_file(config: DictConfig, key: str, path: str, scorer, tokenizer, note) -> list[Problem]:
    """Problems of one local parquet file (``key`` is the setting that names it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompt_key = str(_get(config, "data.prompt_key", "prompt"))
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        return [Problem(CHECK, key, f"{path} is not a readable parquet file ({exc}). Fix: regenerate it "
                        "(e.g. `python scripts/prepare_data.py`) or point at another file.", environment=True)]
    names = set(schema.names)
    missing = [c for c in (prompt_key, "data_source") if c not in names]
    reward = schema.field("reward_model").type if "reward_model" in names else None
    need_truth = not (_get(config, "reward.reward_model.enable") and not _get(config, "reward.custom_reward_function.path"))
    has_truth = isinstance(reward, pa.StructType) and reward.get_field_index("ground_truth") >= 0
    if need_truth and not has_truth:
        missing.append("reward_model.ground_truth" if "reward_model" in names else "reward_model")
    if missing:
        return [Problem(CHECK, key, f"{path} has no column(s) {', '.join(missing)} (it has: {', '.join(schema.names)}). "
                        "verl's RL dataset and reward workers need data_source, "
                        f"{prompt_key} (chat messages) and reward_model.ground_truth. Fix: convert it with "
                        "`python scripts/prepare_data.py` (or set data.prompt_key).", environment=True)]
    columns = [prompt_key, "data_source"] + (["reward_model.ground_truth"] if has_truth else [])
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        return [Problem(CHECK, key, f"{path}: reading columns {columns} failed ({exc}).", environment=True)]
    problems = _column_problems(key, path, table, prompt_key)
    description, has_scorer = scorer
    if has_scorer is not None:
        sources = [s for s in table.column("data_source").unique().to_pylist() if s is not None]
        unscored = sorted(s for s in sources if not has_scorer(str(s)))
        if unscored:
            shown = ", ".join(repr(s) for s in unscored[:MAX_SHOWN]) + (" ..." if len(unscored) > MAX_SHOWN else "")
            problems.append(Problem(CHECK, "reward.custom_reward_function.path",
                                    f"{path}: no scorer for data_source {shown}: {description} raises "
                                    "NotImplementedError for it. Fix: reward.custom_reward_function.path="
                                    "pkg://rpo_verl.reward.score (arith, GSM8K, MATH-style sources) or your own "
                                    "compute_score file, or a data_source verl knows.", environment=True))
    if tokenizer is not None and table.column(prompt_key).null_count == 0:
        prompts = table.column(prompt_key).to_pylist()
        problems += _length_problems(config, key, path, prompts, tokenizer, note)
    return problems


def check_data_files(config: DictConfig, note: Callable[[str], None] = print) -> list[Problem]:
    """Problems of every local ``data.train_files`` / ``data.val_files`` parquet file (missing
    files are reported by ``rpo_verl.config.checks.check_data``; json/jsonl files and remote paths
    are left to verl)."""
    targets = [(key, local) for key in FILE_KEYS for path in _files(config, key)
               if (local := _local(path)) is not None and local.endswith(".parquet")]
    if not targets:
        return []
    scorer = scorer_for(config)
    tokenizer = _tokenizer(config)
    problems: list[Problem] = []
    for key, path in targets:
        problems += check_file(config, key, path, scorer, tokenizer, note)
    return problems
