"""``python -m rpo_verl.main``: dry run, and bad input stopping with a list of fixes before Ray."""

import subprocess
import sys
from pathlib import Path

import pytest

from rpo_verl.models.paths import default_model_path

REPO = Path(__file__).resolve().parents[1]


def _main(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "rpo_verl.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    import pandas as pd  # well-formed: the start-up checks read the files (rpo_verl/data/checks.py)

    for name in ("train.parquet", "val.parquet"):
        pd.DataFrame([{"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "1 + 1?"}],
                       "reward_model": {"ground_truth": "2"}}]).to_parquet(folder / name)
    return str(folder / "train.parquet"), str(folder / "val.parquet")


def _hf_registered():
    code = "import verl; from rpo_verl.config.checks import registered_rollouts; print('hf' in registered_rollouts())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip().endswith("True")


def test_cpu_dry_run_prints_resolved_config_without_ray(files):
    model = default_model_path(tiny=True)
    if not (model / "config.json").exists():
        pytest.skip("tiny model missing: python scripts/prepare_model.py --tiny")
    if not _hf_registered():
        pytest.skip("the 'hf' rollout backend is not registered in this checkout")
    out = _main("preset=cpu", f"actor_rollout_ref.model.path={model}", f"data.train_files={files[0]}",
                f"data.val_files={files[1]}", "rpo_verl.dry_run=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dry run" in out.stdout and "ray init kwargs" not in out.stdout
    assert "VERL_PLATFORM: cpu" in out.stdout  # the worker environment is in the resolved config
    assert f"path: {model}" in out.stdout


def test_gpu_recipe_dry_run_on_a_cpu_machine_warns_about_the_machine_only(tmp_path):
    """A cluster recipe is checked on CPU CI: missing model/data/GPU/vLLM are warnings in a dry run."""
    out = _main(f"actor_rollout_ref.model.path={tmp_path}/Qwen2.5-7B", f"data.train_files={tmp_path}/t.parquet",
                f"data.val_files={tmp_path}/v.parquet", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8", "rpo_verl.dry_run=true")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert "WARNING (would stop a real launch on this machine): actor_rollout_ref.model.path" in out.stdout
    assert "data.train_files" in out.stdout and "dry run" in out.stdout


def test_bad_settings_stop_before_ray_with_a_list_of_fixes(tmp_path):
    out = _main("preset=cpu", f"actor_rollout_ref.model.path={tmp_path}/nope", "data.train_files=/nonexistent.parquet",
                "actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2",
                "actor_rollout_ref.rollout.tensor_model_parallel_size=2")
    assert out.returncode == 2
    err = out.stderr
    for key in ("actor_rollout_ref.model.path", "data.train_files",
                "actor_rollout_ref.model.override_config.attn_implementation",
                "actor_rollout_ref.rollout.tensor_model_parallel_size"):
        assert f"  - {key}:" in err, err
    assert "Traceback" not in err and "ray init kwargs" not in out.stdout


def test_unknown_rpo_verl_key_and_verl_validation_errors(files):
    model = default_model_path(tiny=True)
    out = _main("preset=cpu", f"actor_rollout_ref.model.path={model}", f"data.train_files={files[0]}",
                f"data.val_files={files[1]}", "+rpo_verl.dryrun=true")
    assert out.returncode == 2 and "rpo_verl.dryrun: unknown key" in out.stderr
    out = _main("preset=cpu", f"actor_rollout_ref.model.path={model}", f"data.train_files={files[0]}",
                f"data.val_files={files[1]}", "rpo_verl.skip_checks=[rollout,model]",
                "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=null")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "verl's validate_config rejected it" in out.stderr and "log_prob_micro_batch_size" in out.stderr
