"""The suffix agent loop against a fake server manager with verl's ``generate`` interface."""

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rpo_verl.rpo.agent_loop import AGENT_LOOP_NAME, fit_prefix
from rpo_verl.rpo.prefix import PrefixOverlongError

RESPONSE_LENGTH = 16
PROMPT = [{"role": "user", "content": "What is 12 + 30?"}]


class FakeServerManager:
    """verl's ``LLMServerClient.generate`` signature; emits ``gen_len`` tokens, EOS if under budget."""

    def __init__(self, eos_id, gen_len=6, logprobs=False, default_max=RESPONSE_LENGTH):
        self.eos_id, self.gen_len, self.logprobs, self.default_max = eos_id, gen_len, logprobs, default_max
        self.calls = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.calls.append({"prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params)})
        limit = sampling_params.get("max_tokens", self.default_max)
        n = min(self.gen_len, limit)
        tokens = [40 + i for i in range(n)]
        if n < limit:
            tokens[-1] = self.eos_id
        logprobs = [-0.5 - i for i in range(n)] if self.logprobs else None
        return TokenOutput(token_ids=tokens, log_probs=logprobs, stop_reason="completed")


def _trainer_config(**rpo):
    return OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"prompt_length": 64, "response_length": RESPONSE_LENGTH}},
            "data": {},
            "rpo_verl": {"rpo": rpo},
        }
    )


def _loop(tokenizer, server, name=AGENT_LOOP_NAME, **rpo):
    """Instantiate the loop exactly as verl's AgentLoopWorker does (registry entry + hydra)."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry

    from rpo_verl.rpo.registration import register

    register()
    config = _trainer_config(**rpo)
    return hydra.utils.instantiate(
        config=_agent_loop_registry[name],
        trainer_config=DictConfigWrap(config=config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type=None,
        dataset_cls=None,
        data_config=DictConfigWrap(config.data),
        tools=ToolListWrap([]),
    )


def _prompt_ids(tokenizer):
    ids = tokenizer.apply_chat_template(PROMPT, tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}


async def test_prefix_goes_into_response_with_mask_zero(tokenizer):
    server = FakeServerManager(tokenizer.eos_token_id, gen_len=10)
    loop = _loop(tokenizer, server)
    prefix = np.array([5, 6, 7], dtype=np.int32)
    sampling = dict(SAMPLING)
    out = await loop.run(sampling, raw_prompt=PROMPT, rpo_prefix_ids=prefix, rpo_suffix_budget=4, index=3)
    prompt_ids = _prompt_ids(tokenizer)
    assert server.calls[0]["prompt_ids"] == prompt_ids + [5, 6, 7]  # generation continues the prefix
    assert server.calls[0]["sampling_params"]["max_tokens"] == 4  # per-request budget
    assert "max_tokens" not in sampling  # caller's dict untouched
    assert out.prompt_ids == prompt_ids
    assert out.response_ids == [5, 6, 7, 40, 41, 42, 43]
    assert out.response_mask == [0, 0, 0, 1, 1, 1, 1]
    assert out.response_logprobs is None
    f = out.extra_fields
    assert (f["rpo_prefix_len"], f["rpo_suffix_len"], f["rpo_suffix_budget"]) == (3, 4, 4)
    assert f["rpo_suffix_truncated"] == 1 and f["rpo_prefix_fallback"] == 0
    as_dict = out.as_dict()  # what verl's TransferQueue path stores
    assert as_dict["responses"].dtype == torch.int64 and as_dict["response_mask"].tolist() == out.response_mask


async def test_include_prefix_and_logprobs(tokenizer):
    server = FakeServerManager(tokenizer.eos_token_id, gen_len=3, logprobs=True)
    loop = _loop(tokenizer, server, loss={"include_prefix": True})
    out = await loop.run(dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=torch.tensor([9, 8]), rpo_suffix_budget=5)
    assert out.response_ids == [9, 8, 40, 41, tokenizer.eos_token_id]
    assert out.response_mask == [1, 1, 1, 1, 1]
    assert out.response_logprobs == [0.0, 0.0, -0.5, -1.5, -2.5]  # prefix was not sampled now
    assert out.extra_fields["rpo_suffix_truncated"] == 0


async def test_without_prefix_matches_single_turn(tokenizer):
    server = FakeServerManager(tokenizer.eos_token_id, gen_len=5)
    ours = await _loop(tokenizer, server).run(dict(SAMPLING), raw_prompt=PROMPT)
    assert "max_tokens" not in server.calls[0]["sampling_params"]  # backend default, as single-turn
    theirs = await _loop(tokenizer, server, name="single_turn_agent").run(dict(SAMPLING), raw_prompt=PROMPT)
    assert ours.prompt_ids == theirs.prompt_ids and ours.response_ids == theirs.response_ids
    assert ours.response_mask == theirs.response_mask == [1] * 5
    assert ours.extra_fields["rpo_prefix_len"] == 0
    # an empty prefix with a full budget (a full-path row of an RPO batch) passes the budget
    out = await _loop(tokenizer, server).run(
        dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=[], rpo_suffix_budget=RESPONSE_LENGTH
    )
    assert server.calls[-1]["sampling_params"]["max_tokens"] == RESPONSE_LENGTH
    assert out.response_mask == [1] * 5


async def test_budget_clamped_to_response_room(tokenizer):
    server = FakeServerManager(tokenizer.eos_token_id, gen_len=50)
    out = await _loop(tokenizer, server).run(
        dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=list(range(1, 11)), rpo_suffix_budget=100
    )
    assert server.calls[0]["sampling_params"]["max_tokens"] == RESPONSE_LENGTH - 10
    assert len(out.response_ids) == RESPONSE_LENGTH


async def test_overlong_prefix_modes(tokenizer):
    long_prefix = list(range(1, RESPONSE_LENGTH + 3))
    server = FakeServerManager(tokenizer.eos_token_id, gen_len=4)
    out = await _loop(tokenizer, server).run(
        dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=long_prefix, rpo_suffix_budget=3
    )
    assert server.calls[-1]["prompt_ids"] == _prompt_ids(tokenizer)  # full path
    assert out.extra_fields["rpo_prefix_fallback"] == 1 and out.response_mask == [1] * 4
    out = await _loop(tokenizer, server, prefix={"overlong": "shorten"}).run(
        dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=long_prefix, rpo_suffix_budget=3
    )
    assert out.extra_fields["rpo_prefix_len"] == RESPONSE_LENGTH - 3
    assert server.calls[-1]["sampling_params"]["max_tokens"] == 3
    with pytest.raises(PrefixOverlongError):
        await _loop(tokenizer, server, prefix={"overlong": "error"}).run(
            dict(SAMPLING), raw_prompt=PROMPT, rpo_prefix_ids=long_prefix, rpo_suffix_budget=3
        )


def test_fit_prefix_max_input_len():
    prefix = list(range(10))
    assert fit_prefix(prefix, 4, prompt_len=50, response_length=100, max_input_len=60, overlong="full_path") == (
        prefix,
        4,
        0,
    )
    assert fit_prefix(prefix, 4, prompt_len=55, response_length=100, max_input_len=60, overlong="full_path") == (
        [],
        None,
        1,
    )
    kept, budget, fb = fit_prefix(prefix, 4, prompt_len=55, response_length=100, max_input_len=60, overlong="shorten")
    assert kept == prefix[:5] and budget == 4 and fb == 1
