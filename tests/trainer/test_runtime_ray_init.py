"""ray.init arguments for scripts that start Ray themselves (rpo_verl.trainer.runtime.ray_init_kwargs)."""

from omegaconf import OmegaConf

from rpo_verl.trainer.runtime import ray_init_kwargs

CONFIG = OmegaConf.create({"ray_kwargs": {"ray_init": {"num_cpus": 32, "num_gpus": 1, "include_dashboard": False}}})


def test_local_ray_gets_the_configured_resources(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_init_kwargs(CONFIG) == {"num_cpus": 32, "num_gpus": 1, "include_dashboard": False}


def test_attaching_to_a_cluster_drops_resource_counts(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what a Slurm job's sbatch exports
    assert ray_init_kwargs(CONFIG) == {"include_dashboard": False}
