"""verl's real FSDP2 engine on the CPU platform inside R2VPOTrainingWorker (run as a script).

Usage: ``VERL_PLATFORM=cpu python r2vpo_fsdp_worker_run.py MODEL_DIR OUT_DIR``. One rank (world size 1):
builds the actor exactly as ``ActorRolloutRefWorker.init_model`` does (Hydra config ->
``omega_conf_to_dataclass`` -> ``TrainingWorkerConfig`` -> ``actor_worker_cls``), feeds
``train_mini_batch`` the no-padding TensorDict verl's trainer sends, saves the actor checkpoint,
trains on, then builds a second worker, loads the checkpoint and trains the same batches; last,
verl's stock TrainingWorker (no hooks) trains the first batches again (λ stepped from the loss).
Writes ``OUT_DIR/result.json``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import traceback


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(model_path: str):
    from hydra import compose, initialize_config_module

    overrides = [
        "preset=cpu",
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.actor.policy_loss._target_=rpo_verl.r2vpo.config.R2VPOPolicyLossConfig",
        "actor_rollout_ref.actor.policy_loss.loss_mode=r2vpo",
        "actor_rollout_ref.actor.policy_loss.r2vpo.delta=1e-4",
        "actor_rollout_ref.actor.policy_loss.r2vpo.eta=0.5",
        # No ceiling: the hooks are checked by λ rising on every step (V̂ ≫ δ would pin it at λ_max).
        "actor_rollout_ref.actor.policy_loss.r2vpo.lambda_max=null",
    ]
    with initialize_config_module(config_module="rpo_verl.config", version_base=None):
        return compose("rpo_trainer", overrides=overrides)


def _build_actor(cfg, hooked: bool = True):
    """The actor half of ActorRolloutRefWorker.init_model, with R2VPOActorRolloutRefWorker's class
    (``hooked``) or verl's stock ``TrainingWorker`` (λ then steps from the loss: auto mode)."""
    from functools import partial

    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import TrainingWorkerConfig
    from verl.workers.utils.losses import ppo_loss

    from rpo_verl.r2vpo.worker import R2VPOActorRolloutRefWorker

    model_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    actor_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    actor_config.model_config = model_config
    training_config = TrainingWorkerConfig(
        model_type="language_model",
        model_config=model_config,
        engine_config=actor_config.engine,
        optimizer_config=actor_config.optim,
        checkpoint_config=actor_config.checkpoint,
    )
    training_config.engine_config.use_dynamic_bsz = False
    training_config.engine_config.micro_batch_size_per_gpu = cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu
    training_config.engine_config.infer_micro_batch_size_per_gpu = 2
    from verl.workers.engine_workers import TrainingWorker

    worker_cls = R2VPOActorRolloutRefWorker.actor_worker_cls if hooked else TrainingWorker
    worker = worker_cls(config=training_config)
    worker.reset()
    worker.set_loss_fn(partial(ppo_loss, config=actor_config))
    return worker


def _batch(step: int, vocab: int, sample_vocab: int = 1000):
    """4 responses (2 groups of n=2), left-padded prompts, right-padded responses, stale-ish
    behaviour log-probs (noise) so that r ≠ 1 and V̂ > δ from the first step."""
    import torch
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    g = torch.Generator().manual_seed(step)
    bsz, plen, rlen = 4, 5, 6
    prompt_lens = torch.tensor([5, 3, 4, 5])
    resp_lens = torch.tensor([6, 4, 2, 5])
    prompts = torch.randint(5, sample_vocab, (bsz, plen), generator=g)
    responses = torch.randint(5, sample_vocab, (bsz, rlen), generator=g)
    prompt_mask = (torch.arange(plen).unsqueeze(0) >= (plen - prompt_lens).unsqueeze(1)).long()
    response_mask = (torch.arange(rlen).unsqueeze(0) < resp_lens.unsqueeze(1)).long()
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    # A random model is close to uniform: behaviour log-probs ≈ −log V plus noise.
    old = (-math.log(vocab) + 0.3 * torch.randn(bsz, rlen, generator=g)) * response_mask
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0]).unsqueeze(-1).expand(bsz, rlen) * response_mask
    td = TensorDict(
        {
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "prompts": prompts,
            "responses": responses,
            "response_mask": response_mask,
            "old_log_probs": old,
            "advantages": adv.contiguous(),
            "r2vpo_stale": torch.tensor([0.0, 0.0, 1.0, 1.0]),
        },
        batch_size=[bsz],
    )
    td = left_right_2_no_padding(td)
    tu.assign_non_tensor(
        td,
        calculate_entropy=False,
        global_batch_size=4,
        mini_batch_size=4,
        epochs=1,
        seed=1,
        dataloader_kwargs={"shuffle": False},
        compute_loss=True,
        temperature=1.0,
    )
    return td


def main(model_path: str, out_dir: str) -> None:
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    report: dict = {}
    try:
        import torch

        torch.manual_seed(0)
        import verl  # noqa: F401 - plugin: CPU platform, r2vpo loss

        from rpo_verl.r2vpo import dual as dual_mod

        cfg = _config(model_path)
        ctl = dual_mod.get_dual()
        worker = _build_actor(cfg)
        vocab = worker.model_config.hf_config.vocab_size
        report["hooked"] = ctl.hooked
        lams, metrics = [], []

        def train(w, step):
            from verl.utils import tensordict_utils as tu
            from verl.utils.metric import reduce_metrics

            out = reduce_metrics(tu.get(w.train_mini_batch(_batch(step, vocab)), "metrics"))
            metrics.append({k: float(v) for k, v in out.items() if k.startswith("r2vpo/") or k == "grad_norm"})
            return dual_mod.get_dual().value

        for step in range(2):
            lams.append(train(worker, step))
        folder = os.path.join(out_dir, "global_step_2", "actor")
        worker.save_checkpoint(folder, None, 2, None)
        report["dual_file"] = os.path.exists(os.path.join(folder, dual_mod.CHECKPOINT_FILE))
        for step in (2, 3):
            lams.append(train(worker, step))
        report["lambda_full"] = lams
        report["steps_full"] = ctl.steps

        resumed = dual_mod.reset_dual()
        worker2 = _build_actor(cfg)
        worker2.load_checkpoint(folder, None, del_local_after_load=False)
        report["lambda_restored"] = resumed.value
        report["lambda_resumed"] = [train(worker2, step) for step in (2, 3)]
        report["metrics"] = metrics

        # verl's stock worker: the loss steps λ itself once the mini-batch's tokens are all seen.
        auto = dual_mod.reset_dual()
        worker3 = _build_actor(cfg, hooked=False)
        report["auto_hooked"] = auto.hooked
        report["lambda_auto"] = [train(worker3, step) for step in (0, 1)]
        report["steps_auto"] = auto.steps
    except Exception:  # noqa: BLE001 - the test fails with the traceback
        report["error"] = traceback.format_exc()
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
