"""absolutize_paths: local paths become absolute, hub model ids stay as written."""

import os

from omegaconf import OmegaConf

from rpo_verl.trainer.launch import absolutize_paths


def test_hub_model_id_is_kept_and_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}},
            "trainer": {"default_local_dir": "checkpoints/run"},
            "data": {"train_files": "~/data/train.parquet", "val_files": ["val.parquet"]},
        }
    )
    absolutize_paths(cfg)
    assert cfg.actor_rollout_ref.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert cfg.trainer.default_local_dir == str(tmp_path / "checkpoints" / "run")
    assert cfg.data.train_files == os.path.expanduser("~/data/train.parquet")
    assert cfg.data.val_files == [str(tmp_path / "val.parquet")]


def test_existing_local_model_folder_named_like_a_hub_id_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "small").mkdir(parents=True)
    cfg = OmegaConf.create({"actor_rollout_ref": {"model": {"path": "models/small"}}})
    absolutize_paths(cfg)
    assert cfg.actor_rollout_ref.model.path == str(tmp_path / "models" / "small")
