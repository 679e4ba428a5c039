"""``HFReplica``: verl's ``RolloutReplica`` for the HF backend (``actor_rollout_ref.rollout.name=hf``).

One replica = one ``HFRolloutServer`` Ray actor on the node of the replica's (single) worker.
Its name is what ``HFServerAdapter`` looks up to push weights.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutReplica

from rpo_verl.rollout.hf.options import check_rollout_config
from rpo_verl.rollout.hf.server import HFRolloutServer

SERVER_NAME_PREFIX = "hf_"
# OpenMP threads that sleep instead of spinning: with spinning (the default) torch with 2 threads
# ran 5x slower than with 1 on a shared 2-core machine, and an idle server's spinning threads would
# take CPU from the trainer between rollouts. Must be set before the process starts.
SERVER_ENV_VARS = {"OMP_WAIT_POLICY": "PASSIVE"}


def server_actor_name(replica_rank: int, kind: str = "", name_suffix: str = "") -> str:
    """Ray actor name of a replica's server, like vLLM's ``vllm_server_<replica>_<node>``."""
    kind = f"{kind}_" if kind else ""
    return f"{SERVER_NAME_PREFIX}server_{kind}{replica_rank}_0{name_suffix}"


class HFReplica(RolloutReplica):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Fail in the driver, naming the setting, before any actor starts.
        check_rollout_config(self.config)
        self.server_class = ray.remote(HFRolloutServer)

    async def launch_servers(self):
        if not self.workers:
            raise RuntimeError("HFReplica.launch_servers: the replica has no workers to place its server next to")
        node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        kind = "reward" if self.is_reward_model else "teacher" if self.is_teacher_model else ""
        name = server_actor_name(self.replica_rank, kind, self.name_suffix)
        server = self.server_class.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            name=name,
            max_concurrency=self.max_concurrency,
            runtime_env={"env_vars": SERVER_ENV_VARS},
        ).remote(
            config=self.config,
            model_config=self.model_config,
            rollout_mode=self.rollout_mode,
            replica_rank=self.replica_rank,
            name=name,
        )
        self.servers = [server]
        self._server_handle = server
        # Also waits for the model to load, so a bad model path fails here.
        self._server_address = await server.get_server_address.remote()
