"""A runner does not outlive the controller that started it.

`bench-ctl` kills its runner's process group on Ctrl-C, SIGTERM or an error, but SIGKILL cannot be
caught: then the runner would be re-parented and keep measuring (or hang) for up to its timeout,
skewing every later measurement on the host. So the runner watches its parent and ends its own
process group when the parent is gone. Inside a container the parent is the container's init and
never changes; there the controller stops the container instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

POLL_S = 0.5


def _gone(original: int) -> bool:
    return os.getppid() != original


def watch(poll_s: float = POLL_S) -> threading.Thread | None:
    """Start a daemon thread that ends this process group once the parent process has exited."""
    original = os.getppid()
    if original == 1:  # started by init (a container's entrypoint): nothing to watch
        return None

    def loop() -> None:
        while not _gone(original):
            time.sleep(poll_s)
        # stderr is a pipe to the dead parent: writing may raise, and must not stop the exit.
        with contextlib.suppress(Exception):
            print(f"[runner] parent process {original} is gone: stopping", file=sys.stderr, flush=True)
        try:
            if os.getpgid(0) == os.getpid():  # we lead our own group: take our children with us
                os.killpg(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(143)

    thread = threading.Thread(target=loop, name="parent-watch", daemon=True)
    thread.start()
    return thread
