"""The null runner: no framework, a preallocated zero output. Measures the harness's own cost.

`fault` makes it fail on purpose so the failure paths of the harness and controller are tested
with the real entrypoint: raise (framework error), exit (process dies), hang (timeout),
bad-output (NaN outputs), oom (allocates until out of memory).

With `landscape=true` the work of an iteration is multiplied by
`schemas.frameworks.null.null_landscape(knob_a, knob_b)`: a search problem whose answer is known.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from runners.base import Runner
from runners.core.common import Inputs, batch_len
from schemas import NullOptions

_CHUNK = bytes(2048)  # about 1.4 us of sha256: the deadline is overshot by at most that


def busy(work_us: float) -> None:
    """Busy until the deadline in C with the GIL released (hashlib releases it for 2 KiB and
    more), as a framework computes: other threads run meanwhile."""
    end = time.perf_counter_ns() + int(work_us * 1000)
    while time.perf_counter_ns() < end:
        hashlib.sha256(_CHUNK)


class NullRunner(Runner[NullOptions]):
    devices = ("cpu", "cuda")

    def version(self) -> str:
        return f"python-{platform.python_version()}"

    def read_model(self) -> None:
        self._outputs: dict[tuple[Any, ...], list[np.ndarray]] = {}

    def compile(self) -> tuple[bool | None, str | None]:
        n = self.options.threads
        self._factor = self.options.work_factor()
        # The other threads' shares of each call's work; the calling thread does its own.
        self._pool = ThreadPoolExecutor(n - 1, thread_name_prefix="null-work") if n > 1 else None
        landscape = f", work x {self._factor:g} (landscape)" if self.options.landscape else ""
        return None, "nothing to compile" + (f", work on {n} threads" if n > 1 else "") + landscape

    def threads_used(self) -> int | None:
        return self.options.threads

    def close(self) -> None:
        pool: ThreadPoolExecutor | None = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown()

    def prepare(self, batch: Inputs) -> Any:
        n = batch_len(batch)
        fill = np.nan if self.options.fault == "bad-output" else 0.0
        dims = self.dims_of(batch)
        key = (n, *sorted(dims.items()))
        if key not in self._outputs:
            # Each output at this batch's size and dimensions (a name the inputs do not set: 1).
            self._outputs[key] = [
                np.full(
                    [n if d is None else dims.get(d, 1) if isinstance(d, str) else d for d in o.shape],
                    fill,
                    dtype=np.float32,
                )
                for o in self.manifest.outputs
            ]
        return key

    def run(self, prepared: Any) -> Any:
        fault = self.options.fault
        if fault != "none":
            if fault == "raise":
                raise RuntimeError("injected framework failure (null runner, fault=raise)")
            if fault == "exit":
                os._exit(137)
            if fault == "hang":
                time.sleep(3600)
            if fault == "oom":  # touch memory until the limit or the kernel stops us
                hoard = []
                while True:
                    hoard.append(np.ones(16 << 20, dtype=np.uint8))
        work_us = (self.options.work_us + self.options.work_us_per_sample * prepared[0]) * self._factor
        if work_us:
            others = (
                [self._pool.submit(busy, work_us) for _ in range(self.options.threads - 1)]
                if self._pool
                else []
            )
            busy(work_us)
            for f in others:
                f.result()
        return self._outputs[prepared]

    def effective_precision(self) -> str:
        return "none"
