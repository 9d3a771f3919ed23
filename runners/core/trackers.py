"""Trackers: context managers sampling in a background thread, never inside the timed loop."""

from __future__ import annotations

import os
import resource
import threading
import time
from types import TracebackType


def _rss_bytes() -> int:
    # /proc read is cheaper than importing psutil in every image and says the same on Linux.
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it started (kernel's own high-water mark)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class HostMemoryTracker:
    """Peak RSS of this process while the block runs, sampled every `interval_s` seconds."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def __enter__(self) -> HostMemoryTracker:
        self.peak_bytes = _rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="host-mem", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / (1024 * 1024)


def _host_busy_s() -> float | None:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class HostLoadTracker:
    """How busy the host was outside this runner while the block ran, in CPU cores.

    Two readings, at entry and exit: the host's busy CPU time (/proc/stat, host-wide even in a
    container) minus this process's own. Nothing runs in between, so it costs the loop nothing."""

    def __init__(self) -> None:
        self.other_cores: float | None = None
        self._start: tuple[float | None, float, float] | None = None

    def __enter__(self) -> HostLoadTracker:
        self._start = (_host_busy_s(), _own_cpu_s(), time.monotonic())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        busy, own, wall = _host_busy_s(), _own_cpu_s(), time.monotonic()
        assert self._start is not None
        busy0, own0, wall0 = self._start
        if busy is None or busy0 is None or wall - wall0 <= 0:
            return
        self.other_cores = max(0.0, ((busy - busy0) - (own - own0)) / (wall - wall0))
