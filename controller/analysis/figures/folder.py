"""The report's folder: which files in it are ours, and how a new report replaces only those.

A report writes `bench-report.json` beside its page, naming every file it wrote. `--out` may be a
new folder, an empty one, or one holding an earlier report; there only the files that report wrote
are replaced (or removed, when a figure is no longer drawn) and anything else (a thesis, a data
folder, notes) is kept as it is. A folder with files but no report of ours is refused.

A new folder is built beside `--out` and renamed into place, so it appears whole; in an existing
folder each file is renamed over its old copy (the page last), so each is whole, and the manifest
names every file of ours that may be there at any moment in between.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from controller.analysis.figures import page, plots
from controller.errors import BenchError
from schemas.atomic import write_atomic, write_folder_atomic

MANIFEST = "bench-report.json"
INDEX = "index.html"
# Every name a report can write: a manifest is trusted for these only, so an edited one cannot
# make a report delete anything else.
NAMES = frozenset(
    {MANIFEST, INDEX, *(f"{n}.{ext}" for n in plots.FIGURE_NAMES.values() for ext in ("png", "svg"))}
)
HINT = f"give a new or empty folder, or the folder of an earlier report (its {MANIFEST} lists its files)"


def _listed(folder: Path) -> set[str] | None:
    """The files the manifest in `folder` says a report wrote, or None without a readable one."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(doc, dict)
        or doc.get("generator") != page.GENERATOR
        or not isinstance(doc.get("files"), list)
    ):
        return None
    return {f for f in doc["files"] if isinstance(f, str)} & NAMES


def _earlier_page(folder: Path) -> bool:
    """A report written before reports had a manifest: its page says who made it."""
    try:
        with (folder / INDEX).open(errors="replace") as f:
            return f'content="{page.GENERATOR}"' in f.read(2000)
    except OSError:
        return False


def ours(out: Path) -> set[str] | None:
    """The files of an earlier report in `out` that a new one may replace; None when `out` is
    not a folder yet. Refused: a file, or a folder with files and no report of ours."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise BenchError(f"--out {out} is a file", HINT)
    listed = _listed(out)
    if listed is None and _earlier_page(out):
        listed = {n for n in NAMES if (out / n).is_file()}
    if listed is None:
        if any(out.iterdir()):
            raise BenchError(f"--out {out} holds files but no report of bench-ctl report", HINT)
        listed = set()
    clash = sorted(n for n in NAMES - listed if (out / n).exists() or (out / n).is_symlink())
    if clash:  # a file of the user's where a report would write one of its own
        raise BenchError(f"--out {out}: {clash[0]} is not a file of an earlier report", HINT)
    return listed


def _manifest(files: set[str]) -> str:
    return json.dumps({"generator": page.GENERATOR, "files": sorted(files | {MANIFEST})}, indent=1) + "\n"


def write(out: Path, fill: Callable[[Path], None]) -> None:
    """Write a report into `out` with `fill(folder)`; a failure leaves `out` as it was."""
    earlier = ours(out)

    def filled(folder: Path) -> None:
        fill(folder)
        (folder / MANIFEST).write_text(_manifest({p.name for p in folder.iterdir()}))

    if earlier is None:
        write_folder_atomic(out, filled, lambda _: False)
        return
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        filled(tmp)
        _replace(tmp, out, earlier)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(new: Path, out: Path, earlier: set[str]) -> None:
    """Move the new report's files over the earlier report's, and remove those of its files that
    the new one no longer has; nothing else in `out` is touched."""
    names = {p.name for p in new.iterdir() if p.name != MANIFEST}
    write_atomic(out / MANIFEST, _manifest(earlier | names))  # every file of ours, meanwhile
    for name in sorted(names, key=lambda n: n == INDEX):  # the page last: its figures are there
        os.replace(new / name, out / name)
    for name in sorted(earlier - names - {MANIFEST}):
        if (out / name).is_file() or (out / name).is_symlink():
            (out / name).unlink()
    write_atomic(out / MANIFEST, _manifest(names))
