"""A real (tiny) training engine on verl's ``BaseEngine`` for the R²VPO integration tests.

verl's own ``BaseEngine.train_batch`` drives it (zero_grad → forward_backward_batch →
optimizer_step); the loss is verl's ``ppo_loss`` closure, so the ``r2vpo`` loss is reached through
verl's policy-loss registry with verl's data layout (left-shifted flat log-probs, non-tensor
``dp_size``/``batch_num_tokens``/``global_batch_size``). Data parallelism is emulated as FSDP/DDP
does it: each rank holds its shard, gradients are averaged across ranks before the step.
"""

from __future__ import annotations

import os
from functools import partial

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig
from verl.workers.engine.base import BaseEngine
from verl.workers.utils.losses import ppo_loss

from rpo_verl.r2vpo.config import R2VPOPolicyLossConfig
from rpo_verl.r2vpo.loss import STALE_FIELD, with_r2vpo_context

VOCAB, PROMPT, RESPONSE = 11, 3, 6


class TinyPolicy(torch.nn.Module):
    """log π(x_{j+1} | x_j): a bigram policy, enough to give every token its own gradient."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(0.5 * torch.randn(VOCAB, 8, generator=g))
        self.head = torch.nn.Parameter(0.5 * torch.randn(8, VOCAB, generator=g))

    def flat_log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """verl's no-padding layout: valid tokens of every row back to back, value j = log p(x_{j+1}|x_j)."""
        logp = torch.log_softmax(self.emb[input_ids] @ self.head, dim=-1)  # [B, T, V]
        nxt = torch.roll(input_ids, shifts=-1, dims=1)
        per_pos = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)  # [B, T]; last position unused
        return per_pos[attention_mask.bool()]


class MiniEngine(BaseEngine):
    def __init__(self, model: TinyPolicy, micro_batches: int, group=None, lr: float = 0.05):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.micro_batches = micro_batches
        self.group = group

    @property
    def is_param_offload_enabled(self):
        return False

    @property
    def is_optimizer_offload_enabled(self):
        return False

    def _world(self):
        return torch.distributed.get_world_size(self.group) if torch.distributed.is_initialized() else 1

    def get_data_parallel_group(self):
        return self.group

    def get_data_parallel_size(self):
        return self._world()

    def is_mp_src_rank_with_outputs(self):
        return True

    def optimizer_zero_grad(self):
        self.optimizer.zero_grad()

    def optimizer_step(self):
        if self._world() > 1:
            for p in self.model.parameters():
                torch.distributed.all_reduce(p.grad, group=self.group)
                p.grad /= self._world()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1e9)
        self.optimizer.step()
        return float(norm)

    def forward_backward_batch(self, data: TensorDict, loss_function, forward_only=False):
        # As FSDPEngine.forward_backward_batch: global token count and dp size for agg_loss.
        batch_num_tokens = data["response_mask"].sum().double()
        if self._world() > 1:
            torch.distributed.all_reduce(batch_num_tokens, group=self.group)
        tu.assign_non_tensor(data, batch_num_tokens=int(batch_num_tokens.item()), dp_size=self._world())
        size = data.batch_size[0] // self.micro_batches
        metrics, losses = {}, []
        for k in range(self.micro_batches):
            mb = data[k * size : (k + 1) * size]
            out = {"log_probs": self.model.flat_log_probs(mb["input_ids"], mb["attention_mask"])}
            loss, step_metrics = loss_function(model_output=out, data=mb, dp_group=self.group)
            if not forward_only:
                loss.backward()
            losses.append(float(loss))
            for key, value in step_metrics.items():
                metrics.setdefault(key, []).append(value)
        return {"loss": losses, "metrics": metrics}

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None, **kwargs):
        os.makedirs(local_path, exist_ok=True)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        torch.save(
            {"model": self.model.state_dict(), "optim": self.optimizer.state_dict()},
            os.path.join(local_path, f"rank{rank}.pt"),
        )

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=True, **kwargs):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        state = torch.load(os.path.join(local_path, f"rank{rank}.pt"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])


def actor_config(loss_agg_mode: str = "token-mean", **r2vpo) -> ActorConfig:
    policy_loss = R2VPOPolicyLossConfig(loss_mode="r2vpo", r2vpo=r2vpo)
    return ActorConfig(
        strategy="fsdp",
        rollout_n=2,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        policy_loss=policy_loss,
    )


def make_loss_fn(config: ActorConfig):
    """What ActorRolloutRefWorker builds (``partial(ppo_loss, config=...)``) wrapped as R2VPOTrainingWorker does."""
    return with_r2vpo_context(partial(ppo_loss, config=config))


