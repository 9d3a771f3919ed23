"""`bench-ctl report`: the study's figures from the store, as a static page with PNG and SVG files.

(Not to be confused with `controller/analysis/reports.py`, the typed answers of `compare`.)

    selection.py  which results: --model, --host, --where, checked before anything is read
    data.py       each figure's SQL and its typed rows, read through the read-only store path
    plots.py      the figures (matplotlib, Agg)
    page.py       index.html
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from controller.analysis.figures import data, page, plots
from controller.analysis.figures import folder as report_folder
from controller.analysis.figures.selection import Selection, check
from controller.errors import BenchError
from controller.store import db as store
from controller.workers import pool as worker_pool

__all__ = ["ReportOutcome", "Selection", "build_report"]


class ReportOutcome(BaseModel):
    """What `bench-ctl report` wrote."""

    out: str
    index: str
    runs: int
    figures: list[str]
    empty: list[str]
    notes: list[str]


def check_out(out: Path) -> None:
    """Refuse an --out that a report may not write, before anything is read or drawn."""
    if not out.parent.is_dir():
        what = "is not a folder" if out.parent.exists() else "does not exist"
        raise BenchError(f"--out {out}: {out.parent} {what}", "create the parent folder first")
    report_folder.ours(out)


FIGURES = ("a", "e", "d", "b", "c")  # the slowest first: they start first when drawn in parallel


def _draw(name: str, rows: data.ReportData, palette: plots.Palette, folder: Path) -> plots.Drawn | None:
    """One figure: A throughput, B ensemble memory, C energy, D load time, E server."""
    if name == "a":
        return plots.throughput(rows.throughput, rows.failed, palette, folder)
    if name == "b":
        return plots.memory(rows.memory, palette, folder)
    if name == "c":
        return plots.energy(rows.energy, palette, folder)
    if name == "d":
        return plots.load_times(rows.load, folder)
    return plots.server(rows.server, palette, folder)


def draw_all(rows: data.ReportData, folder: Path) -> dict[str, plots.Drawn | None]:
    """Every figure, on as many cores as this process may use (drawing is CPU-bound and each
    figure is independent); workers are forked, so they start at once with matplotlib loaded."""
    images = [
        x.image
        for group in (rows.throughput, rows.failed, rows.memory, rows.energy, rows.server)
        for x in group
    ]
    variants = [x.variant for group in (rows.throughput, rows.failed, rows.memory) for x in group]
    palette = plots.Palette(images, variants)
    workers = min(len(FIGURES), len(os.sched_getaffinity(0)))
    if workers < 2:
        return {name: _draw(name, rows, palette, folder) for name in FIGURES}
    with worker_pool(workers) as pool:  # workers that do not outlive a killed bench-ctl
        futures = {name: pool.submit(_draw, name, rows, palette, folder) for name in FIGURES}
        return {name: futures[name].result() for name in sorted(futures)}


def build_report(db: Path, selection: Selection, out: Path) -> ReportOutcome:
    """Read the selected results, draw figures A-E, write `out/index.html` beside them.

    Input is checked first (a --where that is not a read-only SQL condition, a model or host with
    no results, an empty store: one error, nothing written); the folder is built beside `out` and
    renamed into place, so a failure leaves no half-written report."""
    out = out.resolve()
    if selection.where is not None:
        store.run_ids_where(db, selection.where)  # the query sandbox: a read-only condition, or refused
    check_out(out)
    with store.reader(db) as con:
        runs = check(con, selection)
        rows = data.read_all(con, selection, runs)
    drawn: dict[str, plots.Drawn | None] = {}

    def fill(into: Path) -> None:
        drawn.update(draw_all(rows, into))
        (into / report_folder.INDEX).write_text(page.render(rows, drawn, str(db)))

    try:
        report_folder.write(out, fill)
    except FileExistsError:
        raise BenchError(f"--out {out} appeared while the report was drawn", "run again") from None
    figures = [d.png for d in drawn.values() if d is not None]
    return ReportOutcome(
        out=str(out),
        index=str(out / "index.html"),
        runs=runs,
        figures=figures,
        empty=[k.upper() for k, d in drawn.items() if d is None],
        notes=[n for d in drawn.values() if d is not None for n in d.notes],
    )
