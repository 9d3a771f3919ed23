"""`bench-ctl ingest`: validate result files and store them, each in its own transaction."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from controller.errors import BenchError
from controller.store import db as store
from controller.workers import pool as worker_pool
from schemas import load_result


class IngestReport(BaseModel):
    ingested: list[str]
    failed: dict[str, str]


def _result_files(targets: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """Regular result files named or found under the targets (never FIFOs or devices)."""
    files: list[Path] = []
    skipped: dict[str, str] = {}
    for t in targets:
        if t.is_dir():
            files.extend(sorted(p for p in t.rglob("result.json") if p.is_file()))
        elif t.is_file():
            files.append(t)
        elif t.exists():
            skipped[str(t)] = "not a regular file"
        else:
            raise BenchError(f"no such file or folder: {t}", "give result.json files or run folders")
    return files, skipped


def _load_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        return f"invalid result: {where}: {first['msg']} ({e.error_count()} error(s))"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


CHUNK_FILES = 500  # results stored per transaction
CHUNK_BYTES = 256 * 2**20  # ... or fewer, when their files are large (latency arrays)


def _chunks(files: list[Path]) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    size = 0
    for f in files:
        try:
            n = f.stat().st_size
        except OSError:
            n = 0
        if chunk and (len(chunk) >= CHUNK_FILES or size + n > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(f)
        size += n
    if chunk:
        yield chunk


PARALLEL_FROM = 200  # files: fewer are read here (starting workers costs more than it saves)
MAX_WORKERS = 8


def _load_one(path: Path) -> tuple[store.Rows | None, str | None]:
    """A result file read, validated and turned into table rows (in a worker process when there
    are many: only the plain rows travel back)."""
    try:
        return store.rows_of(load_result(path), path.resolve()), None
    except (ValidationError, ValueError, OSError, RecursionError) as e:
        return None, _load_error(e)


def _workers(n_files: int) -> int:
    if n_files < PARALLEL_FROM:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def ingest_paths(targets: list[Path], db: Path) -> IngestReport:
    """Validate and store result files (or every result.json under given folders).

    Files are read and validated by a pool of worker processes when there are many (validation
    is most of the cost), and stored in chunks, one transaction each; a chunk that fails to store
    is stored again file by file, so a bad file is reported and skipped and the others are stored."""
    files, failed = _result_files(targets)
    if not files and not failed:
        raise BenchError("no result.json found in the given paths", "results live under .bench/runs/RUN_ID/")
    ok: list[str] = []
    with contextlib.ExitStack() as stack:
        workers = _workers(len(files))
        # Forked before the store is opened: the workers hold no connection.
        pool = (
            stack.enter_context(worker_pool(workers))  # workers that do not outlive a killed bench-ctl
            if workers > 1
            else None
        )
        con = None  # the store is opened (created) only once there is something to store
        for chunk in _chunks(files):
            loaded = pool.map(_load_one, chunk, chunksize=16) if pool is not None else map(_load_one, chunk)
            rows: list[tuple[store.Rows, Path]] = []
            for f, (row, error) in zip(chunk, loaded, strict=True):
                if row is None:
                    failed[str(f)] = error or "unreadable"
                else:
                    rows.append((row, f))
            if not rows:
                continue
            if con is None:
                con = stack.enter_context(store.connect(db))
            try:
                store.insert_rows(con, [r for r, _ in rows])
                ok.extend(r.run_id for r, _ in rows)
                continue
            except BenchError:
                pass
            for row, f in rows:  # the chunk failed: file by file, to name the bad ones
                try:
                    store.insert_rows(con, [row])
                    ok.append(row.run_id)
                except BenchError as e:
                    failed[str(f)] = e.message
    return IngestReport(ingested=ok, failed=failed)
