"""Claims: a lock file held (flock) by the process working on something, so that another process
tells a live owner from the leftover of a killed one. The kernel lets go of the lock when its
holder dies, SIGKILL included, so a claim is never stale: a file nobody holds is free to take.

A claim's file is removed by its holder, while still held, when the work is done; a claimer that
opened the file just before finds it gone once it holds it, and opens it anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controller.errors import BenchError

LOCK_SUFFIX = ".lock"


@dataclass
class Claim:
    path: Path
    fd: int
    locked: bool  # False on a file system without locks: then nobody can tell live from stale

    def release(self) -> None:
        """Remove the claim's file (while holding it) and let go."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.drop()

    def drop(self) -> None:
        """Let go, leaving the file (to a holder that could not be told apart, without locks)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def take(path: Path, note: str = "") -> Claim | None:
    """Claim `path` (the file is made when missing) unless a live process holds it: None then.
    `note` (who holds it) is written into the file for the messages of others."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:  # no locks here (some network file systems): work unlocked, as before
            return Claim(path, fd, locked=False)
        if _still_there(fd, path):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, note.encode())
            return Claim(path, fd, locked=True)
        os.close(fd)  # its last holder removed it meanwhile: take the new one


def take_new(folder: Path, prefix: str) -> Claim:
    """A claim on a new, uniquely named file `PREFIX<random>.lock` in `folder`."""
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=LOCK_SUFFIX, dir=folder)
        os.close(fd)
        claim = take(Path(name))
        if claim is not None:
            return claim


def unwritable(folder: Path, e: OSError) -> BenchError:
    return BenchError(
        f"cannot write {folder}: {e.strerror or e}",
        "free space there, or point BENCH_HOME at a writable disk",
        exit_code=1,
    )


def holder(path: Path) -> str:
    """What the holder of a claim wrote into it ('' when nothing can be read)."""
    try:
        return path.read_text(errors="replace").strip()[:200]
    except OSError:
        return ""


def _still_there(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


class ClaimSet:
    """Claims on named things (a sweep's cells), one file `NAME.lock` each in `folder`, held until
    released or until this process ends; a context manager releases what is left."""

    def __init__(self, folder: Path, note: str) -> None:
        self.folder = folder
        self.note = note
        self.held: dict[str, Claim] = {}

    def take(self, name: str) -> str | None:
        """Claim `name`: None when this process holds it now, else what its holder wrote."""
        if name in self.held:
            return None
        path = self.folder / f"{name}{LOCK_SUFFIX}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            claim = take(path, self.note)
        except OSError as e:
            raise unwritable(self.folder, e) from None
        if claim is None:
            return holder(path) or "another process"
        self.held[name] = claim
        return None

    def release(self, name: str) -> None:
        claim = self.held.pop(name, None)
        if claim is not None:
            claim.release()

    def release_all(self) -> None:
        for name in list(self.held):
            self.release(name)

    def __enter__(self) -> ClaimSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_all()
