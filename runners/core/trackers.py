"""Trackers: context managers sampling in a background thread, never inside the timed loop."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path
from types import TracebackType

from probes.energy import POWERCAP, CpuEnergyTracker
from runners.core import noise
from runners.core.common import log
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
    how the CPUs served it (`noise.Probe`: its threads' waits and the other load), and CPU package
    energy (RAPL, where the host exposes it). With a `policy`, entering first waits (at most
    `policy.quiet_wait_s`) for other load to leave `threads` cores free."""

    def __init__(
        self, powercap: Path = POWERCAP, policy: MeasurementPolicy | None = None, threads: int = 1
    ) -> None:
        self.memory = HostMemoryTracker()
        self.energy = CpuEnergyTracker(powercap)
        self.probe = noise.Probe()
        self.reading: noise.Reading | None = None  # over the whole block
        self.quiet_wait_s: float | None = None
        self._policy, self._threads = policy, threads
        self._start: noise.Sample | None = None

    def __enter__(self) -> HostTrackers:
        if self._policy is not None:
            p = self._policy
            self.quiet_wait_s = noise.wait_for_quiet(self.probe, p.quiet_wait_s, self._threads, p.noise_cores)
            if self.quiet_wait_s:
                log(f"waited {self.quiet_wait_s:.1f}s for other load to leave the cores")
        self.memory.__enter__()
        self.energy.__enter__()
        self._start = self.probe.sample()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._start is not None
        self.reading = noise.between(self._start, self.probe.sample())
        self.probe.close()
        self.energy.__exit__(exc_type, exc, tb)
        self.memory.__exit__(exc_type, exc, tb)

    def apply(self, m: Measurement, policy: MeasurementPolicy, samples: int | None = None) -> Measurement:
        """The measurement with these readings. CPU energy becomes its energy per 4096 predictions
        unless GPU telemetry gives one (applied after this, it replaces it). A measurement whose
        windows were judged keeps its own noise figures; any other is judged as one block."""
        update: dict[str, object] = {
            "peak_host_mem_mb": self.memory.peak_mb,
            "cpu_energy_j": self.energy.energy_j,
            "quiet_wait_s": self.quiet_wait_s,
        }
        if m.windows_discarded is None and self.reading is not None:
            update |= whole_block_noise(self.reading, policy)
        per = self.energy.per_predictions(m.batch_size * m.iterations if samples is None else samples)
        if per is not None:
            update |= {"energy_j_per_4096": per, "energy_source": "rapl"}
        return m.model_copy(update=update)


def whole_block_noise(r: noise.Reading, policy: MeasurementPolicy) -> dict[str, object]:
    """Noise fields of a timed part judged as one block (no windows: server, multi-stream)."""
    if r.starved_share is not None:
        noisy: bool | None = noise.starved_by_others(r, policy.starved_share)
    else:
        noisy = None if r.other_cores is None else r.other_cores > policy.noise_cores
    return {"other_cpu_cores": r.other_cores, "starved_share": r.starved_share, "noisy": noisy}
