"""Local launcher: the image's lock file as a virtual environment, the runner as a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from controller.catalog import ImageInfo
from controller.envs import LocalEnv
from controller.launchers.base import (
    LOG_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Launcher,
    LineSink,
    ProcessOutcome,
    TailBuffer,
)
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


def run_process(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path, on_line: LineSink
) -> tuple[int | None, bool, float, str]:
    """Run `cmd` in its own process group; stream stderr lines to `on_line` and `log_path`.

    Returns (exit code, timed out, wall seconds, stderr tail). On timeout the whole group is killed.
    """
    tail = TailBuffer()
    start = time.monotonic()
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
    return proc.returncode, timed_out, time.monotonic() - start, tail.text()


class LocalLauncher(Launcher):
    name = "local"

    def model_dir(self, model: str) -> str:
        return str(self.paths.models / model)

    def cache_dir(self, image: ImageInfo) -> str:
        return str(self.paths.cache / image.name)

    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        LocalEnv(image, self.paths).ensure(log)
        Path(self.cache_dir(image)).mkdir(parents=True, exist_ok=True)

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
        code, timed_out, wall, tail = run_process(
            cmd, run_dir, child_env(), timeout_s, run_dir / LOG_FILE, on_line
        )
        return ProcessOutcome(
            code, timed_out, wall, tail, image_ref=f"local:{image.name}", lock_hash=image.lock_hash
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
        code, timed_out, wall, tail = run_process(
            cmd, writable, child_env(), timeout_s, writable / "tool.log", on_line
        )
        return ProcessOutcome(
            code, timed_out, wall, tail, image_ref=f"local:{image.name}", lock_hash=image.lock_hash
        )
