"""Fail fast, end to end on CPU: a fault in a Ray worker ends ``python -m rpo_verl.main`` within
30 s, non-zero, with a short message naming the component, the cause, the input and the logs.

Each test injects one fault into a short run of the tiny model (each run a subprocess in its own
session, killed after a hard timeout): (a) a reward function that raises on one prompt, (b) rows
without ground truth (refused before Ray; and, with the data check skipped, failing in the reward
worker), (c) the rollout server's process killed after step 1, (d) the RPO cache actor killed
without restart. The time measured runs from the fault (the first line of its error in the
output, or the kill) to the process's exit.
"""

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

FAULT_TO_EXIT_S = 30
TIMEOUT_S = 420
RAISE_ON_PROMPT_1 = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if extra_info["index"] == 1:
        raise ValueError(f"cannot grade prompt 1 of {data_source}")
    return 0.5
'''


def _args(model, train, val, run_dir, *extra):
    return [
        "preset=cpu", f"actor_rollout_ref.model.path={model}", f"data.train_files={train}", f"data.val_files={val}",
        "data.train_batch_size=2", "data.max_prompt_length=64", "data.max_response_length=16",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "trainer.save_freq=-1", "trainer.test_freq=-1", "trainer.val_before_train=false",
        f"trainer.default_local_dir={run_dir}", *extra,
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory, add_prompts, tiny_model_path):
    folder = tmp_path_factory.mktemp("failures")
    train2 = add_prompts(folder / "train2.parquet", 2, split="train")
    train = add_prompts(folder / "train.parquet", 8, split="train")
    val = add_prompts(folder / "val.parquet", 2, seed=5)
    no_truth = folder / "no_truth.parquet"
    pd.read_parquet(train).drop(columns=["reward_model"]).to_parquet(no_truth)
    raising = folder / "raising_reward.py"
    raising.write_text(RAISE_ON_PROMPT_1)
    return {"model": tiny_model_path, "train2": train2, "train": train, "val": val, "no_truth": str(no_truth),
            "raising": str(raising), "dir": folder}


def _run_until_failure(rpo_main, args, log_path, fault_mark=None, kill=None):
    """Run; the fault time is when ``fault_mark`` first shows in the output, or when ``kill()``
    (called every poll) returns True. Returns (result, seconds from the fault to the exit)."""
    fault = {}

    def on_poll(pid):
        if "at" in fault:
            return
        if kill is not None and kill(pid):
            fault["at"] = time.monotonic()
        elif fault_mark is not None and fault_mark in Path(log_path).read_text(errors="replace"):
            fault["at"] = time.monotonic()

    result = rpo_main(args, TIMEOUT_S, log_path=log_path, on_poll=on_poll)
    assert "at" in fault, f"the fault never happened:\n{result.stdout[-4000:]}"
    return result, result.ended_at - fault["at"]


def _assert_report(result, seconds, component, cause, item=None):
    out = result.stdout
    assert result.returncode == 1, out[-4000:]
    assert seconds <= FAULT_TO_EXIT_S, f"{seconds:.0f} s from the fault to the exit"
    tail = out[out.rindex("rpo_verl: the run stopped"):].splitlines()
    assert tail[0] == f"rpo_verl: the run stopped: the {component} failed.", out[-3000:]
    assert tail[1].startswith(f"  cause: {cause}"), tail
    if item:
        assert tail[2] == f"  input: {item}", tail
    log_line = next(line for line in tail if line.startswith("  full log: "))
    failure_log = Path(log_line.removeprefix("  full log: ").split("; ")[0])
    assert failure_log.name == "failure.log" and cause in failure_log.read_text()
    assert len(tail) <= 4  # the report is the last thing printed
    print(f"\n[{component}] fault to exit: {seconds:.1f} s")


def test_a_reward_function_that_raises_stops_the_run(files, rpo_main):
    run_dir = files["dir"] / "a"
    result, seconds = _run_until_failure(
        rpo_main, _args(files["model"], files["train2"], files["val"], run_dir,
                        f"reward.custom_reward_function.path={files['raising']}", "trainer.total_training_steps=1"),
        files["dir"] / "a.log", fault_mark="ValueError: cannot grade prompt 1")
    _assert_report(result, seconds, "reward worker", "ValueError: cannot grade prompt 1 of rpo_verl_test/add",
                   "prompt index 1, data_source rpo_verl_test/add, training step 1")


def test_rows_without_ground_truth(files, rpo_main):
    args = _args(files["model"], files["no_truth"], files["val"], files["dir"] / "b", "trainer.total_training_steps=1")
    refused = rpo_main(args, 240, log_path=files["dir"] / "b0.log")
    assert refused.returncode == 2 and "reward_model" in refused.stdout and "ray init kwargs" not in refused.stdout
    # past the start-up check, the reward worker's KeyError ends the run
    result, seconds = _run_until_failure(rpo_main, [*args, "rpo_verl.skip_checks=[data]"], files["dir"] / "b.log",
                                         fault_mark="KeyError: 'reward_model'")
    _assert_report(result, seconds, "reward worker", "KeyError: 'reward_model'")


def _killer(session_pids, title, after_file):
    def kill(pid):
        if not Path(after_file).exists() or not Path(after_file).read_text().strip():
            return False
        victims = session_pids(pid, title)
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        return bool(victims)
    return kill


def test_a_dead_rollout_server_stops_the_run(files, rpo_main, session_pids, dense_reward):
    run_dir = files["dir"] / "c"
    result, seconds = _run_until_failure(
        rpo_main, _args(files["model"], files["train"], files["val"], run_dir, "trainer.total_training_steps=3",
                        f"reward.custom_reward_function.path={dense_reward}"),
        files["dir"] / "c.log", kill=_killer(session_pids, "ray::HFRolloutServer", run_dir / "metrics.jsonl"))
    _assert_report(result, seconds, "rollout server (hf)", "ActorDiedError")


def test_a_dead_cache_actor_stops_the_run(files, rpo_main, dense_reward):
    run_dir = files["dir"] / "d"
    args = _args(files["model"], files["train"], files["val"], run_dir, "trainer.total_training_steps=3",
                 f"reward.custom_reward_function.path={dense_reward}", "rpo_verl.rpo.enable=true",
                 "rpo_verl.rpo.cache.init=lazy", "rpo_verl.rpo.cache.max_restarts=0")
    log_path = files["dir"] / "d.log"
    # rpo_verl/rpo/trainer_ext.py's test hook kills the cache actor at the start of step 2
    result = None
    fault = {}

    def on_poll(pid):
        if "at" not in fault and "fault injection (RPO_VERL_FAULT_KILL_CACHE_AT_STEP)" in log_path.read_text():
            fault["at"] = time.monotonic()

    result = rpo_main(args, TIMEOUT_S, log_path=log_path, env={"RPO_VERL_FAULT_KILL_CACHE_AT_STEP": "2"},
                      on_poll=on_poll)
    assert "at" in fault, result.stdout[-4000:]
    _assert_report(result, result.ended_at - fault["at"], "RPO cache service", "ActorDiedError")