def make_data(seed: int, rows: int, behaviour_noise: float = 0.06) -> dict[str, torch.Tensor]:
    """Rollout-like rows: prompt + right-padded response; old log-probs = θ₀'s plus noise (stale-ish
    behaviour policy) so the ratio is not 1 from the first step; rows ≡ 3 mod 4 flagged stale."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, RESPONSE + 1, (rows,), generator=g)
    response_mask = (torch.arange(RESPONSE).unsqueeze(0) < lengths.unsqueeze(1)).long()
    input_ids = torch.randint(0, VOCAB, (rows, PROMPT + RESPONSE), generator=g)
    attention_mask = torch.cat([torch.ones(rows, PROMPT, dtype=torch.long), response_mask], dim=1)
    with torch.no_grad():
        flat = TinyPolicy(seed=0).flat_log_probs(input_ids, attention_mask)
    old = torch.zeros(rows, RESPONSE)
    offset = 0
    for i in range(rows):
        total = PROMPT + int(lengths[i])
        old[i, : lengths[i]] = flat[offset + PROMPT - 1 : offset + total - 1]
        offset += total
    stale = (torch.arange(rows) % 4 == 3).float()
    old = old + behaviour_noise * (1 + 2 * stale.unsqueeze(-1)) * torch.randn(rows, RESPONSE, generator=g)
    adv = torch.randn(rows // 2, 1, generator=g).repeat_interleave(2, dim=0).expand(rows, RESPONSE)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "prompts": input_ids[:, :PROMPT],
        "responses": input_ids[:, PROMPT:],
        "response_mask": response_mask,
        "old_log_probs": old * response_mask,
        "advantages": adv * response_mask,
        STALE_FIELD: stale,
    }


def to_minibatch(rows: dict[str, torch.Tensor], index: torch.Tensor, global_batch_size: int) -> TensorDict:
    td = TensorDict({k: v[index].clone() for k, v in rows.items()}, batch_size=[len(index)])
    tu.assign_non_tensor(td, global_batch_size=global_batch_size)
    return td


# ---- data-parallel runs (2 gloo ranks vs one process holding everything) ---------------------
DP_ROWS, DP_MINIBATCHES, DP_CHUNKS = 16, 3, 4


def dp_row_order(rank: int | None, world: int = 2) -> list[int]:
    """Rows of each mini-batch split into DP_CHUNKS chunks; rank r holds chunks r, r+world, ...
    (one per micro-batch), a single process (rank None) holds all, so its micro-batch k is the
    union of the ranks' micro-batches k."""
    chunk = DP_ROWS // DP_CHUNKS
    chunks = [list(range(c * chunk, (c + 1) * chunk)) for c in range(DP_CHUNKS)]
    mine = chunks if rank is None else chunks[rank::world]
    return [i for c in mine for i in c]


def dp_run(rank: int | None, world: int, hooked: bool, seed: int = 11) -> dict:
    """Train DP_MINIBATCHES mini-batches (2 micro-batches each) and return λ, V̂ and parameters."""
    from rpo_verl import r2vpo
    from rpo_verl.r2vpo import dual as dual_mod
    from rpo_verl.r2vpo.dual import install_dual_hooks

    r2vpo.register()
    ctl = dual_mod.reset_dual()
    model = TinyPolicy(seed=0)
    group = torch.distributed.group.WORLD if rank is not None else None
    engine = MiniEngine(model, micro_batches=2, group=group)
    if hooked:
        install_dual_hooks(engine, ctl)
    loss_fn = make_loss_fn(actor_config(delta=5e-3, eta=0.5))
    rows = make_data(seed, DP_ROWS * DP_MINIBATCHES)
    order = torch.tensor(dp_row_order(rank, world))
    lams, v_hats, micro_v_hats = [], [], []
    for k in range(DP_MINIBATCHES):
        data = to_minibatch(rows, order + k * DP_ROWS, DP_ROWS)
        out = engine.train_batch(data, loss_fn)
        lams.append(ctl.value)
        v_hats.append(ctl.last_v_hat)
        micro_v_hats.append([m.values[0] for m in out["metrics"]["r2vpo/v_hat"]])
    return {
        "lambda": lams,
        "v_hat": v_hats,
        "micro_v_hat": micro_v_hats,
        "params": [p.detach().clone() for p in model.parameters()],
    }


def dp_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """torch.multiprocessing.spawn target: one gloo rank, both ways of stepping λ (one start-up)."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {hooked: dp_run(rank, world, hooked) for hooked in (True, False)}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()
