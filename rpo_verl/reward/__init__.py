"""Rewards: ``compute_score`` for verl's ``reward.custom_reward_function`` (path ``pkg://rpo_verl.reward.score``)."""

from rpo_verl.reward.score import compute_score, route

__all__ = ["compute_score", "route"]
