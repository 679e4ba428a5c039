"""Sampling for the HF rollout: request parameters -> ``SamplingSpec``, and one decoding step.

Semantics follow verl's vLLM server (``vllm_async_server.py``) and vLLM's v1 sampler:
- ``max_tokens`` (or ``max_new_tokens``) per request, else ``min(response_length,
  prompt_length + response_length - len(prompt))``; clamped to ``[1, max_model_len - len(prompt)]``.
- temperature below 1e-5 (or ``do_sample=False``) is greedy; ``top_k`` <= 0 and ``top_p`` = 1 are off.
- ``processed_logprobs`` (verl's default): log-softmax after repetition penalty, temperature and
  top-k/top-p masking, i.e. of the distribution the token was drawn from; greedy rows use the
  unscaled logits. ``raw_logprobs``: log-softmax of the model's logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

logger = logging.getLogger(__name__)

GREEDY_TEMPERATURE = 1e-5  # vLLM's threshold for "temperature 0"

# Keys verl or users may send that do not change token-level output here.
_IGNORED_KEYS = {
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "detokenize",
    "include_stop_str_in_output",
    "output_kind",
}
# Keys accepted only at their neutral value; anything else is warned about once and ignored.
_NEUTRAL_VALUES: dict[str, tuple] = {
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "min_p": (0, 0.0, None),
    "min_tokens": (0, None),
    "stop": (None, (), []),
    "prompt_logprobs": (None, 0, False),
    "best_of": (None, 1),
}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


@dataclass(frozen=True)
class SamplingSpec:
    """Resolved per-request sampling parameters. ``top_k`` 0 = off; ``seed`` None = server RNG."""

    max_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    return_logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


@dataclass(frozen=True)
class SamplingDefaults:
    """Server-side values a request may leave out (from ``actor_rollout_ref.rollout``)."""

    prompt_length: int
    response_length: int
    max_model_len: int
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False


def resolve_max_tokens(params: Mapping[str, Any], prompt_len: int, defaults: SamplingDefaults) -> int:
    """The response budget of one request, resolved exactly as verl's vLLM server does."""
    room = defaults.max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"Prompt length ({prompt_len}) leaves no room to generate within the model's maximum context "
            f"length ({defaults.max_model_len}); need at least 1 token of headroom."
        )
    if params.get("max_tokens") is not None:
        max_tokens = int(params["max_tokens"])
    elif params.get("max_new_tokens") is not None:
        max_tokens = int(params["max_new_tokens"])
    else:
        max_tokens = min(
            defaults.response_length, defaults.prompt_length + defaults.response_length - prompt_len
        )
    return max(1, min(max_tokens, room))


