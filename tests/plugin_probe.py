"""Run as a script (or its ``probe()`` in a Ray worker): import verl the way verl's own processes
do, then report which rpo_verl registrations verl's registries actually hold.

Deliberately imports nothing from rpo_verl before ``import verl``: the names must arrive through
verl's ``verl.plugins`` entry-point loading.
"""

import json
import sys


def is_registered(kind: str, name: str) -> bool:
    if kind == "adv_estimator":
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

        return name in ADV_ESTIMATOR_REGISTRY
    if kind == "policy_loss":
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

        return name in POLICY_LOSS_REGISTRY
    if kind == "platform":
        from verl.plugin.platform.platform_manager import PlatformRegistry

        return PlatformRegistry.get(name) is not None
    if kind == "engine":  # "model_type:backend:device"
        from verl.workers.engine.base import EngineRegistry

        model_type, backend, device = name.split(":")
        return device in EngineRegistry._engines.get(model_type, {}).get(backend, {})
    if kind == "rollout":  # "name:mode"
        from verl.workers.rollout.base import _ROLLOUT_REGISTRY

        return tuple(name.split(":")) in _ROLLOUT_REGISTRY
    if kind == "rollout_replica":
        from verl.workers.rollout.replica import RolloutReplicaRegistry

        return name in RolloutReplicaRegistry._registry
    if kind == "agent_loop":
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

        return name in _agent_loop_registry
    if kind == "reward_manager":
        from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

        return name in REWARD_MANAGER
    raise ValueError(f"unknown registry kind {kind!r}")


def probe() -> dict:
    import verl  # noqa: F401 - loads the verl.plugins entry points, as in every verl process

    report = {"loaded_by_verl": "rpo_verl.plugin" in sys.modules, "failed": {}, "expected": {}, "missing": []}
    if not report["loaded_by_verl"]:
        return report
    plugin = sys.modules["rpo_verl.plugin"]
    report["failed"] = dict(plugin.FAILED)
    report["expected"] = plugin.expected_registrations()
    report["missing"] = [
        f"{kind}:{name}" for kind, names in report["expected"].items() for name in names if not is_registered(kind, name)
    ]
    return report


if __name__ == "__main__":
    print(json.dumps(probe()))
