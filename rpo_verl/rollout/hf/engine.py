"""Batched, KV-cached generation with an HF ``AutoModelForCausalLM`` (synchronous, no Ray, no asyncio).

One call of ``HFGenerationEngine.generate`` runs one micro-batch: the prompts are left-padded, one
prefill builds the KV cache, then one decoding loop samples a token per live row; rows that hit a
stop token, their budget or an abort leave the batch (their cache rows are dropped).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

from rpo_verl.rollout.hf.sampling import SamplingSpec, sample_step

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EngineRequest:
    request_id: str
    prompt_ids: list[int]
    spec: SamplingSpec
    abort: threading.Event = field(default_factory=threading.Event)


@dataclass
class EngineResult:
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    finish_reason: Optional[str] = None  # "stop" | "length" | "aborted"


class HFGenerationEngine:
    """Holds the model; generates micro-batches and loads pushed weights (strict on names)."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
        eos_token_ids: Iterable[int] = (),
        pad_token_id: int = 0,
        seed: int = 0,
        logprobs_mode: str = "processed_logprobs",
    ):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=DTYPES[dtype],
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self.model.eval().requires_grad_(False)
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.logprobs_mode = logprobs_mode
        self.generator = torch.Generator().manual_seed(int(seed))
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        # name -> live tensor; tied weights (e.g. lm_head.weight / model.embed_tokens.weight) share one tensor.
        self._targets: dict[str, torch.Tensor] = dict(self.model.state_dict(keep_vars=True))
        groups: dict[int, list[str]] = {}
        for name, tensor in self._targets.items():
            groups.setdefault(id(tensor), []).append(name)
        self._weight_groups: list[list[str]] = list(groups.values())
        self._received: set[str] = set()

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, requests: list[EngineRequest]) -> list[EngineResult]:
        batch = len(requests)
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for row, request in enumerate(requests):
            n = len(request.prompt_ids)
            input_ids[row, width - n :] = torch.tensor(request.prompt_ids, dtype=torch.long)
            attention_mask[row, width - n :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

        specs = [r.spec for r in requests]
        generators = [None if s.seed is None else torch.Generator().manual_seed(s.seed) for s in specs]
        stop_sets = [frozenset(s.stop_token_ids) | (frozenset() if s.ignore_eos else self.eos_token_ids) for s in specs]
        seen = None
        if any(s.repetition_penalty != 1.0 for s in specs):
            seen = torch.zeros((batch, self.vocab_size), dtype=torch.bool)
            for row, request in enumerate(requests):
                seen[row, torch.tensor(request.prompt_ids, dtype=torch.long)] = True

        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_position = position_ids[:, -1] + 1
        active = list(range(batch))  # request index of each live row
        results = [EngineResult() for _ in requests]

        while True:
            tokens, log_probs = sample_step(
                logits,
                [specs[i] for i in active],
                [generators[i] for i in active],
                self.generator,
                seen,
                self.logprobs_mode,
            )
            keep = []
            for row, (i, token, log_prob) in enumerate(zip(active, tokens.tolist(), log_probs.tolist())):
                result = results[i]
                result.token_ids.append(token)
                result.log_probs.append(log_prob)
                if token in stop_sets[i]:
                    result.finish_reason = "stop"
                elif len(result.token_ids) >= specs[i].max_tokens:
                    result.finish_reason = "length"
                elif requests[i].abort.is_set():
                    result.finish_reason = "aborted"
                else:
                    keep.append(row)
            if not keep:
                return results
            if len(keep) < len(active):
                index = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(index)
                attention_mask, next_position, tokens = attention_mask[index], next_position[index], tokens[index]
                seen = None if seen is None else seen[index]
                active = [active[row] for row in keep]
            if seen is not None:
                seen[torch.arange(len(active)), tokens] = True
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention_mask,
                position_ids=next_position[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1]
            next_position = next_position + 1

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy pushed tensors into the live model. Unknown names or shapes raise before any copy."""
        items = list(named_tensors)
        unknown = [name for name, _ in items if name not in self._targets]
        if unknown:
            raise ValueError(
                f"hf rollout: weight update has {len(unknown)} name(s) the rollout model does not have, e.g. "
                f"{unknown[:5]}; the model has e.g. {list(self._targets)[:5]}. The trainer and the rollout "
                "must load the same architecture (actor_rollout_ref.model.path)."
            )
        for name, tensor in items:
            target = self._targets[name]
            if tuple(tensor.shape) != tuple(target.shape):
                raise ValueError(
                    f"hf rollout: weight {name} has shape {tuple(tensor.shape)}, the rollout model expects "
                    f"{tuple(target.shape)}"
                )
        for name, tensor in items:
            self._targets[name].copy_(tensor)
            self._received.add(name)
        return len(items)

    def finish_weight_update(self) -> dict:
        """Check that every weight (each tied group once) arrived since the last finish; reset."""
        missing = [group for group in self._weight_groups if not self._received.intersection(group)]
        received = len(self._received)
        self._received = set()
        if missing:
            names = [group[0] for group in missing]
            raise ValueError(
                f"hf rollout: weight update incomplete, {len(names)} weight(s) never arrived, e.g. {names[:5]}"
            )
        return {"tensors": received}
