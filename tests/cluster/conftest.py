"""A real SLURM cluster on this machine: munged, slurmctld and two slurmd daemons (nodes n1 and
n2), configured in a temporary folder and stopped at the end of the session.

Needs root (the daemons switch users and run jobs); installs the Debian packages when missing.
Both nodes run on this host: n1 and n2 resolve to 127.0.0.1 (added to /etc/hosts for the
session) and each slurmd has its own port, spool folder, pid file and /dev/shm."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from common import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo", "unshare"]
NODES = ("n1", "n2")
HOSTS_LINE = "127.0.0.1 n1 n2  # backpack-dist test cluster\n"
SBIN = "/usr/sbin:/sbin"


def which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + os.pathsep + SBIN)


def install_packages() -> str | None:
    """None when every program is there (installing them if needed), else why not."""
    return apt_install(PACKAGES, lambda: [p for p in PROGRAMS if which(p) is None])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


SLURM_CONF = """\
ClusterName=backpacktest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobRequeue=1
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
KillWait=30
MinJobAge=3600
InactiveLimit=0
NodeName=n1 NodeHostname={host} NodeAddr=127.0.0.1 Port={port_n1} CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname={host} NodeAddr=127.0.0.1 Port={port_n2} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "") + ":" + SBIN}
        self.daemons: list[tuple[str, subprocess.Popen]] = []

    # -- daemons ------------------------------------------------------------------------------
    def start(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)
        shutil.chown(munge, "munge", "munge")
        for sub in ("state", "log", "spool/n1", "spool/n2"):
            (self.root / sub).mkdir(parents=True)
        self._run_as_munge(["mungekey", "--create", "--keyfile", str(munge / "munge.key")])
        self._daemon("munged", ["munged", "--foreground", f"--socket={munge}/munge.socket",
                                f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
                                f"--seed-file={munge}/munged.seed", f"--log-file={munge}/munged.log"], user="munge")
        self._wait(lambda: (munge / "munge.socket").exists(), 20, "munged to create its socket", munge / "munged.log")
        self.conf.write_text(SLURM_CONF.format(host=socket.gethostname(), root=self.root, ctld_port=free_port(),
                                               port_n1=free_port(), port_n2=free_port()))
        self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, 30,
                   "slurmctld to answer", self.root / "log" / "slurmctld.log")
        for node in NODES:
            # Each node gets its own /dev/shm, as separate machines have: mosaicml-streaming
            # coordinates the processes of one machine there.
            self._daemon(f"slurmd {node}", [
                "unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o mode=1777,size=2g tmpfs /dev/shm && exec "$@"', "sh",
                "slurmd", "-D", "-N", node, "-f", str(self.conf)])
        self._wait(self._nodes_idle, 60, "n1 and n2 to be idle", self.root / "log" / "slurmctld.log")

    def _run_as_munge(self, cmd):
        result = subprocess.run(cmd, user="munge", group="munge", capture_output=True, text=True, timeout=30,
                                env=self.env)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")

    def _daemon(self, name: str, cmd: list[str], user: str | None = None) -> None:
        log = open(self.root / "log" / f"{name.replace(' ', '.')}.out", "w")
        kwargs = {"user": user, "group": user} if user else {}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                                **kwargs)
        self.daemons.append((name, proc))

    def _wait(self, predicate, timeout: float, what: str, log: Path) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, proc in self.daemons:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                       f"{tail(self.root / 'log' / (name.replace(' ', '.') + '.out'))}\n{tail(log)}")
            if predicate():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{tail(log)}")

    def _nodes_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout.split()
        states = dict(zip(out[::2], out[1::2], strict=False))
        return all(states.get(n) == "idle" for n in NODES)

    def stop(self) -> None:
        """Cancel every job, wait for them to end, then stop the daemons (TERM, then KILL)."""
        if any(proc.poll() is None for name, proc in self.daemons if name == "slurmctld"):
            self.run(["scancel", "--user", "root"], check=False)
            deadline = time.time() + 60
            while time.time() < deadline and self.run(["squeue", "-h"], check=False).stdout.strip():
                time.sleep(1)
        for _, proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.daemons):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- using the cluster ------------------------------------------------------------------------
    def run(self, cmd: list[str], check: bool = True, env: dict | None = None, cwd=None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def sbatch(self, script, *flags: str, env: dict, cwd) -> int:
        out = self.run(["sbatch", "--parsable", *flags, str(script)], env=env, cwd=cwd).stdout.strip()
        return int(out.split(";")[0])

    def job(self, job_id: int) -> dict:
        """scontrol's fields of one job (JobState, Restarts, ExitCode, StdOut, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", out))

    def describe(self, job_id: int) -> str:
        """What to print when a test about this job fails: its state, its output and the daemons' logs."""
        try:
            info = self.job(job_id)
        except AssertionError as e:
            return str(e)
        parts = [f"job {job_id}: " + " ".join(f"{k}={info.get(k)}" for k in
                                               ("JobState", "Reason", "Restarts", "ExitCode", "NodeList"))]
        if info.get("StdOut"):
            parts.append(f"--- {info['StdOut']} ---\n{tail(Path(info['StdOut']), 60)}")
        parts.append(f"--- slurmctld.log ---\n{tail(self.root / 'log' / 'slurmctld.log', 15)}")
        return "\n".join(parts)

    def wait_for(self, job_id: int, predicate, timeout: float, what: str) -> dict:
        """Poll the job until predicate(fields) holds; fail with the job's output after `timeout` s."""
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if predicate(info):
                return info
            if time.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.describe(job_id)}")
            time.sleep(1)

    def wait_done(self, job_id: int, timeout: float = 240) -> dict:
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
        info = self.wait_for(job_id, lambda j: j["JobState"] in final, timeout, f"job {job_id} to end")
        assert info["JobState"] == "COMPLETED", self.describe(job_id)
        return info

    def start_now(self, job_id: int) -> None:
        """Slurm holds a requeued batch job back for about two minutes (its BeginTime); skip that wait."""
        self.wait_for(job_id, lambda j: j["JobState"] == "PENDING", 90, f"job {job_id} to be pending again")
        self.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])


def add_hosts() -> bool:
    """Make n1 and n2 resolve (the launchers rendezvous at the first node's name). True if added."""
    try:
        socket.gethostbyname("n1"), socket.gethostbyname("n2")
        return False
    except OSError:
        with open("/etc/hosts", "a") as f:
            f.write(HOSTS_LINE)
        return True


def remove_hosts() -> None:
    hosts = Path("/etc/hosts")
    lines = hosts.read_text().splitlines(keepends=True)
    hosts.write_text("".join(line for line in lines if line != HOSTS_LINE))


@pytest.fixture(scope="session")
def cluster():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root: it starts munged, slurmctld and slurmd (CI runs as root)")
    why_not = install_packages()
    if why_not:
        pytest.skip(f"no SLURM test cluster: {why_not}")
    root = Path(tempfile.mkdtemp(prefix="backpack-slurm-"))
    root.chmod(0o755)  # munged refuses sockets in folders that others cannot enter
    added_hosts = add_hosts()
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        if added_hosts:
            remove_hosts()
        shutil.rmtree(root, ignore_errors=True)
