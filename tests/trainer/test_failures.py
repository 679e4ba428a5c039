"""rpo_verl.trainer.failures: a Ray error chain described as component, one-line cause and input."""

from ray.exceptions import RayActorError, RayTaskError

from rpo_verl.trainer.failures import FailureReport, component_names, describe, item_description, one_line

DIED = """The actor died unexpectedly before finishing this task.
\tclass_name: CacheServiceActor
\tactor_id: 1234abcd
\tpid: 4242
\tname: rpo_verl_cache_service
\tnamespace: abc
\tip: 10.0.0.1
The actor is dead because its worker process has died. Worker exit type: UNEXPECTED_SYSTEM_EXIT"""


def test_innermost_task_error_names_the_component_and_cause():
    reward = RayTaskError("RewardLoopWorker.compute_score", "Traceback ...\nValueError: boom", ValueError("boom\nmore"),
                          pid=77)
    runner = RayTaskError("RpoVerlTaskRunner.run", "Traceback (runner)", reward)
    report = describe(runner)
    assert report.component == "reward worker"
    assert report.cause == "ValueError: boom"
    assert report.pid == 77


def test_dead_actor_is_named_from_its_class_with_the_reason():
    died = RayActorError(error_msg=DIED)
    report = describe(RayTaskError("RpoVerlTaskRunner.run", "tb", died), item="prompt index 1")
    assert report.component == "RPO cache service"  # FeatureSpec.components of rpo
    assert report.cause.startswith("RayActorError: The actor is dead because its worker process has died")
    assert report.pid == 4242 and report.item == "prompt index 1"


def test_trainer_error_names_the_feature_whose_code_raised():
    tb = ('Traceback:\n  File "/x/verl/trainer/ppo/v1/trainer_base.py", line 1, in fit\n'
          '  File "/x/rpo_verl/trainer/trainer.py", line 2, in on_step_end\n'
          '  File "/x/rpo_verl/dps/trainer_ext.py", line 3, in on_step_end\nKeyError: 5')
    report = describe(RayTaskError("RpoVerlTaskRunner.run", tb, KeyError(5)))
    assert report.component == "trainer (rpo_verl.dps)"
    assert report.cause == "KeyError: 5"
    plain = describe(RuntimeError("x"), default_component="agent loop")
    assert plain.component == "agent loop" and plain.cause == "RuntimeError: x"


def test_every_feature_component_is_listed():
    names = component_names()
    assert names["DPSScheduler"] == "DPS scheduler" and names["HFRolloutServer"].startswith("rollout server")


def test_item_and_message():
    item = item_description({"index": 3, "data_source": "openai/gsm8k", "extra_info": {"index": 9}},
                            {"step": 2, "validate": False})
    assert item == "prompt index 3, data_source openai/gsm8k, training step 2"
    assert item_description({"extra_info": {"index": 9}}, {"step": 0, "validate": True}) == \
        "prompt index 9, validation step 0"
    message = FailureReport("reward worker", "ValueError: boom", item).message(["/run/failure.log"])
    assert message.splitlines() == ["rpo_verl: the run stopped: the reward worker failed.", "  cause: ValueError: boom",
                                    f"  input: {item}", "  full log: /run/failure.log"]
    assert one_line("\n\n  first  \nsecond") == "first" and len(one_line("x" * 1000)) == 300
