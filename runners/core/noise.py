"""Where noise happens: how the CPUs served this runner, read between iterations.

A `Probe` reads, in a few microseconds and without a thread of its own: the busy CPU time of the
cores this process may run on (/proc/stat), this process's CPU time, and for each of its threads
the time it ran and the time it waited on a run queue, runnable but without a CPU
(/proc/self/task/*/schedstat, kept open and re-read with pread). Two samples give a `Reading`:

* `starved_share`: waited / (ran + waited) over the process's threads. Zero when every thread
  that wanted a CPU had one; 0.5 when they got half of the time they could have used. It is the
  direct measure of what other load cost this runner, whatever the number of its threads and
  whether they compute or sleep (a GPU runner's blocked threads neither run nor wait).
* `other_cores`: the cores' busy time minus this process's, per second: the other load itself,
  which may or may not have taken anything from this runner (on a free core it does not).

The steady-state loop reads one at every window boundary and leaves starved windows out of the
headline figure (runners/core/measure.py); docs/decisions.md, "Measuring through other load",
says why.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TASKS = Path("/proc/self/task")
PROC_STAT = Path("/proc/stat")
QUIET_SAMPLE_S = 0.1  # how long each look at the host lasts while waiting for it to calm down
# A runner starved while the other processes together kept less than this busy starved itself:
# its own threads outnumber the cores (ONNX Runtime's parallel mode, a framework's helper
# threads). That is the configuration's cost, measured like any other, not noise.
SELF_ONLY_CORES = 0.05


def starved_by_others(r: Reading, starved_share: float) -> bool:
    """Whether the reading's wait for a CPU is other load's doing: starved beyond the share
    allowed while other processes kept at least SELF_ONLY_CORES busy."""
    if r.starved_share is None or r.starved_share <= starved_share:
        return False
    return r.other_cores is None or r.other_cores >= SELF_ONLY_CORES


@dataclass(frozen=True)
class Sample:
    wall_ns: int
    busy_ns: int | None  # busy CPU time of the cores this process may use; None: unreadable
    own_ns: int  # this process's CPU time
    threads: dict[int, tuple[int, int]] = field(default_factory=dict)  # tid: (ran, waited) ns


@dataclass(frozen=True)
class Reading:
    """What happened between two samples."""

    wall_ns: int
    other_cores: float | None
    starved_share: float | None  # None: no per-thread figures (no schedstat on this kernel)
    runnable_ns: int = 0  # ran + waited, summed over threads: the weight of `starved_share`


def between(a: Sample, b: Sample) -> Reading:
    wall = b.wall_ns - a.wall_ns
    other = None
    if a.busy_ns is not None and b.busy_ns is not None and wall > 0:
        other = max(0.0, ((b.busy_ns - a.busy_ns) - (b.own_ns - a.own_ns)) / wall)
    if not a.threads or not b.threads:
        return Reading(wall, other, None)
    ran = waited = 0
    for tid, (ran1, waited1) in b.threads.items():
        if tid in a.threads:  # threads that started or ended in between count from both ends
            ran0, waited0 = a.threads[tid]
            ran, waited = ran + ran1 - ran0, waited + waited1 - waited0
    runnable = ran + waited
    return Reading(wall, other, waited / runnable if runnable > 0 else 0.0, runnable)


def _cpu_lines(text: str, cpus: set[int] | None) -> int | None:
    """Busy jiffies (all but idle and iowait) of the `cpus` lines of /proc/stat, or of the
    aggregate line when `cpus` is None; None when none of them is there."""
    busy, found = 0, False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            break
        wanted = name == "cpu" if cpus is None else name[3:].isdigit() and int(name[3:]) in cpus
        if wanted:
            f = [int(x) for x in rest.split()]
            busy += sum(f[:8]) - f[3] - (f[4] if len(f) > 4 else 0)
            found = True
    return busy if found else None


class Probe:
    """Samples of this process and the cores it may use (see the module docstring)."""

    def __init__(self, tasks: Path = TASKS, proc_stat: Path = PROC_STAT) -> None:
        self._tasks = tasks
        self._fds: dict[int, int] = {}
        self._tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
        cpus = _affinity()
        self.cores = len(cpus) if cpus else (os.cpu_count() or 1)
        self._cpus = None if cpus is None or len(cpus) == (os.cpu_count() or 0) else cpus
        try:
            self._stat: int | None = os.open(proc_stat, os.O_RDONLY)
        except OSError:
            self._stat = None

    def sample(self, wall_ns: int | None = None) -> Sample:
        wall = time.perf_counter_ns() if wall_ns is None else wall_ns
        return Sample(wall, self._busy_ns(), time.process_time_ns(), self._threads())

    def _busy_ns(self) -> int | None:
        if self._stat is None:
            return None
        try:
            busy = _cpu_lines(os.pread(self._stat, 1 << 20, 0).decode(), self._cpus)
        except (OSError, ValueError, IndexError):
            return None
        return None if busy is None else int(busy * self._tick_ns)

    def _threads(self) -> dict[int, tuple[int, int]]:
        try:
            tids = [int(t) for t in os.listdir(self._tasks)]
        except OSError:
            return {}
        out = {}
        for tid in tids:
            fd = self._fds.get(tid)
            try:
                if fd is None:
                    fd = self._fds[tid] = os.open(self._tasks / str(tid) / "schedstat", os.O_RDONLY)
                ran, waited, *_ = os.pread(fd, 128, 0).split()
                out[tid] = (int(ran), int(waited))
            except (OSError, ValueError):
                self._forget(tid)
        for gone in set(self._fds) - set(tids):
            self._forget(gone)
        return out

    def _forget(self, tid: int) -> None:
        fd = self._fds.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for tid in list(self._fds):
            self._forget(tid)
        if self._stat is not None:
            os.close(self._stat)
            self._stat = None


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def other_load(probe: Probe, seconds: float = QUIET_SAMPLE_S) -> float | None:
    """Cores other processes keep busy on this runner's cores, over a look of `seconds` with the
    runner idle."""
    before = probe.sample()
    time.sleep(seconds)
    return between(before, probe.sample()).other_cores


def wait_for_quiet(probe: Probe, limit_s: float, threads: int, noise_cores: float) -> float:
    """Wait, at most `limit_s` seconds, until other load leaves this runner's `threads` a core
    each on the cores it may use (within `noise_cores`), looking at the host for QUIET_SAMPLE_S
    at a time with the runner idle. Returns the seconds waited: 0 when the first look found the
    host quiet enough, else the time from the first look to the last."""
    if limit_s <= 0:
        return 0.0
    allowed = max(0, probe.cores - threads) + noise_cores
    start = time.perf_counter()
    first = True
    while True:
        other = other_load(probe)
        waited = time.perf_counter() - start
        if other is None or other <= allowed:
            return 0.0 if first else waited
        if waited >= limit_s:
            return waited
        first = False
