"""verl's TransferQueue agent-loop manager and worker, with every failed agent loop reported.

verl's ``AgentLoopWorkerTQ._run_prompt`` catches the error of any of a prompt's agent loops (the
agent loop itself, the rollout server it calls, the reward worker that scores it), logs it and
marks the prompt group "failure"; the trainer never learns the cause. ``FailFastAgentLoopWorker``
overrides only ``_run_agent_loop`` to file the error, with the prompt it was working on, through
``rpo_verl.trainer.failure_watch.report`` before verl handles it as before; the driver then ends the
run. ``FailFastAgentLoopManager`` is verl's ``AgentLoopManagerTQ`` starting that worker; the task
runner uses it unless ``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` names another.
"""

from __future__ import annotations

import ray
import transfer_queue as tq
from verl.experimental.agent_loop import AgentLoopWorker
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from rpo_verl.trainer.failure_watch import report
from rpo_verl.trainer.failures import describe, item_description


class FailFastAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    def __init__(self, *args, **kwargs):
        # verl's AgentLoopWorkerTQ.__init__, spelled out (tests/trainer/test_agent_loop.py checks it is
        # unchanged): its zero-argument super() fails in a subclass, because Ray ships the
        # ray.remote-decorated base to the worker by value, a copy that its super() cell does not name.
        AgentLoopWorker.__init__(self, *args, **kwargs)
        tq.init()
        self.background_tasks = set()

    async def _run_agent_loop(self, sampling_params, trajectory, *, agent_name, trace=True, **kwargs):
        try:
            return await super()._run_agent_loop(sampling_params, trajectory, agent_name=agent_name, trace=trace,
                                                 **kwargs)
        except Exception as exc:
            report(describe(exc, default_component="agent loop", item=item_description(kwargs, trajectory)))
            raise


class FailFastAgentLoopManager(AgentLoopManagerTQ):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = ray.remote(FailFastAgentLoopWorker)
