"""One writer per framework cache: runners that share a cache folder (Slurm jobs packed on one
node) compile one at a time, so none reads a blob or engine that another is still writing."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".compile.lock"


@contextmanager
def cache_lock(folder: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the cache folder exclusively (an advisory lock, released when the process ends).
    Where the folder cannot be created or locked (read-only), run unlocked."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / LOCK_FILE).open("a")
    except OSError:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another runner compiling into {folder}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without locks: as before, unlocked
        yield
