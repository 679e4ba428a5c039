"""verl 0.9.1 worker classes that own the R²VPO dual variable λ (issue 6, item 2).

``ActorRolloutRefWorker`` builds its actor as ``self.actor_worker_cls(config=...)`` (a
``TrainingWorker`` living inside the Ray worker process). :class:`R2VPOTrainingWorker` only adds,
after the stock constructor, :func:`rpo_verl.r2vpo.dual.install_dual_hooks` on its engine (λ step
after every ``optimizer_step``, ``r2vpo_dual.json`` saved/loaded with the actor checkpoint, the
engine's data-parallel group for the all-reduce) and wraps the loss closure with
:func:`rpo_verl.r2vpo.loss.with_r2vpo_context` (passes ``dp_group`` and the per-sample
``r2vpo_stale`` field to the loss). :class:`R2VPOActorRolloutRefWorker` points
``actor_worker_cls`` at it and adds ``r2vpo_dual_state`` (λ of every rank, for the trainer's
metrics); a trainer selects it with ``role_worker_mapping[role] = ray.remote(R2VPOActorRolloutRefWorker)``
or, for another ``ActorRolloutRefWorker`` subclass, ``with_r2vpo(cls)``. Both are harmless for other
loss modes (nothing is observed, so λ never steps and no file is written).

Another worker subclass (e.g. a CPU backend) composes through :class:`R2VPOTrainingWorkerMixin`.
"""

from __future__ import annotations

from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from rpo_verl.r2vpo.config import r2vpo_settings
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


class R2VPOActorRolloutRefMixin:
    """Put before ``ActorRolloutRefWorker`` (or a subclass): exposes λ to the trainer."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def r2vpo_dual_state(self) -> dict:
        """This rank's dual state (``DualController.state_dict()``: ``lambda``, ``steps``, ...).

        Before the first loss call λ is configured from ``actor.policy_loss.r2vpo`` here, so the
        value reported at start-up is λ₀ (or the value restored from the checkpoint)."""
        dual = get_dual()
        if not (dual.configured or dual.restored):
            dual.configure(r2vpo_settings(self.config.actor))
        return dual.state_dict()


class R2VPOActorRolloutRefWorker(R2VPOActorRolloutRefMixin, ActorRolloutRefWorker):
    """verl's hybrid actor/rollout/ref worker whose actor owns λ (ref is untouched)."""

    actor_worker_cls = R2VPOTrainingWorker


def with_r2vpo(cls: type) -> type:
    """``cls`` (``ActorRolloutRefWorker`` or a subclass, e.g. another feature's) with R²VPO's λ:
    its actor training worker gets :class:`R2VPOTrainingWorkerMixin`. Idempotent."""
    if not (isinstance(cls, type) and issubclass(cls, ActorRolloutRefWorker)):
        raise TypeError(f"r2vpo: {cls!r} is not an ActorRolloutRefWorker subclass; cannot install the dual variable")
    if cls is ActorRolloutRefWorker:
        return R2VPOActorRolloutRefWorker
    if issubclass(cls, R2VPOActorRolloutRefMixin) and issubclass(cls.actor_worker_cls, R2VPOTrainingWorkerMixin):
        return cls
    training = cls.actor_worker_cls
    if training is TrainingWorker:
        training = R2VPOTrainingWorker
    elif not issubclass(training, R2VPOTrainingWorkerMixin):
        training = type(f"R2VPO{training.__name__}", (R2VPOTrainingWorkerMixin, training), {})
    bases = (cls,) if issubclass(cls, R2VPOActorRolloutRefMixin) else (R2VPOActorRolloutRefMixin, cls)
    return type(f"R2VPO{cls.__name__}", bases, {"actor_worker_cls": training})