def resolve_sampling(params: Mapping[str, Any], prompt_len: int, defaults: SamplingDefaults) -> SamplingSpec:
    """Turn a request's ``sampling_params`` dict into a ``SamplingSpec`` (bad values raise ValueError)."""
    params = dict(params or {})
    for key, value in params.items():
        if key in _IGNORED_KEYS:
            continue
        if key in _NEUTRAL_VALUES and value not in _NEUTRAL_VALUES[key]:
            _warn_once(key, f"hf rollout: sampling parameter {key}={value!r} is not supported and is ignored")
    n = params.get("n", 1) or 1
    if n != 1:
        # TokenOutput carries one sequence; verl expands rollout.n into separate requests.
        _warn_once("n", f"hf rollout: sampling parameter n={n}: one sequence per request is returned (as vLLM's server)")

    temperature = params.get("temperature")
    temperature = float(defaults.temperature if temperature is None else temperature)
    if params.get("do_sample") is False:
        temperature = 0.0
    if temperature < 0:
        raise ValueError(f"sampling_params.temperature must be >= 0, got {temperature}")
    top_k = params.get("top_k")
    top_k = defaults.top_k if top_k is None else int(top_k)
    if top_k < -1:
        raise ValueError(f"sampling_params.top_k must be -1 (off), 0 (off) or positive, got {top_k}")
    top_p = params.get("top_p")
    top_p = float(defaults.top_p if top_p is None else top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"sampling_params.top_p must be in (0, 1], got {top_p}")
    penalty = params.get("repetition_penalty")
    penalty = float(defaults.repetition_penalty if penalty is None else penalty)
    if penalty <= 0:
        raise ValueError(f"sampling_params.repetition_penalty must be > 0, got {penalty}")
    seed = params.get("seed")
    ignore_eos = params.get("ignore_eos")
    stop_ids = params.get("stop_token_ids") or ()
    return SamplingSpec(
        max_tokens=resolve_max_tokens(params, prompt_len, defaults),
        temperature=temperature,
        top_k=max(top_k, 0),
        top_p=top_p,
        repetition_penalty=penalty,
        seed=None if seed is None else int(seed),
        ignore_eos=bool(defaults.ignore_eos if ignore_eos is None else ignore_eos),
        stop_token_ids=tuple(int(t) for t in stop_ids),
        return_logprobs=bool(params.get("logprobs", False)),
    )


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """vLLM/HF repetition penalty. logits ``[b, V]``, seen ``[b, V]`` bool, penalty ``[b]``."""
    penalty = penalty[:, None]
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def mask_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set logits outside each row's top-k, then outside its top-p nucleus, to -inf.

    logits ``[b, V]`` (already temperature-scaled), top_k ``[b]`` long (0 = off), top_p ``[b]``
    (1 = off). Top-p is taken over the top-k renormalised distribution, as in vLLM; the most likely
    token is always kept.
    """
    use_k = top_k > 0
    use_p = top_p < 1.0
    if not bool(use_k.any() or use_p.any()):
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    rank = torch.arange(logits.shape[-1], device=logits.device)[None, :]
    remove = use_k[:, None] & (rank >= top_k[:, None])
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    if bool(use_p.any()):
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        remove_p = use_p[:, None] & (mass_before >= top_p[:, None])
        remove_p[:, 0] = False
        remove = remove | remove_p
    remove_unsorted = torch.zeros_like(remove).scatter(-1, order, remove)
    return logits.masked_fill(remove_unsorted, float("-inf"))


def sample_step(
    logits: torch.Tensor,
    specs: list[SamplingSpec],
    generators: list[Optional[torch.Generator]],
    default_generator: torch.Generator,
    seen: Optional[torch.Tensor],
    logprobs_mode: str = "processed_logprobs",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step for ``b`` rows: returns (tokens ``[b]`` long, log-probs ``[b]`` float32).

    ``generators[i]`` is row i's own RNG (seeded request) or None (use ``default_generator``).
    ``seen`` ``[b, V]`` marks prompt+generated tokens (only needed for a repetition penalty).
    """
    raw = logits.float()
    device = raw.device
    processed = raw
    penalty = torch.tensor([s.repetition_penalty for s in specs], device=device)
    if seen is not None and bool((penalty != 1.0).any()):
        processed = apply_repetition_penalty(processed, seen, penalty)
    greedy = torch.tensor([s.greedy for s in specs], device=device)
    temperature = torch.tensor([1.0 if s.greedy else s.temperature for s in specs], device=device)
    top_k = torch.tensor([0 if s.greedy else s.top_k for s in specs], device=device, dtype=torch.long)
    top_p = torch.tensor([1.0 if s.greedy else s.top_p for s in specs], device=device)
    processed = mask_top_k_top_p(processed / temperature[:, None], top_k, top_p)
    processed_logprobs = processed.log_softmax(dim=-1)

    sampled_rows = (~greedy).nonzero().flatten().tolist()
    if len(sampled_rows) < len(specs):
        tokens = processed.argmax(dim=-1)
    else:
        tokens = torch.empty(len(specs), dtype=torch.long, device=device)
    if sampled_rows:
        # Exponential race, as vLLM samples: argmax(p / q) with q ~ Exp(1) draws from p
        # (torch.multinomial is several times slower over a 50k vocabulary on CPU).
        probs = processed_logprobs.exp()
        vocab = probs.shape[-1]
        shared = [i for i in sampled_rows if generators[i] is None]
        if shared:
            race = torch.empty((len(shared), vocab), device=device).exponential_(generator=default_generator)
            tokens[shared] = (probs[shared] / race).argmax(dim=-1)
        for i in sampled_rows:
            if generators[i] is not None:
                race = torch.empty(vocab, device=device).exponential_(generator=generators[i])
                tokens[i] = (probs[i] / race).argmax()
    source = processed_logprobs if logprobs_mode == "processed_logprobs" else raw.log_softmax(dim=-1)
    return tokens, source.gather(-1, tokens[:, None]).squeeze(-1)
