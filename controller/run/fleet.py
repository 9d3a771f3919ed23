"""The fleet: runs submitted as Slurm jobs, followed, and stored as they land.

`submit_all` submits every run of a command (configurations x repetitions) and records each job in
the store's `jobs` table before it follows any; `follow` polls Slurm and stores each result once,
when its job ends: the node's `result.json`, or, when the job ended without one, a result with
Slurm's state (cancelled, timeout, preempted, node_fail, error) and reason. The registry lets the
controller leave and come back: `bench-ctl fleet status` lists the jobs, `bench-ctl fleet sync`
stores what finished meanwhile. Storing is idempotent on run_id, and a job is marked stored in the
registry only after its result is in the store, so a sync after a crash stores nothing twice.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from controller.catalog.hosts import HostIdentity
from controller.catalog.images import get_image
from controller.errors import BenchError
from controller.launch.base import (
    RESULT_FILE,
    SPEC_FILE,
    LineSink,
    claimed_run_id,
    failed_result,
    foreign_result_message,
)
from controller.launch.slurm import JobState, SlurmClient, SlurmLauncher
from controller.paths import Paths
from controller.run import pipeline
from controller.run.planning import (
    RunRequest,
    default_timeout,
    new_group_id,
)
from controller.run.rounds import MAX_RUNS
from controller.store import db as store
from schemas import LaunchInfo, RunResult, RunSpec, SchemaVersionError, load_result
from schemas.plan import SlurmOptions

POLL_ENV = "BENCH_SLURM_POLL_S"
DEFAULT_POLL_S = 5.0
SCHEDULER = "slurm"


class Job(BaseModel):
    """One row of the `jobs` registry: a run submitted to Slurm."""

    run_id: str
    job_id: str
    scheduler: str = SCHEDULER
    group_id: str | None = None
    cell: str | None = None  # the plan cell of a sweep's run
    image: str
    model: str
    run_dir: str
    submitted_at: datetime
    state: str
    reason: str | None = None
    node: str | None = None
    updated_at: datetime
    status: str | None = None  # the stored result's status, once stored
    stored_at: datetime | None = None


class SyncReport(BaseModel):
    """What `fleet sync` did: results stored now, and jobs still queued or running."""

    stored: list[RunResult]
    waiting: list[Job]


JOB_COLUMNS = list(Job.model_fields)


def poll_interval() -> float:
    try:
        return max(0.1, float(os.environ.get(POLL_ENV, DEFAULT_POLL_S)))
    except ValueError:
        raise BenchError(
            f"{POLL_ENV}={os.environ[POLL_ENV]!r} is not a number of seconds", "e.g. 5"
        ) from None


# --------------------------------------------------------------------------- registry


def register(db: Path, job: Job) -> None:
    row = job.model_dump()
    with store.connect(db) as con:
        con.execute(
            f"INSERT OR REPLACE INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )


def _note_state(db: Path, job: Job, state: JobState) -> Job:
    updated = job.model_copy(
        update={
            "state": state.state,
            "reason": state.reason,
            "node": state.node or job.node,
            "updated_at": datetime.now(UTC),
        }
    )
    with store.connect(db) as con:
        con.execute(
            "UPDATE jobs SET state = ?, reason = ?, node = ?, updated_at = ? WHERE run_id = ?",
            [updated.state, updated.reason, updated.node, updated.updated_at, job.run_id],
        )
    return updated


def _note_stored(db: Path, job: Job, status: str) -> None:
    with store.connect(db) as con:
        con.execute(
            "UPDATE jobs SET status = ?, stored_at = ? WHERE run_id = ?",
            [status, datetime.now(UTC), job.run_id],
        )


def jobs(db: Path, open_only: bool = False) -> list[Job]:
    """The registry, oldest first; `open_only`: the jobs whose result is not stored yet."""
    if not db.exists():
        return []
    where = " WHERE stored_at IS NULL" if open_only else ""
    cols, rows = store.read(
        db, f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs{where} ORDER BY submitted_at, run_id"
    )
    return [Job.model_validate(dict(zip(cols, r, strict=True))) for r in rows]


def open_cells(db: Path) -> dict[str, int]:
    """Per plan cell: its jobs submitted whose results are not stored yet (queued or running)."""
    if not db.exists():
        return {}
    _, rows = store.read(
        db, "SELECT cell, count(*) FROM jobs WHERE stored_at IS NULL AND cell IS NOT NULL GROUP BY cell"
    )
    return {str(cell): int(n) for cell, n in rows}


def cluster_identity(options: SlurmOptions, client: SlurmClient | None = None) -> HostIdentity:
    """Where a sweep's cells run on Slurm: the cluster and the kind of node asked for (partition,
    constraint, cores), in place of one host's identity. The nodes' own fingerprints stay with
    each result (its host), so comparisons still never mix machines."""
    client = client or SlurmClient()
    client.check(options)
    where = options.partition or "default partition"
    if options.constraint:
        where += f" [{options.constraint}]"
    return HostIdentity(
        hostname=f"slurm:{client.cluster_name()}/{where}",
        cpu_model=f"constraint={options.constraint or ''}",
        cpu_count=options.cpus_per_task or 0,
        memory_gb=0,
        gpus=[],
        nvidia_driver=None,
    )


# --------------------------------------------------------------------------- submitting


class SlurmExecutor(pipeline.Executor):
    """Submits each run as a Slurm job and records it; results are stored as the jobs end
    (`follow`). The cluster is checked once, and each image made ready once, before submitting."""

    name = "slurm"

    def __init__(self, paths: Paths, options: SlurmOptions, log: LineSink, client: SlurmClient) -> None:
        super().__init__(paths, log)
        self.launcher = SlurmLauncher(paths, options, client)
        self.launcher.check()
        self.submitted: list[Job] = []
        self._prepared: set[str] = set()

    def start(self, planned: pipeline.PlannedRun, spec: RunSpec) -> None:
        if planned.image.name not in self._prepared:
            self.launcher.prepare(planned.image, self.log)
            self._prepared.add(planned.image.name)
        job = submit_one(self.launcher, spec, planned.request.timeout_s, self.paths, self.submitted, self.log)
        self.submitted.append(job)


def submit_all(
    req: RunRequest, options: SlurmOptions, paths: Paths, log: LineSink, client: SlurmClient | None = None
) -> tuple[list[Job], list[RunResult]]:
    """Plan everything, check the cluster, then submit each configuration x repetition as a
    job and record it. Runs that cannot happen at all are stored as unsupported at once.
    Returns the jobs submitted and those results."""
    planned = pipeline.prepare(req, paths, here=False)
    policy = planned[0].spec.policy
    if policy.target_ci is not None:
        raise BenchError(
            "policy.target_ci decides on more runs after seeing results; Slurm jobs are submitted at once",
            "give the number of runs instead: --repeat N",
        )
    if len(planned) * policy.repetitions > MAX_RUNS:
        raise BenchError(
            f"this command would submit {len(planned) * policy.repetitions:,} jobs (more than {MAX_RUNS})",
            "fewer configurations or repetitions at a time",
        )
    for p in planned:
        device = p.spec.device
        if device.startswith("cuda:") and device != "cuda:0":
            raise BenchError(
                f"--gpu {device.split(':')[1]}: a Slurm job gets GPUs of its own, numbered from 0",
                "use --gpu 0",
            )
    executor = SlurmExecutor(paths, options, log, client or SlurmClient())
    pipeline.check_destinations(paths)
    group = new_group_id()
    unsupported: list[RunResult] = []
    for rep in range(1, policy.repetitions + 1):
        for p in planned:
            result = pipeline.execute(p, executor, group=group, repetition=rep)
            if result is not None:
                unsupported.append(result)
    return executor.submitted, unsupported


def submit_one(
    launcher: SlurmLauncher,
    spec: RunSpec,
    timeout_s: float | None,
    paths: Paths,
    earlier: list[Job],
    log: LineSink,
) -> Job:
    """Write the run folder, submit its job and record it. A refused submission leaves no folder."""
    run_dir = paths.runs / spec.run_id
    try:
        run_dir.mkdir(parents=True)
        script = launcher.write_job(spec, run_dir, timeout_s or default_timeout(spec))
    except OSError as e:
        raise pipeline.run_folder_error(run_dir, e) from None
    try:
        job_id = launcher.submit(script)
    except BenchError as e:
        for f in run_dir.iterdir():
            f.unlink()
        run_dir.rmdir()
        if earlier:
            e.hint = (
                f"{e.hint}; the {len(earlier)} job(s) submitted before keep running: "
                "`bench-ctl fleet sync` stores their results"
            )
        raise
    now = datetime.now(UTC)
    job = Job(
        run_id=spec.run_id,
        job_id=job_id,
        group_id=spec.group,
        cell=spec.cell,
        image=spec.image,
        model=spec.model,
        run_dir=str(run_dir),
        submitted_at=now,
        state="PENDING",
        updated_at=now,
    )
    register(paths.db, job)
    log(f"submitted job {job_id}: {spec.image} {spec.model} (run {spec.run_id})")
    return job


# --------------------------------------------------------------------------- following


def _tail(path: Path, chars: int = 4000) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return text[-chars:].strip() or None


def _slurm_info(job: Job, state: JobState | None, spec: RunSpec, tail: str | None) -> LaunchInfo:
    """How a run that left no usable runner result was launched: its job, node and image."""
    node = (state.node if state else None) or job.node
    image = get_image(spec.image)
    return LaunchInfo(
        launcher="slurm",
        host=node,
        image_ref=image.name,
        lock_hash=image.lock_hash,
        stderr_tail=tail,
        job_id=job.job_id,
        node=node,
    )


def ended_result(job: Job, state: JobState | None, spec: RunSpec) -> RunResult:
    """The result of a job that ended (or that Slurm forgot) without a runner result."""
    run_dir = Path(job.run_dir)
    output = run_dir / f"slurm-{job.job_id}.out"
    tail = _tail(output)
    info = _slurm_info(job, state, spec, tail)
    where = f" on {info.node}" if info.node else ""
    if state is None:
        status = "error"
        message = (
            f"Slurm no longer knows job {job.job_id} (last seen {job.state}) and it left no result "
            f"in {run_dir}"
        )
    else:
        status = state.status
        reason = f" ({state.reason})" if state.reason else ""
        message = f"Slurm job {job.job_id} ended {state.state}{reason}{where} without a result"
        if not output.exists() and state.state in ("FAILED", "COMPLETED", "NODE_FAIL", "BOOT_FAIL"):
            message += (
                f": the node could not write the run folder {run_dir}; it must be on a file system "
                "that this machine and the nodes both mount"
            )
        elif state.state == "TIMEOUT":
            message += ": it ran past its time limit (raise --time-limit or --timeout)"
        elif tail:
            message += f": {tail.splitlines()[-1][:300]}"
    started = min(job.submitted_at, datetime.now(UTC))
    return failed_result(spec, status, message, started, info)


def planned_spec(job: Job) -> RunSpec:
    """The spec of a job's run folder, as the registry planned it: the folder's spec.json lies on
    a shared file system, so its run id is taken from the registry, never from the file; a
    spec.json gone or broken gives way to what the registry knows of the run."""
    try:
        spec = RunSpec.model_validate_json((Path(job.run_dir) / SPEC_FILE).read_bytes())
    except (OSError, ValueError):  # ValidationError included
        models = job.model.split("+")
        return RunSpec.model_validate(
            {
                "run_id": job.run_id,
                "image": job.image,
                "model": job.model,
                "model_dir": job.run_dir,
                "cache_dir": job.run_dir,
                "options": {"framework": get_image(job.image).framework},
                "members": [{"model": m, "model_dir": job.run_dir} for m in models]
                if len(models) > 1
                else [],
                "group": job.group_id,
                "cell": job.cell,
            }
        )
    return spec if spec.run_id == job.run_id else spec.model_copy(update={"run_id": job.run_id})


def node_result(path: Path) -> RunResult | None:
    """The result file a job's node wrote, where there is a valid one (never a FIFO or device)."""
    if not path.is_file():
        return None
    try:
        return load_result(path)
    except (ValidationError, SchemaVersionError, ValueError, OSError):
        return None


