"""Each start-up check: the bad setting is named with a fix; a good config passes."""

import json

import pytest

from rpo_verl.config import checks
from rpo_verl.config.checks import Problem, StartupCheckError, enforce, run_checks
from rpo_verl.rpo.checks import check_rpo


def _keys(problems):
    return [p.key for p in problems]


@pytest.fixture
def data_files(tmp_path):
    import pandas as pd  # well-formed files: their contents are checked too (rpo_verl/data/checks.py)

    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    for path in (train, val):
        pd.DataFrame([{"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "1 + 1?"}],
                       "reward_model": {"ground_truth": "2"}}]).to_parquet(path)
    return str(train), str(val)


@pytest.fixture
def cpu_config(compose_config, tiny_model, data_files):
    return compose_config("preset=cpu", f"actor_rollout_ref.model.path={tiny_model}",
                          f"data.train_files={data_files[0]}", f"data.val_files={data_files[1]}")


def test_good_cpu_config_has_no_problems_except_unregistered_rollouts(cpu_config):
    problems = run_checks(cpu_config)
    if "hf" in checks.registered_rollouts():
        assert problems == []
    else:  # the HF rollout backend is not registered in this checkout yet
        assert _keys(problems) == ["actor_rollout_ref.rollout.name"]


def test_model_path_not_set_or_missing(compose_config, tmp_path):
    cfg = compose_config("preset=cpu")
    (problem,) = checks.check_model(cfg)
    assert problem.key == "actor_rollout_ref.model.path" and "not set" in problem.message
    assert "prepare_model.py" in problem.message and not problem.environment

    cfg = compose_config("preset=cpu", f"actor_rollout_ref.model.path={tmp_path}/nope")
    (problem,) = checks.check_model(cfg)
    assert "does not exist" in problem.message and problem.environment

    cfg = compose_config("preset=cpu", f"actor_rollout_ref.model.path={tmp_path}")
    (problem,) = checks.check_model(cfg)
    assert "no config.json" in problem.message


