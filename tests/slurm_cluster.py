"""A real one-node Slurm cluster in a temporary folder, for the tests of `--launcher slurm`.

Debian's `slurm-wlm` and `munge` (see .ci/run), started as root: a munge key and socket, a
generated `slurm.conf` (no cgroups: `proctrack/linuxproc`, `task/none`; `select/cons_tres`), state,
spool and logs in the folder, free ports, then `slurmctld` and `slurmd` as daemons. No accounting
database: jobs are followed through `squeue` and `scontrol`, as on a cluster without slurmdbd.

`slurmd` runs in a mount namespace of its own where `hidden` is covered by an empty tmpfs: a run
folder under it exists for the controller but not for the node, as a run folder on a disk the
compute nodes do not mount.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "unshare")
NODE = "bench-node1"
PARTITION = "debug"


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    hidden: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def scontrol(self, *args: str) -> str:
        return subprocess.run(
            ["scontrol", *args], env={**os.environ, **self.env}, capture_output=True, text=True, check=True
        ).stdout

    def job_state(self, job_id: str) -> str:
        text = self.scontrol("-o", "show", "job", job_id)
        return next(f.split("=", 1)[1] for f in text.split() if f.startswith("JobState="))

    def cancel_all(self, wait_s: float = 20) -> None:
        """Cancel every job and wait until none runs: their processes must not outlive the node."""
        env = {**os.environ, **self.env}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", "--full", "--partition", PARTITION], env=env, timeout=10)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                left = subprocess.run(
                    ["squeue", "-h", "-t", "PD,R,CG,CF,S", "-o", "%i"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if left.returncode != 0 or not left.stdout.strip():
                    break
                time.sleep(0.3)

    def stop(self) -> None:
        self.cancel_all()
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((self.root / pid_file).read_text().split()[0]), signal.SIGTERM)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            deadline = time.monotonic() + 10
            while (self.root / pid_file).exists() and time.monotonic() < deadline:
                try:
                    pid = int((self.root / pid_file).read_text().split()[0])
                    os.kill(pid, 0)
                except (OSError, ValueError):
                    break
                time.sleep(0.1)


def start(cpus: int = 8) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once the node is idle. Raises RuntimeError.

    The node offers `cpus` cores whatever the machine has (`config_overrides`), so that several
    light jobs (the null runner) run at once."""
    if os.geteuid() != 0:
        raise RuntimeError("a test Slurm cluster needs root (slurmd starts jobs as their user)")
    # Short path: munge's socket path must fit in a unix socket address.
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    for sub in ("state", "spool", "log", "munge", "hidden"):
        (root / sub).mkdir()
    os.chmod(root, 0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge" / "socket"
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=benchtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
KillWait=2
SlurmdParameters=config_overrides
DefMemPerCPU=512
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4096 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    )
    cluster = SlurmCluster(root=root, conf=conf, hidden=root / "hidden")
    env = {**os.environ, "SLURM_CONF": str(conf)}

    def daemon(cmd: list[str]) -> None:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            cluster.stop()
            raise RuntimeError(f"{cmd[0]} did not start: {(done.stderr or done.stdout).strip()[-500:]}")

    try:
        daemon(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={root}/munged.pid",
                f"--log-file={root}/log/munged.log",
                f"--seed-file={root}/munge/seed",
            ]
        )
        daemon(["slurmctld"])
        # The node's own view of the file system: `hidden` is an empty tmpfs there.
        daemon(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount -t tmpfs none "{cluster.hidden}" && exec slurmd -N {NODE}',
            ]
        )
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout.strip()
            if out == "idle":
                return cluster
            if time.monotonic() > deadline:
                log = (root / "log" / "slurmctld.log").read_text()[-800:]
                raise RuntimeError(f"the Slurm node did not become idle (state {out!r}):\n{log}")
            time.sleep(0.3)
    except BaseException:
        cluster.stop()
        raise
