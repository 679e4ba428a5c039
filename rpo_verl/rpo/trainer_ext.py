"""RPO in verl's v1 sync trainer (ALGORITHMS.md §1): ``RPOExtension``, a ``TrainerExtension``.

Per training step (hooks of ``rpo_verl.trainer.trainer.RpoVerlTrainer``, verl's loop unchanged):

1. ``before_rollout`` (every prompt batch submitted, DAPO refills included): one prefix per
   prompt from the cache service (``sample_prefix_batch(extra_info.index, rng_seed=f(seed, step,
   call))``), attached as the columns ``rpo_prefix_ids`` / ``rpo_suffix_budget`` with
   ``agent_name=rpo_suffix_agent`` (validation batches never pass here: they stay full-path with
   ``rollout.agent.default_agent_loop``). With ``actor_rollout_ref.rollout.full_determinism=true``
   each prompt also gets ``rpo_sample_seed`` so that its suffixes are reproducible.
2. Groups that verl's replay buffer drops before training (DAPO ``filter_groups`` evictions and
   surplus groups: ``ReplayBuffer._clear_groups``) are read from TransferQueue just before they are
   cleared: their tokens count as generated and their trajectories are offered to the cache too.
3. ``on_batch_rewarded``: responses (prefix ⊕ suffix ids), rewards (``rm_scores`` sum) and the
   reward function's ``acc`` (``extra_fields.reward_extra_info``; else reward > threshold) of the
   trained batch + the dropped groups go to ``client.update`` in a canonical row order.
4. ``step_metrics``: the service's ``rpo/...`` metrics, ``rollout_metrics`` over every generated
   sample (``eff/generated_tokens`` counts dropped groups too), running totals, rollout vs train
   time from verl's ``timing_raw``.
5. Checkpoints: each shard writes ``<global_step_N>/rpo_cache/rpo_cache.shard{k}of{K}.npz`` (and
   points its restart snapshot there); a resumed run loads that folder into a fresh service.

The pure batch surgery (prompt ids, seeds, ``Rows`` read from TransferQueue, the update batch and
metrics) is ``rpo_verl.rpo.step_rows``; this module wires it to the trainer's hooks.

Start-up checks (clear ``ValueError``s, raised from the ``worker_class`` hook: the tokenizer and
training set are loaded, verl's workers not yet started): ``extra_info.index`` present and unique
over the training set; an offline cache whose records do not fit ``data.max_response_length``; a
bad cache file (``CacheFileError`` from the service).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np

from rpo_verl.rpo.agent_loop import AGENT_LOOP_NAME, BUDGET_KEY, PREFIX_KEY, SEED_KEY
from rpo_verl.rpo.step_rows import (
    TQ_FIELDS,
    Rows,
    cached_lengths,
    check_response_budget,
    dataset_prompt_ids,
    derive_seed,
    id_range_of,
    rows_from_tensordict,
    timing_metrics,
)
from rpo_verl.trainer.extension import TrainerExtension

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "rpo_cache"
# Test-only fault injection: kill the cache actor(s) at the start of this training step (Ray
# restarts them; they reload their last snapshot). Used by tests/rpo/test_e2e_rpo.py.
KILL_ENV = "RPO_VERL_FAULT_KILL_CACHE_AT_STEP"


# ----------------------------------------------------------------------------------------------
# Extension
# ----------------------------------------------------------------------------------------------
class RPOExtension(TrainerExtension):
    """RPO's controller side: prefixes before rollout, cache write-back after rewards, metrics,
    cache checkpoints (see the module docstring)."""

    def __init__(self, trainer, config, name: str):
        super().__init__(trainer, config, name)
        self.client = None
        self._calls = 0  # before_rollout calls in this step (DAPO refills make several)
        self._trained_rows: list[Rows] = []  # samples of the step that reach the actor update
        self._dropped_rows: list[Rows] = []  # samples of the step that verl's replay buffer dropped
        self._pending: list[Rows] = []  # dropped samples not yet offered to the cache
        self._cache_time = 0.0
        self._restores_seen = 0.0
        self._totals = {"generated_tokens": 0.0, "full_path_equiv_tokens": 0.0}
        self._replay_wrapped = False

    # ---- config views --------------------------------------------------------------------
    @property
    def _cfg(self):
        return self.trainer.config

    def _response_length(self) -> int:
        return int(self._cfg.actor_rollout_ref.rollout.response_length)

    def _full_determinism(self) -> bool:
        return bool(self._cfg.actor_rollout_ref.rollout.get("full_determinism", False))

    def _service_config(self):
        cache = self.config.cache
        snapshot_dir = cache.snapshot_dir or os.path.join(self._cfg.trainer.default_local_dir, CACHE_SUBDIR)
        return dataclasses.replace(self.config, cache=dataclasses.replace(cache, snapshot_dir=snapshot_dir))

    # ---- start-up ------------------------------------------------------------------------
    def _training_prompt_ids(self) -> np.ndarray:
        dataset = getattr(self.trainer, "train_dataset", None)
        frame = getattr(dataset, "dataframe", None)
        if frame is None or "extra_info" not in getattr(frame, "column_names", []):
            raise ValueError(
                "rpo_verl.rpo needs verl's RL dataset with an extra_info column holding a unique integer "
                "index per prompt (the cache key); this training set has none"
            )
        return dataset_prompt_ids(frame["extra_info"])

    def _ensure_service(self):
        if self.client is not None:
            return self.client
        from rpo_verl.rpo.cache_file import tokenizer_fingerprint
        from rpo_verl.rpo.prefix import newline_token_ids
        from rpo_verl.rpo.service_client import start_cache_service

        cfg = self._service_config()
        response_length = self._response_length()
        data_limit = int(self._cfg.data.max_response_length)
        if response_length > data_limit:
            raise ValueError(
                f"rpo_verl.rpo: actor_rollout_ref.rollout.response_length={response_length} exceeds "
                f"data.max_response_length={data_limit}; the response holds prefix + suffix, keep them equal"
            )
        ids = self._training_prompt_ids()
        if cfg.cache.init == "offline":
            warning = check_response_budget(
                cached_lengths(cfg.cache.path) if os.path.exists(cfg.cache.path) else np.zeros(0),
                response_length, cfg.prefix.overlong, repr(cfg.cache.path),
            )
            if warning:
                logger.warning("rpo: %s", warning)
                print(f"[rpo_verl] warning: {warning}")
        tok = self.trainer.tokenizer
        newline = newline_token_ids(tok) if cfg.prefix.align == "newline" else None
        self.client = start_cache_service(
            cfg,
            id_range=id_range_of(ids),
            response_length=response_length,
            fingerprint=tokenizer_fingerprint(tok),
            newline_ids=newline,
        )
        m = self.client.metrics()
        print(
            f"[rpo_verl] RPO cache service up ({cfg.cache.num_shards} shard(s), init={cfg.cache.init}, "
            f"{int(m['rpo/cache_size'])} prompts cached, {ids.size} training prompts; snapshots in "
            f"{cfg.cache.snapshot_dir})"
        )
        return self.client

    def worker_class(self, role: str, cls: type) -> type:
        # The earliest hook with the tokenizer and the training set loaded (before verl starts its
        # workers): a bad index column or cache file fails here, in seconds, not minutes in.
        self._ensure_service()
        return cls

    def on_init_end(self) -> None:
        self._ensure_service()
        self._wrap_replay_buffer()

    def _wrap_replay_buffer(self) -> None:
        """Read the groups verl's replay buffer drops (DAPO filter, surplus) before it clears them."""
        buffer = getattr(self.trainer, "replay_buffer", None)
        original = getattr(buffer, "_clear_groups", None)
        if original is None or self._replay_wrapped:
            if original is None:
                logger.warning("rpo: the replay buffer has no _clear_groups; dropped groups are not counted")
            return
        ext = self

        def _clear_groups(partition_id, uids):
            if partition_id == "train" and uids:
                keys = [k for k in buffer.partitions[partition_id] if k.split("_")[0] in uids]
                if keys:
                    try:
                        ext._collect_dropped(keys, partition_id)
                    except Exception:  # noqa: BLE001 - accounting must never break verl's sampling
                        logger.exception("rpo: could not read %d dropped trajectories", len(keys))
            return original(partition_id, uids)

        buffer._clear_groups = _clear_groups
        self._replay_wrapped = True

    def _read_rows(self, keys: list, partition_id: str) -> Rows:
        import transfer_queue as tq

        if not keys:
            return Rows.empty()
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=TQ_FIELDS)
        return rows_from_tensordict(keys, data)

    def _collect_dropped(self, keys: list, partition_id: str) -> None:
        rows = self._read_rows(keys, partition_id)
        self._dropped_rows.append(rows)
        self._pending.append(rows)

    # ---- per step ------------------------------------------------------------------------
    def on_step_begin(self) -> None:
        self._calls = 0
        self._trained_rows, self._dropped_rows, self._pending = [], [], []
        self._cache_time = 0.0
        kill_at = os.environ.get(KILL_ENV)
        if kill_at and int(kill_at) == self.trainer.global_steps:
            import ray

            self._ensure_service()
            for handle in self.client.shards:
                ray.kill(handle, no_restart=False)
            print(f"[rpo_verl] fault injection ({KILL_ENV}): killed the cache service at step {self.trainer.global_steps}")

    def before_rollout(self, batch):
        from verl.utils import tensordict_utils as tu

        client = self._ensure_service()
        step = int(self.trainer.global_steps)
        ids = np.asarray(tu.get(batch, "index"), dtype=np.int64).reshape(-1)
        prompt_lens = self._prompt_lens(batch) if self.config.prefix.max_input_len > 0 else None
        start = time.monotonic()
        plan = client.sample_prefix_batch(ids, rng_seed=derive_seed(self.config.cache.seed, step, self._calls), prompt_lens=prompt_lens)
        self._cache_time += time.monotonic() - start
        rows = len(ids)
        tu.assign_non_tensor_stack(batch, PREFIX_KEY, [p.copy() for p in plan.prefixes()])
        tu.assign_non_tensor_stack(batch, BUDGET_KEY, [int(b) for b in plan.budget])
        existing = tu.get(batch, "agent_name")
        if existing is not None and any(a != AGENT_LOOP_NAME for a in existing):
            logger.warning("rpo: the training rows' agent_name %s is replaced by %s", set(existing), AGENT_LOOP_NAME)
        tu.assign_non_tensor_stack(batch, "agent_name", [AGENT_LOOP_NAME] * rows)
        if self._full_determinism():
            base = int(self._cfg.actor_rollout_ref.rollout.get("seed", 0))
            seeds = [derive_seed(base, step, self._calls, r, bits=31) for r in range(rows)]
            tu.assign_non_tensor_stack(batch, SEED_KEY, seeds)
        self._calls += 1
        return batch

    def _prompt_lens(self, batch) -> np.ndarray:
        """Prompt token counts after the chat template (for ``prefix.max_input_len``)."""
        from verl.utils import tensordict_utils as tu

        tok = self.trainer.tokenizer
        kwargs = dict(self._cfg.data.get("apply_chat_template_kwargs", None) or {})
        lens = []
        for messages in tu.get(batch, "raw_prompt"):
            ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, **kwargs)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            lens.append(len(ids))
        return np.asarray(lens, dtype=np.int64)

    def on_batch_rewarded(self, batch, metrics: dict) -> None:
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        rows = self._read_rows(keys, batch.partition_id)
        self._trained_rows.append(rows)
        offered = Rows.concat([rows, *self._pending])  # every sample generated since the last call
        self._pending = []
        # running totals here, not in step_metrics: the checkpoint of this step is saved before
        # its metrics are logged, and a resumed run continues from the saved totals
        self._totals["generated_tokens"] += float(offered.suffix_len.sum())
        self._totals["full_path_equiv_tokens"] += float((offered.prefix_len + offered.suffix_len).sum())
        if len(offered):
            start = time.monotonic()
            self._ensure_service().update(offered.update_batch(int(self.trainer.global_steps)))
            self._cache_time += time.monotonic() - start

    def step_metrics(self) -> dict[str, float]:
        if self.client is None:
            return {}
        out = dict(self.client.metrics())
        restores = out.get("rpo/cache_service_restores", 0.0)
        if restores > self._restores_seen:
            print(
                f"[rpo_verl] the RPO cache service was restarted {int(restores - self._restores_seen)} time(s) and "
                "reloaded its last snapshot (updates since the last checkpoint are lost); training carries on"
            )
            self._restores_seen = restores
        trained, dropped = Rows.concat(self._trained_rows), Rows.concat(self._dropped_rows)
        rows = Rows.concat([trained, dropped])
        if len(rows):
            step = rows.metrics()
            out.update(step)
            out["eff/dropped_generated_tokens"] = float(dropped.suffix_len.sum())
            out["eff/generated_samples"] = float(len(rows))
            out["eff/dropped_samples"] = float(len(dropped))
        gen, full = self._totals["generated_tokens"], self._totals["full_path_equiv_tokens"]
        out["eff/generated_tokens_total"] = gen
        out["eff/full_path_equiv_tokens_total"] = full
        out["eff/token_saving_ratio_total"] = 1.0 - gen / full if full else 0.0
        out["rpo/cache_time_s"] = self._cache_time
        out.update(timing_metrics(getattr(self.trainer, "timing_raw", {}) or {}))
        self._trained_rows, self._dropped_rows = [], []
        return out

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        client = self._ensure_service()
        folder = os.path.join(self._cfg.trainer.default_local_dir, f"global_step_{self.trainer.global_steps}")
        files = client.save(os.path.join(folder, CACHE_SUBDIR))
        return {
            "cache_dir": CACHE_SUBDIR,
            "files": [os.path.basename(f) for f in files],
            "step": int(self.trainer.global_steps),
            "totals": dict(self._totals),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        folder = self.trainer._checkpoint_folder_to_resume()
        path = os.path.join(folder, state.get("cache_dir", CACHE_SUBDIR))
        client = self._ensure_service()
        client.load(path, remember=True)
        self._totals.update(state.get("totals", {}))
        m = client.metrics()
        print(f"[rpo_verl] RPO cache restored from {path}: {int(m['rpo/cache_size'])} prompts cached")
