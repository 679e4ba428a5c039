"""Batched, KV-cached generation with an HF ``AutoModelForCausalLM`` (synchronous, no Ray, no asyncio).

``HFGenerationEngine.run`` decodes a live batch step by step (continuous batching on CPU):
- new requests are prefilled together (left-padded) and join the live batch at a step boundary:
  both KV caches are left-padded to a common length (masked) and concatenated;
- each step samples one token per live row; a row that hits a stop token, its budget or an abort
  leaves at once (its cache row is dropped) and is reported through ``on_finish``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F

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


@dataclass
class _Live:
    """Decoding state of the rows in flight; row i belongs to ``requests[i]``."""

    requests: list[EngineRequest]
    results: list[EngineResult]
    generators: list[Optional[torch.Generator]]
    stops: list[frozenset]
    cache: Any
    attention_mask: torch.Tensor  # [b, cache length + 0] (1 = real token)
    next_position: torch.Tensor  # [b] position id of the token fed next
    seen: torch.Tensor  # [b, V] prompt + generated tokens (repetition penalty)
    tokens: Optional[torch.Tensor] = None  # [b] last sampled token = next input

    def __len__(self) -> int:
        return len(self.requests)

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long)
        self.cache.batch_select_indices(index)
        for name in ("requests", "results", "generators", "stops"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])
        self.attention_mask, self.next_position = self.attention_mask[index], self.next_position[index]
        self.seen, self.tokens = self.seen[index], self.tokens[index]


class HFGenerationEngine:
    """Holds the model; generates and loads pushed weights (strict on names)."""

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
        self.max_live_rows = 0
        # name -> live tensor; tied weights (e.g. lm_head.weight / model.embed_tokens.weight) share one tensor.
        self._targets: dict[str, torch.Tensor] = dict(self.model.state_dict(keep_vars=True))
        groups: dict[int, list[str]] = {}
        for name, tensor in self._targets.items():
            groups.setdefault(id(tensor), []).append(name)
        self._weight_groups: list[list[str]] = list(groups.values())
        self._received: set[str] = set()

    # ------------------------------------------------------------------ generation
    def generate(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """Generate for a fixed set of requests; results in request order."""
        finished: dict[int, EngineResult] = {}
        self.run(requests, on_finish=lambda request, result: finished.__setitem__(id(request), result))
        return [finished[id(r)] for r in requests]

    @torch.no_grad()
    def run(
        self,
        requests: list[EngineRequest],
        take_new: Optional[Callable[[int], list[EngineRequest]]] = None,
        on_finish: Optional[Callable[[EngineRequest, EngineResult], None]] = None,
        max_rows: int = 1 << 30,
    ) -> None:
        """Decode until no row is live and ``take_new(capacity)`` has nothing more to add.

        ``on_finish(request, result)`` is called (from this thread) as soon as a request ends.
        """
        on_finish = on_finish or (lambda request, result: None)
        live: Optional[_Live] = None
        waiting = list(requests)
        while True:
            if waiting:
                joined = self._start(waiting, on_finish)
                live = joined if live is None else self._merge(live, joined)
                self.max_live_rows = max(self.max_live_rows, len(live))
            if live is not None and len(live) == 0:
                live = None
            if live is None:
                waiting = take_new(max_rows) if take_new else []
                if not waiting:
                    return
                continue
            self._step(live, on_finish)
            waiting = []
            if take_new and len(live) < max_rows and self._can_join(live):
                waiting = take_new(max_rows - len(live))

    def _start(self, requests: list[EngineRequest], on_finish) -> _Live:
        """Prefill ``requests`` together and sample their first tokens."""
        batch = len(requests)
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        seen = torch.zeros((batch, self.vocab_size), dtype=torch.bool)
        for row, request in enumerate(requests):
            prompt = torch.tensor(request.prompt_ids, dtype=torch.long)
            input_ids[row, width - len(prompt) :] = prompt
            attention_mask[row, width - len(prompt) :] = 1
            seen[row, prompt] = True
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        specs = [r.spec for r in requests]
        live = _Live(
            requests=list(requests),
            results=[EngineResult() for _ in requests],
            generators=[None if s.seed is None else torch.Generator().manual_seed(s.seed) for s in specs],
            stops=[frozenset(s.stop_token_ids) | (frozenset() if s.ignore_eos else self.eos_token_ids) for s in specs],
            cache=out.past_key_values,
            attention_mask=attention_mask,
            next_position=position_ids[:, -1] + 1,
            seen=seen,
        )
        self._advance(live, out.logits[:, -1], on_finish)
        return live

    def _step(self, live: _Live, on_finish) -> None:
        """Feed each row's last token, sample the next."""
        live.attention_mask = torch.cat([live.attention_mask, live.attention_mask.new_ones((len(live), 1))], dim=1)
        out = self.model(
            input_ids=live.tokens[:, None],
            attention_mask=live.attention_mask,
            position_ids=live.next_position[:, None],
            past_key_values=live.cache,
            use_cache=True,
        )
        live.cache = out.past_key_values
        live.next_position = live.next_position + 1
        self._advance(live, out.logits[:, -1], on_finish)

    def _advance(self, live: _Live, logits: torch.Tensor, on_finish) -> None:
        """Sample one token per row, report finished rows and drop them."""
        tokens, log_probs = sample_step(
            logits,
            [r.spec for r in live.requests],
            live.generators,
            self.generator,
            live.seen,
            self.logprobs_mode,
        )
        live.tokens = tokens
        live.seen[torch.arange(len(live)), tokens] = True
        keep = []
        for row, (token, log_prob) in enumerate(zip(tokens.tolist(), log_probs.tolist())):
            request, result = live.requests[row], live.results[row]
            result.token_ids.append(token)
            result.log_probs.append(log_prob)
            if token in live.stops[row]:
                result.finish_reason = "stop"
            elif len(result.token_ids) >= request.spec.max_tokens:
                result.finish_reason = "length"
            elif request.abort.is_set():
                result.finish_reason = "aborted"
            else:
                keep.append(row)
                continue
            on_finish(request, result)
        if len(keep) < len(live):
            live.keep(keep)

    @staticmethod
    def _can_join(live: _Live) -> bool:
        # Left-padding a cache is only valid for plain (non-sliding) dynamic layers.
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in getattr(live.cache, "layers", [None]))

    @staticmethod
    def _merge(live: _Live, joined: _Live) -> _Live:
        """Append ``joined``'s rows to ``live``: left-pad the shorter cache (masked) to a common length."""
        if len(joined) == 0:
            return live
        if len(live) == 0:
            return joined
        length = max(live.attention_mask.shape[1], joined.attention_mask.shape[1])

        def pad(tensor: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = length - tensor.shape[-dim_from_end]
            return F.pad(tensor, (0, 0) * (dim_from_end - 1) + (missing, 0)) if missing else tensor

        for mine, theirs in zip(live.cache.layers, joined.cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        live.attention_mask = torch.cat([pad(live.attention_mask, 1), pad(joined.attention_mask, 1)])
        for name in ("requests", "results", "generators", "stops"):
            setattr(live, name, getattr(live, name) + getattr(joined, name))
        for name in ("next_position", "seen", "tokens"):
            setattr(live, name, torch.cat([getattr(live, name), getattr(joined, name)]))
        return live

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
