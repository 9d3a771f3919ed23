"""Worker processes of bench-ctl (drawing a report's figures, validating result files) end with it.

Ctrl-C and SIGTERM unwind bench-ctl and shut its pool down, but SIGKILL cannot be caught: its
workers would be re-parented and live on, holding memory and cores that skew every measurement
made afterwards on the host. So each worker asks the kernel to kill it when its parent dies
(Linux's PR_SET_PDEATHSIG) and, where that is not available, watches its parent itself.
(Runners watch their parent with probes/parent.py, which also ends their process group.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def _death_signal() -> bool:
    """Ask the kernel for SIGKILL once the parent is gone; False where it cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        os._exit(143)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def die_with_parent(parent: int) -> None:
    """Run in a new worker (a pool's initializer): it ends when `parent` does, even by SIGKILL."""
    if not _death_signal():
        _watch(parent)
    # The parent may have died before the request was made: then it was never going to fire.
    if os.getppid() != parent:
        os._exit(143)


def pool(workers: int) -> ProcessPoolExecutor:
    """A pool of forked workers (they start at once, with what bench-ctl imported) that do not
    outlive this process. Use it from the main thread: the kernel's death signal follows the
    thread that forked a worker."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
