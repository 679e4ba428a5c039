"""verl 0.9.1 worker classes that own the R²VPO dual variable λ (issue 6, item 2).

``ActorRolloutRefWorker`` builds its actor as ``self.actor_worker_cls(config=...)`` (a
``TrainingWorker`` living inside the Ray worker process). :class:`R2VPOTrainingWorker` only adds,
after the stock constructor, :func:`rpo_verl.r2vpo.dual.install_dual_hooks` on its engine (λ step
after every ``optimizer_step``, ``r2vpo_dual.json`` saved/loaded with the actor checkpoint, the
engine's data-parallel group for the all-reduce) and wraps the loss closure with
:func:`rpo_verl.r2vpo.loss.with_r2vpo_context` (passes ``dp_group`` and the per-sample
``r2vpo_stale`` field to the loss). :class:`R2VPOActorRolloutRefWorker` just points
``actor_worker_cls`` at it; a trainer selects it with
``role_worker_mapping[role] = ray.remote(R2VPOActorRolloutRefWorker)``. Both are harmless for
other loss modes (nothing is observed, so λ never steps and no file is written).

Another worker subclass (e.g. a CPU backend) composes through :class:`R2VPOTrainingWorkerMixin`.
"""

from __future__ import annotations

from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from rpo_verl.r2vpo.dual import get_dual, install_dual_hooks
from rpo_verl.r2vpo.loss import with_r2vpo_context


class R2VPOTrainingWorkerMixin:
    """Put before ``TrainingWorker`` (or a subclass of it) in the bases."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        install_dual_hooks(self.engine, get_dual())

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def set_loss_fn(self, loss_fn):
        super().set_loss_fn(with_r2vpo_context(loss_fn) if loss_fn is not None else None)


class R2VPOTrainingWorker(R2VPOTrainingWorkerMixin, TrainingWorker):
    """verl's ``TrainingWorker`` with the λ hooks installed on its engine."""


class R2VPOActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid actor/rollout/ref worker whose actor owns λ (ref is untouched)."""

    actor_worker_cls = R2VPOTrainingWorker
