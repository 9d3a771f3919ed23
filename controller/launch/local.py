"""Local launcher: the image's lock file as a virtual environment, the runner as a subprocess."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from controller.catalog.images import ImageInfo
from controller.launch import deaths
from controller.launch.base import (
    LOG_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Launcher,
    LineSink,
    ProcessOutcome,
    TailBuffer,
)
from controller.launch.envs import LocalEnv, runtime_dir
from schemas import RunSpec

# The child sees a whitelisted environment: thread and device settings pass, the rest does not.
PASSED_VARS = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "KMP_AFFINITY",
    "CUDA_VISIBLE_DEVICES",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_XLA_FLAGS",
    "NVIDIA_VISIBLE_DEVICES",
)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_VARS if k in os.environ}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.update(extra or {})
    return env


def kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill a child started in its own session, with everything it started, and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _address_space_limit(mb: int) -> Callable[[], None]:
    def limit() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))

    return limit


def run_process(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    log_path: Path,
    on_line: LineSink,
    image: ImageInfo,
    memory_limit_mb: int | None = None,
) -> ProcessOutcome:
    """Run `cmd` in its own process group; stream stderr lines to `on_line` and `log_path`.

    On timeout, Ctrl-C, SIGTERM or an error of ours, the whole group is killed. A SIGKILL we did
    not send, while the kernel's OOM-kill count rose, is recorded as out of memory."""
    tail = TailBuffer()
    start = time.monotonic()
    oom_before = deaths.oom_kills()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_address_space_limit(memory_limit_mb) if memory_limit_mb else None,
        )

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                log.write(line)
                log.flush()
                tail.add(line)
                on_line(line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
        except BaseException:  # Ctrl-C, SIGTERM, an error of ours: the runner must not outlive us
            kill_group(proc)
            raise
        reader.join(timeout=5)
    oom_after = deaths.oom_kills()
    oom = (
        not timed_out
        and proc.returncode == -signal.SIGKILL
        and oom_before is not None
        and oom_after is not None
        and oom_after > oom_before
    )
    if oom:
        tail.add("killed by the kernel's OOM killer (out of memory)")
    return ProcessOutcome(
        proc.returncode,
        timed_out,
        time.monotonic() - start,
        tail.text(),
        image_ref=f"local:{image.name}",
        lock_hash=image.lock_hash,
        oom_killed=oom,
    )


class LocalLauncher(Launcher):
    name = "local"

    def model_dir(self, model: str) -> str:
        return str(self.paths.models / model)

    def cache_dir(self, image: ImageInfo) -> str:
        return str(self.paths.cache / image.name)

    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        LocalEnv(image, self.paths).ensure(log)
        Path(self.cache_dir(image)).mkdir(parents=True, exist_ok=True)

    def _child_env(self) -> dict[str, str]:
        return child_env({"PYTHONPATH": str(runtime_dir(self.paths))})

    def _python(self, image: ImageInfo) -> str:
        return str(LocalEnv(image, self.paths).python)

    def start_runner(
        self,
        image: ImageInfo,
        spec: RunSpec,
        run_dir: Path,
        timeout_s: float,
        on_line: LineSink,
        shared: Sequence[Path] = (),
    ) -> ProcessOutcome:
        cmd = [
            self._python(image),
            "-m",
            "runners",
            "--spec",
            str(run_dir / SPEC_FILE),
            "--out",
            str(run_dir / RESULT_FILE),
        ]
        limit = spec.policy.memory_limit_mb
        return run_process(
            cmd,
            run_dir,
            self._child_env(),
            timeout_s,
            run_dir / LOG_FILE,
            on_line,
            image,
            limit,
        )

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
        cmd = [self._python(image), "-m", module, *args]
        return run_process(
            cmd,
            writable,
            self._child_env(),
            timeout_s,
            writable / "tool.log",
            on_line,
            image,
        )
