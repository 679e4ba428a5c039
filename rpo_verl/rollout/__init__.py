"""Rollout backends that plug into verl's rollout registries (``actor_rollout_ref.rollout.name``)."""
