"""The launcher interface. Local subprocesses and Docker containers are two implementations.

A launcher starts `python -m runners --spec spec.json --out result.json` for a `RunSpec` in a run
folder and returns a validated `RunResult`. When the runner leaves no valid result (killed, timed
out, crashed), the launcher writes the failed result itself, with exit code and stderr tail.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from controller.catalog.images import ImageInfo
from controller.launch import deaths
from controller.launch.choice import LauncherChoice as LauncherChoice  # re-exported
from controller.paths import Paths
from schemas import LaunchInfo, RunResult, RunSpec, SchemaVersionError, load_result

LineSink = Callable[[str], None]


SPEC_FILE, RESULT_FILE, LOG_FILE = "spec.json", "result.json", "runner.log"
EXIT_INVALID_SPEC = 2


@dataclass
class ProcessOutcome:
    """How a runner or tool process ended."""

    exit_code: int | None
    timed_out: bool
    wall_s: float
    stderr_tail: str
    image_ref: str
    image_digest: str | None = None
    lock_hash: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    oom_killed: bool = False  # the kernel's OOM killer or a container memory limit ended it


class TailBuffer:
    """Keeps the last lines of a stream for error messages."""

    def __init__(self, lines: int = 40) -> None:
        self._lines: deque[str] = deque(maxlen=lines)

    def add(self, line: str) -> None:
        self._lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self._lines)


class Launcher(ABC):
    name: str

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    @abstractmethod
    def model_dir(self, model: str) -> str:
        """The model's store folder as the runner sees it."""

    @abstractmethod
    def cache_dir(self, image: ImageInfo) -> str:
        """The image's writable cache folder as the runner sees it."""

    def inside(self, host_path: Path) -> str:
        """A host path under the state folder as the runner sees it."""
        return str(host_path)

    @abstractmethod
    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        """Make sure the image (or local environment) exists; raise BenchError if it cannot."""

    @abstractmethod
    def start_runner(
        self,
        image: ImageInfo,
        spec: RunSpec,
        run_dir: Path,
        timeout_s: float,
        on_line: LineSink,
        shared: Sequence[Path] = (),
    ) -> ProcessOutcome:
        """Run the entrypoint on `run_dir/spec.json`, writing `run_dir/result.json`.

        `shared`: folders under the state folder that co-located runners write to (a barrier)."""

    @abstractmethod
    def run_tool(
        self,
        image: ImageInfo,
        module: str,
        args: list[str],
        writable: Path,
        timeout_s: float,
        on_line: LineSink,
        readable: list[Path] | None = None,
    ) -> ProcessOutcome:
        """Run `python -m MODULE ARGS` in the image with `writable` mounted read-write (exporter)."""

    def runner_view(self, spec: RunSpec, image: ImageInfo) -> RunSpec:
        """The spec as this launcher's runner sees it. Plans name this host's folders (the model
        store, the image's cache, a co-location barrier); a container mounts them elsewhere, and
        a Slurm node keeps its own caches, so each launcher translates them when it starts a run.
        Folders are derived from the model and image names again, so translating twice is the same."""
        first = spec.members[0].model if spec.members else spec.model
        update: dict[str, object] = {
            "model_dir": self.model_dir(first),
            "cache_dir": self.cache_dir(image),
            "members": [{**m.model_dump(), "model_dir": self.model_dir(m.model)} for m in spec.members],
        }
        if spec.barrier is not None:
            update["barrier"] = {**spec.barrier.model_dump(), "dir": self.inside(Path(spec.barrier.dir))}
        return RunSpec.model_validate({**spec.model_dump(), **update})

    def launch(
        self,
        image: ImageInfo,
        spec: RunSpec,
        run_dir: Path,
        timeout_s: float,
        on_line: LineSink,
        shared: Sequence[Path] = (),
    ) -> RunResult:
        """Run one spec and return its validated result, failed or not."""
        spec = self.runner_view(spec, image)
        (run_dir / SPEC_FILE).write_text(spec.model_dump_json(indent=1) + "\n")
        started = datetime.now(UTC)
        outcome = self.start_runner(image, spec, run_dir, timeout_s, on_line, shared)
        info = LaunchInfo(
            launcher=self.name,
            host=socket.gethostname(),
            image_ref=outcome.image_ref,
            image_digest=outcome.image_digest,
            lock_hash=outcome.lock_hash,
            exit_code=outcome.exit_code,
            wall_s=outcome.wall_s,
            stderr_tail=None if outcome.exit_code == 0 else outcome.stderr_tail[-4000:] or None,
        )
        result_path = run_dir / RESULT_FILE
        if outcome.exit_code == 0 and not outcome.timed_out and result_path.is_file():
            try:
                result = load_result(result_path)
                claimed = claimed_run_id(result, spec.run_id)
                if claimed is not None:
                    return failed_result(spec, "error", foreign_result_message(claimed), started, info)
                fp = result.fingerprint
                if fp is not None:  # the runner cannot see which image it runs in
                    fp = fp.model_copy(
                        update={
                            "image": info.image_ref,
                            "image_digest": info.image_digest,
                            "lock_hash": info.lock_hash,
                        }
                    )
                return result.model_copy(update={"launch": info, "fingerprint": fp})
            except (ValidationError, SchemaVersionError, ValueError) as e:
                message = f"runner wrote an invalid result: {str(e).splitlines()[0]}"
                return failed_result(spec, "error", message, started, info)
        if outcome.timed_out:
            message = f"runner timed out after {timeout_s:.0f}s and was killed"
            return failed_result(spec, "timeout", message, started, info)
        last = _last_line(outcome.stderr_tail)
        if outcome.exit_code == EXIT_INVALID_SPEC:
            message = f"runner refused the spec (exit 2): {last}"
        else:
            how = deaths.describe_exit(outcome.exit_code, outcome.oom_killed, container=self.name == "docker")
            message = f"runner {how} without a result: {last}"
        return failed_result(spec, "error", message, started, info)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "no output on stderr"


def claimed_run_id(result: RunResult, planned: str) -> str | None:
    """The other run id a result file names (its own or its spec's), or None when both are the
    planned run's. Results are stored by run id, so a file claiming another id would replace
    that run's stored result (a runner's bug, or a file edited in a shared run folder)."""
    return next((claimed for claimed in (result.run_id, result.spec.run_id) if claimed != planned), None)


def foreign_result_message(claimed: str) -> str:
    return (
        f"the result file claimed another run id ({claimed!r}): refused, so that it cannot replace "
        "another run's result"
    )


def failed_result(spec: RunSpec, status: str, message: str, started: datetime, info: LaunchInfo) -> RunResult:
    return RunResult(
        run_id=spec.run_id,
        spec=spec,
        status=status,
        message=message,
        started_at=started,
        finished_at=max(started, datetime.now(UTC)),
        framework=spec.framework,
        launch=info,
    )
