"""The R²VPO dual variable λ (ALGORITHMS.md §3, "Dual step after each optimiser step").

Lagrangian ``L(θ, λ) = mean_i r_i·Â_i − λ·(V̂ − δ)``; after every optimiser step

    normalised (default):  λ ← clip(λ + η·(V̂/δ − 1), 0, λ_max)
    absolute:              λ ← clip(λ + η·(V̂ − δ), 0, λ_max)

where V̂ is the ratio variance over all valid tokens of the optimiser mini-batch on all
data-parallel ranks, measured at the θ that step started from.

How the step is reached in verl 0.9.1: the loss (``rpo_verl.r2vpo.loss``) runs once per
micro-batch and reports its all-reduced sums ``(n, Σ(r−1), Σ(r−1)²)`` to the process-wide
:class:`DualController` (one per training worker process: ``get_dual()``). Every micro-batch of
one mini-batch sees the same θ, so the sums pool exactly into the mini-batch V̂. The step then
happens either

* **hooked** (exact, checkpointed): :func:`install_dual_hooks` wraps the training engine's
  ``optimizer_step`` (λ steps right after it), ``save_checkpoint`` (writes ``r2vpo_dual.json``
  into the actor checkpoint folder) and ``load_checkpoint`` (restores it). The worker classes in
  ``rpo_verl.r2vpo.worker`` install them; or
* **auto** (no hooks installed, e.g. verl's stock worker): the loss steps λ itself after the last
  micro-batch of a mini-batch, detected by counting the mini-batch's valid tokens
  (``global_batch_info['batch_num_tokens']``). λ dynamics are the same (nothing reads λ between
  that loss call and the optimiser step), but λ is not saved with the checkpoint (warned once).

Pure Python + torch.distributed for the safety broadcast; no Ray, Hydra or verl import.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "r2vpo_dual.json"
_STATE_VERSION = 1


def dual_update(
    lam: float, v_hat: float, delta: float, eta: float, rule: str, lambda_max: Optional[float] = None
) -> float:
    """One projected dual-ascent step on λ (the two rules above), projected onto [0, λ_max]
    (``lambda_max=None``: no ceiling); returns the new λ."""
    if rule == "normalised":
        grad = v_hat / delta - 1.0
    elif rule == "absolute":
        grad = v_hat - delta
    else:
        raise ValueError(f"dual_rule: {rule!r} is not one of ['normalised', 'absolute']")
    new = max(0.0, lam + eta * grad)
    return new if lambda_max is None else min(float(lambda_max), new)


@dataclass
class _MiniBatchSums:
    """Pooled sums over the micro-batches of the current mini-batch (float64 in Python floats)."""

    n: float = 0.0  # valid tokens, as reduced (may count sequence-parallel duplicates)
    s1: float = 0.0  # Σ (r − 1)
    s2: float = 0.0  # Σ (r − 1)²
    tokens: float = 0.0  # valid tokens with duplicates removed (for the auto step)
    calls: int = 0

    def v_hat(self) -> float:
        if self.n <= 0:
            return float("nan")
        mean = self.s1 / self.n
        return max(0.0, self.s2 / self.n - mean * mean)


class DualController:
    """λ and its update, identical on every rank (its input V̂ is all-reduced).

    ``configure(cfg)`` sets δ, η, the rule and (only if λ was never set or restored) λ₀ from an
    :class:`rpo_verl.r2vpo.config.R2VPOConfig`-like object. ``observe(...)`` pools one micro-batch;
    ``step()`` closes the mini-batch and applies the dual update.
    """

    def __init__(
        self,
        delta: float = 5e-3,
        eta: float = 0.1,
        rule: str = "normalised",
        lambda_init: float = 0.0,
        lambda_max: Optional[float] = None,
    ):
        self.delta = float(delta)
        self.lambda_max = None if lambda_max is None else float(lambda_max)
        self.eta = float(eta)
        self.rule = rule
        self.lambda_init = float(lambda_init)
        self.lam: Optional[float] = None  # None until configured or restored
        self.steps = 0
        self.last_v_hat: Optional[float] = None
        self.configured = False
        self.restored = False
        self.hooked = False  # True once install_dual_hooks ran: the optimiser step drives step()
        self.group: Any = None  # process group for the all-reduce (None: WORLD)
        self.group_fn: Optional[Callable[[], Any]] = None  # lazily resolved group (engine's DP group)
        self._sums = _MiniBatchSums()
        self._device: Optional[torch.device] = None
        self._warned_unhooked = False
        self._missing_checkpoint: Optional[str] = None  # resumed folder without a dual file

    # ---- configuration -------------------------------------------------------------------
    def configure(self, cfg: Any) -> None:
        """Take δ, η, rule, λ₀, λ_max from ``cfg``; keeps a λ already in use or restored
        (clipped to λ_max)."""
        self.delta = float(cfg.delta)
        lambda_max = getattr(cfg, "lambda_max", None)
        self.lambda_max = None if lambda_max is None else float(lambda_max)
        self.eta = float(cfg.eta)
        self.rule = str(cfg.dual_rule)
        self.lambda_init = float(cfg.lambda_init)
        if self.lam is None:
            self.lam = self.lambda_init
        if self.lambda_max is not None and self.lam > self.lambda_max:
            self.lam = self.lambda_max
        if self._missing_checkpoint is not None and not self.restored:
            logger.warning(
                "r2vpo: resumed from %s without %s; lambda restarts at lambda_init=%s",
                self._missing_checkpoint,
                CHECKPOINT_FILE,
                self.lambda_init,
            )
            self._missing_checkpoint = None
        self.configured = True

    @property
    def value(self) -> float:
        """The current λ (λ₀ before any configuration)."""
        return self.lambda_init if self.lam is None else self.lam

    def process_group(self) -> Any:
        if self.group is None and self.group_fn is not None:
            try:
                self.group = self.group_fn()
            except NotImplementedError:
                self.group_fn = None
        return self.group

    # ---- per micro-batch ---------------------------------------------------------------
    def observe(self, n: float, s1: float, s2: float, tokens: Optional[float] = None, device=None) -> None:
        """Pool one micro-batch's global sums: n valid tokens, Σ(r−1), Σ(r−1)²."""
        self._sums.n += float(n)
        self._sums.s1 += float(s1)
        self._sums.s2 += float(s2)
        self._sums.tokens += float(n if tokens is None else tokens)
        self._sums.calls += 1
        if device is not None:
            self._device = torch.device(device)

    @property
    def pending_tokens(self) -> float:
        """De-duplicated valid tokens observed since the last step."""
        return self._sums.tokens

    def maybe_auto_step(self, minibatch_tokens: Optional[float]) -> bool:
        """Auto mode (no hooks): step once the mini-batch's tokens have all been observed.

        ``minibatch_tokens`` is verl's global ``batch_num_tokens``; ``None`` (no global batch
        info, e.g. a direct single-process call) treats every loss call as one mini-batch.
        """
        if self.hooked:
            return False
        if not self._warned_unhooked:
            logger.warning(
                "r2vpo: the dual variable is stepped from the loss (no optimiser hook installed); "
                "lambda is NOT saved with the checkpoint. Use rpo_verl.r2vpo.worker.R2VPOActorRolloutRefWorker "
                "(or install_dual_hooks on the actor engine) to save and restore it."
            )
            self._warned_unhooked = True
        if minibatch_tokens is None or self._sums.tokens >= float(minibatch_tokens) - 0.5:
            self.step()
            return True
        return False

    # ---- per optimiser step -----------------------------------------------------------
    def step(self, v_hat: Optional[float] = None) -> Optional[float]:
        """Close the mini-batch: λ ← dual_update(λ, V̂). Returns the new λ (None if nothing observed).

        ``v_hat`` overrides the pooled value (tests, external drivers). The result is broadcast
        from rank 0 of the process group when torch.distributed runs with more than one rank.
        """
        if v_hat is None:
            if self._sums.calls == 0:
                return None  # an optimiser step without an r2vpo loss (other loss mode): nothing to do
            v_hat = self._sums.v_hat()
        self._sums = _MiniBatchSums()
        if not math.isfinite(v_hat):
            return self.value  # an empty mini-batch (no valid tokens) carries no information
        new_lam = dual_update(self.value, v_hat, self.delta, self.eta, self.rule, self.lambda_max)
        self.lam = self._broadcast(new_lam)
        self.last_v_hat = float(v_hat)
        self.steps += 1
        return self.lam

    def _broadcast(self, value: float) -> float:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return value
        group = self.process_group()
        if torch.distributed.get_world_size(group) <= 1:
            return value
        device = self._device or torch.device("cpu")
        if torch.distributed.get_backend(group) == "nccl" and device.type == "cpu":
            device = torch.device("cuda", torch.cuda.current_device())
        buf = torch.tensor([value], dtype=torch.float64, device=device)
        src = torch.distributed.get_global_rank(group, 0) if group is not None else 0
        torch.distributed.broadcast(buf, src=src, group=group)
        return float(buf.item())

    def metrics(self) -> dict[str, float]:
        out = {"r2vpo/lambda": self.value, "r2vpo/dual_steps": float(self.steps)}
        if self.last_v_hat is not None:
            out["r2vpo/v_hat_last_step"] = self.last_v_hat
        return out

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "lambda": self.value,
            "steps": self.steps,
            "last_v_hat": self.last_v_hat,
            "delta": self.delta,
            "eta": self.eta,
            "dual_rule": self.rule,
            "lambda_max": self.lambda_max,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore λ and the step count exactly (hyper-parameters stay those of the config)."""
        if int(state.get("version", 0)) != _STATE_VERSION:
            raise ValueError(f"r2vpo dual state: unsupported version {state.get('version')!r}")
        lam = float(state["lambda"])
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"r2vpo dual state: lambda must be a finite number >= 0, got {lam}")
        self.lam = lam
        self.steps = int(state.get("steps", 0))
        last = state.get("last_v_hat")
        self.last_v_hat = None if last is None else float(last)
        self._sums = _MiniBatchSums()
        self.restored = True

    def save(self, folder: str) -> str:
        """Write ``r2vpo_dual.json`` into ``folder`` (atomic rename); returns the path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CHECKPOINT_FILE)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state_dict(), f)  # json writes floats with repr: exact round trip
        os.replace(tmp, path)
        return path

    def load(self, folder: str) -> bool:
        """Read ``r2vpo_dual.json`` from ``folder`` if present; returns whether it was found."""
        path = os.path.join(folder, CHECKPOINT_FILE)
        if not os.path.exists(path):
            return False
        with open(path, encoding="utf-8") as f:
            self.load_state_dict(json.load(f))
        return True