def outcome(job: Job, state: JobState | None, log: LineSink | None = None) -> RunResult:
    """The result of an ended job: the node's result file where there is a valid one of this
    job's run. A file claiming another run id is refused (`log` says so) and the run is stored
    as failed: storing it would replace the other run."""
    run_dir = Path(job.run_dir)
    path = run_dir / RESULT_FILE
    result = node_result(path)
    claimed = None if result is None else claimed_run_id(result, job.run_id)
    if result is not None and claimed is None:
        launch = result.launch or LaunchInfo(launcher="slurm", image_ref=result.spec.image)
        if launch.job_id is None:  # the runner finished; the job ended before saying so
            node = (state.node if state else None) or job.node
            launch = launch.model_copy(update={"job_id": job.job_id, "node": node})
        return result.model_copy(update={"launch": launch})
    spec = planned_spec(job)
    if claimed is not None:
        if log is not None:
            log(f"job {job.job_id}: {path} claims run {claimed!r}, not {job.run_id!r}: refused")
        info = _slurm_info(job, state, spec, _tail(run_dir / f"slurm-{job.job_id}.out"))
        started = min(job.submitted_at, datetime.now(UTC))
        return failed_result(spec, "error", foreign_result_message(claimed), started, info)
    return ended_result(job, state, spec)


