"""`bench-ctl ingest`: validate result files and store them, each in its own transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from controller import store
from controller.errors import BenchError
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


def ingest_paths(targets: list[Path], db: Path) -> IngestReport:
    """Validate and store result files (or every result.json under given folders).

    Files are stored in chunks, one transaction each; a chunk that fails to store is stored again
    file by file, so a bad file is reported and skipped and the others are stored."""
    files, failed = _result_files(targets)
    if not files and not failed:
        raise BenchError("no result.json found in the given paths", "results live under .bench/runs/RUN_ID/")
    ok: list[str] = []
    with contextlib.ExitStack() as stack:
        con = None  # the store is opened (created) only once there is something to store
        for chunk in _chunks(files):
            results = []
            for f in chunk:
                try:
                    results.append((load_result(f), f.resolve()))
                except (ValidationError, ValueError, OSError, RecursionError) as e:
                    failed[str(f)] = _load_error(e)
            if not results:
                continue
            if con is None:
                con = stack.enter_context(store.connect(db))
            try:
                store.ingest_many(con, results)
                ok.extend(r.run_id for r, _ in results)
                continue
            except BenchError:
                pass
            for result, f in results:
                try:
                    store.ingest(con, result, f)
                    ok.append(result.run_id)
                except BenchError as e:
                    failed[str(f)] = e.message
    return IngestReport(ingested=ok, failed=failed)
