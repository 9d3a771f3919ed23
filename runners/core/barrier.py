"""A file barrier: co-located runner processes (or containers sharing one folder) meet here.

Each party writes `TAG.PARTY` into the shared folder, then waits until every party's file exists.
Used before each steady state so that the measurements of co-located processes overlap.
"""

from __future__ import annotations

import time
from pathlib import Path

from schemas import Barrier


class BarrierTimeout(RuntimeError):
    pass


def wait(barrier: Barrier, tag: str, poll_s: float = 0.01) -> float:
    """Arrive at `tag` and wait for the other parties; returns the seconds waited."""
    folder = Path(barrier.dir)
    (folder / f"{tag}.{barrier.party}").write_text(f"{time.time()}\n")
    start = time.monotonic()
    expected = [folder / f"{tag}.{p}" for p in barrier.parties]
    while not all(p.exists() for p in expected):
        if (folder / "abort").exists():
            raise BarrierTimeout(f"a co-located party failed: {(folder / 'abort').read_text().strip()}")
        if time.monotonic() - start > barrier.timeout_s:
            missing = [p.name.split(".", 1)[1] for p in expected if not p.exists()]
            raise BarrierTimeout(
                f"co-located parties {missing} did not arrive within {barrier.timeout_s:.0f}s"
            )
        time.sleep(poll_s)
    return time.monotonic() - start


def abort(barrier: Barrier, why: str) -> None:
    """Tell the other parties not to wait for this one."""
    try:
        (Path(barrier.dir) / "abort").write_text(f"{barrier.party}: {why}\n")
    except OSError:
        pass
