"""rpo_verl's Ray task runner: verl's ``TaskRunnerV1.run`` (verl/trainer/main_ppo.py) with
``RpoVerlTrainer`` in place of the trainer looked up from ``trainer.v1.trainer_mode``.

It runs as one Ray actor (what ``verl.trainer.main_ppo.run_ppo`` expects) and is where verl's
controller-side objects live: TransferQueue, the trainer, the agent-loop manager.
"""

from __future__ import annotations

import os

import ray
from omegaconf import DictConfig, OmegaConf


@ray.remote
class RpoVerlTaskRunner:
    """Mirror of ``verl.trainer.main_ppo.TaskRunnerV1`` launching ``RpoVerlTrainer``."""

    def __init__(self):
        self.config = None
        self.trainer = None
        self.agent_loop_manager = None

    def init_agent_loop_manager(self):
        """As verl's: ``AgentLoopManagerTQ`` (fail-fast variant) unless ``rollout.agent.agent_loop_manager_class`` names one."""
        from verl.utils.import_utils import load_class_from_fqn

        # verl's AgentLoopManagerTQ, reporting failed agent loops (rpo_verl/trainer/agent_loop.py)
        from rpo_verl.trainer.agent_loop import FailFastAgentLoopManager as AgentLoopManagerTQ

        manager_class_fqn = self.config.actor_rollout_ref.rollout.get("agent", {}).get("agent_loop_manager_class")
        if manager_class_fqn:
            agent_loop_manager_cls = load_class_from_fqn(manager_class_fqn, "AgentLoopManager")
        else:
            agent_loop_manager_cls = AgentLoopManagerTQ

        self.agent_loop_manager = agent_loop_manager_cls.create(
            config=self.config,
            llm_client=self.trainer.get_llm_client(),
            teacher_client=self.trainer.get_teacher_client(),
            reward_loop_worker_handles=self.trainer.get_reward_handles(),
        )

    def run(self, config: DictConfig):
        from verl.utils.logging_utils import configure_verl_logging

        configure_verl_logging()
        import transfer_queue as tq

        from rpo_verl.trainer.runtime import assert_plugin_loaded, prepare_metrics_file, save_resolved_config
        from rpo_verl.trainer.trainer import RpoVerlTrainer

        assert_plugin_loaded(config)
        config.transfer_queue.enable = True
        OmegaConf.resolve(config)
        self.config = config
        metrics_file = prepare_metrics_file(config)
        os.environ["VERL_FILE_LOGGER_PATH"] = metrics_file
        save_resolved_config(config)

        tq.init(config.transfer_queue)
        succeeded = False
        try:
            self.trainer = RpoVerlTrainer(config=config)
            self.trainer.init()
            self.init_agent_loop_manager()
            self.trainer.fit(self.agent_loop_manager)
            succeeded = True
        finally:
            try:
                tracking = getattr(self.trainer, "logger", None)
                if tracking is not None:
                    tracking.finish(exit_code=0 if succeeded else 1)
            finally:
                tq.close()
        return {"metrics_file": metrics_file, "global_steps": getattr(self.trainer, "global_steps", 0)}
