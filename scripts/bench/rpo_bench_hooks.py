"""Benchmark-only measurement hooks for ``scripts/bench/rpo_vs_full.py`` (not part of rpo_verl).

Imported by verl in every process of a benchmark run through ``VERL_USE_EXTERNAL_MODULES`` (with
this folder on ``PYTHONPATH``); identical in every arm, so the comparison stays fair:

* verl's v1 ``ReplayBuffer`` polls TransferQueue every 2 s (not configurable), which would round
  each step's rollout phase (``timing_s/gen``) up to 2 s steps; the hook sets the poll interval to
  ``RPO_BENCH_POLL_S`` (default 0.05 s);
* groups the replay buffer drops before training (DAPO ``filter_groups``, surplus) never reach
  ``eff/gen_tokens``; with ``RPO_BENCH_DROPPED_FILE`` set, each drop appends a JSON line
  ``{"step", "samples", "tokens"}`` (``response_mask`` sum: generated tokens) to that file.
"""

from __future__ import annotations

import json
import os
import sys

from rpo_verl.rpo.registration import _AfterImport

_MODULE = "verl.trainer.ppo.v1.replay_buffer"


def _patch(module) -> None:
    cls = module.ReplayBuffer
    if getattr(cls, "_rpo_bench_patched", False):
        return
    init, sample, clear = cls.__init__, cls.sample, cls._clear_groups

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.poll_interval = float(os.environ.get("RPO_BENCH_POLL_S", "0.05"))

    def sample_(self, global_steps, partition_id, batch_size):
        self._rpo_bench_step = global_steps
        return sample(self, global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)

    def _clear_groups(self, partition_id, uids):
        path = os.environ.get("RPO_BENCH_DROPPED_FILE")
        if path and partition_id == "train" and uids:
            import transfer_queue as tq

            keys = [k for k in self.partitions[partition_id] if k.split("_")[0] in uids]
            if keys:
                mask = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["response_mask"])
                mask = mask["response_mask"]
                rows = mask.unbind() if getattr(mask, "is_nested", False) else list(mask)
                record = {"step": getattr(self, "_rpo_bench_step", None), "samples": len(keys),
                          "tokens": int(sum(int(r.sum()) for r in rows))}
                with open(path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
        return clear(self, partition_id, uids)

    cls.__init__, cls.sample, cls._clear_groups = __init__, sample_, _clear_groups
    cls._rpo_bench_patched = True


if _MODULE in sys.modules:
    _patch(sys.modules[_MODULE])
else:
    sys.meta_path.insert(0, _AfterImport(_MODULE, _patch))
