"""The test cluster itself: both nodes idle, a two-node batch job with one GPU GRES per node runs a
step on each node and is reported COMPLETED, the way the end-to-end tests rely on."""

import re

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]


def test_two_node_job_runs_a_step_per_node(slurm_cluster, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text(
        "#!/bin/bash\n"
        'echo "list=$SLURM_JOB_NODELIST gpus=$SLURM_GPUS_ON_NODE"\n'
        'srun --nodes=2 --ntasks=2 --ntasks-per-node=1 bash -c \'echo "step on $SLURMD_NODENAME"\'\n'
    )
    out = slurm_cluster.conf.run("sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1",
                                 f"--output={tmp_path}/hello-%j.out", str(script))
    job = out.stdout.strip().split(";")[0]
    info = slurm_cluster.wait_job(job, 120)
    log = (tmp_path / f"hello-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert "list=node[1-2] gpus=1" in log
    assert sorted(re.findall(r"step on (node\d)", log)) == ["node1", "node2"]
    assert slurm_cluster.jobcomp(job)["JobState"] == "COMPLETED"
