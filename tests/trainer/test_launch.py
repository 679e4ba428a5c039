"""What the launcher does to the config before Ray: paths, worker environment, metrics file."""

import os

from omegaconf import OmegaConf

from rpo_verl.trainer import launch, runtime


def test_paths_are_expanded_and_absolute(compose_config, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("preset=cpu", 'actor_rollout_ref.model.path="~/models/m"', "data.train_files=[a.parquet,/b.parquet]",
                         "data.val_files=v.parquet", "trainer.default_local_dir=ckpt",
                         "reward.custom_reward_function.path=pkg://rpo_verl.reward.score")
    launch.absolutize_paths(cfg)
    assert cfg.actor_rollout_ref.model.path == os.path.expanduser("~/models/m")
    assert list(cfg.data.train_files) == [str(tmp_path / "a.parquet"), "/b.parquet"]
    assert cfg.data.val_files == str(tmp_path / "v.parquet")
    assert cfg.trainer.default_local_dir == str(tmp_path / "ckpt")
    assert cfg.reward.custom_reward_function.path == "pkg://rpo_verl.reward.score"  # not a file path


def test_cpu_worker_environment_reaches_the_ray_job(compose_config, monkeypatch):
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    cfg = compose_config("preset=cpu")
    env = launch.worker_env_vars(cfg)
    assert env["VERL_PLATFORM"] == "cpu" and env["VERL_USE_EXTERNAL_MODULES"] == "rpo_verl.plugin"
    assert int(env["OMP_NUM_THREADS"]) >= 1
    # on GPU nodes only the plugin is named
    assert launch.worker_env_vars(compose_config()) == {"VERL_USE_EXTERNAL_MODULES": "rpo_verl.plugin"}

    monkeypatch.setattr(os, "environ", dict(os.environ))  # export_env writes the driver's environment
    cfg = compose_config("preset=cpu", "+ray_kwargs.ray_init.runtime_env.env_vars.MY_VAR=1")
    launch.export_env(cfg, env)
    env_vars = OmegaConf.to_container(cfg.ray_kwargs.ray_init.runtime_env.env_vars)
    assert env_vars["MY_VAR"] == "1" and env_vars["VERL_PLATFORM"] == "cpu"
    assert cfg.ray_kwargs.ray_init.runtime_env.py_executable is None  # the rest of runtime_env is kept
    assert os.environ["VERL_PLATFORM"] == "cpu"


def test_existing_external_modules_are_kept(compose_config, monkeypatch):
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "my.module")
    assert launch.worker_env_vars(compose_config())["VERL_USE_EXTERNAL_MODULES"] == "my.module,rpo_verl.plugin"


def test_metrics_file_defaults_to_the_run_folder(compose_config, tmp_path):
    cfg = compose_config(f"trainer.default_local_dir={tmp_path}")
    assert runtime.metrics_file_path(cfg) == str(tmp_path / "metrics.jsonl")
    assert not runtime.will_resume(cfg)
    (tmp_path / "global_step_4").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    assert runtime.will_resume(cfg)
    cfg = compose_config(f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=disable",
                         f"rpo_verl.metrics_file={tmp_path}/m.jsonl")
    assert not runtime.will_resume(cfg) and runtime.metrics_file_path(cfg) == f"{tmp_path}/m.jsonl"


def test_only_the_sync_v1_trainer_is_accepted(compose_config):
    assert launch.trainer_problems(compose_config()) == []
    keys = [p.key for p in launch.trainer_problems(compose_config("trainer.v1.trainer_mode=colocate_async",
                                                                   "trainer.use_v1=false"))]
    assert keys == ["trainer.use_v1", "trainer.v1.trainer_mode"]


def test_ray_out_of_memory_becomes_a_short_message(monkeypatch, capsys):
    import pytest
    from ray.exceptions import OutOfMemoryError

    def boom(config):
        raise OutOfMemoryError("4 worker(s) were killed due to the node running low on memory. 22GB used / 23GB")

    monkeypatch.setattr(launch, "launch", boom)
    with pytest.raises(SystemExit) as info:
        launch.main_with_clean_errors(None)
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "ran out of memory" in err and "22GB used" in err and "ppo_micro_batch_size_per_gpu" in err


def test_noise_filters_run_in_every_ray_worker_unless_the_user_has_a_hook(compose_config, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    cfg = compose_config("preset=cpu")
    launch.export_env(cfg, {})
    hook = cfg.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook
    assert hook == launch.NOISE_FILTERS_HOOK == "rpo_verl.utils.noise_filters.install"
    module, _, name = hook.rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[name]), name))  # what Ray's load_class resolves
    cfg = compose_config("preset=cpu", "+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=my.setup")
    launch.export_env(cfg, {})
    assert cfg.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == "my.setup"
