"""Two gloo ranks on the CPU platform, through verl's own code paths (run as a script).

Usage: ``VERL_PLATFORM=cpu python cpu_backend_ranks.py OUT_DIR``. Spawns 2 processes; each
imports verl (so rpo_verl's plugin registers the platform and installs the process-group fix),
then

1. process group: verl's initialiser (with the fix) must set up a gloo group; an all_reduce must
   add up;
2. FSDP2: a tiny random Llama sharded with verl's ``apply_fsdp2`` + ``fsdp2_load_full_state_dict``
   (what verl's FSDP engine does), forward/backward on each rank's own batch; the gathered
   gradients must equal an unsharded replica's gradients of the mean loss.

Each rank writes ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process_group_phase(report: dict) -> None:
    import inspect

    import torch
    import torch.distributed as dist
    import verl.utils.distributed as verl_distributed

    rank = int(os.environ["RANK"])
    # (That verl's unwrapped initialiser fails on CPU is checked in a 1-rank test: a failed
    # attempt here would leave a half-done TCPStore rendezvous behind.)
    original = inspect.unwrap(verl_distributed.initialize_global_process_group_ray)
    report["fix_installed"] = verl_distributed.initialize_global_process_group_ray is not original

    verl_distributed.initialize_global_process_group_ray(timeout_second=60)
    report["backend"] = str(dist.get_backend_config())
    report["world_size"] = dist.get_world_size()

    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    report["all_reduce_sum"] = value.item()


def _fsdp2_phase(report: dict) -> None:
    import copy

    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from transformers import LlamaConfig, LlamaForCausalLM
    from verl.utils.device import get_device_id, get_device_name
    from verl.utils.fsdp_utils import apply_fsdp2, fsdp2_clip_grad_norm_, fsdp2_load_full_state_dict

    rank, world = dist.get_rank(), dist.get_world_size()
    report["device_id"] = get_device_id()
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    replica = copy.deepcopy(model)  # unsharded reference, identical on every rank
    full_state = model.state_dict()

    mesh = init_device_mesh(get_device_name(), (world,), mesh_dim_names=("fsdp",))
    mp_policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, cast_forward_inputs=True)
    fsdp_kwargs = {"mesh": mesh, "mp_policy": mp_policy, "offload_policy": None, "reshard_after_forward": True}
    apply_fsdp2(model, fsdp_kwargs, {})
    fsdp2_load_full_state_dict(model, full_state, mesh, None)

    def batch(r: int) -> torch.Tensor:
        return torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(100 + r))

    ids = batch(rank)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grad_norm = fsdp2_clip_grad_norm_(model.parameters(), max_norm=1e9)
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm

    # FSDP2 averages gradients over data-parallel ranks: the reference is the mean loss.
    ref_loss = sum(replica(input_ids=batch(r), labels=batch(r)).loss for r in range(world)) / world
    ref_loss.backward()
    ref_grads = dict(replica.named_parameters())
    max_diff, compared = 0.0, 0
    for name, param in model.named_parameters():
        grad = param.grad.full_tensor()
        max_diff = max(max_diff, (grad - ref_grads[name].grad).abs().max().item())
        compared += 1
    ref_norm = torch.norm(torch.stack([p.grad.norm() for p in replica.parameters()]))

    # Control: this rank's batch alone gives different gradients, so equality above means the
    # ranks really averaged their gradients through gloo.
    alone = copy.deepcopy(replica)
    alone.zero_grad()
    alone(input_ids=ids, labels=ids).loss.backward()
    own_batch_diff = max(
        (param.grad.full_tensor() - dict(alone.named_parameters())[name].grad).abs().max().item()
        for name, param in model.named_parameters()
    )
    report.update(
        loss=loss.item(),
        compared_params=compared,
        max_grad_diff=max_diff,
        own_batch_grad_diff=own_batch_diff,
        grad_norm=grad_norm.item(),
        ref_grad_norm=ref_norm.item(),
        sharded=all(type(p).__name__ == "DTensor" for p in model.parameters()),
    )


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report: dict = {"rank": rank}
    try:
        import torch

        torch.set_num_threads(1)
        import verl  # noqa: F401 - loads the verl.plugins entry points (rpo_verl.plugin)
        from verl.plugin.platform import get_platform

        report["platform"] = type(get_platform()).__name__
        _process_group_phase(report)
        _fsdp2_phase(report)
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    except Exception:
        report["error"] = traceback.format_exc()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as out:
        json.dump(report, out)


def main(out_dir: str, world: int = 2) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(world, _free_port(), out_dir), nprocs=world, join=True)


if __name__ == "__main__":
    main(sys.argv[1])
