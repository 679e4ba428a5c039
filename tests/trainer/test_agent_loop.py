"""rpo_verl.trainer.agent_loop: verl's TQ agent-loop worker with failed agent loops reported."""

import inspect
import textwrap

from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

from rpo_verl.trainer.agent_loop import FailFastAgentLoopManager, FailFastAgentLoopWorker


def test_worker_init_is_verls_spelled_out():
    """FailFastAgentLoopWorker.__init__ repeats verl's (Ray cannot run its zero-argument super() in a
    subclass): if verl's changes, this fails and the copy must follow."""
    verl_init = textwrap.dedent(inspect.getsource(AgentLoopWorkerTQ.__ray_actor_class__.__init__))
    assert verl_init.splitlines()[1:] == ["    super().__init__(*args, **kwargs)", "    tq.init()",
                                          "    self.background_tasks = set()"]
    assert FailFastAgentLoopWorker.__mro__[1] is AgentLoopWorkerTQ.__ray_actor_class__
    assert FailFastAgentLoopManager.__mro__[1].__name__ == "AgentLoopManagerTQ"
