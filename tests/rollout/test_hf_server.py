"""The HF rollout server, driven in-process (no Ray): outputs checked against plain HF ``transformers``."""

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from rpo_verl.rollout.hf.engine import EngineRequest, HFGenerationEngine
from rpo_verl.rollout.hf.sampling import SamplingSpec
from rpo_verl.rollout.hf.server import HFRolloutServer

from .conftest import EOS, PAD

PROMPTS = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13], [20], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41]]
RESPONSE_LENGTH = 12


def make_server(path, **rollout):
    from verl.workers.config import HFModelConfig, RolloutConfig

    settings = dict(name="hf", tensor_model_parallel_size=1, prompt_length=32, response_length=RESPONSE_LENGTH)
    settings.update(rollout)
    return HFRolloutServer(RolloutConfig(**settings), HFModelConfig(path=path))


@pytest.fixture(scope="module")
def server(tiny_model_path):
    return make_server(tiny_model_path)


@pytest.fixture(scope="module")
def reference(tiny_model_path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32, attn_implementation="sdpa").eval()


def forward_logits(model, prompt, response):
    """Logits that predicted each response token, from one plain forward pass ``[len(response), V]``."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0]
    return logits[len(prompt) - 1 : -1].float()


async def test_greedy_matches_hf_generate(server, reference):
    for prompt in PROMPTS:
        out = await server.generate(prompt, {"temperature": 0}, "r")
        expected = reference.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=RESPONSE_LENGTH, eos_token_id=EOS, pad_token_id=PAD
        )[0, len(prompt) :].tolist()
        assert out.token_ids == expected
        assert out.log_probs is None  # not requested


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7, 1.6])
async def test_logprobs_equal_forward_log_softmax(server, reference, temperature):
    for i, prompt in enumerate(PROMPTS):
        params = {"temperature": temperature, "logprobs": True, "seed": i}
        out = await server.generate(prompt, params, f"r{i}")
        logits = forward_logits(reference, prompt, out.token_ids)
        scale = temperature if temperature > 0 else 1.0  # greedy: unscaled logits, as vLLM
        expected = (logits / scale).log_softmax(-1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
        assert len(out.log_probs) == len(out.token_ids)
        torch.testing.assert_close(torch.tensor(out.log_probs), expected, atol=5e-5, rtol=0)


async def test_raw_logprobs_mode(tiny_model_path, reference):
    server = make_server(tiny_model_path, logprobs_mode="raw_logprobs")
    out = await server.generate(PROMPTS[1], {"temperature": 0.5, "logprobs": True, "seed": 0}, "r")
    logits = forward_logits(reference, PROMPTS[1], out.token_ids)
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(out.log_probs), expected, atol=5e-5, rtol=0)


async def test_top_k_1_and_tiny_top_p_equal_greedy(server):
    for prompt in PROMPTS:
        greedy = await server.generate(prompt, {"temperature": 0}, "g")
        top_k = await server.generate(prompt, {"temperature": 1.3, "top_k": 1, "logprobs": True}, "k")
        top_p = await server.generate(prompt, {"temperature": 1.0, "top_p": 1e-6}, "p")
        assert top_k.token_ids == greedy.token_ids == top_p.token_ids
        assert max(abs(x) for x in top_k.log_probs) < 1e-6  # one token left: probability 1


async def test_seeded_sampling_is_reproducible(server):
    params = {"temperature": 1.0, "seed": 123, "logprobs": True}
    first = await server.generate(PROMPTS[0], dict(params), "a")
    again = await server.generate(PROMPTS[0], dict(params), "b")
    other = await server.generate(PROMPTS[0], {**params, "seed": 124}, "c")
    assert first.token_ids == again.token_ids and first.log_probs == again.log_probs
    assert other.token_ids != first.token_ids


async def test_stop_reasons_and_max_tokens(server):
    greedy = await server.generate(PROMPTS[0], {"temperature": 0}, "g")
    assert greedy.stop_reason == "length" and len(greedy.token_ids) == RESPONSE_LENGTH  # default budget
    short = await server.generate(PROMPTS[0], {"temperature": 0, "max_tokens": 3}, "s")
    assert short.stop_reason == "length" and short.token_ids == greedy.token_ids[:3]
    stop_token = greedy.token_ids[4]
    first = greedy.token_ids.index(stop_token)
    stopped = await server.generate(PROMPTS[0], {"temperature": 0, "stop_token_ids": [stop_token]}, "t")
    assert stopped.stop_reason == "stop" and stopped.token_ids == greedy.token_ids[: first + 1]  # stop token kept
    # a prompt beyond prompt_length gets prompt_length + response_length - len(prompt) tokens
    long_prompt = list(range(3, 3 + 40))
    out = await server.generate(long_prompt, {"temperature": 0}, "l")
    assert len(out.token_ids) == 32 + RESPONSE_LENGTH - 40


async def test_prompt_without_room_is_rejected(server):
    with pytest.raises(ValueError, match="no room to generate"):
        await server.generate(list(range(3, 259)), {}, "x")  # max_position_embeddings is 256


def test_eos_stops_unless_ignored(tiny_model_path):
    engine = HFGenerationEngine(tiny_model_path, eos_token_ids=[PAD])
    greedy = engine.generate([EngineRequest("g", PROMPTS[1], SamplingSpec(max_tokens=10, temperature=0))])[0]
    eos = greedy.token_ids[3]
    engine.eos_token_ids = frozenset([eos])
    stopped, ignored = engine.generate(
        [
            EngineRequest("s", PROMPTS[1], SamplingSpec(max_tokens=10, temperature=0)),
            EngineRequest("i", PROMPTS[1], SamplingSpec(max_tokens=10, temperature=0, ignore_eos=True)),
        ]
    )
    assert stopped.finish_reason == "stop" and stopped.token_ids == greedy.token_ids[: greedy.token_ids.index(eos) + 1]
    assert ignored.finish_reason == "length" and ignored.token_ids == greedy.token_ids


async def test_concurrent_requests_are_batched_and_match_single_requests(tiny_model_path):
    server = make_server(tiny_model_path)
    requests = []
    for i, prompt in enumerate(PROMPTS):
        requests.append((prompt, {"temperature": 0, "logprobs": True, "max_tokens": 4 + 2 * i}))
        requests.append((prompt, {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "seed": i, "logprobs": True}))
    singles = [await server.generate(p, dict(s), f"s{i}") for i, (p, s) in enumerate(requests)]
    assert server.stats["max_batch"] == 1
    batched = await asyncio.gather(*[server.generate(p, dict(s), f"b{i}") for i, (p, s) in enumerate(requests)])
    assert server.stats["max_batch"] == len(requests)  # all decoded together
    for single, together in zip(singles, batched):
        assert together.token_ids == single.token_ids
        assert together.stop_reason == single.stop_reason
        torch.testing.assert_close(torch.tensor(together.log_probs), torch.tensor(single.log_probs), atol=5e-5, rtol=0)


async def test_requests_join_a_running_batch_and_leave_when_done(tiny_model_path):
    server = make_server(tiny_model_path, response_length=60)
    late = [(PROMPTS[3], {"temperature": 0, "logprobs": True, "max_tokens": 5}),
            (PROMPTS[2], {"temperature": 0.9, "seed": 7, "logprobs": True, "max_tokens": 9})]
    long_params = {"temperature": 0, "logprobs": True, "ignore_eos": True}
    singles = [await server.generate(p, dict(s), "single") for p, s in late]
    long_single = await server.generate(PROMPTS[0], dict(long_params), "single")

    long = asyncio.create_task(server.generate(PROMPTS[0], dict(long_params), "long"))
    while not server._running:
        await asyncio.sleep(0.005)
    runs = server.stats["engine_runs"]  # the run decoding the long request
    joined = await asyncio.gather(*[server.generate(p, dict(s), f"late{i}") for i, (p, s) in enumerate(late)])
    assert not long.done()  # the short requests came back while the long one was still decoding
    long_out = await long
    assert server.stats["engine_runs"] == runs  # the late requests joined that run
    for single, together in zip(singles + [long_single], joined + [long_out]):
        assert together.token_ids == single.token_ids
        torch.testing.assert_close(torch.tensor(together.log_probs), torch.tensor(single.log_probs), atol=5e-5, rtol=0)


async def test_weight_push_changes_logprobs(tiny_model_path, reference):
    server = make_server(tiny_model_path)
    prompt = PROMPTS[1]
    before = await server.generate(prompt, {"temperature": 0, "logprobs": True}, "a")

    torch.manual_seed(1)
    new_state = {k: v + 0.05 * torch.randn_like(v) for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    names = list(new_state)
    # Two buckets; lm_head.weight is not sent: it is tied to the embedding.
    await server.update_weights_from_tensors([(n, new_state[n]) for n in names[:7]])
    await server.update_weights_from_tensors([(n, new_state[n]) for n in names[7:]])
    assert (await server.finish_weight_update(global_steps=5)) == {"tensors": len(names)}

    after = await server.generate(prompt, {"temperature": 0, "logprobs": True}, "b")
    assert after.extra_fields["global_steps"] == 5
    updated = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    updated.load_state_dict(new_state, strict=False)  # tied lm_head follows the embedding
    logits = forward_logits(updated, prompt, after.token_ids)
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(after.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(after.log_probs), expected, atol=5e-5, rtol=0)
    assert after.log_probs != before.log_probs


async def test_weight_push_is_strict(tiny_model_path, reference):
    server = make_server(tiny_model_path)
    state = reference.state_dict()
    with pytest.raises(ValueError, match="does not have"):
        await server.update_weights_from_tensors([("model.not_a_weight", torch.zeros(3))])
    with pytest.raises(ValueError, match="shape"):
        await server.update_weights_from_tensors([("model.norm.weight", torch.zeros(3))])
    await server.update_weights_from_tensors([("model.norm.weight", state["model.norm.weight"])])
    with pytest.raises(ValueError, match="never arrived"):
        await server.finish_weight_update()
    # bf16 tensors from a mixed-precision trainer are cast to the server's dtype
    await server.update_weights_from_tensors([(k, v.to(torch.bfloat16)) for k, v in state.items()])
    await server.finish_weight_update()
    assert server.engine.model.model.norm.weight.dtype == torch.float32


async def test_abort_returns_partial_output_and_gates_new_requests(tiny_model_path):
    server = make_server(tiny_model_path, response_length=200)
    long = asyncio.create_task(server.generate(PROMPTS[0], {"temperature": 0, "ignore_eos": True}, "long"))
    while not server._running:
        await asyncio.sleep(0.01)
    result = await server.abort_all_requests()
    out = await long
    assert result["request_ids"] == ["long"]
    assert out.stop_reason == "aborted" and 0 < len(out.token_ids) < 200

    parked = asyncio.create_task(server.generate(PROMPTS[0], {"max_tokens": 2}, "parked"))
    await asyncio.sleep(0.1)
    assert not parked.done()  # waits behind the closed gate
    await server.resume_generation()
    assert len((await parked).token_ids) == 2

    await server.abort_all_requests(reject_request=True)
    rejected = await server.generate(PROMPTS[0], {"max_tokens": 2}, "rejected")
    assert rejected.stop_reason == "aborted" and rejected.token_ids == []
    await server.resume_generation()


async def test_lifecycle_calls_and_multimodal_rejection(server):
    for call in (server.wake_up(tags=["weights"]), server.sleep(), server.clear_kv_cache(), server.release_kv_cache(),
                 server.resume_kv_cache(), server.set_global_steps(2), server.wait_for_requests_to_drain()):
        await call
    assert (await server.abort_request("nope"))["aborted"] is False
    assert (await server.get_server_address()).endswith("/hf_server_0")
    with pytest.raises(NotImplementedError, match="text-only"):
        await server.generate(PROMPTS[0], {}, "m", image_data=["img"])
