"""Multi-node shape without more machines: Slurm's own `scontrol show hostnames` (the real one, with
the test cluster's configuration) expands synthetic node lists, and the job script turns them into
one Ray head and one Ray worker per other node. `srun`, `ray` and `hostname` are the fakes of
tests/scripts/fakes (they log their argv and act "on" the node srun -w names); `scontrol` is real.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "scripts" / "slurm" / "rpo_verl.sbatch"
LIB = ROOT / "scripts" / "slurm" / "ray_cluster.sh"
FAKES = ROOT / "tests" / "scripts" / "fakes"

LISTS = {
    "gpu[001-004,007]": ["gpu001", "gpu002", "gpu003", "gpu004", "gpu007"],
    "node[1-3]": ["node1", "node2", "node3"],
    "a[1-2],b3,gpu-x[08-10]": ["a1", "a2", "b3", "gpu-x08", "gpu-x09", "gpu-x10"],
    "dgx-h100-17": ["dgx-h100-17"],
    "r[1-2]n[01-02]": ["r1n01", "r1n02", "r2n01", "r2n02"],
}


def _nodes(slurm_conf, nodelist: str) -> subprocess.CompletedProcess:
    script = f'source "{LIB}"; slurm_nodes "$1"; echo "count ${{#NODES[@]}}"; printf "node %s\\n" "${{NODES[@]}}"'
    return subprocess.run(["bash", "-c", script, "_", nodelist], env=slurm_conf.env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("nodelist", list(LISTS))
def test_node_list_expands_to_one_element_per_node(slurm_conf, nodelist):
    out = _nodes(slurm_conf, nodelist)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"count {len(LISTS[nodelist])}"
    assert [line[5:] for line in lines[1:]] == LISTS[nodelist]


def test_scontrol_failure_is_reported(slurm_conf):
    # A configuration scontrol rejects (a missing one would first try a DNS SRV lookup for a minute).
    broken = slurm_conf.dir / "broken.conf"
    broken.write_text("NodeName=x\n")
    env = dict(slurm_conf.env, SLURM_CONF=str(broken))
    script = f'source "{LIB}"; slurm_nodes "gpu[1-2]"'
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "scontrol show hostnames gpu[1-2]" in out.stderr and "failed" in out.stderr


def _run_job_script(slurm_conf, tmp_path: Path, nodelist: str, gpus: int, **extra):
    """rpo_verl.sbatch on ``nodelist`` with fake srun/ray/hostname and the real scontrol."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("srun", "ray", "hostname"):
        shutil.copy(FAKES / name, bin_dir / name)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    calls = tmp_path / "calls.log"
    calls.touch()
    recipe = tmp_path / "recipe.sh"
    recipe.write_text('#!/usr/bin/env bash\nprintf "arg %s\\n" "$@" > "$RECIPE_LOG"\n'
                      'echo "env $RAY_ADDRESS ${FAKE_HOST:-batch-step}" >> "$RECIPE_LOG"\n')
    env = dict(
        slurm_conf.env,
        PATH=f"{bin_dir}:{slurm_conf.env['PATH']}",
        FAKE_LOG=str(calls), FAKE_STATE=str(state), FAKE_NODES=" ".join(LISTS[nodelist]),
        RECIPE=str(recipe), RECIPE_LOG=str(tmp_path / "recipe.log"), RPO_VERL_ROOT=str(ROOT),
        SLURM_JOB_NODELIST=nodelist, SLURM_JOB_ID="77", SLURM_GPUS_ON_NODE=str(gpus),
        RAY_WAIT_INTERVAL="0.1", RAY_WAIT_TIMEOUT="20", **extra,
    )
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr
    recipe_log = (tmp_path / "recipe.log").read_text().splitlines()
    return calls.read_text().splitlines(), recipe_log, res.stderr, list(state.iterdir())


def test_head_and_worker_commands_for_gpu_001_004_007(slurm_conf, tmp_path):
    calls, recipe, stderr, left = _run_job_script(slurm_conf, tmp_path, "gpu[001-004,007]", 8, RAY_PORT="6390")
    starts = [c for c in calls if c.startswith("ray start")]
    heads = [c for c in starts if "--head" in c]
    workers = [c for c in starts if "--head" not in c]
    # The head on the first node of the list, advertising that node's IPv4 address (the fake
    # hostname lists an IPv6 address first).
    assert len(heads) == 1 and heads[0].endswith(" @gpu001"), heads
    assert "--node-ip-address=10.0.0.1" in heads[0] and "--port=6390" in heads[0] and "--num-gpus=8" in heads[0]
    # One worker on each other node, every one pointed at the head.
    assert sorted(w.rsplit(" @", 1)[1] for w in workers) == ["gpu002", "gpu003", "gpu004", "gpu007"]
    assert all("--address=10.0.0.1:6390" in w and "--num-gpus=8" in w and "--block" in w for w in workers)
    # Every `ray start` ran through `srun -w <that node>`.
    for node in LISTS["gpu[001-004,007]"]:
        assert any(c.startswith("srun ") and f"-w {node} " in c and " ray start " in c for c in calls), node
    assert "waiting up to 20s for 5 node(s) with 40 GPU(s)" in stderr
    assert "Ray cluster ready: 5 node(s), 40 GPU(s)" in stderr
    assert recipe[:3] == ["arg trainer.nnodes=5", "arg trainer.n_gpus_per_node=8", "arg trainer.resume_mode=auto"]
    # The recipe runs in the batch step (Slurm's first node, the head), not in an srun step, and is
    # attached to the head.
    assert recipe[-1] == "env 10.0.0.1:6390 batch-step"
    assert not [c for c in calls if c.startswith("srun ") and "recipe.sh" in c]
    assert left == []  # every fake Ray process was stopped when the job script ended


def test_mixed_prefix_list_keeps_slurm_order(slurm_conf, tmp_path):
    calls, recipe, _, _ = _run_job_script(slurm_conf, tmp_path, "a[1-2],b3,gpu-x[08-10]", 2)
    starts = [c.rsplit(" @", 1)[1] for c in calls if c.startswith("ray start")]
    assert starts[0] == "a1" and sorted(starts[1:]) == ["a2", "b3", "gpu-x08", "gpu-x09", "gpu-x10"]
    assert "arg trainer.nnodes=6" in recipe and "arg trainer.n_gpus_per_node=2" in recipe

