"""A real Slurm for the tests in this folder: Debian's slurmctld + slurmd + munge on this machine.

``slurm_conf`` installs the packages if they are missing (apt-get, as root; CI runs as root) and
writes a throw-away slurm.conf, gres.conf and munge key under a temporary directory: two nodes
``node1`` and ``node2``, both this machine (two slurmd processes, Debian's build allows multiple
slurmd), each with this machine's CPUs and one GPU. The GPU is a GRES backed by /dev/null, so that
``sbatch --gpus-per-node=1`` (what scripts/slurm/submit.sh sends) is accepted on a CPU machine; the
CPU recipe trains on one *logical* Ray GPU per trainer process anyway.

``slurm_cluster`` starts munged, ``slurmctld -D`` and one ``slurmd -D -N nodeX`` per node in the
background, waits until ``sinfo`` shows every node idle, and at the end cancels the jobs left in its
queue and stops exactly the processes it started (by PID). Nothing else on the machine is touched:
the daemons listen on free ports, keep their state, spool, logs and munge socket in the temporary
directory, and the client commands find them through ``SLURM_CONF`` (in ``cluster.env``).

Where Slurm cannot be had (not root and not installed, no apt, no network) the tests are skipped
with the reason, unless ``RPO_VERL_REQUIRE_SLURM=1``, which turns that skip into a failure.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
COMMANDS = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel"]
NODES = ("node1", "node2")
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"


def _which(cmd: str) -> str | None:
    return shutil.which(cmd) or shutil.which(cmd, path=SBIN)


def _unavailable(reason: str):
    if os.environ.get("RPO_VERL_REQUIRE_SLURM") == "1":
        pytest.fail(f"RPO_VERL_REQUIRE_SLURM=1 but no Slurm: {reason}")
    pytest.skip(reason)


def _install() -> str | None:
    """Install the Slurm packages if a command is missing; returns why not, or None when ready."""
    missing = [c for c in COMMANDS if _which(c) is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed (no {', '.join(missing)}) and installing it needs root"
    if shutil.which("apt-get") is None:
        return f"Slurm is not installed (no {', '.join(missing)}) and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *PACKAGES]
    out = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:  # package lists missing or stale: update once, then retry
        subprocess.run(["apt-get", "update", "-o", "DPkg::Lock::Timeout=300"], env=env, capture_output=True,
                       text=True, timeout=900)
        out = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return f"`{' '.join(install)}` failed (no network?): {(out.stdout + out.stderr)[-1500:]}"
    missing = [c for c in COMMANDS if _which(c) is None]
    return f"installed {PACKAGES} but still missing {missing}" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_memory_mb() -> int:
    """Memory per node: what `slurmd -C` measures (a node configured with more is drained)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60)
    for word in out.stdout.split():
        if word.startswith("RealMemory="):
            return int(word.split("=", 1)[1])
    return 1024


