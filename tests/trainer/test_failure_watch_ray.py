"""Fail fast with a real (local) Ray: error chains as Ray builds them, and the watchdog that ends a
run as soon as a worker files a failure."""

import os
import signal
import sys
import time

import pytest
import ray
from ray import cloudpickle

from rpo_verl.trainer import failure_watch
from rpo_verl.trainer.failures import FailureReport, describe


@pytest.fixture(scope="module")
def local_ray():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class RewardLoopWorker:  # named like verl's reward worker: the component table keys on class names
    def compute_score(self):
        raise NotImplementedError("Reward function is not implemented for data_source=foo")


class CacheServiceActor:
    def ping(self):
        return True


class Caller:
    def __init__(self, callee):
        self.callee = callee

    def call(self):
        return ray.get(self.callee.compute_score.remote())


def test_nested_task_error_names_the_innermost_actor(local_ray):
    reward = ray.remote(RewardLoopWorker).remote()
    caller = ray.remote(Caller).remote(reward)
    with pytest.raises(Exception) as info:
        ray.get(caller.call.remote())
    report = describe(info.value)
    assert report.component == "reward worker"
    assert report.cause == "NotImplementedError: Reward function is not implemented for data_source=foo"
    assert report.pid and report.pid != ray.get(caller.__ray_call__.remote(lambda self: __import__("os").getpid()))


def test_killed_actor_is_named_from_its_class(local_ray):
    cache = ray.remote(CacheServiceActor).options(max_restarts=0).remote()
    assert ray.get(cache.ping.remote())
    os.kill(ray.get(cache.__ray_call__.remote(lambda self: os.getpid())), signal.SIGKILL)
    with pytest.raises(ray.exceptions.RayActorError) as info:
        ray.get(cache.ping.remote())
    report = describe(info.value)
    assert report.component == "RPO cache service"
    assert report.cause.startswith(("ActorDiedError: ", "RayActorError: "))


class SlowRunner:
    def run(self):
        time.sleep(120)
        return "finished"


def test_a_filed_failure_ends_the_run_within_seconds(local_ray):
    runner = failure_watch.WatchedRunner(ray.remote(SlowRunner)).options(num_cpus=0).remote()
    ref = runner.run.remote()

    @ray.remote
    def failing_worker():
        failure_watch.report(FailureReport("reward worker", "ValueError: boom", "prompt index 3"))

    start = time.monotonic()
    ray.get(failing_worker.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(ref, timeout=30)
    assert time.monotonic() - start < 10
    filed = failure_watch.filed_failures()
    assert [(f.component, f.cause, f.item) for f in filed] == [("reward worker", "ValueError: boom", "prompt index 3")]
    chosen = failure_watch.choose_failure(RuntimeError("Sync replay buffer selected ... no trajectories"), filed)
    assert chosen.cause == "ValueError: boom" and "Sync replay buffer" in chosen.details
