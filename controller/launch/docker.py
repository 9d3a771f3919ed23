"""Docker launcher: the runner in its image, isolated.

The run folder is mounted read-write, the model store read-only, the image's cache read-write. No
network, a non-root user, no new privileges, all capabilities dropped, a read-only root file
system; `--gpu N` passes that one GPU only; every run gets the cores bench-ctl may use as its
cpuset, and CPU runs a memory limit (no swap).

A container never outlives the bench-ctl that started it: Ctrl-C or SIGTERM kills and removes it,
and each container is labelled with its owner (host, pid, process start) so that the next
launch on this host removes containers whose bench-ctl died without cleaning up (SIGKILL).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from controller.catalog.images import ImageInfo
from controller.errors import BenchError, Terminated
from controller.launch.base import (
    LOG_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Launcher,
    LineSink,
    ProcessOutcome,
    TailBuffer,
)
from controller.launch.identity import client, find_image, image_tag, stale_reason
from controller.paths import Paths
from schemas import RunSpec
from schemas.devices import cuda_index

RUNNER_UID = 10001
INSIDE_HOME = "/bench"
ROLE = "runner"  # label bench.role of every container a launcher starts (runners and tools)
OOM_LINE = "container was killed: out of memory (OOMKilled)"


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


# --------------------------------------------------------------------------- owners


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), or None where unknown.

    A pid can be reused; a pid with the same start time is the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def pid_namespace() -> str | None:
    """This process's pid namespace (pids of another one mean nothing here), or None where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def owner_labels() -> dict[str, str]:
    """Labels naming this bench-ctl process as the owner of a container."""
    pid = os.getpid()
    labels = {"bench.role": ROLE, "bench.owner-pid": str(pid), "bench.owner-host": socket.gethostname()}
    for key, value in (("bench.owner-start", process_start(pid)), ("bench.owner-pidns", pid_namespace())):
        if value is not None:
            labels[key] = value
    return labels


