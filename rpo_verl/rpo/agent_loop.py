"""RPO suffix rollout as a verl agent loop (ALGORITHMS.md §1, "Rollout"): ``rpo_suffix_agent``.

The controller chooses one prefix per prompt (``CacheServiceClient.sample_prefix_batch``) and
attaches it to the prompt's row as two non-tensor columns, which verl hands to ``run`` as kwargs:

- ``rpo_prefix_ids``: the prefix token ids (int array / list / tensor; empty = full-path rollout);
- ``rpo_suffix_budget``: the suffix ``max_tokens`` (int);
- ``rpo_sample_seed`` (optional): a per-prompt seed; sample ``session_id`` of the group is drawn
  with the request seed ``request_seed(rpo_sample_seed, session_id)`` (the trainer sets it when
  ``actor_rollout_ref.rollout.full_determinism=true``, so a resumed run regenerates the same
  suffixes; vLLM and the CPU backend both take a per-request ``seed``).

The loop generates from ``prompt_ids + prefix_ids`` with a per-request ``max_tokens`` through
verl's server-manager interface only (``server_manager.generate``: works with vLLM, SGLang and the
CPU backend alike), and returns the prefix as the start of the *response* with response_mask 0
(``rpo_verl.rpo.loss.include_prefix=true``: 1), like verl's tool loop does for tool output. So
reward managers score prefix ⊕ suffix, the loss sees only the suffix, and length-based rewards
(DAPO's overlong penalty) measure prefix + suffix against ``data.max_response_length``.

Rows without the columns (validation, or RPO off) are ordinary single-turn rollouts. Per-sample
facts for the trainer's metrics go to ``extra_fields``: ``rpo_prefix_len``, ``rpo_suffix_len``,
``rpo_suffix_budget``, ``rpo_suffix_truncated`` (stopped by the budget, not by EOS) and
``rpo_prefix_fallback`` (1: a prefix that did not fit was dropped or shortened here).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
from verl.utils.profiler import simple_timer
from verl.utils.rollout_trace import rollout_trace_op

from rpo_verl.rpo.config import rpo_config_from_trainer_config
from rpo_verl.rpo.prefix import PrefixOverlongError

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

AGENT_LOOP_NAME = "rpo_suffix_agent"
PREFIX_KEY = "rpo_prefix_ids"
BUDGET_KEY = "rpo_suffix_budget"
SEED_KEY = "rpo_sample_seed"
EXTRA_FIELDS = ("rpo_prefix_len", "rpo_suffix_len", "rpo_suffix_budget", "rpo_suffix_truncated", "rpo_prefix_fallback")


def as_token_list(value: Any) -> list[int]:
    """Prefix column value (None, list, numpy array, torch tensor) -> list of Python ints."""
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (int, float)):
        raise TypeError(f"{PREFIX_KEY} must be a sequence of token ids, got a scalar {value!r}")
    return [int(t) for t in value]


def as_budget(value: Any) -> Optional[int]:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    budget = int(value)
    return budget if budget > 0 else None


def request_seed(prompt_seed: Any, session_id: Any) -> int:
    """Seed of one request: distinct per sample of a group, < 2**31 (every backend accepts it)."""
    if hasattr(prompt_seed, "item"):
        prompt_seed = prompt_seed.item()
    return (int(prompt_seed) + 1_000_003 * int(session_id or 0)) % (2**31 - 1)


def fit_prefix(
    prefix: list[int],
    budget: Optional[int],
    *,
    prompt_len: int,
    response_length: int,
    max_input_len: int,
    overlong: str,
) -> tuple[list[int], Optional[int], int]:
    """Make the prefix fit: prefix + suffix <= response_length and prompt + prefix <= max_input_len.

    Returns (prefix, max_tokens or None for the backend default, fallback flag). The controller
    already applied these rules with its own length estimates; this re-check uses the real prompt
    length after the chat template.
    """
    if not prefix:
        return [], (None if budget is None else min(budget, response_length)), 0
    budget = response_length if budget is None else budget
    room = response_length - 1
    if max_input_len > 0:
        room = min(room, max_input_len - prompt_len)
    fallback = 0
    if len(prefix) > room:
        if overlong == "error":
            raise PrefixOverlongError(
                f"prefix of {len(prefix)} tokens does not fit (prompt {prompt_len} tokens, "
                f"response_length={response_length}, max_input_len={max_input_len}); raise "
                "data.max_response_length / rpo_verl.rpo.prefix.max_input_len or set rpo_verl.rpo.prefix.overlong"
            )
        fallback = 1
        if overlong == "shorten":
            keep = min(room, response_length - min(budget, response_length))
            prefix = prefix[: max(keep, 0)]
        else:
            prefix = []
        if not prefix:
            return [], None, fallback
    return prefix, max(1, min(budget, response_length - len(prefix))), fallback


class RPOSuffixAgentLoop(AgentLoopBase):
    """Single-turn generation of a suffix after a cached prefix (text prompts)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.response_length = self.rollout_config.response_length
        self.rpo = rpo_config_from_trainer_config(self.config)

    @rollout_trace_op
    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> AgentLoopOutput:
        priority = int(priority)
        messages = list(kwargs["raw_prompt"])
        if await self.process_multi_modal_info(messages):
            raise ValueError(f"agent loop {AGENT_LOOP_NAME!r} supports text prompts only")
        prompt_ids = await self.ct_build_initial_tokens(messages)

        prefix, max_tokens, fallback = fit_prefix(
            as_token_list(kwargs.get(PREFIX_KEY)),
            as_budget(kwargs.get(BUDGET_KEY)),
            prompt_len=len(prompt_ids),
            response_length=self.response_length,
            max_input_len=self.rpo.prefix.max_input_len,
            overlong=self.rpo.prefix.overlong,
        )
        if fallback:
            logger.warning(
                "rpo: a prefix did not fit the budget here (rpo_verl.rpo.prefix.overlong=%s)", self.rpo.prefix.overlong
            )
        params = dict(sampling_params)
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if kwargs.get(SEED_KEY) is not None:
            params["seed"] = request_seed(kwargs[SEED_KEY], kwargs.get("session_id", 0))

        metrics: dict[str, Any] = {}
        with simple_timer("generate_sequences", metrics):
            request_id = f"det-{priority}" if getattr(self.rollout_config, "full_determinism", False) else uuid4().hex
            output = await self.server_manager.generate(
                request_id=request_id,
                prompt_ids=prompt_ids + prefix,
                sampling_params=params,
                priority=priority,
            )
        if metrics.get("num_preempted") is None:
            metrics["num_preempted"] = output.num_preempted if output.num_preempted is not None else -1

        suffix = list(output.token_ids)
        prefix_mask = 1 if self.rpo.loss.include_prefix else 0
        want_logprobs = bool(output.log_probs)
        merge, response_mask, response_logprobs = await self.ct_merge_assistant_token(
            prompt_ids + prefix,
            suffix,
            [prefix_mask] * len(prefix),
            [0.0] * len(prefix) if want_logprobs else None,  # the prefix was not sampled now
            assistant_logprobs=output.log_probs if want_logprobs else None,
        )
        n_resp = len(response_mask)
        response_ids = merge.token_ids[len(merge.token_ids) - n_resp :] if n_resp else []
        prompt_ids = merge.token_ids[: len(merge.token_ids) - n_resp]

        eos = getattr(self.tokenizer, "eos_token_id", None)
        limit = max_tokens if max_tokens is not None else self.response_length
        truncated = int(len(suffix) >= limit and (not suffix or suffix[-1] != eos))
        extra_fields = dict(output.extra_fields)
        extra_fields.update(
            {
                "turn_scores": [],
                "tool_rewards": [],
                "rpo_prefix_len": len(prefix),
                "rpo_suffix_len": len(suffix),
                "rpo_suffix_budget": int(limit),
                "rpo_suffix_truncated": truncated,
                "rpo_prefix_fallback": fallback,
            }
        )
        r = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:r],
            response_mask=response_mask[:r],
            response_logprobs=response_logprobs[:r] if response_logprobs else None,
            num_turns=2,
            metrics=metrics,
            extra_fields=extra_fields,
        )
