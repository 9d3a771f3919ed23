"""Trackers: context managers sampling in a background thread, never inside the timed loop."""

from __future__ import annotations

import os
import resource
import threading
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
