"""Unit tests of the HF rollout's sampling rules (pure torch, no model)."""

import pytest
import torch

from rpo_verl.rollout.hf.sampling import (
    SamplingDefaults,
    SamplingSpec,
    mask_top_k_top_p,
    resolve_max_tokens,
    resolve_sampling,
    sample_step,
)

DEFAULTS = SamplingDefaults(prompt_length=32, response_length=12, max_model_len=64, temperature=0.9, top_k=-1)


@pytest.mark.parametrize(
    "params, prompt_len, expected",
    [
        ({}, 10, 12),  # response_length
        ({}, 40, 4),  # prompt over prompt_length: prompt_length + response_length - len
        ({"max_tokens": 5}, 10, 5),
        ({"max_new_tokens": 7}, 10, 7),  # sglang-style key
        ({"max_tokens": 500}, 10, 54),  # clamped to max_model_len - len
        ({"max_tokens": 0}, 10, 1),  # at least one token
        ({}, 60, 1),  # the default budget went negative
    ],
)
def test_max_tokens_resolved_like_verls_vllm_server(params, prompt_len, expected):
    assert resolve_max_tokens(params, prompt_len, DEFAULTS) == expected


def test_prompt_filling_the_context_is_rejected():
    with pytest.raises(ValueError, match="no room to generate"):
        resolve_max_tokens({}, 64, DEFAULTS)


def test_defaults_greedy_and_flags():
    spec = resolve_sampling({}, 5, DEFAULTS)
    assert (spec.temperature, spec.top_k, spec.top_p, spec.return_logprobs) == (0.9, 0, 1.0, False)
    assert resolve_sampling({"temperature": 0}, 5, DEFAULTS).greedy
    assert resolve_sampling({"do_sample": False, "temperature": 1.0}, 5, DEFAULTS).greedy
    spec = resolve_sampling(
        {"top_k": 5, "top_p": 0.5, "seed": 3, "logprobs": True, "stop_token_ids": [7], "ignore_eos": True}, 5, DEFAULTS
    )
    assert (spec.top_k, spec.top_p, spec.seed, spec.return_logprobs, spec.stop_token_ids, spec.ignore_eos) == (
        5, 0.5, 3, True, (7,), True,
    )


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -2}])
def test_bad_values_raise(bad):
    with pytest.raises(ValueError, match="sampling_params"):
        resolve_sampling(bad, 5, DEFAULTS)


def test_top_k_and_top_p_masks():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    masked = mask_top_k_top_p(logits, torch.tensor([2, 0, 0]), torch.tensor([1.0, 0.7, 0.85]))
    keep = torch.isfinite(masked)
    assert keep.tolist() == [[True, True, False, False], [True, True, False, False], [True, True, True, False]]
    # nothing enabled: unchanged
    assert torch.equal(mask_top_k_top_p(logits, torch.tensor([0, 0, 0]), torch.ones(3)), logits)


def test_processed_logprobs_are_of_the_sampling_distribution():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    specs = [
        SamplingSpec(max_tokens=1, temperature=0.0),
        SamplingSpec(max_tokens=1, temperature=0.5),
        SamplingSpec(max_tokens=1, temperature=1.0, top_k=1),
        SamplingSpec(max_tokens=1, temperature=2.0, seed=1),
    ]
    gens = [None, None, None, torch.Generator().manual_seed(1)]
    tokens, logprobs = sample_step(logits, specs, gens, torch.Generator().manual_seed(0), None)
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()
    assert logprobs[0] == pytest.approx(logits[0].log_softmax(-1)[tokens[0]].item(), abs=1e-6)
    assert logprobs[1] == pytest.approx((logits[1] / 0.5).log_softmax(-1)[tokens[1]].item(), abs=1e-6)
    assert logprobs[2] == pytest.approx(0.0, abs=1e-6)  # top-k 1 leaves one token of probability 1
    assert logprobs[3] == pytest.approx((logits[3] / 2.0).log_softmax(-1)[tokens[3]].item(), abs=1e-6)
    _, raw = sample_step(logits, specs, gens, torch.Generator(), None, logprobs_mode="raw_logprobs")
    assert raw[2] == pytest.approx(logits[2].log_softmax(-1).max().item(), abs=1e-6)


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    specs = [SamplingSpec(max_tokens=1)] * 4000
    tokens, _ = sample_step(logits, specs, [None] * 4000, torch.Generator().manual_seed(0), None)
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    seen = torch.tensor([[True, False, False]])
    tokens, _ = sample_step(logits, [SamplingSpec(max_tokens=1, temperature=0, repetition_penalty=2.0)], [None], torch.Generator(), seen)
    assert tokens.tolist() == [1]
