"""Docker launcher: the runner in its image, isolated.

The run folder is mounted read-write, the model store read-only, the image's cache read-write. No
network, a non-root user, no new privileges, all capabilities dropped, a read-only root file
system; `--gpu N` passes that one GPU only; CPU runs get a cpuset and a memory limit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.catalog import ImageInfo, code_hash
from controller.errors import BenchError
from controller.launchers.base import (
    LOG_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Launcher,
    LineSink,
    ProcessOutcome,
    TailBuffer,
)
from controller.paths import Paths
from schemas import RunSpec

IMAGE_PREFIX = "inference-bench"
RUNNER_UID = 10001
INSIDE_HOME = "/bench"
START_HINT = "start it: `sudo dockerd --iptables=false --bridge=none &` (see README), or use --launcher local"


def image_tag(image: ImageInfo) -> str:
    return f"{IMAGE_PREFIX}/{image.name}:latest"


def client(timeout: int = 5) -> Any:
    import docker

    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
        return c
    except Exception as e:  # the SDK raises several types for "no daemon"
        raise BenchError(f"Docker daemon not reachable ({type(e).__name__})", START_HINT) from None


def find_image(c: Any, image: ImageInfo) -> Any | None:
    import docker

    try:
        return c.images.get(image_tag(image))
    except docker.errors.ImageNotFound:
        return None


def stale_reason(found: Any, image: ImageInfo) -> str | None:
    """Why a built image no longer matches the repository (lock file or runner code), or None."""
    labels = found.labels or {}
    if labels.get("bench.lock-hash") != image.lock_hash:
        return f"image {image_tag(image)} was built from an older requirements.lock"
    if labels.get("bench.code-hash") != code_hash():
        return f"image {image_tag(image)} was built from older schemas/runners code"
    return None


def unavailable_reason(image: ImageInfo, paths: Paths) -> str | None:
    """Why `auto` cannot use Docker for this image, or None if it can."""
    try:
        c = client(timeout=3)
    except BenchError:
        return "no Docker daemon answers"
    found = find_image(c, image)
    if found is None:
        return f"image {image_tag(image)} is not built"
    return stale_reason(found, image)


def memory_limit_bytes(fraction: float = 0.8) -> int:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return int(pages * size * fraction)
    except (ValueError, OSError):
        return 8 << 30


class DockerLauncher(Launcher):
    name = "docker"

    def __init__(self, paths: Paths, docker_client: Any) -> None:
        super().__init__(paths)
        self.client = docker_client

    @classmethod
    def connect(cls, paths: Paths) -> DockerLauncher:
        # A busy daemon (a build running beside) can take many seconds to answer an API call.
        return cls(paths, client(timeout=300))

    def require_image(self, image: ImageInfo) -> Any:
        found = find_image(self.client, image)
        if found is None:
            raise BenchError(
                f"image {image_tag(image)} is not built",
                f"build it: make images IMAGES={image.name}  (or bench-ctl images build {image.name})",
            )
        stale = stale_reason(found, image)
        if stale is not None:
            raise BenchError(stale, f"rebuild it: bench-ctl images build {image.name}")
        return found

    def inside(self, host_path: Path) -> str:
        rel = host_path.resolve().relative_to(self.paths.home)
        return f"{INSIDE_HOME}/{rel}"

    def model_dir(self, model: str) -> str:
        return f"{INSIDE_HOME}/models/{model}"

    def cache_dir(self, image: ImageInfo) -> str:
        return f"{INSIDE_HOME}/cache/{image.name}"

    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        self.require_image(image)
        cache = self.paths.cache / image.name
        cache.mkdir(parents=True, exist_ok=True)
        self._writable(cache)

    @staticmethod
    def _writable(path: Path) -> None:
        """Let the container's non-root user write here."""
        if os.geteuid() == 0:
            for p in [path, *path.rglob("*")]:
                os.chown(p, RUNNER_UID, RUNNER_UID, follow_symlinks=False)
        else:
            path.chmod(0o777)

    def _user(self) -> str:
        return f"{RUNNER_UID}:{RUNNER_UID}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"

    def _run(
        self,
        image: ImageInfo,
        command: list[str],
        volumes: dict[str, dict[str, str]],
        device: str,
        timeout_s: float,
        log_path: Path,
        on_line: LineSink,
        entrypoint: list[str] | None = None,
    ) -> ProcessOutcome:
        from docker.types import DeviceRequest

        img = self.require_image(image)
        kwargs: dict[str, Any] = {
            "command": command,
            "volumes": volumes,
            "network_mode": "none",
            "user": self._user(),
            "read_only": True,
            "tmpfs": {"/tmp": "rw,size=2g"},
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "environment": {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": "/tmp"},
            "detach": True,
            "labels": {"bench.role": "runner"},
        }
        if entrypoint is not None:
            kwargs["entrypoint"] = entrypoint
        if device.startswith("cuda:"):
            index = device.split(":")[1]
            kwargs["device_requests"] = [DeviceRequest(device_ids=[index], capabilities=[["gpu"]])]
            kwargs["environment"]["BENCH_CUDA_INDEX"] = "0"  # the one GPU passed is index 0 inside
        else:
            cpus = sorted(os.sched_getaffinity(0))
            kwargs["cpuset_cpus"] = ",".join(str(c) for c in cpus)
            kwargs["mem_limit"] = memory_limit_bytes()
        tail = TailBuffer()
        start = time.monotonic()
        try:
            container = self.client.containers.run(img.id, **kwargs)
        except Exception as e:  # the daemon refused or did not answer: a failed run, not a crash
            message = (
                f"docker could not start the container: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            )
            log_path.write_text(message + "\n")
            return ProcessOutcome(
                None,
                False,
                time.monotonic() - start,
                message,
                image_ref=image_tag(image),
                image_digest=img.id,
                lock_hash=img.labels.get("bench.lock-hash"),
            )
        timed_out = False

        def pump() -> None:
            with log_path.open("w") as log:
                buffer = ""
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    buffer += chunk.decode(errors="replace")
                    *lines, buffer = buffer.split("\n")
                    for line in lines:
                        log.write(line + "\n")
                        tail.add(line)
                        on_line(line)
                if buffer:
                    log.write(buffer)
                    tail.add(buffer)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            status = container.wait(timeout=timeout_s)
            code: int | None = int(status.get("StatusCode", -1))
        except Exception as e:
            # requests' ReadTimeout once the container outlives its time; anything earlier is the
            # daemon failing us, which kills the run too but is not a timeout.
            timed_out = time.monotonic() - start >= timeout_s * 0.99
            code = None
            if not timed_out:
                tail.add(f"lost contact with the Docker daemon: {type(e).__name__}: {e}")
            try:
                container.kill()
            except Exception:
                pass
        reader.join(timeout=10)
        try:
            # Kept beside the log: what the container really got (network, user, mounts, limits).
            container.reload()
            log_path.with_name("container.json").write_text(
                json.dumps(container.attrs, indent=1, default=str)
            )
            if container.attrs.get("State", {}).get("OOMKilled"):
                tail.add("container was killed: out of memory (OOMKilled)")
        except Exception:
            pass
        try:
            container.remove(force=True)
        except Exception:
            pass
        return ProcessOutcome(
            code,
            timed_out,
            time.monotonic() - start,
            tail.text(),
            image_ref=image_tag(image),
            image_digest=img.id,
            lock_hash=img.labels.get("bench.lock-hash"),
        )

    def start_runner(
        self,
        image: ImageInfo,
        spec: RunSpec,
        run_dir: Path,
        timeout_s: float,
        on_line: LineSink,
        shared: Sequence[Path] = (),
    ) -> ProcessOutcome:
        self._writable(run_dir)
        inside_run = f"{INSIDE_HOME}/run"
        volumes = {
            str(run_dir): {"bind": inside_run, "mode": "rw"},
            str(self.paths.models): {"bind": f"{INSIDE_HOME}/models", "mode": "ro"},
            str(self.paths.cache / image.name): {"bind": self.cache_dir(image), "mode": "rw"},
        }
        for folder in shared:
            self._writable(folder)
            volumes[str(folder)] = {"bind": self.inside(folder), "mode": "rw"}
        command = ["--spec", f"{inside_run}/{SPEC_FILE}", "--out", f"{inside_run}/{RESULT_FILE}"]
        return self._run(image, command, volumes, spec.device, timeout_s, run_dir / LOG_FILE, on_line)

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
        self._writable(writable)
        volumes = {str(writable): {"bind": self.inside(writable), "mode": "rw"}}
        for path in readable or []:
            volumes[str(path)] = {"bind": self.inside(path), "mode": "ro"}
        return self._run(
            image,
            ["-m", module, *args],
            volumes,
            "cpu",
            timeout_s,
            writable / "tool.log",
            on_line,
            entrypoint=["python"],
        )
