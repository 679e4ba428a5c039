"""End to end through a real Slurm: scripts/slurm/submit.sh submits recipes/quickstart_cpu.sh (the
tiny random model, 2-3 steps) to the two-node test cluster of conftest.py. On two nodes the job
script starts a Ray head with `srun -w node1` and a Ray worker with `srun -w node2`, and runs verl's
real trainer on them (trainer.nnodes=2, one logical GPU per node); the failing and the requeued job
use one node.

Checked as a user would: `scontrol show job` (JobState, ExitCode, StdOut, Restarts) and the
jobcomp/filetxt record Slurm writes when a job ends (sacct needs slurmdbd, not installed here), the
job's log file, metrics.jsonl and the checkpoint folder. A requeue is triggered the way the time
limit does it (`scancel --batch --signal=USR1`, what `--signal=B:USR1@<s>` sends): the job script
requeues itself and the next run resumes from the checkpoint.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpo_verl.trainer.metrics_file import read_records

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "scripts" / "slurm" / "submit.sh"
RECIPE = "recipes/quickstart_cpu.sh"
JOB_TIMEOUT = 720  # one tiny run: Ray start + verl start-up (about 1-2 min on 2 cores) + steps

TINY = [
    "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2",
    "data.max_prompt_length=64", "data.max_response_length=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "data.val_max_samples=4", "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=1",
    # 2 rows per trainer rank: the quick start recomputes old log-probs (bypass off), and verl needs a
    # rank's rows divisible by its micro-batch (the preset's 8).
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
]


class Submitter:
    def __init__(self, cluster, model, train, val, base: Path):
        self.cluster, self.model, self.train, self.val, self.base = cluster, model, train, val, base

    def ray_dir(self, name: str) -> Path:
        return self.cluster.dir / f"ray-{name}"  # short: Ray's socket paths must stay < 108 characters

    def submit(self, name: str, *overrides: str, nnodes: int = 2, **env) -> tuple[str, Path, Path]:
        """Submit the CPU recipe as job ``name`` on ``nnodes`` nodes; returns (job id, CKPT_DIR, LOG_DIR)."""
        ckpt, logs = self.base / name / "ckpt", self.base / name / "logs"
        ray_args = (f"--num-cpus=16 --temp-dir={self.ray_dir(name)} --object-store-memory=300000000 "
                    "--disable-usage-stats")
        full_env = dict(
            self.cluster.env,
            PATH=f"{Path(sys.executable).parent}:{self.cluster.env['PATH']}",
            PYTHON=sys.executable,
            RECIPE=RECIPE, NNODES=str(nnodes), GPUS_PER_NODE="1", JOB_NAME=name, CKPT_DIR=str(ckpt), LOG_DIR=str(logs),
            RPO_VERL_MODEL=self.model, RPO_VERL_TRAIN=self.train, RPO_VERL_VAL=self.val, RPO_VERL_RUN=str(ckpt),
            # A port and temp dir of its own: other Ray clusters on the machine are left alone.
            RAY_PORT=str(_free_port()), RAY_START_ARGS=ray_args, RAY_WAIT_INTERVAL="2", RAY_WAIT_TIMEOUT="180",
            RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1",
            **{k: str(v) for k, v in env.items()},
        )
        full_env.pop("RAY_ADDRESS", None)
        out = subprocess.run(["bash", str(SUBMIT), *overrides], env=full_env, cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        match = re.search(r"Submitted batch job (\d+)", out.stdout)
        assert match, out.stdout
        return match.group(1), ckpt, logs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(info: dict) -> str:
    return Path(info["StdOut"]).read_text(errors="replace")


def _steps(path: Path) -> list[int]:
    return sorted(step for step, m in read_records([str(path)]) if "training/global_step" in m)


def _leftover_processes(marker: str) -> list[str]:
    """Processes whose command line mentions ``marker`` (the job's Ray temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(f"{entry.name}: {cmd[:200]}")
    return found


@pytest.fixture(scope="module")
def submitter(slurm_cluster, tiny_model_path, add_prompts, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_jobs")
    train = add_prompts(base / "train.parquet", 16)
    val = add_prompts(base / "val.parquet", 4, seed=5)
    return Submitter(slurm_cluster, tiny_model_path, train, val, base)


def test_failing_job_shows_exit_code_and_log_location(submitter, slurm_cluster):
    job, _, logs = submitter.submit("failing", "trainer.total_training_steps=1", "rpo_verl.no_such_key=1", *TINY,
                                    nnodes=1)
    info = slurm_cluster.wait_job(job, JOB_TIMEOUT)
    assert info["JobState"] == "FAILED", info
    assert info["ExitCode"] != "0:0" and info["ExitCode"].endswith(":0"), info  # the recipe's exit code
    assert info["StdOut"] == str(logs / f"failing-{job}.out")  # where submit.sh said the log would be
    log = _log(info)
    assert "rpo_verl.no_such_key" in log, log[-4000:]  # the error names the key
    assert f"recipe finished with exit code {info['ExitCode'].split(':')[0]}" in log
    record = slurm_cluster.jobcomp(job)
    assert record["JobState"] == "FAILED" and record["ExitCode"] == info["ExitCode"]
    assert _leftover_processes(str(submitter.ray_dir("failing"))) == []


@pytest.fixture(scope="module")
def completed(submitter, slurm_cluster):
    job, ckpt, _ = submitter.submit("tiny", "trainer.total_training_steps=2", *TINY)
    t0 = time.monotonic()
    info = slurm_cluster.wait_job(job, JOB_TIMEOUT)
    return {"job": job, "info": info, "ckpt": ckpt, "log": _log(info), "wall_s": time.monotonic() - t0}


def test_job_completes(completed, slurm_cluster):
    info = completed["info"]
    assert info["JobState"] == "COMPLETED", completed["log"][-6000:]
    assert info["ExitCode"] == "0:0" and info["Restarts"] == "0"
    assert info["NodeList"] == "node[1-2]"
    assert slurm_cluster.jobcomp(completed["job"])["JobState"] == "COMPLETED"
    assert "recipe finished with exit code 0" in completed["log"]


def test_ray_head_on_first_node_and_worker_joined(completed):
    log = completed["log"]
    assert re.search(r"2 node\(s\) \[node1 node2\] x 1 GPU\(s\); head node1 at [0-9.]+:\d+", log), log[-4000:]
    assert "waiting up to 180s for 2 node(s) with 2 GPU(s)" in log
    assert "Ray cluster ready: 2 node(s), 2 GPU(s)" in log  # the real `ray status` saw the worker
    assert log.count("Ray runtime started") == 2  # `ray start` on node1 (head) and node2 (worker)
    assert "running recipes/quickstart_cpu.sh on node1: trainer.nnodes=2 trainer.n_gpus_per_node=1" in log


def test_metrics_and_checkpoint_written(completed, submitter):
    ckpt = completed["ckpt"]
    assert _steps(ckpt / "metrics.jsonl") == [1, 2]
    assert (ckpt / "global_step_2" / "actor").is_dir()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (ckpt / "summary.json").is_file()  # the recipe's closing summary ran on the same folder
    # Ray was stopped with the job: nothing is left running from its temp dir.
    assert _leftover_processes(str(submitter.ray_dir("tiny"))) == []


def test_time_limit_signal_requeues_and_resumes_from_checkpoint(submitter, slurm_cluster):
    # One node (one trainer process): the multi-node start-up is test_job_completes's; this is the
    # requeue, and half the processes keep it inside a shared 2-core machine's memory.
    job, ckpt, _ = submitter.submit("requeue", "trainer.total_training_steps=3", *TINY, nnodes=1)
    latest = ckpt / "latest_checkpointed_iteration.txt"
    end = time.monotonic() + JOB_TIMEOUT
    first_metrics = ckpt / "metrics.jsonl"
    # Wait for the first checkpoint (step 1) and its metrics line: verl's fit() saves a step's
    # checkpoint before it logs the step's metrics, so a signal in between would requeue correctly
    # but leave the first run's file without step 1.
    while not (latest.exists() and first_metrics.exists() and 1 in _steps(first_metrics)):
        state = slurm_cluster.job(job)
        assert state["JobState"] in ("PENDING", "RUNNING"), state
        assert time.monotonic() < end, "no checkpoint within the job timeout"
        time.sleep(1)
    # What Slurm sends REQUEUE_GRACE_S before the time limit (--signal=B:USR1@<s>).
    slurm_cluster.conf.run("scancel", "--batch", "--signal=USR1", job)
    info = slurm_cluster.wait_job(job, 2 * JOB_TIMEOUT, states=("COMPLETED", "FAILED", "CANCELLED"))
    log = _log(info)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-6000:]
    assert info["Restarts"] == "1", info
    assert f"requeueing job {job} (restart 1 of at most 20)" in log
    assert f"job {job} (restart 1)" in log  # the same job id started again, appending to its log
    match = re.search(r"resumed from .*?the next training step is (\d+)", log)
    assert match, log[-6000:]
    next_step = int(match.group(1))
    assert next_step >= 2  # resumed from a checkpoint, not started over
    # The first run's metrics were kept (metrics.1.jsonl); the resumed run logged from next_step on.
    assert _steps(ckpt / "metrics.jsonl") == list(range(next_step, 4))
    assert _steps(ckpt / "metrics.1.jsonl")[0] == 1
    assert latest.read_text().strip() == "3"
    assert _leftover_processes(str(submitter.ray_dir("requeue"))) == []