def settle(job: Job, state: JobState | None, paths: Paths, log: LineSink | None = None) -> RunResult:
    """Store the result of an ended job, then mark it stored in the registry."""
    result = outcome(job, state, log)
    pipeline.keep(result, Path(job.run_dir), paths)
    _note_stored(paths.db, job, result.status)
    return result


def follow(
    pending: list[Job], paths: Paths, log: LineSink, client: SlurmClient | None = None, wait: bool = True
) -> SyncReport:
    """Poll Slurm until every job has ended (`wait`) or once, storing each ended job's result."""
    client = client or SlurmClient()
    open_jobs = {j.run_id: j for j in pending}
    stored: list[RunResult] = []
    total = len(open_jobs)
    interval = poll_interval()
    try:
        while open_jobs:
            states = client.states(sorted({j.job_id for j in open_jobs.values()}))
            for run_id, job in list(open_jobs.items()):
                state = states.get(job.job_id)
                if state is not None and state.active:
                    if (state.state, state.reason, state.node) != (job.state, job.reason, job.node):
                        job = open_jobs[run_id] = _note_state(paths.db, job, state)
                        where = f" on {job.node}" if job.node else ""
                        why = f" ({job.reason})" if job.reason and job.state == "PENDING" else ""
                        log(f"job {job.job_id}: {job.state}{why}{where}")
                    continue
                if state is not None:
                    job = _note_state(paths.db, job, state)
                result = settle(job, state, paths, log)
                stored.append(result)
                del open_jobs[run_id]
                log(f"job {job.job_id}: {result.status} ({len(stored)}/{total} stored)")
            if not wait or not open_jobs:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        if open_jobs:
            log(
                f"{len(open_jobs)} job(s) keep running on the cluster: `bench-ctl fleet sync` stores their "
                "results later"
            )
        raise
    return SyncReport(stored=stored, waiting=list(open_jobs.values()))