def gone_owner(labels: dict[str, str]) -> int | None:
    """The pid of the container's bench-ctl if it was started on this host and no longer runs, else
    None (alive, another host's or pid namespace's, or not labelled with an owner)."""
    if labels.get("bench.role") != ROLE or labels.get("bench.owner-host") != socket.gethostname():
        return None
    namespace = labels.get("bench.owner-pidns")
    if namespace is not None and namespace != pid_namespace():
        return None
    try:
        pid = int(labels["bench.owner-pid"])
    except (KeyError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except PermissionError:
        pass  # alive, another user's
    expected = labels.get("bench.owner-start")
    actual = process_start(pid)
    if expected is not None and actual is not None and actual != expected:
        return pid  # the pid now belongs to another process
    return None


# --------------------------------------------------------------------------- live containers

_live: dict[str, Any] = {}  # id -> container, of this process, from creation to removal
_stopped_by_signal: dict[str, int] = {}  # id -> the signal on which it was killed
_live_lock = threading.Lock()
_signals_hooked = False
HOOKED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _track(container: Any) -> None:
    with _live_lock:
        _live[container.id] = container


def _untrack(container: Any) -> None:
    with _live_lock:
        _live.pop(container.id, None)
        _stopped_by_signal.pop(container.id, None)


def _kill_live_containers(signum: int) -> None:
    with _live_lock:
        containers = list(_live.values())
        _stopped_by_signal.update((c.id, signum) for c in containers)
    for container in containers:
        try:
            container.kill()
        except Exception:
            pass  # already gone, or the daemon is: nothing more to do here


def _on_signal(previous: Any, signum: int, frame: FrameType | None) -> None:
    # The Docker calls run in a thread: this handler interrupts the main thread wherever it is,
    # possibly inside the Docker client holding its connection pool's lock.
    threading.Thread(
        target=_kill_live_containers, args=(signum,), name="bench-stop-containers", daemon=True
    ).start()
    if callable(previous):
        previous(signum, frame)  # e.g. Ctrl-C's KeyboardInterrupt, bench-ctl's Terminated
    else:
        raise Terminated(signum)  # the default would end the process: end it through the cleanup paths


def hook_signals() -> None:
    """Once per process, from the main thread: SIGINT, SIGTERM and SIGHUP first kill this
    process's containers, then do what they did before (the previous handler runs).

    The main thread's own run removes its container as the exception passes; runs in other
    threads (co-located runners) see their container stop and raise too. An ignored signal stays
    ignored."""
    global _signals_hooked
    if _signals_hooked or threading.current_thread() is not threading.main_thread():
        return
    for signum in HOOKED_SIGNALS:
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN or previous is None:
            continue
        handler = previous if callable(previous) else None
        signal.signal(signum, functools.partial(_on_signal, handler))
    _signals_hooked = True


def _raise_if_stopped_by_signal(container: Any) -> None:
    """In a run whose container a signal handler killed: raise as the main thread did."""
    with _live_lock:
        signum = _stopped_by_signal.get(container.id)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if signum is not None:
        raise Terminated(signum)


def daemon_lost(e: BaseException) -> str:
    """The line naming a daemon that stopped answering as a container ended. A daemon that shuts
    down stops its containers first (SIGTERM, then SIGKILL after 10 s): the run ends, then the
    daemon is gone."""
    first = (str(e).splitlines() or [""])[0][:200]
    return f"lost contact with the Docker daemon as the container ended: {type(e).__name__}: {first}"


class DockerLauncher(Launcher):
    name = "docker"

    def __init__(self, paths: Paths, docker_client: Any, memory_limit_mb: int | None = None) -> None:
        """`memory_limit_mb`: each CPU container's memory limit (default: 80% of this host's memory)."""
        super().__init__(paths)
        self.client = docker_client
        self.memory_limit_mb = memory_limit_mb
        hook_signals()

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
        if str(host_path).startswith(f"{INSIDE_HOME}/"):  # already as the container sees it
            return str(host_path)
        rel = host_path.resolve().relative_to(self.paths.home)
        return f"{INSIDE_HOME}/{rel}"

    def model_dir(self, model: str) -> str:
        return f"{INSIDE_HOME}/models/{model}"

    def cache_dir(self, image: ImageInfo) -> str:
        return f"{INSIDE_HOME}/cache/{image.name}"

    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        self.reap_orphans(log)
        self.require_image(image)
        cache = self.paths.cache / image.name
        cache.mkdir(parents=True, exist_ok=True)
        self._writable(cache)

    def reap_orphans(self, log: LineSink) -> list[str]:
        """Kill and remove this host's containers whose bench-ctl is gone (killed with SIGKILL, or
        cut off from the daemon); returns their ids. Containers of live processes stay."""
        host = socket.gethostname()
        try:
            found = self.client.api.containers(
                all=True, filters={"label": [f"bench.role={ROLE}", f"bench.owner-host={host}"]}
            )
        except Exception as e:
            log(f"could not list runner containers: {type(e).__name__}: {e}")
            return []
        removed = []
        for row in found:
            pid = gone_owner(row.get("Labels") or {})
            if pid is None:
                continue
            short = str(row["Id"])[:12]
            try:
                self.client.api.remove_container(row["Id"], force=True)
            except Exception as e:
                log(f"could not remove orphaned runner container {short}: {type(e).__name__}: {e}")
                continue
            log(f"removed orphaned runner container {short} (its bench-ctl, pid {pid}, is gone)")
            removed.append(str(row["Id"]))
        return removed

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

    def _memory_limit(self) -> int:
        if self.memory_limit_mb is not None:
            return self.memory_limit_mb << 20
        return memory_limit_bytes()

    def _container_kwargs(
        self,
        command: list[str],
        volumes: dict[str, dict[str, str]],
        device: str,
        entrypoint: list[str] | None,
        memory_limit_mb: int | None = None,
    ) -> dict[str, Any]:
        """Everything `containers.create` gets besides the image: isolation, devices, limits, owner."""
        from docker.types import DeviceRequest

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
            "labels": owner_labels(),
        }
        if entrypoint is not None:
            kwargs["entrypoint"] = entrypoint
        # The runner computes on the cores bench-ctl may use (taskset, a Slurm allocation), GPU runs
        # included: the framework's threads default to their number, read inside the container.
        kwargs["cpuset_cpus"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        index = cuda_index(device)
        if index is not None:
            kwargs["device_requests"] = [DeviceRequest(device_ids=[str(index)], capabilities=[["gpu"]])]
            kwargs["environment"]["BENCH_CUDA_INDEX"] = "0"  # the one GPU passed is index 0 inside
        else:
            kwargs["mem_limit"] = kwargs["memswap_limit"] = self._memory_limit()  # no swap: a clean OOM
        if memory_limit_mb is not None:  # the run's own policy.memory_limit_mb wins
            kwargs["mem_limit"] = kwargs["memswap_limit"] = memory_limit_mb << 20
        return kwargs

    def _start(self, img: Any, kwargs: dict[str, Any]) -> Any:
        """Create and start the container, tracked from its creation so that an interrupt stops it."""
        container = self.client.containers.create(img.id, **kwargs)
        _track(container)
        try:
            container.start()
        except BaseException:
            self._remove(container)
            raise
        return container

    @staticmethod
    def _follow_logs(container: Any, log_path: Path, tail: TailBuffer, on_line: LineSink) -> threading.Thread:
        """Copy the container's output into the log file, the tail and `on_line`, in a thread."""

        def pump() -> None:
            # Appending, line by line: notes of ours appended meanwhile are not overwritten.
            with log_path.open("a") as log:
                buffer = ""
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    buffer += chunk.decode(errors="replace")
                    *lines, buffer = buffer.split("\n")
                    for line in lines:
                        log.write(line + "\n")
                        log.flush()
                        tail.add(line)
                        on_line(line)
                if buffer:
                    log.write(buffer + "\n")
                    tail.add(buffer)

        log_path.write_text("")
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        return reader

    @staticmethod
    def _wait(container: Any, timeout_s: float, start: float, tail: TailBuffer) -> tuple[int | None, bool]:
        """(exit code, timed out). Past the timeout, or when the daemon fails us, the container is killed."""
        try:
            status = container.wait(timeout=timeout_s)
        except Exception as e:
            # requests' ReadTimeout once the container outlives its time; anything earlier is the
            # daemon failing us, which kills the run too but is not a timeout.
            timed_out = time.monotonic() - start >= timeout_s * 0.99
            if not timed_out:
                tail.add(f"lost contact with the Docker daemon: {type(e).__name__}: {e}")
            try:
                container.kill()
            except Exception:
                pass
            return None, timed_out
        _raise_if_stopped_by_signal(container)
        return int(status.get("StatusCode", -1)), False

    @staticmethod
    def _collect(container: Any, log_path: Path, tail: TailBuffer) -> bool:
        """Keep the container's state beside the log (what it really got: network, user, mounts,
        limits); returns whether the OOM killer ended a process in it."""
        import docker

        try:
            container.reload()
        except docker.errors.NotFound:
            tail.add("the container was removed by someone else before its state was read")
            return False
        except Exception as e:
            tail.add(daemon_lost(e))
            return False
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        if oom:
            tail.add(OOM_LINE)
        try:
            log_path.with_name("container.json").write_text(
                json.dumps(container.attrs, indent=1, default=str)
            )
            if oom:
                with log_path.open("a") as log:
                    log.write(OOM_LINE + "\n")
        except OSError:
            pass
        return oom

    @staticmethod
    def _remove(container: Any) -> Exception | None:
        """Kill (if it still runs) and remove the container; it no longer counts as ours. Returns
        why the daemon could not remove it (it is gone: the next launch reaps the container)."""
        import docker

        try:
            container.remove(force=True)
            return None
        except docker.errors.NotFound:
            return None
        except Exception as e:
            return e
        finally:
            _untrack(container)

    def _outcome(
        self,
        image: ImageInfo,
        img: Any,
        code: int | None,
        timed_out: bool,
        start: float,
        tail: str,
        oom_killed: bool = False,
    ) -> ProcessOutcome:
        return ProcessOutcome(
            code,
            timed_out,
            time.monotonic() - start,
            tail,
            image_ref=image_tag(image),
            image_digest=img.id,
            lock_hash=img.labels.get("bench.lock-hash"),
            oom_killed=oom_killed,
        )

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
        memory_limit_mb: int | None = None,
    ) -> ProcessOutcome:
        img = self.require_image(image)
        kwargs = self._container_kwargs(command, volumes, device, entrypoint, memory_limit_mb)
        start = time.monotonic()
        try:
            container = self._start(img, kwargs)
        except Exception as e:  # the daemon refused or did not answer: a failed run, not a crash
            first = (str(e).splitlines() or [""])[0][:300]
            message = f"docker could not start the container: {type(e).__name__}: {first}"
            log_path.write_text(message + "\n")
            return self._outcome(image, img, None, False, start, message)
        tail = TailBuffer()
        reader: threading.Thread | None = None
        try:
            reader = self._follow_logs(container, log_path, tail, on_line)
            code, timed_out = self._wait(container, timeout_s, start, tail)
            reader.join(timeout=10)
            lost = code is None and not timed_out  # the daemon failed us: already said in the tail
            oom = not lost and self._collect(container, log_path, tail) and code != 0
        except BaseException as e:
            # Ctrl-C, SIGTERM, SIGHUP or a failure of ours: the container must not outlive us.
            self._remove(container)
            if reader is not None:
                reader.join(timeout=2)  # its output ends with the container
            try:
                with log_path.open("a") as log:
                    log.write(f"bench-ctl stopped and removed this container: {type(e).__name__}\n")
            except OSError:
                pass
            raise
        failed = self._remove(container)
        if failed is not None and not lost and code != 0:
            tail.add(daemon_lost(failed))
        return self._outcome(image, img, code, timed_out, start, tail.text(), oom)

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
        return self._run(
            image,
            command,
            volumes,
            spec.device,
            timeout_s,
            run_dir / LOG_FILE,
            on_line,
            memory_limit_mb=spec.policy.memory_limit_mb,
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
