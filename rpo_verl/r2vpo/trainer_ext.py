"""R²VPO in rpo_verl's trainer (feature section ``rpo_verl.r2vpo``; ALGORITHMS.md §3).

:class:`R2VPOExtension` is built for every run (the section has no ``enable`` switch) and is
*active* when the actor's ``policy_loss.loss_mode`` is ``r2vpo`` or ``rpo_verl.r2vpo.replay.enable``
is true; otherwise every hook returns at once. When active it

* runs the training workers as :func:`rpo_verl.r2vpo.worker.with_r2vpo` classes (loss mode
  ``r2vpo``): λ steps after every optimiser step and is saved with the actor checkpoint;
* writes ``r2vpo_stale`` (0 fresh, 1 replayed) for every training row, so the loss splits V̂ into
  fresh and stale;
* replay (``replay.enable``): after the advantages of step t are in TransferQueue it draws
  ``round(ρ · fresh groups)`` whole groups from the last K rollout batches, then stores step t's
  rows. Replayed rows go back into the step's TransferQueue partition with ``advantages`` = their
  generation-time advantages and, in the decoupled form (``rpo_verl.r2vpo.proximal``, issue 15),
  ``old_log_probs`` = π_prox (recomputed by the actor at this update's starting policy) and
  ``rollout_is_weights`` = min(π_prox/μ, c) against their behaviour log-probs μ, tagged
  ``is_padding`` (so verl's rollout metrics, ``eff/gen_tokens`` and the staleness statistics
  describe this step's fresh rollouts only) and ``r2vpo_replay``, spread evenly among the fresh
  rows (each actor mini-batch mixes both). The batch is then padded with no-op rows (a real row
  with a zero ``response_mask``) to verl's required multiple (data-parallel size and actor
  mini-batch) and re-balanced over data-parallel ranks with verl's own ``_balance_batch`` (which
  keeps the order within a rank). verl's synthetic padding rows of the fresh batch are dropped first;
  ``after_advantage`` returns the new batch, which ``update_actor`` trains on;
* metrics: verl logs the loss's metrics as ``actor/r2vpo/*``; they are repeated as ``r2vpo/*``
  together with ``r2vpo/lambda_start`` / ``r2vpo/lambda_end`` (λ entering / leaving the step, read
  from the actor workers) and ``r2vpo/replay_*`` (share, groups, rows, mean age, buffer size);
* state: the replay buffer (and the batch counter that ages it) is saved with the trainer
  checkpoint; λ is saved by the actor workers in ``<checkpoint>/actor/r2vpo_dual.json``.

Start-up (driver, before Ray): ``rpo_verl.r2vpo.checks.startup_problems`` checks the policy-loss
section (``validate_actor_policy_loss``) and the replay section; ``rpo_verl.config.checks`` runs it
as the ``r2vpo`` check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rpo_verl.r2vpo.config import R2VPOTrainerConfig
from rpo_verl.r2vpo.loss import LOSS_NAME, STALE_FIELD
from rpo_verl.r2vpo.proximal import WEIGHT_FIELD, decouple, unit_weights
from rpo_verl.r2vpo.replay import ReplayBuffer
from rpo_verl.trainer.extension import TrainerExtension

if TYPE_CHECKING:  # pragma: no cover
    from transfer_queue import KVBatchMeta

logger = logging.getLogger(__name__)

LOSS_MODE_KEY = "actor_rollout_ref.actor.policy_loss.loss_mode"
# verl Role names whose worker holds the trained actor (the ref-only role is left alone).
ACTOR_ROLES = ("actor", "actor_rollout", "actor_rollout_ref")
REPLAY_KEY_PREFIX = "r2vpo-replay"
PAD_KEY_PREFIX = "r2vpo-pad"
# Per-token fields restored from the buffer's dense columns (the rest of a row is kept as is).
BEHAVIOUR_FIELD, ADVANTAGE_FIELD = "old_log_probs", "advantages"
MASK_FIELDS = ("response_mask", "loss_mask")


# ----------------------------------------------------------------------------- configuration


def _select(config: Any, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(config, key, default=default)


def uses_r2vpo_loss(config: Any) -> bool:
    """Whether the actor trains with the ``r2vpo`` policy loss (full trainer config)."""
    return _select(config, LOSS_MODE_KEY, default="vanilla") == LOSS_NAME


# ----------------------------------------------------------------------------- rows <-> buffer


def td_rows(td: Any) -> list[dict[str, Any]]:
    """Rows of a TensorDict read from TransferQueue as plain dicts of *cloned* tensors and Python
    values (a row of a jagged tensor is a view of the whole batch's storage)."""
    rows = []
    for i in range(len(td)):
        row = td[i]
        values = {k: row[k] for k in row.keys()}  # row[k] unwraps NonTensorData (items() does not)
        rows.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})
    return rows


