"""Start-up checks of the HF rollout settings: each bad value names the key to fix."""

import pytest
from omegaconf import OmegaConf

from rpo_verl.config import ConfigError
from rpo_verl.rollout.hf import HFEngineOptions, check_rollout_config


def rollout(**overrides):
    base = {"name": "hf", "tensor_model_parallel_size": 1, "data_parallel_size": 1, "pipeline_model_parallel_size": 1,
            "logprobs_mode": "processed_logprobs", "engine_kwargs": {"vllm": {}}}
    base.update(overrides)
    return OmegaConf.create(base)


def test_defaults_and_engine_kwargs():
    composed = rollout()
    OmegaConf.set_struct(composed, True)  # as Hydra composes it: no `hf` key under engine_kwargs
    assert check_rollout_config(composed) == HFEngineOptions()
    options = check_rollout_config(rollout(engine_kwargs={"hf": {"dtype": "bfloat16", "max_batch_size": 8}}))
    assert (options.dtype, options.max_batch_size, options.attn_implementation) == ("bfloat16", 8, "sdpa")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"tensor_model_parallel_size": 2}, "actor_rollout_ref.rollout.tensor_model_parallel_size"),
        ({"data_parallel_size": 2}, "actor_rollout_ref.rollout.data_parallel_size"),
        ({"logprobs_mode": "processed_logits"}, "actor_rollout_ref.rollout.logprobs_mode"),
        ({"engine_kwargs": {"hf": {"dtyp": "float32"}}}, "actor_rollout_ref.rollout.engine_kwargs.hf.dtyp"),
        ({"engine_kwargs": {"hf": {"dtype": "fp8"}}}, "actor_rollout_ref.rollout.engine_kwargs.hf.dtype"),
        ({"engine_kwargs": {"hf": {"max_batch_size": 0}}}, "actor_rollout_ref.rollout.engine_kwargs.hf.max_batch_size"),
    ],
)
def test_bad_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_rollout_config(rollout(**overrides))


def test_verl_rollout_config_dataclass_is_accepted():
    from verl.workers.config import RolloutConfig

    assert check_rollout_config(RolloutConfig(name="hf", tensor_model_parallel_size=1)) == HFEngineOptions()
    with pytest.raises(ConfigError, match="tensor_model_parallel_size=1"):
        check_rollout_config(RolloutConfig(name="hf"))  # verl's default is 2