def test_uncached_hub_id_is_reported(compose_config, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config("actor_rollout_ref.model.path=SomeOrg/no-such-model-xyz")
    (problem,) = checks.check_model(cfg)
    assert "not in the local cache" in problem.message


def test_data_files_missing(compose_config, tiny_model, data_files, tmp_path):
    cfg = compose_config("preset=cpu", f"data.train_files={tmp_path}/missing.parquet", f"data.val_files={data_files[1]}")
    (problem,) = checks.check_data(cfg)
    assert problem.key == "data.train_files" and "missing.parquet" in problem.message
    assert "prepare_data.py" in problem.message
    cfg = compose_config(f"data.train_files=[{data_files[0]},{tmp_path}/b.parquet]", f"data.val_files={data_files[1]}")
    assert [p.message.split("'")[1] for p in checks.check_data(cfg)] == [f"{tmp_path}/b.parquet"]


def test_reward_function_file_and_name(compose_config, tmp_path):
    cfg = compose_config(f"reward.custom_reward_function.path={tmp_path}/nope.py")
    (problem,) = checks.check_reward_function(cfg)
    assert problem.key == "reward.custom_reward_function.path"
    module = tmp_path / "score.py"
    module.write_text("def my_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n")
    cfg = compose_config(f"reward.custom_reward_function.path={module}")  # default name compute_score
    (problem,) = checks.check_reward_function(cfg)
    assert problem.key == "reward.custom_reward_function.name" and "compute_score" in problem.message
    cfg = compose_config(f"reward.custom_reward_function.path={module}", "reward.custom_reward_function.name=my_score")
    assert checks.check_reward_function(cfg) == []


def test_reward_function_as_package_module(compose_config):
    cfg = compose_config("reward.custom_reward_function.path=pkg://rpo_verl.config.checks",
                         "reward.custom_reward_function.name=run_checks")
    assert checks.check_reward_function(cfg) == []
    cfg = compose_config("reward.custom_reward_function.path=pkg://rpo_verl.config.checks")
    assert _keys(checks.check_reward_function(cfg)) == ["reward.custom_reward_function.name"]
    cfg = compose_config("reward.custom_reward_function.path=pkg://rpo_verl.no_such_module")
    (problem,) = checks.check_reward_function(cfg)
    assert problem.key == "reward.custom_reward_function.path" and "no importable module" in problem.message


def test_unregistered_rollout_name(compose_config):
    cfg = compose_config("preset=cpu", "actor_rollout_ref.rollout.name=nope")
    (problem,) = checks.check_rollout(cfg)
    assert problem.key == "actor_rollout_ref.rollout.name" and "not a registered rollout backend" in problem.message
    assert "vllm" in problem.message  # lists what is registered


def test_hf_server_options_are_checked(compose_config):
    cfg = compose_config("preset=cpu", "actor_rollout_ref.rollout.engine_kwargs.hf.max_batch_size=0")
    (problem,) = checks.check_rollout(cfg)
    assert problem.key == "actor_rollout_ref.rollout.engine_kwargs.hf.max_batch_size"


@pytest.mark.skipif(checks.importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_gpu_rollout_package_missing(compose_config):
    (problem,) = checks.check_rollout(compose_config())  # GPU config: vllm
    assert problem.environment and "vllm" in problem.message and "preset=cpu" in problem.message


@pytest.mark.skipif(checks._cuda_available(), reason="a GPU is present")
def test_cuda_device_without_gpu(compose_config):
    (problem,) = checks.check_device(compose_config())
    assert problem.key == "trainer.device" and "preset=cpu" in problem.message and problem.environment


@pytest.mark.parametrize(
    "override, key",
    [
        # rollout.name=vllm on CPU: tests/rollout/vllm_cpu/test_checks.py (vLLM's CPU build decides)
        ("actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.name"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size=2", "actor_rollout_ref.rollout.tensor_model_parallel_size"),
        ("actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2",
         "actor_rollout_ref.model.override_config.attn_implementation"),
        ("actor_rollout_ref.model.use_remove_padding=true", "actor_rollout_ref.model.use_remove_padding"),
        ("actor_rollout_ref.actor.strategy=fsdp", "actor_rollout_ref.actor.strategy"),
        ("actor_rollout_ref.actor.fsdp_config.use_torch_compile=true", "actor_rollout_ref.actor.fsdp_config.use_torch_compile"),
        ("ray_kwargs.ray_init.num_cpus=2", "ray_kwargs.ray_init.num_cpus"),
    ],
)
def test_gpu_only_options_on_cpu(compose_config, override, key):
    (problem,) = checks.check_cpu_options(compose_config("preset=cpu", override))
    assert problem.key == key and "Fix:" in problem.message and not problem.environment


def test_default_attention_is_flash_attention_and_rejected_on_cpu(compose_config):
    cfg = compose_config("trainer.device=cpu")  # no preset: verl's GPU defaults on CPU
    keys = _keys(checks.check_cpu_options(cfg))
    assert "actor_rollout_ref.model.override_config.attn_implementation" in keys
    assert "actor_rollout_ref.rollout.name" in keys and "ray_kwargs.ray_init.num_cpus" in keys


def test_reference_model_strategy_checked_when_kl_is_on(compose_config):
    cfg = compose_config("preset=cpu", "actor_rollout_ref.actor.use_kl_loss=true",
                         "actor_rollout_ref.ref.fsdp_config.strategy=fsdp")
    assert _keys(checks.check_cpu_options(cfg)) == ["actor_rollout_ref.ref.fsdp_config.strategy"]


def test_model_too_large_for_ram(compose_config, tmp_path, monkeypatch):
    config = {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000, "intermediate_size": 11008,
              "num_attention_heads": 32, "num_key_value_heads": 32}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert 6.5e9 < checks.estimate_parameters(str(tmp_path)) < 7e9  # a Llama-2-7B shape
    monkeypatch.setattr(checks, "machine_memory_bytes", lambda: 24 * 2**30)
    (problem,) = checks.check_memory(compose_config("preset=cpu", f"actor_rollout_ref.model.path={tmp_path}"))
    assert problem.key == "actor_rollout_ref.model.path" and "GiB" in problem.message and problem.environment


def test_small_model_fits(compose_config, tiny_model):
    assert checks.check_memory(compose_config("preset=cpu", f"actor_rollout_ref.model.path={tiny_model}")) == []
    params = checks.estimate_parameters(tiny_model)
    assert params == 3_219_776  # the tiny model's exact count (tied embeddings)


@pytest.mark.skipif(checks.importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_logger_package_missing(compose_config):
    (problem,) = checks.check_logger(compose_config("trainer.logger=[console,wandb]"))
    assert problem.key == "trainer.logger" and "wandb" in problem.message


@pytest.mark.parametrize("override, key", [
    ("algorithm.rollout_correction.bypass_mode=true", "algorithm.rollout_correction.bypass_mode"),
    ("algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.rollout_is"),
    ("algorithm.rollout_correction.rollout_rs=token_k1", "algorithm.rollout_correction.rollout_rs"),
])
def test_rpo_prefix_under_the_loss_needs_recomputed_old_log_probs(compose_config, override, key):
    rpo = ("rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=lazy")
    (problem,) = check_rpo(compose_config(*rpo, "rpo_verl.rpo.loss.include_prefix=true", override))
    assert problem.key == key and "include_prefix" in problem.message
    # The suffix-only loss (default) has rollout log-probs for every token under the loss.
    assert check_rpo(compose_config(*rpo, override)) == []
    assert check_rpo(compose_config(*rpo, "rpo_verl.rpo.loss.include_prefix=true")) == []


def test_skip_checks(compose_config):
    cfg = compose_config("preset=cpu")
    assert "actor_rollout_ref.model.path" in _keys(run_checks(cfg))
    assert "actor_rollout_ref.model.path" not in _keys(run_checks(cfg, skip=["model"]))
    (problem,) = run_checks(cfg, skip=["modle"])
    assert problem.key == "rpo_verl.skip_checks"


def test_enforce_dry_run_demotes_environment_problems():
    env = Problem("data", "data.train_files", "missing", environment=True)
    conf = Problem("cpu_options", "actor_rollout_ref.rollout.name", "vllm on cpu")
    printed = []
    enforce([env], dry_run=True, warn=printed.append)
    assert len(printed) == 1 and "data.train_files" in printed[0]
    with pytest.raises(StartupCheckError) as info:
        enforce([env, conf], dry_run=True, warn=printed.append)
    assert info.value.problems == [conf]
    with pytest.raises(StartupCheckError) as info:
        enforce([env, conf], dry_run=False)
    message = str(info.value)
    assert "data.train_files: missing" in message and "actor_rollout_ref.rollout.name: vllm on cpu" in message