def _object_column(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _dense(rows: Sequence[Mapping[str, Any]], name: str, lengths: Sequence[int]) -> torch.Tensor:
    """``[B, L_max]`` from per-row 1-D ``name`` tensors (right-padded with 0)."""
    parts = []
    for row, length in zip(rows, lengths, strict=True):
        value = torch.as_tensor(row[name]).reshape(-1)
        if value.numel() != length:
            raise ValueError(f"r2vpo replay: field {name!r} has {value.numel()} values for a {length}-token response")
        parts.append(value)
    return torch.nn.utils.rnn.pad_sequence(parts, batch_first=True)


def buffer_fields(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], tags: Sequence[Mapping]) -> dict[str, Any]:
    """One rollout batch in :class:`ReplayBuffer` form: dense ``behaviour_log_probs`` /
    ``advantages`` / ``response_mask`` ``[B, L]`` (from ``old_log_probs``, ``advantages``,
    ``response_mask``) and object columns ``sample`` (the rest of each row), ``key``, ``tag``."""
    lengths = [int(torch.as_tensor(row["response_mask"]).numel()) for row in rows]
    return {
        "behaviour_log_probs": _dense(rows, BEHAVIOUR_FIELD, lengths).float(),
        "advantages": _dense(rows, ADVANTAGE_FIELD, lengths).float(),
        "response_mask": _dense(rows, "response_mask", lengths),
        "sample": _object_column(
            [{k: v for k, v in row.items() if k not in (BEHAVIOUR_FIELD, ADVANTAGE_FIELD, STALE_FIELD)} for row in rows]
        ),
        "key": _object_column(list(keys)),
        "tag": _object_column([dict(tag) for tag in tags]),
    }


