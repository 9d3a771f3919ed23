"""`bench-ctl ingest`: validate result files and store them, each in its own transaction."""

from __future__ import annotations

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


def ingest_paths(targets: list[Path], db: Path) -> IngestReport:
    """Validate and store result files (or every result.json under given folders).

    Each file is its own transaction: a bad file is reported and skipped, the others are stored."""
    files, failed = _result_files(targets)
    if not files and not failed:
        raise BenchError("no result.json found in the given paths", "results live under .bench/runs/RUN_ID/")
    ok: list[str] = []
    results = []
    for f in files:
        try:
            results.append((load_result(f), f))
        except (ValidationError, ValueError, OSError, RecursionError) as e:
            failed[str(f)] = _load_error(e)
    if results:
        with store.connect(db) as con:
            for result, f in results:
                try:
                    store.ingest(con, result, f.resolve())
                    ok.append(result.run_id)
                except BenchError as e:
                    failed[str(f)] = e.message
    return IngestReport(ingested=ok, failed=failed)
