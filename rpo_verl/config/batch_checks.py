"""Start-up check ``batch_split``: every fixed-size micro-batch divides the rows each rank gets.

Without dynamic batch sizes (``actor.use_dynamic_bsz=false``) verl splits each rank's rows into
micro-batches of a fixed size and asserts, deep inside the first worker call, "data size must be
divisible by force_group_size * micro_batch_size_per_gpu" (``verl.workers.engine.utils
.prepare_micro_batches``). verl's own ``validate_config`` checks only that the whole batch divides
the number of ranks. So a small multi-rank run (1 prompt × 4 samples on 2 trainer ranks = 2 rows per
rank against the CPU preset's log-prob micro-batch of 8, which fails after the models have loaded)
is refused here instead, naming the key and a size that fits.

Rows per rank (R = ``data.train_batch_size × rollout.n``, W = ``trainer.nnodes × n_gpus_per_node``):
- log-prob passes (old log-probs unless ``algorithm.rollout_correction.bypass_mode``; the
  reference model's when a KL term uses it): R / W rows, in micro-batches of
  ``rollout.log_prob_micro_batch_size_per_gpu`` / ``ref.log_prob_micro_batch_size_per_gpu``;
- the actor update: each mini-batch's ``ppo_mini_batch_size × n / W`` rows, in micro-batches of
  ``actor.ppo_micro_batch_size_per_gpu``.

Fresh batches only: a feature that adds rows to a step (R²VPO's replay) draws whole groups, and
its own check owns those.
"""

from __future__ import annotations

from omegaconf import DictConfig

from rpo_verl.config.problems import Problem, _get

AR = "actor_rollout_ref"


def _int(config: DictConfig, key: str) -> int | None:
    value = _get(config, key)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _uses_reference(config: DictConfig) -> bool:
    return bool(_get(config, f"{AR}.actor.use_kl_loss", False)) or bool(_get(config, "algorithm.use_kl_in_reward", False))


def _recomputes_old_log_probs(config: DictConfig) -> bool:
    return not bool(_get(config, "algorithm.rollout_correction.bypass_mode", False))


def _problem(key: str, micro: int, rows: int, what: str, world: int) -> Problem:
    fits = [m for m in range(min(micro, rows), 0, -1) if rows % m == 0]
    return Problem(
        "batch_split", key,
        f"{micro} does not divide the {rows} rows per rank of {what} ({world} rank(s)); verl would stop "
        f"after the models have loaded (\"data size must be divisible by ... micro_batch_size_per_gpu\"). "
        f"Fix: {key}={fits[0]} (or another divisor of {rows}), a batch size that gives a multiple of {micro} "
        f"rows per rank, or {AR}.actor.use_dynamic_bsz=true.")


def check_batch_split(config: DictConfig) -> list[Problem]:
    """Refuse a micro-batch size that does not divide the rows per rank of the pass it is used in."""
    if bool(_get(config, f"{AR}.actor.use_dynamic_bsz", False)):
        return []
    batch = _int(config, "data.train_batch_size")
    n = _int(config, f"{AR}.rollout.n") or 1
    world = (_int(config, "trainer.nnodes") or 1) * (_int(config, "trainer.n_gpus_per_node") or 1)
    if not batch or world <= 0 or (batch * n) % world:
        return []  # verl's validate_config reports an indivisible batch itself
    rows = batch * n // world
    problems: list[Problem] = []
    passes = []
    if _recomputes_old_log_probs(config):
        passes.append((f"{AR}.rollout.log_prob_micro_batch_size_per_gpu", "the old-log-prob pass"))
    if _uses_reference(config):
        passes.append((f"{AR}.ref.log_prob_micro_batch_size_per_gpu", "the reference log-prob pass"))
    for key, what in passes:
        micro = _int(config, key)
        if micro and micro > 0 and rows % micro:
            problems.append(_problem(key, micro, rows, what, world))
    mini = _int(config, f"{AR}.actor.ppo_mini_batch_size")
    micro = _int(config, f"{AR}.actor.ppo_micro_batch_size_per_gpu")
    if mini and micro and micro > 0 and (mini * n) % world == 0:
        mini_rows = mini * n // world
        if mini_rows % micro:
            problems.append(_problem(f"{AR}.actor.ppo_micro_batch_size_per_gpu", micro, mini_rows,
                                     f"each actor mini-batch ({AR}.actor.ppo_mini_batch_size={mini})", world))
    return problems
