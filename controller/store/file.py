"""The store's file: what `--db` may name, and how every DuckDB connection of bench-ctl is opened.

- `open_duckdb` opens every connection, with DuckDB's automatic extension installs and loads
  off: given a file it does not recognise (an SQLite database as `--db`) or a function it lacks,
  DuckDB would otherwise download native code and load it.
- `check_file` reads a `--db` before DuckDB does: a folder, a device or FIFO (where opening
  would block), an empty file or another database is refused in one line.
- `create` builds a new store in a hidden file beside its path and links it into place, so a
  store appears whole or not at all.
- `snapshot` copies the store for a long read, so the read does not keep writers out.
"""

from __future__ import annotations

import errno
import os
import random
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from controller.errors import BenchError

Config = dict[str, str | bool | int | float | list[str]]
# Applied last by open_duckdb, so no caller can turn them back on.
NO_EXTENSIONS: Config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# A read connection reaches nothing but the store: no file readers or writers (COPY, read_csv,
# glob, ATTACH), no SET and no logging to files (the configuration is locked).
READ_CONFIG: Config = {"enable_external_access": False, "lock_configuration": True}
# The store's writers run our own SQL over data frames: they need no file either.
WRITE_CONFIG: Config = {"enable_external_access": False}
LOCK_WAIT_S = 30.0
DUCKDB_MAGIC = b"DUCK"  # bytes 8 to 11 of every DuckDB database file
SQLITE_MAGIC = b"SQLite format 3\0"
LEFTOVER_AGE_S = 600.0  # a hidden half-built store older than this was left by a killed bench-ctl
INGEST_HINT = "the raw results stay under .bench/runs/ and `bench-ctl ingest` stores them again"

# Paths this process has found to be DuckDB files. Their header is read once: closing a second
# descriptor of a file drops every POSIX lock the process holds on it, DuckDB's included.
_CHECKED: set[str] = set()
_CHECKED_LOCK = threading.Lock()


