"""rpo_verl's trainer: verl 0.9.1's v1 sync trainer (``PPOTrainerSync``) plus hook points.

Nothing of verl's loop is copied: ``fit``/``step``/``_step_once`` are verl's. This class only
overrides verl's own hook and helper methods to

* call the enabled features' ``TrainerExtension`` hooks (see ``rpo_verl/trainer/extension.py``),
* save/restore the extensions' state with every checkpoint,
* guard two silent failure modes of verl's loop: a ``total_training_steps`` larger than
  ``steps_per_epoch * total_epochs`` stops early, and a resumed run whose checkpoint already
  reached ``total_training_steps`` exits cleanly after zero steps,
* collect the extensions' metrics (each in its feature's namespace, ``FeatureSpec.metrics``),
* poll verl's replay buffer for finished rollouts every ``rpo_verl.sample_poll_s`` (verl: 2 s),
* log a few extra metrics: ``eff/gen_tokens`` (response tokens the policy generated this step,
  ``response_mask`` sum), ``timing_s/validate`` (each validation pass), ``timing_s/init``
  (workers + servers + checkpoint load, logged with the first step).

Hook points, in loop order (verl's names; each calls the extensions in ``FEATURES`` order):
``on_init_end`` -> ``on_train_begin`` -> per step: ``on_step_begin`` -> ``_next_train_batch``
(``fetch_prompts``, ``before_rollout``) -> rollout + reward -> ``_compute_advantage``
(``on_batch_rewarded`` before, ``after_advantage`` after) -> ``_update_actor`` -> save ->
``on_step_end`` (before verl pushes weights to the rollout servers) -> validation
(``on_validate_begin/end``) -> ``_compute_metrics`` (``step_metrics``) -> ``on_train_end``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np
import ray
import torch
import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta

from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

from rpo_verl.config.features import FEATURES, build_features, build_run_config, is_enabled, load_attr
from rpo_verl.trainer import console
from rpo_verl.trainer.extension import TrainerExtension
from rpo_verl.trainer.runtime import metrics_file_path

logger = logging.getLogger(__name__)

EXTENSION_STATE_FILE = "rpo_verl_extensions.pt"


class RpoVerlTrainer(PPOTrainerSync):
    """verl's synchronous v1 trainer with rpo_verl's feature hooks (see module docstring)."""

    def __init__(self, config: DictConfig):
        self._created_at = time.monotonic()
        super().__init__(config)
        self.feature_configs: dict[str, Any] = build_features(config.get("rpo_verl"))
        self.extensions: list[TrainerExtension] = self._build_extensions()
        self.resumed_from_step = 0
        self._pending_metrics: dict[str, float] = {}
        self._train_ended = False
        self._foreign_metrics_warned: set[str] = set()
        self.console: console.StepConsole | None = None

    # ------------------------------------------------------------------ console
    @property
    def logger(self):
        """verl's ``Tracking`` (set by verl's ``fit``), with rpo_verl's console attached to it."""
        return self.__dict__.get("_tracking")

    @logger.setter
    def logger(self, tracking):
        mode = build_run_config(self.config.get("rpo_verl")).console
        fields = [(ext.name, *field) for ext in self.extensions if ext.active for field in FEATURES[ext.name].console]
        self.console = console.StepConsole(mode, self.total_training_steps, fields)
        self._tracking = console.attach(tracking, self.console)
        if mode != "full":
            import verl.trainer.ppo.v1.trainer_base as verl_trainer_base

            console.drop_verl_metric_dumps(verl_trainer_base)
        on = ", ".join(ext.name for ext in self.extensions if ext.active) or "none (verl's own algorithm only)"
        self.console.start(f"training steps {self.global_steps + 1}-{self.total_training_steps}; rpo_verl features "
                           f"on: {on}; metrics: {metrics_file_path(self.config)}; full logs of every process: "
                           f"{console.ray_logs_dir()}")

    def _build_extensions(self) -> list[TrainerExtension]:
        extensions = []
        for name, spec in FEATURES.items():
            feature_config = self.feature_configs[name]
            if spec.extension and is_enabled(feature_config):
                extensions.append(load_attr(spec.extension)(self, feature_config, name))
        return extensions

    # ------------------------------------------------------------------ worker classes
    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        from verl.trainer.ppo.utils import Role
        from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

        for role in list(self.role_worker_mapping):
            base = TrainingWorker if role == Role.Critic else ActorRolloutRefWorker
            cls = base
            for ext in self.extensions:
                cls = ext.worker_class(str(role), cls)
            if cls is not base:
                self.role_worker_mapping[role] = ray.remote(cls)

    def _build_replay_buffer(self):
        # verl's sync replay buffer checks for finished rollouts every 2.0 s (its constructor
        # default; the trainer passes no value), rounding each rollout phase up to a multiple of 2 s.
        buffer = super()._build_replay_buffer()
        if hasattr(buffer, "poll_interval"):
            buffer.poll_interval = build_run_config(self.config.get("rpo_verl")).sample_poll_s
        return buffer

    # ------------------------------------------------------------------ data and step counting
    def _init_dataloader(self):
        super()._init_dataloader()
        if self.steps_per_epoch <= 0:
            raise ValueError(
                f"data.train_files holds {len(self.train_dataset)} prompts, fewer than one batch "
                f"(data.train_batch_size={self.config.data.train_batch_size}): no training step fits. "
                "Fix: lower data.train_batch_size or use a larger training set."
            )
        # verl's loop also stops when the epoch counter reaches trainer.total_epochs, so a
        # total_training_steps beyond steps_per_epoch * total_epochs would silently end early.
        epochs_needed = math.ceil(self.total_training_steps / self.steps_per_epoch)
        if epochs_needed > self.config.trainer.total_epochs:
            logger.warning(
                "trainer.total_training_steps=%d needs %d epochs of %d steps; raising trainer.total_epochs "
                "from %d to %d so that verl's loop does not stop early.",
                self.total_training_steps, epochs_needed, self.steps_per_epoch,
                self.config.trainer.total_epochs, epochs_needed,
            )
            with open_dict(self.config):
                self.config.trainer.total_epochs = epochs_needed

    def fetch_dataloader_prompts(self, num_prompts: int) -> TensorDict:
        """``num_prompts`` prompts from verl's dataloader (a multiple of the gen batch size),
        bypassing the extensions: what a prompt-selecting extension draws its candidates from."""
        return PPOTrainer._next_train_batch(self, num_prompts)

    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        num_prompts = num_prompts or self.config.data.train_batch_size
        batch = None
        for ext in self.extensions:
            batch = ext.fetch_prompts(num_prompts)
            if batch is not None:
                tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
                break
        if batch is None:
            batch = super()._next_train_batch(num_prompts)
        for ext in self.extensions:
            batch = ext.before_rollout(batch)
        return batch

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_folder_to_resume(self) -> str | None:
        """The folder verl's ``_load_checkpoint`` resumed from (None: fresh start)."""
        trainer_cfg = self.config.trainer
        if trainer_cfg.resume_mode == "disable" or self.global_steps == 0:
            return None
        if trainer_cfg.resume_mode == "resume_path":
            folder = trainer_cfg.resume_from_path
        else:
            folder = find_latest_ckpt_path(trainer_cfg.default_local_dir)
        return os.path.abspath(folder) if folder else None

    def _load_checkpoint(self):
        super()._load_checkpoint()
        self.resumed_from_step = self.global_steps
        folder = self._checkpoint_folder_to_resume()
        if folder is None:
            return
        print(f"[rpo_verl] resumed from {folder}: the next training step is {self.global_steps + 1}")
        path = os.path.join(folder, EXTENSION_STATE_FILE)
        states = torch.load(path, weights_only=False) if os.path.exists(path) else {}
        for ext in self.extensions:
            if ext.name in states:
                ext.load_state_dict(states[ext.name])
            else:
                logger.warning("checkpoint %s holds no state for rpo_verl.%s; it starts fresh", folder, ext.name)

    def _save_checkpoint(self):
        super()._save_checkpoint()
        if not self.extensions:
            return
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        os.makedirs(folder, exist_ok=True)
        torch.save({ext.name: ext.state_dict() for ext in self.extensions}, os.path.join(folder, EXTENSION_STATE_FILE))

    # ------------------------------------------------------------------ loop hooks
    def on_init_end(self):
        super().on_init_end()  # pushes the (possibly resumed) weights to the rollout servers
        self._pending_metrics["timing_s/init"] = time.monotonic() - self._created_at
        # which rpo_verl features this run used (the summary's "Methods on"), with the first step
        self._pending_metrics.update({f"features/{ext.name}": 1.0 for ext in self.extensions if ext.active})
        for ext in self.extensions:
            ext.on_init_end()

    def fit(self, agent_loop_manager):
        if self.resumed_from_step and self.resumed_from_step >= self.total_training_steps:
            print(
                f"[rpo_verl] nothing to train: the checkpoint at step {self.resumed_from_step} already reached "
                f"trainer.total_training_steps={self.total_training_steps}. To train further, raise "
                "trainer.total_training_steps (or trainer.total_epochs); to start over, use a new "
                "trainer.default_local_dir or trainer.resume_mode=disable."
            )
            self.agent_loop_manager = agent_loop_manager
            self._shutdown_dump_executor()
            return
        super().fit(agent_loop_manager)
        # verl returns from fit() after the last step without calling on_train_end.
        if not self._train_ended:
            self.on_train_end()

    def on_train_begin(self):
        super().on_train_begin()
        for ext in self.extensions:
            ext.on_train_begin()

    def on_train_end(self):
        self._train_ended = True
        super().on_train_end()
        for ext in self.extensions:
            ext.on_train_end()
        if self.console is not None:
            self.console.finish(f"checkpoints in {self.config.trainer.default_local_dir}; summary: "
                                f"python -m rpo_verl.trainer.summary {os.path.dirname(metrics_file_path(self.config))}")

    def on_step_begin(self):
        super().on_step_begin()
        for ext in self.extensions:
            ext.on_step_begin()

    def on_step_end(self):
        for ext in self.extensions:
            ext.on_step_end()
        super().on_step_end()  # pushes the updated weights to the rollout servers

    def on_validate_begin(self):
        super().on_validate_begin()
        for ext in self.extensions:
            ext.on_validate_begin()

    def on_validate_end(self):
        super().on_validate_end()
        for ext in self.extensions:
            ext.on_validate_end()

    def _validate(self) -> dict[str, float]:
        start = time.monotonic()
        metrics = super()._validate()
        metrics["timing_s/validate"] = time.monotonic() - start
        return metrics

    # ------------------------------------------------------------------ advantage and metrics
    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        for ext in self.extensions:
            ext.on_batch_rewarded(batch, metrics)
        batch = super()._compute_advantage(batch, metrics)
        for ext in self.extensions:
            replaced = ext.after_advantage(batch, metrics)  # an extension may add rows (R2VPO replay)
            if replaced is not None:
                batch = replaced
        return batch

    def _compute_metrics(self, batch: KVBatchMeta, metrics, timing_raw, global_steps, epoch):
        super()._compute_metrics(batch, metrics, timing_raw, global_steps=global_steps, epoch=epoch)
        metrics["eff/gen_tokens"] = generated_tokens(batch)
        metrics.update(self._pending_metrics)
        self._pending_metrics = {}
        metrics.update(self.extension_metrics())

    def extension_metrics(self) -> dict[str, float]:
        """Every extension's ``step_metrics``; a key outside the feature's registered namespace
        (``FeatureSpec.metrics``) or a shared one (``eff/``, ``timing_s/``) is logged all the same,
        with a warning once per key (two features must not write the same key by accident)."""
        out: dict[str, float] = {}
        for ext in self.extensions:
            step = ext.step_metrics()
            spec = FEATURES.get(ext.name)
            foreign = sorted(k for k in step if spec is not None and not spec.owns_metric(k)
                             and k not in self._foreign_metrics_warned)
            if foreign:
                self._foreign_metrics_warned.update(foreign)
                logger.warning("rpo_verl.%s logs metric(s) %s outside its namespace %r (FeatureSpec.metrics in "
                               "rpo_verl/config/features.py); name them '%s/...'", ext.name, foreign,
                               f"{spec.metrics}/", spec.metrics)
            out.update(step)
        return out


def generated_tokens(batch: KVBatchMeta) -> int:
    """Tokens the policy generated for the real (non-padding) responses of a step: the sum of
    ``response_mask`` (prefixes, tool outputs and padding are masked out)."""
    keys = [key for key, tag in zip(batch.keys, batch.tags, strict=True) if not tag.get("is_padding", False)]
    if not keys:
        return 0
    data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["response_mask"])
    mask = data["response_mask"]
    if getattr(mask, "is_nested", False):
        return int(sum(int(row.sum()) for row in mask.unbind()))
    return int(np.asarray(mask).sum())