_DUAL: Optional[DualController] = None


def get_dual() -> DualController:
    """The process-wide controller (one actor per training worker process)."""
    global _DUAL
    if _DUAL is None:
        _DUAL = DualController()
    return _DUAL


def reset_dual() -> DualController:
    """Replace the process-wide controller by a fresh one (tests, a new run in the same process)."""
    global _DUAL
    _DUAL = DualController()
    return _DUAL


def _is_rank_zero() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def install_dual_hooks(engine: Any, controller: Optional[DualController] = None) -> DualController:
    """Hook λ into a verl training engine (``verl.workers.engine.BaseEngine``); idempotent.

    * ``engine.optimizer_step``: after the original, ``controller.step()`` (every
      ``BaseEngine.train_batch`` — one mini-batch — calls it exactly once);
    * ``engine.save_checkpoint(local_path, ...)``: after the original, rank 0 writes
      ``<local_path>/r2vpo_dual.json`` (only once R²VPO has been configured or restored, so other
      loss modes leave checkpoints untouched). The file lives in the actor folder, so verl's
      ``max_actor_ckpt_to_keep`` removes it with the rest; it is not copied to ``hdfs_path``;
    * ``engine.load_checkpoint(local_path, ...)``: every rank reads the file *before* the original
      (which may delete ``local_path``); a missing file leaves λ at λ₀ (warned if R²VPO runs);
    * the all-reduce group becomes ``engine.get_data_parallel_group()``.
    """
    controller = controller or get_dual()
    if getattr(engine, "_r2vpo_dual_hooked", False):
        return controller

    original_step = engine.optimizer_step
    original_save = engine.save_checkpoint
    original_load = engine.load_checkpoint

    def optimizer_step(*args, **kwargs):
        out = original_step(*args, **kwargs)
        controller.step()
        return out

    def save_checkpoint(local_path, *args, **kwargs):
        out = original_save(local_path, *args, **kwargs)
        if (controller.configured or controller.restored) and _is_rank_zero():
            controller.save(local_path)
        return out

    def load_checkpoint(local_path, *args, **kwargs):
        if not controller.load(local_path):
            # Only an r2vpo run cares; configure() warns once the loss shows that it is one.
            controller._missing_checkpoint = local_path
        return original_load(local_path, *args, **kwargs)

    engine.optimizer_step = optimizer_step
    engine.save_checkpoint = save_checkpoint
    engine.load_checkpoint = load_checkpoint
    group_fn = getattr(engine, "get_data_parallel_group", None)
    if group_fn is not None:
        controller.group = None
        controller.group_fn = group_fn
    controller.hooked = True
    engine._r2vpo_dual_hooked = True
    return controller
