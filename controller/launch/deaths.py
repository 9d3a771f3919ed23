"""Say how a runner, exporter or tool process ended: an exit code, a signal, the OOM killer.

A local child killed by a signal has a negative return code (-9); a container's main process
killed by a signal exits 128 + N (137). SIGKILL from nobody we know of is most often the kernel's
OOM killer: the kernel's own counter (/proc/vmstat `oom_kill`) read before and after the run
tells whether it acted meanwhile.
"""

from __future__ import annotations

import signal
from pathlib import Path

VMSTAT = Path("/proc/vmstat")


def oom_kills(vmstat: Path = VMSTAT) -> int | None:
    """The kernel's count of processes its OOM killer has ended since boot, where readable."""
    try:
        for line in vmstat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def signal_of(code: int | None, container: bool = False) -> int | None:
    """The signal that ended a process, from its exit code (None: it exited by itself)."""
    if code is None:
        return None
    if code < 0:
        return -code
    if container and 128 < code < 128 + 65:
        return code - 128
    return None


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(code: int | None, oom_killed: bool = False, container: bool = False) -> str:
    """E.g. 'killed by SIGKILL (out of memory: the kernel's OOM killer)' or 'exited with code 3'."""
    if oom_killed:
        return (
            f"killed by SIGKILL (exit {code}): out of memory "
            "(the kernel's OOM killer or the container's memory limit)"
        )
    signum = signal_of(code, container)
    if signum is not None:
        return f"killed by {_name(signum)} (exit {code})"
    if code is None:
        return "did not exit (no exit code)"
    return f"exited with code {code}"


def likely_cause(code: int | None, oom_killed: bool = False, container: bool = False) -> str | None:
    """A guess where `describe_exit` cannot confirm the cause: a SIGKILL that the OOM counter did
    not confirm (or could not be read) is still most often the OOM killer. Callers rule out
    their own kills (timeouts) first."""
    if not oom_killed and signal_of(code, container) == signal.SIGKILL:
        return "most likely out of memory (the kernel's OOM killer)"
    return None


def describe_memory(mib: float) -> str:
    """A memory size for people: '812 MB', '23.4 GB' (MiB and GiB, as the store records them)."""
    return f"{mib / 1024:.1f} GB" if mib >= 1024 else f"{mib:.0f} MB"
