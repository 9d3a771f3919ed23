"""Slurm launcher: each run a batch job on a node of the cluster, through plain `sbatch`.

The controller plans the run as for a local run (the model store, environments and run folder
are on a file system the nodes see at the same paths), writes `spec.json` and a batch script
`job.sh` into the run folder, and submits it with `sbatch --parsable`. On the node the job runs
`python -m controller.launch.node`, which picks Docker or the locked local environment as a local run
does and writes `result.json` into the run folder. The controller follows the jobs with `squeue`
(and `sacct` where the cluster keeps accounting) and stores each result as it lands
(controller/run/fleet.py); a job that Slurm ends before its runner reports becomes a result with
Slurm's state and reason.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from controller.catalog.images import ImageInfo
from controller.errors import BenchError, did_you_mean
from controller.launch.base import SPEC_FILE, LineSink
from controller.launch.envs import LocalEnv
from controller.paths import REPO_ROOT, Paths
from schemas import RunSpec
from schemas.plan import SlurmOptions

SCRIPT_FILE = "job.sh"
NODE_MARGIN_S = 300  # Slurm's limit over the runner's: node start, environment check, result write
COMMAND_TIMEOUT_S = 60
IDS_PER_CALL = 200  # job ids per squeue/sacct call: a command line of bounded length
# The job's environment: what a local runner passes on, never the login node's GPU selection
# (Slurm sets CUDA_VISIBLE_DEVICES for the GPUs it allocates).
EXPORTED_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "DOCKER_HOST")
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
    }
)
# The status of a run whose job ended in this state without a result from its runner.
STATUS_OF_STATE = {
    "COMPLETED": "error",
    "FAILED": "error",
    "OUT_OF_MEMORY": "error",
    "SPECIAL_EXIT": "error",
    "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "PREEMPTED": "preempted",
    "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "node_fail",
}
UNREACHABLE_HINT = (
    "check that slurmctld runs and that SLURM_CONF (or /etc/slurm/slurm.conf) names it: `sinfo` must answer"
)


@dataclass(frozen=True)
class JobState:
    """What Slurm says of one job."""

    job_id: str
    state: str
    reason: str | None = None
    node: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def status(self) -> str:
        """The status of a run whose job ended in this state without a runner result."""
        return STATUS_OF_STATE.get(self.state, "error")


def parse_state(state: str) -> str:
    """`CANCELLED by 0` (sacct) -> `CANCELLED`."""
    return state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"


def _clean(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "None", "(null)", "n/a", "N/A") else value


def parse_squeue(text: str) -> dict[str, JobState]:
    """Lines of `squeue -h -o %i|%T|%r|%N` -> job id -> state."""
    found: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        job_id, state, reason, node = (p.strip() for p in parts)
        found[job_id] = JobState(job_id, parse_state(state), _clean(reason), _clean(node))
    return found


def parse_sacct(text: str) -> dict[str, JobState]:
    """Lines of `sacct -n -P -X -o JobID,State,Reason,NodeList` -> job id -> state."""
    found: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        job_id, state, reason, node = (p.strip() for p in parts[:4])
        node_name = _clean(node)
        found[job_id] = JobState(
            job_id, parse_state(state), _clean(reason), None if node_name == "None assigned" else node_name
        )
    return found


class SlurmClient:
    """Slurm's commands, run as a user would (their output parsed, their errors said plainly)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        if shutil.which(cmd[0]) is None:
            raise BenchError(
                f"--launcher slurm: `{cmd[0]}` is not on PATH",
                "run bench-ctl where Slurm's commands are installed (a login node), or use --launcher local",
            )
        try:
            return subprocess.run(
                cmd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"`{cmd[0]}` did not answer within {COMMAND_TIMEOUT_S}s", UNREACHABLE_HINT
            ) from None

    def partitions(self) -> list[str]:
        """The cluster's partitions; raises BenchError when its controller does not answer."""
        done = self._run(["sinfo", "-h", "-o", "%R"])
        if done.returncode != 0:
            raise BenchError(f"Slurm does not answer: {_first_error(done.stderr)}", UNREACHABLE_HINT)
        return sorted({p.strip() for p in done.stdout.split() if p.strip()})

    def cluster_name(self) -> str:
        """The cluster's name (ClusterName of its configuration), as its controller says."""
        done = self._run(["scontrol", "show", "config"])
        if done.returncode != 0:
            raise BenchError(f"Slurm does not answer: {_first_error(done.stderr)}", UNREACHABLE_HINT)
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip()
        return "unnamed"

    def check(self, options: SlurmOptions) -> None:
        """Before anything is submitted: sbatch is there, the controller answers, the partition exists."""
        self._run(["sbatch", "--version"])
        partitions = self.partitions()
        if options.partition is not None:
            for name in options.partition.split(","):
                if name not in partitions:
                    raise BenchError(f"unknown Slurm partition {name!r}", did_you_mean(name, partitions))

    def submit(self, script: Path) -> str:
        """`sbatch --parsable SCRIPT` -> the job id. Refusals are one line with a hint."""
        done = self._run(["sbatch", "--parsable", str(script)])
        if done.returncode != 0:
            raise submit_error(done.stderr)
        job_id = done.stdout.strip().split(";")[0]
        if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job_id):
            raise BenchError(f"sbatch answered no job id: {done.stdout.strip()[:200]!r}", UNREACHABLE_HINT, 1)
        return job_id

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """The state of each job Slurm still knows: `squeue` for jobs in its controller's memory,
        then `sacct` (where the cluster keeps accounting) for those it has let go."""
        found: dict[str, JobState] = {}
        for start in range(0, len(job_ids), IDS_PER_CALL):
            chunk = job_ids[start : start + IDS_PER_CALL]
            done = self._run(["squeue", "-h", "--states=all", "-j", ",".join(chunk), "-o", "%i|%T|%r|%N"])
            # squeue lists the jobs it knows; it fails only when it knows none of them.
            if done.returncode != 0 and "invalid job id" not in done.stderr.lower():
                raise BenchError(f"Slurm does not answer: {_first_error(done.stderr)}", UNREACHABLE_HINT)
            if done.returncode == 0:
                found.update(parse_squeue(done.stdout))
            missing = [j for j in chunk if j not in found]
            if missing:
                acct = self._run(
                    ["sacct", "-n", "-P", "-X", "-j", ",".join(missing), "-o", "JobID,State,Reason,NodeList"]
                )
                if acct.returncode == 0:  # no accounting on this cluster: those jobs are simply unknown
                    found.update({k: v for k, v in parse_sacct(acct.stdout).items() if k in missing})
        return {j: found[j] for j in job_ids if j in found}


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "fatal" in ln.lower() or "unable" in ln.lower()]
    return (fatal or lines or ["no message"])[-1][:300]


