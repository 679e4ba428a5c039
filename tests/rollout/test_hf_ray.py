"""The HF rollout wired through Ray and verl's own classes: the replica found by name in verl's
registry launches the server actor; verl's LLMServerClient and load balancer reach it; the adapter
found in verl's adapter registry pushes new weights; the replica lifecycle calls all land."""

import asyncio
import os
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from .test_hf_server import PROMPTS, forward_logits

ray = pytest.importorskip("ray")


@ray.remote(num_cpus=0)
class _StandInWorker:
    """Stands in for verl's trainer worker: the replica only asks it for its node."""


async def _scenario(model_path: str) -> None:
    from omegaconf import OmegaConf
    from verl.workers.config import HFModelConfig, RolloutConfig
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.replica import get_rollout_replica_class
    from verl.workers.rollout.router import get_router_handle

    rollout_config = RolloutConfig(
        name="hf", tensor_model_parallel_size=1, prompt_length=32, response_length=8, calculate_log_probs=True
    )
    replica = get_rollout_replica_class("hf")(
        replica_rank=0, config=rollout_config, model_config=OmegaConf.create({"path": model_path}), gpus_per_node=1
    )
    await replica.init_hybrid(SimpleNamespace(workers=[_StandInWorker.remote()]))
    env = await replica.server_handle.__ray_call__.remote(lambda self: os.environ.get("OMP_WAIT_POLICY"))
    assert env == "PASSIVE"

    balancer = get_router_handle(servers={replica.server_address: replica.server_handle})
    client = LLMServerClient(
        config=OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": "hf"}}}), load_balancer_handle=balancer
    )
    # what verl's agent loop sends
    params = {"temperature": 0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
    before = await client.generate("req-0", prompt_ids=PROMPTS[1], sampling_params=dict(params), priority=0)
    assert len(before.token_ids) == 8 and before.stop_reason == "length"

    reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    torch.manual_seed(2)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in reference.state_dict().items()}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied, as an FSDP state dict sends it
    adapter = get_rollout_class("hf", "async")(
        config=rollout_config, model_config=HFModelConfig(path=model_path), device_mesh=None
    )
    await adapter.release()
    await adapter.resume(tags=["weights"])
    await adapter.update_weights(iter(state.items()), global_steps=7)
    await adapter.resume(tags=["kv_cache"])

    after = await client.generate("req-1", prompt_ids=PROMPTS[1], sampling_params=dict(params))
    assert after.extra_fields["global_steps"] == 7
    reference.load_state_dict(state)
    logits = forward_logits(reference, PROMPTS[1], after.token_ids)
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(after.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(after.log_probs), expected, atol=5e-5, rtol=0)
    assert after.log_probs != before.log_probs

    # every server method verl's RolloutReplica base class calls exists on the actor
    for call in (replica.sleep, replica.wake_up, replica.clear_kv_cache, replica.release_kv_cache,
                 replica.resume_kv_cache, replica.abort_all_requests, replica.resume_generation):
        await call()
    concurrent = await asyncio.gather(
        *[client.generate(f"c{i}", prompt_ids=p, sampling_params=dict(params)) for i, p in enumerate(PROMPTS)]
    )
    assert [len(o.token_ids) for o in concurrent] == [8] * len(PROMPTS)


@pytest.mark.timeout(300)
def test_hf_rollout_through_ray_and_verl(tiny_model_path):
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        asyncio.run(_scenario(tiny_model_path))
    finally:
        ray.shutdown()