def open_duckdb(
    path: Path | str = ":memory:", read_only: bool = False, config: Config | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never installs or loads an extension by itself."""
    return duckdb.connect(str(path), read_only=read_only, config={**(config or {}), **NO_EXTENSIONS})


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _is_lock_error(e: BaseException) -> bool:
    text = str(e).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_ours(db: Path, what: str) -> BenchError:
    return BenchError(
        f"--db {db} is {what}, not a result store; it is left as it is",
        "pass another --db (a path that does not exist yet becomes a new store)",
    )


def check_file(db: Path) -> bool:
    """Whether `db` exists; refuses, before DuckDB opens it, anything but a DuckDB file."""
    try:
        mode = db.stat().st_mode
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise BenchError(
            f"--db {db}: {db.parent} is not a folder", "create the folder or fix the path"
        ) from None
    except OSError as e:
        raise BenchError(f"cannot read --db {db}: {e.strerror or e}", "check --db / $BENCH_DB") from None
    if stat.S_ISDIR(mode):
        raise BenchError(f"--db {db} is a folder, not a DuckDB file", "give a file path, e.g. results.duckdb")
    if not stat.S_ISREG(mode):
        raise _not_ours(db, _kind(mode))
    with _CHECKED_LOCK:
        if str(db) not in _CHECKED:
            _check_header(db)
            _CHECKED.add(str(db))
    return True


def _check_header(db: Path) -> None:
    try:
        # O_NONBLOCK: a FIFO put in the file's place since the stat must not block the open.
        fd = os.open(db, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise BenchError(f"cannot read --db {db}: {e.strerror or e}", "check --db / $BENCH_DB") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_ours(db, _kind(mode))
        head = os.pread(fd, 16, 0)
    finally:
        os.close(fd)
    if head[8:12] != DUCKDB_MAGIC:
        what = "an SQLite database" if head.startswith(SQLITE_MAGIC) else "not a DuckDB database"
        raise _not_ours(db, "an empty file" if not head else what)


def remember(db: Path) -> None:
    """`db` is a DuckDB file this process made or has read: its header need not be read again."""
    with _CHECKED_LOCK:
        _CHECKED.add(str(db))


def open_error(db: Path, e: BaseException, write: bool) -> BenchError:
    """What is wrong with a store path, said so the user can fix it."""
    text = first_line(e)
    parent = db.parent
    if db.is_dir():
        return BenchError(
            f"--db {db} is a folder, not a DuckDB file", "give a file path, e.g. results.duckdb"
        )
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        return BenchError(f"--db {db}: {parent} {what}", "create the folder or fix the path")
    if _is_lock_error(e):
        return BenchError(
            f"cannot open {db}: another process holds it",
            "a bench-ctl storing a result, or a DuckDB session: retry, or pass another --db",
            exit_code=1,
        )
    if write and (not os.access(parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))):
        return BenchError(
            f"--db {db} is read-only", "storing results needs a writable file; pass another --db"
        )
    low = text.lower()
    if any(w in low for w in ("not a valid duckdb", "checksum", "corrupt", "magic", "not a duckdb")):
        return BenchError(
            f"--db {db} is not a readable DuckDB store: {text}", f"pass another --db; {INGEST_HINT}"
        )
    return BenchError(f"cannot open {db}: {text}", "check --db / $BENCH_DB", exit_code=1)


def open_store(path: Path, read_only: bool, name: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open a store file, retrying while another process holds its lock (DuckDB: one writer per
    file, or many readers). `name`: the path to speak of in errors (`path` may be a snapshot)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return open_duckdb(path, read_only, READ_CONFIG if read_only else WRITE_CONFIG)
        except duckdb.Error as e:
            if _is_lock_error(e) and time.monotonic() < deadline:
                time.sleep(0.05 + random.random() * 0.2)
                continue
            raise open_error(name or path, e, write=not read_only) from None


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def create(db: Path, build: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
    """Make a new store at `db`: built by `build` in a hidden file beside it, then linked into
    place. A first write that fails or is killed midway leaves no half store behind (an empty
    store was refused by every later command). Another bench-ctl creating the same store at the
    same time wins or loses the link; either way one complete store is used by both."""
    _remove_leftovers(db)
    tmp = db.with_name(f".{db.name[:180]}.{secrets.token_hex(6)}.new")
    try:
        try:
            con = open_duckdb(tmp, config=WRITE_CONFIG)
        except duckdb.Error as e:
            raise open_error(db, e, write=True) from None
        try:
            build(con)
        except duckdb.Error as e:
            raise open_error(db, e, write=True) from None
        finally:
            con.close()
        _link(tmp, db)
    finally:
        for p in (tmp, _wal(tmp)):
            p.unlink(missing_ok=True)
    remember(db)


def _link(tmp: Path, db: Path) -> None:
    try:
        os.link(tmp, db)
    except FileExistsError:
        return  # created by another bench-ctl meanwhile: that store is used
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise BenchError(
                f"cannot create the store {db}: {e.strerror or e}", "check --db / $BENCH_DB"
            ) from None
        # No hard links on this file system (some network and FUSE mounts): a rename, which
        # could replace a store another bench-ctl created in the same instant.
        if not db.exists():
            os.replace(tmp, db)


def _remove_leftovers(db: Path) -> None:
    """Delete half-built stores of bench-ctls killed while creating this one (by age: the
    folder may be shared between hosts, where process ids say nothing)."""
    prefix = f".{db.name[:180]}."
    try:
        entries = list(db.parent.iterdir())
    except OSError:
        return
    now = time.time()
    for p in entries:
        if not p.name.startswith(prefix) or not p.name.endswith((".new", ".new.wal")):
            continue
        try:
            if now - p.lstat().st_mtime > LEFTOVER_AGE_S:
                p.unlink()
        except OSError:
            pass


COPY_CHUNK = 16 * 2**20


@contextmanager
def snapshot(db: Path, check: Callable[[], None]) -> Iterator[Path]:
    """A private copy of the store (and its write-ahead log) in a temporary folder, made while a
    read-only connection holds the store's lock: a writer waits for the copy, not for the read.
    `check` is called between chunks (it raises to stop)."""
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        copy = Path(tmp) / "results.duckdb"
        con = open_store(db, read_only=True)  # waits while a writer stores; keeps writers out
        try:
            if _wal(db).exists():
                _copy(_wal(db), _wal(copy), check)
            _copy(db, copy, check)
        except OSError as e:
            raise BenchError(
                f"cannot copy the store to {tmp} to read it: {e.strerror or e}",
                "free space there, or set TMPDIR to a folder with room",
                exit_code=1,
            ) from None
        finally:
            con.close()
        yield copy


def _copy(src: Path, dst: Path, check: Callable[[], None]) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{src} is not a regular file")
        with dst.open("wb") as out:
            while chunk := os.read(fd, COPY_CHUNK):
                out.write(chunk)
                check()
    finally:
        os.close(fd)
