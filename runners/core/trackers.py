"""Trackers: context managers sampling in a background thread, never inside the timed loop."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path
from types import TracebackType

from runners.core.energy import POWERCAP, CpuEnergyTracker
from schemas import Measurement, MeasurementPolicy


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


class HostTrackers:
    """What every scenario reads on the host around its timed part: this process's peak memory,
    the other processes' load, and CPU package energy (RAPL, where the host exposes it)."""

    def __init__(self, powercap: Path = POWERCAP) -> None:
        self.memory = HostMemoryTracker()
        self.load = HostLoadTracker()
        self.energy = CpuEnergyTracker(powercap)

    def __enter__(self) -> HostTrackers:
        self.memory.__enter__()
        self.load.__enter__()
        self.energy.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.energy.__exit__(exc_type, exc, tb)
        self.load.__exit__(exc_type, exc, tb)
        self.memory.__exit__(exc_type, exc, tb)

    def apply(self, m: Measurement, policy: MeasurementPolicy, samples: int | None = None) -> Measurement:
        """The measurement with these readings. CPU energy becomes its energy per 4096 predictions
        unless GPU telemetry gives one (applied after this, it replaces it)."""
        cores = self.load.other_cores
        update: dict[str, object] = {
            "peak_host_mem_mb": self.memory.peak_mb,
            "other_cpu_cores": cores,
            "noisy": None if cores is None else cores > policy.noise_cores,
            "cpu_energy_j": self.energy.energy_j,
        }
        per = self.energy.per_predictions(m.batch_size * m.iterations if samples is None else samples)
        if per is not None:
            update |= {"energy_j_per_4096": per, "energy_source": "rapl"}
        return m.model_copy(update=update)
