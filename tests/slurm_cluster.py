"""A real one-node Slurm cluster for the tests: Debian's slurmctld, slurmd and munge on this machine.

``slurm_cluster`` (session-scoped) needs root and apt-get, as on CI. It installs the packages when missing
(``apt-get update`` only if the install fails without it), writes a slurm.conf with this host as the only node
(partition ``debug``, proctrack/linuxproc, task/none, no accounting) under ``CLUSTER_DIR``, starts munged,
slurmctld and slurmd unless they already run, and at the end stops only the daemons it started. Elsewhere the
tests that use it skip with a one-line reason.

Its ``env`` points Slurm's commands at that slurm.conf. The cluster has no accounting database, so ``sacct``
fails and submitit would warn on each poll of a job's state (it reads the state from the job's result file
instead): the environment sets ``SUBMITIT_LOG_LEVEL=ERROR`` for that.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
CLUSTER_DIR = Path("/tmp/normexp-slurm")
MUNGE_PID = Path("/run/munge/munged.pid")


@dataclass
class SlurmCluster:
    conf: Path
    env: dict = field(default_factory=dict)  # for the commands that talk to the cluster
    install_seconds: float = 0.0
    started: list = field(default_factory=list)  # pid files of the daemons this session started


def unavailable() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux"
    if not shutil.which("apt-get") and not all(map(_installed, PACKAGES)):
        return "needs apt-get to install " + " ".join(PACKAGES)
    return None


def _installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return out.returncode == 0 and "install ok installed" in out.stdout


def install() -> float:
    """Install the missing packages; return the seconds it took (0 when none was missing)."""
    missing = [p for p in PACKAGES if not _installed(p)]
    if not missing:
        return 0.0
    t0 = time.perf_counter()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "-q", *missing]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(command, env=env, capture_output=True, check=True)
    return time.perf_counter() - t0


def write_conf(directory: Path) -> Path:
    for sub in ("state", "spool"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    conf = directory / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=normexp-test",
        f"SlurmctldHost={socket.gethostname().split('.')[0]}",
        "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU_Memory",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "ReturnToService=2", "SchedulerParameters=sched_interval=1",
        f"StateSaveLocation={directory}/state", f"SlurmdSpoolDir={directory}/spool",
        f"SlurmctldPidFile={directory}/slurmctld.pid", f"SlurmdPidFile={directory}/slurmd.pid",
        f"SlurmctldLogFile={directory}/slurmctld.log", f"SlurmdLogFile={directory}/slurmd.log",
        node, "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    return conf


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0  # a zombie is not running
    except (OSError, ValueError, IndexError):
        return False


def _start(pid_file: Path, command: list[str], started: list) -> None:
    if _alive(pid_file):
        return
    subprocess.run(command, check=True, capture_output=True)  # each daemon forks itself into the background
    started.append(pid_file)


def _wait_until_idle(env: dict, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        state = out.stdout.strip()
        if state in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the test Slurm node did not come up (state {state!r}); see {CLUSTER_DIR}/*.log")


def start() -> SlurmCluster:
    cluster = SlurmCluster(conf=CLUSTER_DIR / "slurm.conf", install_seconds=install())
    conf = write_conf(CLUSTER_DIR)
    cluster.env = {"SLURM_CONF": str(conf), "SUBMITIT_LOG_LEVEL": "ERROR"}
    env = {**os.environ, **cluster.env}
    MUNGE_PID.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_PID.parent, "munge", "munge")
    try:
        _start(MUNGE_PID, ["runuser", "-u", "munge", "--", "munged"], cluster.started)
        _start(CLUSTER_DIR / "slurmctld.pid", ["slurmctld", "-c", "-f", str(conf)], cluster.started)
        _start(CLUSTER_DIR / "slurmd.pid", ["slurmd", "-f", str(conf)], cluster.started)
        _wait_until_idle(env)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def stop(cluster: SlurmCluster) -> None:
    for pid_file in reversed(cluster.started):
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass
    cluster.started.clear()


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = unavailable()
    if reason:
        pytest.skip(f"no test Slurm cluster: {reason}")
    cluster = start()
    yield cluster
    stop(cluster)
