"""RPO's start-up check ``rpo``: RPO settings that clash with the rest of the trainer config.

Registered as ``FEATURES["rpo"].checks``; ``rpo_verl.config.checks.run_checks`` runs it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from rpo_verl.config.problems import Problem


def check_rpo(config: DictConfig) -> list[Problem]:
    """RPO settings that clash with the rest of the config (rpo_verl/rpo/config.py)."""
    from rpo_verl.rpo.config import cross_config_problems

    try:
        return [Problem("rpo", key, message) for key, message in cross_config_problems(config)]
    except (ValueError, TypeError):
        return []  # a bad rpo_verl.rpo value is reported by the feature validation, naming its key
