"""The run pipeline, with one owner: `prepare` checks and plans what a command asks for, once, and
`execute` runs one planned configuration through an executor and keeps its result.

`run`, `sweep`, `rerun`, find-peak, co-location and the Slurm fleet all call these two; none plans
a spec, picks a launcher or stores a result by itself. An executor says where runs go: `Here`
runs them on this host one at a time (Docker where the image is built, else the locked local
environment) and returns each stored result; the Slurm executor (`controller.run.fleet`) submits
a job and returns nothing, its results being stored as the jobs end."""

from __future__ import annotations

import os
import socket
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller import store
from controller.catalog.images import ImageInfo
from controller.errors import BenchError
from controller.launch.base import Launcher, LineSink, failed_result
from controller.launch.choice import LauncherChoice
from controller.launch.select import select_launcher
from controller.paths import Paths
from controller.run.planning import PlannedRun, default_timeout, prepare
from controller.store import db
from schemas import LaunchInfo, RunResult, RunSpec
from schemas.atomic import write_atomic

__all__ = ["Executor", "Here", "PlannedRun", "execute", "prepare"]


class Executor(ABC):
    """Where planned runs go."""

    name: str

    def __init__(self, paths: Paths, log: LineSink) -> None:
        self.paths = paths
        self.log = log

    @abstractmethod
    def start(self, planned: PlannedRun, spec: RunSpec) -> RunResult | None:
        """Run (or submit) one execution of `planned` as `spec`: its stored result, or None when
        the result comes later (a submitted job)."""


class Here(Executor):
    """Runs on this host, one at a time, each in a fresh runner process. The launcher is chosen
    and its image (or environment) made ready once per image and command."""

    name = "here"

    def __init__(
        self,
        paths: Paths,
        log: LineSink,
        on_line: LineSink,
        choice: LauncherChoice = LauncherChoice.auto,
        shared: Sequence[Path] = (),
    ) -> None:
        super().__init__(paths, log)
        self.on_line = on_line
        self.choice = choice
        self.shared = list(shared)
        self._launchers: dict[str, Launcher] = {}

    def launcher_for(self, image: ImageInfo) -> Launcher:
        if image.name not in self._launchers:
            launcher = select_launcher(self.choice, image, self.paths, self.log)
            launcher.prepare(image, self.log)
            self._launchers[image.name] = launcher
        return self._launchers[image.name]

    def start(self, planned: PlannedRun, spec: RunSpec) -> RunResult:
        launcher = self.launcher_for(planned.image)
        timeout_s = planned.request.timeout_s or default_timeout(spec)
        return launch_and_keep(
            planned.image, spec, launcher, self.paths, timeout_s, self.on_line, self.shared
        )


def launch_and_keep(
    image: ImageInfo,
    spec: RunSpec,
    launcher: Launcher,
    paths: Paths,
    timeout_s: float,
    on_line: LineSink,
    shared: Sequence[Path] = (),
) -> RunResult:
    """Launch one spec in its own run folder, then keep and store its result."""
    run_dir = paths.runs / spec.run_id
    try:
        run_dir.mkdir(parents=True)
        result = launcher.launch(image, spec, run_dir, timeout_s, on_line, shared)
    except OSError as e:
        raise run_folder_error(run_dir, e) from None
    return keep(result, run_dir, paths)


def execute(planned: PlannedRun, executor: Executor, **tags: Any) -> RunResult | None:
    """One execution of a planned configuration: launched (or submitted) by `executor` with a fresh
    run id and `tags` (group, repetition, cell, role, barrier), or, when this host cannot run it,
    recorded as unsupported with the reason. Framework failures come back as results."""
    if planned.unsupported is not None:
        return record_unsupported(planned, executor.paths, executor.log, **tags)
    return executor.start(planned, planned.instance(**tags))


def execute_here(planned: PlannedRun, executor: Here, **tags: Any) -> RunResult:
    """`execute` on a synchronous executor: the result is always there."""
    result = execute(planned, executor, **tags)
    assert result is not None  # Here returns every result
    return result


def record_unsupported(planned: PlannedRun, paths: Paths, log: LineSink, **tags: Any) -> RunResult:
    """Nothing to launch: record, as a run of its own, why this configuration cannot run."""
    spec = planned.instance(**tags)
    run_dir = paths.runs / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=1) + "\n")
    image = planned.image
    info = LaunchInfo(
        launcher="preflight", host=socket.gethostname(), image_ref=image.name, lock_hash=image.lock_hash
    )
    result = failed_result(spec, "unsupported", planned.unsupported or "", datetime.now(UTC), info)
    log(f"not launched: {planned.unsupported}")
    return keep(result, run_dir, paths)


def run_folder_error(folder: Path, e: OSError) -> BenchError:
    return BenchError(
        f"cannot write the run folder {folder}: {e.strerror or e}",
        "free space there, or point BENCH_HOME at a writable disk",
        exit_code=1,
    )


def check_destinations(paths: Paths) -> None:
    """The store and the run folders can take a result: checked before anything is measured."""
    store.ensure_store(paths.db)
    check_run_folder(paths)


def check_run_folder(paths: Paths) -> None:
    """Fail before measuring when run folders cannot be written (full disk, read-only mount)."""
    try:
        paths.runs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=paths.runs, prefix=".probe.") as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise run_folder_error(paths.runs, e) from None


def keep(result: RunResult, run_dir: Path, paths: Paths) -> RunResult:
    """Write the result atomically beside the run (with the launch information the runner could
    not know), then store it in one transaction."""
    final = run_dir / "result.json"
    try:
        write_atomic(final, result.model_dump_json(indent=1) + "\n")
    except OSError as e:
        raise run_folder_error(run_dir, e) from None
    try:
        with db.connect(paths.db) as con:
            db.ingest(con, result, final)
    except BenchError as e:
        raise BenchError(
            f"measured, but not stored: {e.message}",
            f"the result is kept in {run_dir}/; store it with: bench-ctl ingest {run_dir}"
            + (f" --db {paths.db}" if paths.db != Paths.from_env().db else ""),
            exit_code=1,
        ) from None
    return result