def submit_error(stderr: str) -> BenchError:
    """sbatch's refusal, said for people: input mistakes exit 2, everything else 1."""
    line = _first_error(stderr)
    low = stderr.lower()
    if "invalid partition" in low:
        return BenchError(f"Slurm refused the job: {line}", "see the partitions with `sinfo`")
    if "gres" in low:
        return BenchError(
            f"Slurm refused the GPU request: {line}",
            "the partition has no GPUs of that kind: choose one that has (--partition), or run on the CPU",
        )
    if "feature" in low or "constraint" in low:
        return BenchError(f"Slurm refused --constraint: {line}", "see the nodes' features with `sinfo -o %f`")
    if "account" in low:
        return BenchError(f"Slurm refused --account: {line}", "see your accounts with `sacctmgr show assoc`")
    if "time limit" in low:
        return BenchError(f"Slurm refused the time limit: {line}", "lower --time-limit or --timeout")
    if "unable to contact" in low or "configuration" in low:
        return BenchError(f"Slurm does not answer: {line}", UNREACHABLE_HINT)
    return BenchError(f"sbatch failed: {line}", "see `sbatch` and the cluster's limits", exit_code=1)


def time_limit_min(timeout_s: float, options: SlurmOptions) -> int:
    """Slurm's limit in minutes: given, or the runner's timeout plus the node's margin."""
    if options.time_limit_min is not None:
        return options.time_limit_min
    return max(1, math.ceil((timeout_s + NODE_MARGIN_S) / 60))


def gpus_of(spec: RunSpec) -> int:
    return 1 if spec.device.startswith("cuda") else 0


