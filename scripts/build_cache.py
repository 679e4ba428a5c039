#!/usr/bin/env python
"""Offline RPO experience cache: one full response per training prompt from the initial policy.

  python scripts/build_cache.py --out CACHE.npz [options] -- <the training run's Hydra overrides>

  e.g. python scripts/build_cache.py --out runs/arith_cache.npz -- preset=cpu \\
         actor_rollout_ref.model.path=~/.cache/rpo_verl/models/smollm2-135m-instruct \\
         data.train_files=~/.cache/rpo_verl/data/arith/train.parquet \\
         data.val_files=~/.cache/rpo_verl/data/arith/val.parquet data.max_response_length=48 \\
         reward.custom_reward_function.path=pkg://rpo_verl.reward.score

  then train with  rpo_verl.rpo.enable=true rpo_verl.rpo.cache.init=offline rpo_verl.rpo.cache.path=CACHE.npz

The overrides compose the same config as ``python -m rpo_verl.main`` (so the same model, data,
prompt template, response length and rollout backend: ``hf`` on CPU, vLLM on GPU). verl's rollout
replicas start standalone (``LLMServerManager``, weights from the model path), prompts go through
verl's default agent loop (``rollout.agent.default_agent_loop``: the training prompt tokens) and
``LLMServerClient``; responses are scored with the run's reward function (``reward.*``).

Sampling follows the RPO paper (temperature 0.9, top-p 0.9, up to ``data.max_response_length``
tokens); each prompt has its own seed (``--seed``, ``extra_info.index``), so a prompt's response
does not depend on batching or on interruptions.

Resumable: finished responses go to ``CACHE.npz.parts/`` in atomic parts of ``--part-size``
prompts; a rerun with the same settings skips them (no prompt generated into the cache twice,
none lost), a rerun with other settings stops with the difference. The final cache file is written
(atomically) once every prompt is done; the parts folder is kept unless ``--clean``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="cache file to write (.npz)")
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-tokens", type=int, default=None, help="default: data.max_response_length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part-size", type=int, default=64, help="prompts per atomically written part")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--limit", type=int, default=None, help="only the first N training prompts (tests, trials)")
    parser.add_argument("--no-score", action="store_true", help="do not run the reward function (reward 0)")
    parser.add_argument("--clean", action="store_true", help="delete the parts folder after the final write")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the training run (after --)")
    return parser.parse_args(argv)


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module("rpo_verl.config", version_base=None):
        return compose("rpo_trainer", overrides=list(overrides))


class Builder:
    """Holds the rollout servers, the agent loop and the reward manager of one build."""

    def __init__(self, config, args):
        from omegaconf import open_dict
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        self.config, self.args = config, args
        model: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        self.tokenizer, self.processor = model.tokenizer, model.processor
        hf_type = getattr(model.hf_config, "model_type", None)
        self.hf_model_type = hf_type if isinstance(hf_type, str) else None
        self.max_tokens = int(args.max_tokens or config.data.max_response_length)
        with open_dict(config):  # standalone replicas: weights from the model path, own resources
            config.actor_rollout_ref.rollout.nnodes = int(config.trainer.nnodes)
            config.actor_rollout_ref.rollout.n_gpus_per_node = int(config.trainer.n_gpus_per_node)

    def start(self) -> None:
        from verl.workers.rollout.llm_server import LLMServerManager

        start = time.monotonic()
        self.manager = LLMServerManager.create(config=self.config, worker_group=None)
        self.client = self.manager.get_client()
        print(f"[build_cache] rollout servers up in {time.monotonic() - start:.0f} s: {self.manager.get_addresses()}")

    def _agent_loop(self):
        import hydra
        from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
        from verl.utils.dataset.rl_dataset import get_dataset_class

        name = self.config.actor_rollout_ref.rollout.agent.default_agent_loop
        return hydra.utils.instantiate(
            config=_agent_loop_registry[name],
            trainer_config=DictConfigWrap(config=self.config),
            server_manager=self.client,
            tokenizer=self.tokenizer,
            processor=self.processor,
            hf_model_type=self.hf_model_type,
            dataset_cls=get_dataset_class(self.config.data),
            data_config=DictConfigWrap(self.config.data),
            tools=ToolListWrap([]),
        )

    async def _score(self, manager, row: dict, out) -> tuple[float, int]:
        import torch
        from tensordict import TensorDict
        from verl import DataProto

        if manager is None:
            return 0.0, 0
        prompts, responses = torch.tensor(out.prompt_ids), torch.tensor(out.response_ids)
        input_ids = torch.cat([prompts, responses])
        non_tensor = {k: np.array([v], dtype=object) for k, v in row.items() if k not in ("dummy_tensor", "raw_prompt")}
        non_tensor["__num_turns__"] = np.array([out.num_turns])
        data = DataProto(
            batch=TensorDict({"prompts": prompts[None], "responses": responses[None], "input_ids": input_ids[None],
                              "attention_mask": torch.ones_like(input_ids)[None]}, batch_size=1),
            non_tensor_batch=non_tensor,
        )
        result = await manager.run_single(data)
        acc = (result.get("reward_extra_info") or {}).get("acc")
        reward = float(result["reward_score"])
        correct = float(acc) > 0.5 if acc is not None else reward > 0
        return reward, int(correct)

    async def generate(self, rows: list[dict], parts, progress) -> int:
        from verl.trainer.ppo.reward import load_reward_manager

        from rpo_verl.rpo.step_rows import derive_seed

        loop = self._agent_loop()
        manager = None if self.args.no_score else load_reward_manager(self.config, self.tokenizer)
        sem = asyncio.Semaphore(self.args.concurrency)
        done: list[tuple] = []
        written = 0

        def flush():
            nonlocal done, written
            if done:
                ids, seqs, rewards, correct = zip(*done)
                parts.write(ids, seqs, rewards, correct)
                written += len(done)
                done = []

        async def one(row):
            params = {"temperature": self.args.temperature, "top_p": self.args.top_p, "top_k": -1,
                      "repetition_penalty": 1.0, "logprobs": False, "max_tokens": self.max_tokens,
                      "seed": derive_seed(self.args.seed, int(row["index"]), bits=31)}
            async with sem:
                out = await loop.run(params, **row)
            reward, correct = await self._score(manager, row, out)
            return int(row["index"]), np.asarray(out.response_ids, dtype=np.int32), reward, correct

        for task in asyncio.as_completed([one(row) for row in rows]):
            done.append(await task)
            progress.update(1)
            if len(done) >= self.args.part_size:
                flush()
        flush()
        return written

    def stop(self) -> None:
        import ray

        ray.shutdown()


def main(argv=None) -> int:
    args = parse_args(argv)
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from rpo_verl.config.checks import StartupCheckError
    from rpo_verl.rpo.cache_file import tokenizer_fingerprint
    from rpo_verl.rpo.cache_parts import PartsDir, parts_dir_for
    from rpo_verl.rpo.step_rows import dataset_prompt_ids, id_range_of
    from rpo_verl.trainer.launch import prepare

    config = compose_config(args.overrides)
    try:
        prepare(config)  # paths, environment (CPU platform), the trainer's start-up checks
    except StartupCheckError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    OmegaConf.resolve(config)
    builder = Builder(config, args)

    from verl.trainer.ppo.utils import create_rl_dataset

    dataset = create_rl_dataset(config.data.train_files, config.data, builder.tokenizer, builder.processor,
                                is_train=True, max_samples=config.data.get("train_max_samples", -1))
    ids = dataset_prompt_ids(dataset.dataframe["extra_info"])
    id_range = id_range_of(ids)
    fingerprint = tokenizer_fingerprint(builder.tokenizer)
    out = os.path.abspath(os.path.expanduser(args.out))
    settings = {
        "tokenizer": fingerprint, "temperature": args.temperature, "top_p": args.top_p,
        "max_tokens": builder.max_tokens, "seed": args.seed, "no_score": args.no_score,
        "model": os.path.basename(str(config.actor_rollout_ref.model.path).rstrip("/")),
        "train_files": [os.path.basename(str(f)) for f in config.data.train_files],
        "id_range": list(id_range),
    }
    parts = PartsDir(parts_dir_for(out), settings)
    wanted = np.arange(len(ids)) if args.limit is None else np.arange(min(args.limit, len(ids)))
    done = set(parts.done_ids().tolist())
    todo = [int(i) for i in wanted if int(ids[i]) not in done]
    print(f"[build_cache] {len(wanted)} prompts, {len(wanted) - len(todo)} already done in {parts.path}, "
          f"{len(todo)} to generate (temperature {args.temperature}, top-p {args.top_p}, "
          f"max {builder.max_tokens} tokens, backend {config.actor_rollout_ref.rollout.name})")
    if todo:
        import ray

        from rpo_verl.trainer.runtime import ray_init_kwargs

        ray.init(**ray_init_kwargs(config))
        try:
            builder.start()
            rows = [dataset[i] for i in todo]
            with tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc="build_cache", unit="prompt") as bar:
                asyncio.run(builder.generate(rows, parts, bar))
        finally:
            builder.stop()
    path, n = parts.merge(out, id_range, fingerprint)
    print(f"[build_cache] wrote {path}: {n} responses. Train with rpo_verl.rpo.enable=true "
          f"rpo_verl.rpo.cache.init=offline rpo_verl.rpo.cache.path={path}")
    if args.clean:
        import shutil

        shutil.rmtree(parts.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