def run_all(
    req: RunRequest, options: SlurmOptions, paths: Paths, log: LineSink, client: SlurmClient | None = None
) -> list[RunResult]:
    """`bench-ctl run --launcher slurm`: submit every run, then follow them to the end."""
    client = client or SlurmClient()
    submitted, unsupported = submit_all(req, options, paths, log, client)
    if submitted:
        log(f"{len(submitted)} job(s) submitted; following them (Ctrl-C leaves them running)")
    report = follow(submitted, paths, log, client)
    order = {j.run_id: i for i, j in enumerate(submitted)}
    return unsupported + sorted(report.stored, key=lambda r: order[r.run_id])


def sync(paths: Paths, log: LineSink, wait: bool = False, client: SlurmClient | None = None) -> SyncReport:
    """`bench-ctl fleet sync`: store the results of jobs that ended while nobody followed them."""
    pending = jobs(paths.db, open_only=True)
    if not pending:
        return SyncReport(stored=[], waiting=[])
    return follow(pending, paths, log, client, wait=wait)


def status(paths: Paths, everything: bool = False, client: SlurmClient | None = None) -> list[Job]:
    """`bench-ctl fleet status`: the registry with Slurm's current state of each open job."""
    listed = jobs(paths.db, open_only=not everything)
    open_ids = sorted({j.job_id for j in listed if j.stored_at is None})
    if not open_ids:
        return listed
    states = (client or SlurmClient()).states(open_ids)
    shown = []
    for job in listed:
        state = states.get(job.job_id)
        if job.stored_at is None and state is not None and state.state != job.state:
            job = _note_state(paths.db, job, state)
        elif job.stored_at is None and state is None:
            job = job.model_copy(update={"state": f"{job.state}?", "reason": "Slurm no longer knows the job"})
        shown.append(job)
    return shown