def check_sbatch_path(what: str, path: Path) -> None:
    """Refuse a path that an #SBATCH line cannot carry: sbatch splits the line at spaces and
    takes quotes away, and a backslash anywhere in a file name turns off its `%` symbols."""
    odd = re.search(r"[\s\\'\"]", str(path))
    if odd is not None:
        char = "a space" if odd.group().isspace() else f"a {odd.group()!r}"
        raise BenchError(
            f"the {what} {path} holds {char}, which #SBATCH lines cannot carry",
            "point BENCH_HOME at a path without spaces, quotes or backslashes",
        )


def sbatch_filename(path: Path) -> str:
    """A path as an #SBATCH file name: sbatch reads `%` as the start of a symbol (`%j` the job id,
    `%u` the user...), so a `%` of the path itself is written `%%`."""
    return str(path).replace("%", "%%")


def batch_script(
    spec: RunSpec,
    run_dir: Path,
    home: Path,
    options: SlurmOptions,
    timeout_s: float,
    python: str = sys.executable,
) -> str:
    """The batch script of one run: resources as `#SBATCH` lines, then the node's entrypoint."""
    for what, path in (("run folder", run_dir), ("state folder", home)):
        check_sbatch_path(what, path)
    policy = spec.policy
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=bench:{spec.run_id}",
        f"#SBATCH --output={sbatch_filename(run_dir)}/slurm-%j.out",
        f"#SBATCH --time={time_limit_min(timeout_s, options)}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
    ]
    if options.cpus_per_task is None:
        lines.append("#SBATCH --exclusive")
    else:
        lines.append(f"#SBATCH --cpus-per-task={options.cpus_per_task}")
    if policy.memory_limit_mb is not None:
        lines.append(f"#SBATCH --mem={policy.memory_limit_mb}M")
    elif options.cpus_per_task is None:
        lines.append("#SBATCH --mem=0")  # with --exclusive: all of the node's memory
    if gpus_of(spec):
        lines.append(f"#SBATCH --gres=gpu:{gpus_of(spec)}")
    for key, value in (
        ("partition", options.partition),
        ("account", options.account),
        ("constraint", options.constraint),
    ):
        if value is not None:
            lines.append(f"#SBATCH --{key}={value}")
    exported = [v for v in EXPORTED_VARS if v in os.environ]
    lines.append(f"#SBATCH --export={','.join(exported) or 'NONE'}")
    command = [
        python,
        "-m",
        "controller.launch.node",
        "--home",
        str(home),
        "--timeout",
        f"{timeout_s:g}",
        "--launcher",
        options.node_launcher,
        str(run_dir),
    ]
    lines += [
        "# Written by bench-ctl: one run, with the same launchers as a local run (Docker where this",
        "# node has a daemon and the image, else the locked environment), its result into the run folder.",
        f"cd {shlex.quote(str(REPO_ROOT))}",
        "exec " + " ".join(shlex.quote(c) for c in command),
        "",
    ]
    return "\n".join(lines)


class SlurmLauncher:
    """Submits runs as Slurm jobs. Unlike local and Docker it does not wait for a runner: it
    returns a job id, and controller/run/fleet.py follows the jobs and stores their results."""

    name = "slurm"

    def __init__(self, paths: Paths, options: SlurmOptions, client: SlurmClient | None = None) -> None:
        self.paths = paths
        self.options = options
        self.client = client or SlurmClient()

    def check(self) -> None:
        """Before anything is written or submitted: the state folder fits a job script, and the
        cluster answers."""
        check_sbatch_path("state folder", self.paths.home)
        self.client.check(self.options)

    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        """The locked environment on the shared file system, built here once rather than by
        several nodes at the same time; nodes with Docker and the image use the image instead."""
        LocalEnv(image, self.paths).ensure(log)
        (self.paths.cache / image.name).mkdir(parents=True, exist_ok=True)

    def write_job(self, spec: RunSpec, run_dir: Path, timeout_s: float) -> Path:
        """spec.json and job.sh in the (new) run folder; returns the script."""
        script = run_dir / SCRIPT_FILE
        text = batch_script(spec, run_dir, self.paths.home, self.options, timeout_s)
        (run_dir / SPEC_FILE).write_text(spec.model_dump_json(indent=1) + "\n")
        script.write_text(text)
        return script

    def submit(self, script: Path) -> str:
        return self.client.submit(script)
