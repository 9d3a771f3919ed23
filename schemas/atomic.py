"""Atomic file (and folder) writes, shared by the controller and the runners: a reader sees the
old file or the whole new one, never a part, and a crash right after the write leaves the whole
new file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, flush it to disk, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        publish_atomic(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder_atomic(
    path: str | Path, fill: Callable[[Path], None], replaceable: Callable[[Path], bool]
) -> None:
    """Build a folder with `fill(tmp)` in a temporary folder beside `path`, then rename it to `path`.

    A failure leaves `path` as it was and no temporary folder. An existing `path` is replaced only
    when `replaceable(path)` says so (e.g. it is an earlier copy); the old copy is removed after the
    new one is in place, so `path` is never missing a part."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # a folder as mkdir makes it, not mkdtemp's private 0700
        fill(tmp)
        if path.exists():
            if not replaceable(path):
                raise FileExistsError(path)
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old / path.name, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def publish_atomic(written: str | Path, path: str | Path) -> None:
    """Flush a finished file (e.g. one a framework wrote under a temporary name) to disk and
    rename it to `path`."""
    fd = os.open(written, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(written, path)
