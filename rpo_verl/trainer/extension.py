"""Trainer-side hook interface for rpo_verl features (RPO, DPS, R2VPO, ...).

A feature registers a ``TrainerExtension`` subclass in ``rpo_verl.config.features.FEATURES``
(``FeatureSpec.extension``);
``RpoVerlTrainer`` builds one instance per enabled feature (in ``FEATURES`` order) and calls the
hooks below at fixed points of verl's unmodified v1 sync loop. Every hook is a no-op here, so a
feature overrides only what it needs and features compose without editing the trainer.

Batches: before rollout a batch is a ``tensordict.TensorDict`` of prompts (one row per prompt,
non-tensor columns such as ``raw_prompt``, ``uid``, ``extra_info``; extra non-tensor columns reach
the agent loop's kwargs). After rollout it is a ``transfer_queue.KVBatchMeta`` (keys of one row per
*response* in TransferQueue partition ``batch.partition_id``); read and write its fields with
``transfer_queue.kv_batch_get`` / ``kv_batch_put`` as verl's trainer does.

The trainer is typed as the ``Trainer`` protocol below (what extensions may use of
``rpo_verl.trainer.trainer.RpoVerlTrainer`` and of verl's ``PPOTrainer`` underneath), so this
module, which every feature imports, does not import the trainer (no import cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    from omegaconf import DictConfig
    from tensordict import TensorDict
    from transfer_queue import KVBatchMeta


class Trainer(Protocol):
    """What an extension may use of the running trainer (``RpoVerlTrainer``; verl's ``PPOTrainer``
    attributes are set up by verl's ``__init__``/``init``: the step counter and worker groups only by
    ``init``, i.e. from ``on_init_end`` on)."""

    config: DictConfig  # the full resolved trainer config
    global_steps: int  # the current training step (0 before the first)
    tokenizer: Any
    train_dataset: Any
    train_dataloader: Any
    actor_rollout_wg: Any  # verl's actor(+rollout+ref) worker group, after ``init``

    def fetch_dataloader_prompts(self, num_prompts: int) -> TensorDict:
        """``num_prompts`` prompts from verl's dataloader, bypassing the extensions."""
        ...

    def _checkpoint_folder_to_resume(self) -> str | None:
        """The checkpoint folder this run resumed from (None: fresh start)."""
        ...

    def _get_required_batch_multiple(self, dp_size: int) -> int:
        """verl's: the multiple a training batch's size must be."""
        ...

    def _balance_batch(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """verl's: reorder a batch's rows to balance tokens over data-parallel ranks."""
        ...


class TrainerExtension:
    """Base class: one feature's trainer logic. ``name`` is the feature's section name."""

    # Whether the feature changes anything in this run (the console lists the active features); an
    # extension that is built but idle for this config (R2VPO without its loss or replay) sets False.
    active: bool = True

    def __init__(self, trainer: Trainer, config: Any, name: str):
        self.trainer = trainer  # the running trainer (config, tokenizer, worker groups, global_steps)
        self.config = config  # this feature's validated config dataclass
        self.name = name

    # -- lifecycle ---------------------------------------------------------------------------
    def on_init_end(self) -> None:
        """Workers, rollout servers and reward workers are up; a checkpoint (if any) is loaded
        (``load_state_dict`` already called) and the rollout servers hold the trainer's weights."""

    def on_train_begin(self) -> None:
        """Before the first training step (after validation-before-training)."""

    def on_train_end(self) -> None:
        """After the last training step (also when verl's loop returns early)."""

    def on_validate_begin(self) -> None:
        """Before a validation pass (validation prompts bypass ``fetch_prompts``/``before_rollout``)."""

    def on_validate_end(self) -> None:
        """After a validation pass."""

    def on_step_begin(self) -> None:
        """Start of training step ``trainer.global_steps``, before any prompt is fetched."""

    def on_step_end(self) -> None:
        """End of the step, after the actor update and checkpoint save, before the weight push."""

    def worker_class(self, role: str, cls: type) -> type:
        """The Ray worker class verl starts for ``role`` (verl's ``Role`` name: ``actor_rollout``,
        ``actor_rollout_ref``, ``actor``, ``ref``, ``critic``); ``cls`` is verl's (or a previous
        extension's) choice. Return a subclass to change what runs in the training workers, e.g.
        a worker that owns extra optimizer state. Called once, before the workers start."""
        return cls

    # -- prompts and rollout -----------------------------------------------------------------
    def fetch_prompts(self, num_prompts: int) -> TensorDict | None:
        """Return ``num_prompts`` training prompts to roll out this step, or None to leave the
        choice to the next extension / verl's dataloader (pre-rollout prompt selection: DPS).
        ``trainer.fetch_dataloader_prompts(n)`` draws candidates from verl's dataloader."""
        return None

    def before_rollout(self, batch: TensorDict) -> TensorDict:
        """Transform the training prompts just before they go to the agent loop (e.g. attach
        RPO prefixes as extra non-tensor columns). Return the batch to submit."""
        return batch

    # -- after rollout -----------------------------------------------------------------------
    def on_batch_rewarded(self, batch: KVBatchMeta, metrics: dict) -> None:
        """Responses, rewards (``rm_scores``) and old log-probs of this step are in TransferQueue;
        called before advantages are computed (e.g. cache write-back, per-prompt statistics)."""

    def after_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta | None:
        """``advantages``/``returns`` are in TransferQueue; called before the critic/actor update.
        Return None to keep ``batch``, or a ``KVBatchMeta`` of the same partition to train on
        instead (e.g. with replayed rows added; its size must stay a multiple of verl's required
        batch multiple, see ``PPOTrainer._balance_batch``); the next extension receives it."""

    def step_metrics(self) -> dict[str, float]:
        """Extra metrics for this step's log line, in the feature's namespace
        (``FeatureSpec.metrics``: ``rpo/``, ``dps/``, ...) or a shared one (``eff/``, ``timing_s/``)."""
        return {}

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State to save with each trainer checkpoint (picklable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, when a run resumes from a checkpoint."""
