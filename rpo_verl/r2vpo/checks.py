"""R²VPO's start-up check ``r2vpo`` (driver side, before Ray starts).

Registered as ``FEATURES["r2vpo"].checks``; ``rpo_verl.config.checks.run_checks`` runs it.
"""

from __future__ import annotations

from typing import Any

from rpo_verl.config.problems import _get as _select

POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"


def startup_problems(config: Any) -> list:
    """The ``r2vpo`` start-up check (driver side, before Ray starts): a bad
    ``actor_rollout_ref.actor.policy_loss.r2vpo.*`` value, ``loss_mode=r2vpo`` with a ``_target_``
    that cannot hold the section, or a bad ``rpo_verl.r2vpo.*`` value, each naming its key."""
    from rpo_verl.config.problems import Problem
    from rpo_verl.config.validation import ConfigError
    from rpo_verl.r2vpo.config import build_trainer_config, validate_actor_policy_loss

    problems = []
    for build in (
        lambda: validate_actor_policy_loss(_select(config, POLICY_LOSS_KEY)),
        lambda: build_trainer_config(_select(config, "rpo_verl.r2vpo")),
    ):
        try:
            build()
        except (ConfigError, ValueError, TypeError) as exc:
            key, sep, message = str(exc).partition(": ")
            problems.append(Problem("r2vpo", key if sep else POLICY_LOSS_KEY, message if sep else str(exc)))
    return problems