def group_ids(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    """GRPO group of each row: its ``uid`` field, else the key's ``{uid}`` part (``{uid}_{session}_{index}``)."""
    return [str(row["uid"]) if "uid" in row else key.rsplit("_", 2)[0] for row, key in zip(rows, keys, strict=True)]


def replayed_rows(
    sampled: Mapping[str, Any], field_names: Sequence[str], batch_index: int
) -> tuple[list[str], list[dict[str, Any]], list[dict]]:
    """Rebuild TransferQueue rows from :meth:`ReplayBuffer.sample` output: ``old_log_probs`` =
    behaviour log-probs, ``advantages`` = generation-time advantages (each cut to the row's
    response length), ``r2vpo_stale`` = 1, exactly the fields ``field_names`` of this step's fresh
    rows. Keys are ``r2vpo-replay-b<batch_index>-<original key>`` (unique within a step)."""
    keys, rows, tags = [], [], []
    wanted = set(field_names)
    for i, sample in enumerate(sampled["sample"]):
        length = int(torch.as_tensor(sample["response_mask"]).numel())
        row = dict(sample)
        row[BEHAVIOUR_FIELD] = sampled["behaviour_log_probs"][i, :length].clone()
        row[ADVANTAGE_FIELD] = sampled["advantages"][i, :length].clone()
        row[STALE_FIELD] = torch.tensor(1.0)
        if WEIGHT_FIELD in wanted and WEIGHT_FIELD not in row:
            row[WEIGHT_FIELD] = torch.ones(length)  # replaced by min(π_prox/μ, c) once π_prox is known
        missing = sorted(wanted - set(row))
        if missing:
            raise RuntimeError(
                f"r2vpo replay: a stored row lacks the fields {missing} that this step's rows have; the rollout "
                "fields changed between steps (restart with rpo_verl.r2vpo.replay.enable=false or a fresh run)"
            )
        rows.append({name: row[name] for name in field_names})
        keys.append(f"{REPLAY_KEY_PREFIX}-b{batch_index}-{sampled['key'][i]}")
        age = int(sampled["replay_age"][i])
        tags.append({**sampled["tag"][i], "is_padding": True, "r2vpo_replay": True, "r2vpo_age": age})
    return keys, rows, tags


def padding_rows(template: Mapping[str, Any], template_tag: Mapping, count: int, batch_index: int):
    """``count`` no-op rows: copies of a real row whose response/loss mask, advantages and scores
    are zero (they cost a forward/backward but add nothing to the loss, as verl's own padding)."""
    row = dict(template)
    for name in (*MASK_FIELDS, ADVANTAGE_FIELD, "rm_scores", "returns"):
        if isinstance(row.get(name), torch.Tensor):
            row[name] = torch.zeros_like(row[name])
    row[STALE_FIELD] = torch.tensor(0.0)
    keys = [f"{PAD_KEY_PREFIX}-b{batch_index}_{i}_0" for i in range(count)]
    tags = [{**template_tag, "is_padding": True} for _ in range(count)]
    return keys, [dict(row) for _ in range(count)], tags


def spread(first: Sequence[Any], second: Sequence[Any]) -> list[Any]:
    """Merge two lists keeping each one's order, ``second`` spread evenly through ``first`` (so
    every actor mini-batch, cut from consecutive rows, holds fresh and replayed rows alike)."""
    keyed = [((i + 0.5) / len(first), 0, x) for i, x in enumerate(first)]
    keyed += [((j + 0.5) / len(second), 1, x) for j, x in enumerate(second)]
    return [x for _, _, x in sorted(keyed, key=lambda t: (t[0], t[1]))]


def with_fields(batch: KVBatchMeta, names: Sequence[str]) -> KVBatchMeta:
    """The same rows with ``names`` added to the fields the workers fetch (``fields=None``: all)."""
    from transfer_queue import KVBatchMeta

    fields = None if batch.fields is None else list(dict.fromkeys([*batch.fields, *names]))
    return KVBatchMeta(keys=list(batch.keys), tags=list(batch.tags), partition_id=batch.partition_id,
                       fields=fields, extra_info=batch.extra_info)


def pad_count(rows: int, multiple: int) -> int:
    """Rows to add so that ``rows`` becomes a multiple of ``multiple``."""
    return (-rows) % multiple if multiple > 0 else 0


def actor_r2vpo_metrics(step_dicts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``actor/r2vpo/x`` (verl's name for the loss's ``r2vpo/x``) -> ``r2vpo/x``, reduced over
    the step's update rounds like verl reduces metric lists (max / min / mean by name)."""
    values: dict[str, list[float]] = {}
    for metrics in step_dicts:
        for key, value in metrics.items():
            if key.startswith("actor/r2vpo/"):
                values.setdefault(key[len("actor/"):], []).append(float(value))
    out = {}
    for key, vals in values.items():
        name = key.rsplit("/", 1)[-1]
        out[key] = max(vals) if "max" in name else min(vals) if "min" in name else float(np.mean(vals))
    return out


# ----------------------------------------------------------------------------- the extension


class R2VPOExtension(TrainerExtension):
    """See the module docstring. ``config`` is :class:`R2VPOTrainerConfig`."""

    def __init__(self, trainer, config: R2VPOTrainerConfig, name: str):
        super().__init__(trainer, config, name)
        self.uses_loss = uses_r2vpo_loss(trainer.config)
        self.replay_enabled = bool(config.replay.enable)
        self.active = self.uses_loss or self.replay_enabled
        self.buffer = ReplayBuffer(config.replay) if self.replay_enabled else None
        self.batch_index = 0  # rollout batches seen: the buffer's clock (ages count batches)
        self._step_dicts: list[dict] = []
        self._lambda: float | None = None
        if self.replay_enabled and not self.uses_loss:
            logger.warning(
                "rpo_verl.r2vpo.replay.enable=true with %s=%r: replayed samples are trained with that loss "
                "(ratios against their behaviour log-probs); R²VPO's variance penalty needs loss_mode=r2vpo",
                LOSS_MODE_KEY,
                _select(trainer.config, LOSS_MODE_KEY),
            )

    # -- workers -------------------------------------------------------------------------------
    def worker_class(self, role: str, cls: type) -> type:
        if not self.uses_loss or role not in ACTOR_ROLES:
            return cls
        from rpo_verl.r2vpo.worker import with_r2vpo

        return with_r2vpo(cls)

    def _dual_metrics(self, key: str) -> dict[str, float]:
        states = self.trainer.actor_rollout_wg.r2vpo_dual_state()
        lams = [float(s["lambda"]) for s in states]
        self._lambda = lams[0]
        return {
            f"r2vpo/{key}": lams[0],
            "r2vpo/dual_steps": float(states[0]["steps"]),
            "r2vpo/lambda_rank_spread": max(lams) - min(lams),
        }

    def on_init_end(self) -> None:
        if self.uses_loss:
            self._dual_metrics("lambda_end")  # λ₀ or the checkpoint's λ

    # -- the step ------------------------------------------------------------------------------
    def after_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta | None:
        if not self.active:
            return None
        import transfer_queue as tq

        self._step_dicts.append(metrics)  # verl adds the actor's metrics to this dict in the update
        if not self.replay_enabled:
            tq.kv_batch_put(
                keys=batch.keys, partition_id=batch.partition_id, fields=_stale_column(len(batch), 0.0)
            )
            return with_fields(batch, [STALE_FIELD])  # the update reads only the batch's listed fields

        fresh = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        fresh_keys = [batch.keys[i] for i in fresh]
        fresh_tags = [batch.tags[i] for i in fresh]
        if not fresh_keys:
            return None
        data = tq.kv_batch_get(keys=fresh_keys, partition_id=batch.partition_id)
        rows = td_rows(data)
        groups = group_ids(rows, fresh_keys)
        self.batch_index += 1
        sampled, replay_metrics = self.buffer.sample(len(set(groups)), self.batch_index)
        self.buffer.add(self.batch_index, buffer_fields(rows, fresh_keys, fresh_tags), group_ids=groups)
        replay_metrics["r2vpo/replay_buffer_samples"] = float(len(self.buffer))
        has_weights = WEIGHT_FIELD in rows[0]  # verl's rollout correction already weights the fresh rows
        fresh_meta = tq.kv_batch_put(
            keys=fresh_keys, partition_id=batch.partition_id,
            fields=_stale_column(len(fresh_keys), 0.0, None if has_weights or sampled is None else unit_weights(rows)),
        )
        if sampled is None:
            replay_metrics.update({"r2vpo/replay_rows": 0.0, "r2vpo/replay_pad_rows": 0.0})
            metrics.update(replay_metrics)
            if len(fresh) < len(batch):  # verl's padding rows need the field too
                pads = [batch.keys[i] for i in range(len(batch)) if i not in set(fresh)]
                tq.kv_batch_put(keys=pads, partition_id=batch.partition_id, fields=_stale_column(len(pads), 0.0))
            return with_fields(batch, [STALE_FIELD])

        field_names = list(dict.fromkeys([*rows[0].keys(), STALE_FIELD, WEIGHT_FIELD]))
        keys, new_rows, tags = replayed_rows(sampled, field_names, self.batch_index)
        multiple = self._required_multiple()
        n_pad = pad_count(len(fresh_keys) + len(keys), multiple)
        pad_keys, pad_rows, pad_tags = padding_rows(
            {**rows[0], STALE_FIELD: None, WEIGHT_FIELD: unit_weights(rows[:1])[0]}, fresh_tags[0], n_pad,
            self.batch_index,
        )
        pad_rows = [{name: row[name] for name in field_names} for row in pad_rows]
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        tq.kv_batch_put(
            keys=keys + pad_keys,
            partition_id=batch.partition_id,
            fields=list_of_dict_to_tensordict(new_rows + pad_rows),
            tags=tags + pad_tags,
        )
        replay_metrics.update(decouple(self.trainer, batch, keys, tags, new_rows, field_names, has_weights,
                                       list(zip(pad_keys, pad_tags)) + list(zip(fresh_keys, fresh_tags)),
                                       self.config.replay))
        dropped = [batch.keys[i] for i in range(len(batch)) if batch.tags[i].get("is_padding", False)]
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
        from transfer_queue import KVBatchMeta

        rows_in_order = spread(list(zip(fresh_keys, fresh_tags)), list(zip(keys, tags))) + list(zip(pad_keys, pad_tags))
        combined = KVBatchMeta(
            keys=[key for key, _ in rows_in_order],
            tags=[tag for _, tag in rows_in_order],
            partition_id=batch.partition_id,
            fields=list(dict.fromkeys([*(fresh_meta.fields or []), *field_names])) or None,
            extra_info=batch.extra_info,
        )
        combined = self.trainer._balance_batch(combined, metrics=metrics)
        replay_metrics.update({"r2vpo/replay_rows": float(len(keys)), "r2vpo/replay_pad_rows": float(n_pad)})
        metrics.update(replay_metrics)
        return combined

    def _required_multiple(self) -> int:
        """verl's batch multiple (data-parallel size, actor and critic mini-batches), as ``_balance_batch``."""
        wg = self.trainer.actor_rollout_wg
        if "actor" not in wg._dispatch_info:
            wg._dispatch_info["actor"] = wg._query_dispatch_info("actor")
        dp_size = max(wg._dispatch_info["actor"]) + 1
        return self.trainer._get_required_batch_multiple(dp_size)

    def step_metrics(self) -> dict[str, float]:
        if not self.active:
            return {}
        out = actor_r2vpo_metrics(self._step_dicts)
        self._step_dicts = []
        if self.uses_loss:
            if self._lambda is not None:
                out["r2vpo/lambda_start"] = self._lambda
            out.update(self._dual_metrics("lambda_end"))
        return out

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if not self.active:
            return {}
        return {
            "batch_index": self.batch_index,
            "replay": self.buffer.state_dict() if self.buffer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.active or not state:
            return
        self.batch_index = int(state.get("batch_index", 0))
        if self.buffer is not None:
            if state.get("replay") is not None:
                self.buffer.load_state_dict(state["replay"])
            else:
                logger.warning("rpo_verl.r2vpo: the checkpoint holds no replay buffer; replay starts empty")


def _stale_column(rows: int, value: float, weights=None):
    """``r2vpo_stale`` = value for ``rows`` rows, plus per-row ``rollout_is_weights`` when given."""
    from tensordict import TensorDict

    if weights is None:
        return TensorDict({STALE_FIELD: torch.full((rows,), value)}, batch_size=[rows])
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    return list_of_dict_to_tensordict([{STALE_FIELD: torch.tensor(value), WEIGHT_FIELD: w} for w in weights])
