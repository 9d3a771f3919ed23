"""The cores a runner was given, and whether its framework's threads fit them.

A runner may use the CPUs of its affinity mask (what the local launcher inherits, Docker's
`--cpuset-cpus`, a Slurm allocation) within its cgroup's CPU quota. Every framework's thread
count defaults to that number; a run asked for more threads, or started while other load held
some of its cores, is told so in one line naming the option to set (`RunResult.warnings`).
"""

from __future__ import annotations

import math
import os

from probes.fingerprint import cpu_limit


def given() -> int:
    """Whole cores this process may compute on: its affinity mask within its CPU quota."""
    limit = cpu_limit()
    return max(1, math.floor(limit if limit is not None else (os.cpu_count() or 1)))


def fit_warning(
    framework: str, threads: int | None, option: str | None, cores: int, other_cores: float | None
) -> str | None:
    """One line when `threads` exceed the `cores` given, or those of them other load left free
    at the start (`other_cores` busy elsewhere on them); None when they fit or nothing is known."""
    if threads is None or option is None:
        return None
    if threads > cores:
        return (
            f"{framework} computes with {threads} threads on the {cores} core(s) this runner was "
            f"given: its threads take turns and the figures are not the framework's; "
            f"set --set {option}={cores}"
        )
    free = max(1, round(cores - (other_cores or 0.0)))
    if threads > free:
        return (
            f"{framework} computes with {threads} threads, but other load kept {other_cores:.1f} of "
            f"the {cores} core(s) given busy when the run started: set --set {option}={free}, "
            "or measure on a quieter host"
        )
    return None
