"""R²VPO: ratio-variance regularised policy optimisation (ALGORITHMS.md §3).

Modules: ``config`` (``actor_rollout_ref.actor.policy_loss.r2vpo.*``), ``loss`` (the ``r2vpo``
policy loss), ``dual`` (the multiplier λ, its optimiser-step hook and checkpoint file),
``worker`` (verl worker classes that install the hooks; imports Ray), ``replay`` (buffer of stale
rollout batches). Importing this package is cheap; ``register()`` imports verl's registry.
"""

from __future__ import annotations

REGISTRATIONS = {"policy_loss": ["r2vpo"]}


def register() -> None:
    """Register the ``r2vpo`` policy loss in verl's registry (idempotent)."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss

    from rpo_verl.r2vpo.loss import LOSS_NAME, r2vpo_policy_loss

    existing = POLICY_LOSS_REGISTRY.get(LOSS_NAME)
    if existing is r2vpo_policy_loss:
        return
    if existing is not None and existing.__module__ != r2vpo_policy_loss.__module__:
        raise RuntimeError(
            f"policy loss {LOSS_NAME!r} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    register_policy_loss(LOSS_NAME)(r2vpo_policy_loss)