@dataclass
class SlurmConf:
    dir: Path
    conf: Path
    env: dict = field(default_factory=dict)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` exited {out.returncode}: {out.stdout}{out.stderr}")
        return out


def write_conf(root: Path) -> SlurmConf:
    """slurm.conf, gres.conf and munge key for a two-node cluster on this machine, all under ``root``."""
    for sub in ("state", *(f"spool/{n}" for n in NODES)):
        (root / sub).mkdir(parents=True)
    root.chmod(0o711)  # munged insists that clients can reach its socket
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory = _real_memory_mb()
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs={cpus} "
        f"RealMemory={memory} Gres=gpu:1 State=UNKNOWN" for n in NODES
    )
    conf = root / "slurm.conf"
    conf.write_text(f"""# Throw-away test cluster (tests/slurm/conftest.py)
ClusterName=rpotest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job becomes eligible cred_expire + 1 s after the requeue (default 120).
AuthInfo=socket={root}/munge.socket,cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=10
GresTypes=gpu
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    # A GPU GRES needs a device file (22.05 drops file-less GPUs); /dev/null stands in for it.
    (root / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    env["PATH"] = f"{env.get('PATH', '')}:{SBIN}"
    return SlurmConf(root, conf, env)


@pytest.fixture(scope="session")
def slurm_conf():
    """Slurm installed and a throw-away configuration written (no daemons: `scontrol show
    hostnames` needs only the configuration)."""
    reason = _install()
    if reason:
        _unavailable(reason)
    root = Path(tempfile.mkdtemp(prefix="rpo_slurm_"))
    yield write_conf(root)
    shutil.rmtree(root, ignore_errors=True)


class SlurmCluster:
    """The daemons of a :class:`SlurmConf`, started by this object and stopped by it (by PID)."""

    def __init__(self, conf: SlurmConf):
        self.conf, self.dir, self.env = conf, conf.dir, conf.env
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def _start(self, name: str, *cmd: str) -> None:
        log = open(self.dir / f"{name}.out", "w")
        proc = subprocess.Popen([_which(cmd[0]), *cmd[1:]], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append((name, proc))

    def logs(self, limit: int = 3000) -> str:
        parts = []
        for path in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(parts)

    def start(self, timeout: float = 90) -> None:
        d = self.dir
        self._start("munged", "munged", "--foreground", "--force", f"--key-file={d}/munge.key",
                    f"--socket={d}/munge.socket", f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                    f"--seed-file={d}/munged.seed")
        self._wait(lambda: (d / "munge.socket").exists(), 20, "munged did not create its socket")
        self._start("slurmctld", "slurmctld", "-D", "-f", str(self.conf.conf))
        for node in NODES:
            self._start(f"slurmd-{node}", "slurmd", "-D", "-N", node, "-f", str(self.conf.conf))
        self._wait(self._all_idle, timeout, f"the nodes {NODES} did not become idle in sinfo")

    def _all_idle(self) -> bool:
        out = self.conf.run("sinfo", "-h", "-N", "-o", "%N %t", check=False, timeout=20)
        states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
        return all(states.get(n) == "idle" for n in NODES)

    def _wait(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [(n, p.returncode) for n, p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"Slurm test cluster: {dead} exited while waiting ({what}).\n{self.logs()}")
            if predicate():
                return
            time.sleep(0.5)
        sinfo = self.conf.run("sinfo", "-N", "-l", check=False).stdout
        raise RuntimeError(f"Slurm test cluster: {what} within {timeout:.0f} s.\n{sinfo}\n{self.logs()}")

    def stop(self) -> None:
        """Cancel this cluster's jobs (Slurm stops their processes), then stop our daemons by PID."""
        if any(n == "slurmctld" and p.poll() is None for n, p in self.procs):
            self.conf.run("scancel", "--user=root", check=False)
            end = time.monotonic() + 60
            while time.monotonic() < end and self.conf.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(1)
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()

    # ------------------------------------------------------------------ job helpers

    def job(self, job_id: str) -> dict:
        """`scontrol show job -o` as a dict (JobState, ExitCode, StdOut, Restarts, ...)."""
        out = self.conf.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(word.split("=", 1) for word in out.split() if "=" in word)

    def wait_job(self, job_id: str, timeout: float, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                            "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                                                            "DEADLINE", "PREEMPTED")) -> dict:
        end = time.monotonic() + timeout
        info = {}
        while time.monotonic() < end:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(2)
        log = Path(info.get("StdOut", "/nonexistent"))
        tail = log.read_text(errors="replace")[-6000:] if log.is_file() else "(no job log)"
        self.conf.run("scancel", job_id, check=False)
        raise AssertionError(f"job {job_id} not in {states} within {timeout:.0f} s: {info}\n{tail}")

    def jobcomp(self, job_id: str) -> dict:
        """The job's last line in the jobcomp/filetxt file (what Slurm records once a job ends)."""
        lines = [line for line in (self.dir / "jobcomp.txt").read_text().splitlines()
                 if line.startswith(f"JobId={job_id} ")]
        assert lines, f"job {job_id} not in {self.dir / 'jobcomp.txt'}"
        return dict(word.split("=", 1) for word in lines[-1].split() if "=" in word)


@pytest.fixture(scope="session")
def slurm_cluster(slurm_conf):
    cluster = SlurmCluster(slurm_conf)
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()
