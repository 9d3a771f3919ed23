"""`bench-ctl report`: the study's figures from the store, as a static page with PNG and SVG files.

(Not to be confused with `controller/analysis/reports.py`, the typed answers of `compare`.)

    selection.py  which results: --model, --host, --where, checked before anything is read
    data.py       each figure's SQL and its typed rows, read through the read-only store path
    plots.py      the figures (matplotlib, Agg)
    page.py       index.html
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pydantic import BaseModel

from controller.analysis.figures import data, page, plots, summary
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


FIGURES = ("a", "e", "d", "g", "b", "c")  # the slowest first: they start first when drawn in parallel


def _draw(name: str, rows: data.ReportData, palette: plots.Palette, folder: Path) -> plots.Drawn | None:
    """One figure: A throughput, B ensemble memory, C energy, D load time, E server, G tune."""
    if name == "a":
        return plots.throughput(rows.throughput, rows.failed, palette, folder)
    if name == "b":
        return plots.memory(rows.memory, palette, folder)
    if name == "c":
        return plots.energy(rows.energy, palette, folder)
    if name == "d":
        return plots.load_times(rows.load, folder)
    if name == "g":
        return plots.tune(rows.tune, palette, folder, rows.searches)
    return plots.server(rows.server, palette, folder)


Drawings = dict[str, plots.Drawn | None]


def draw_all(
    rows: data.ReportData, folder: Path, price_per_hour: float | None = None
) -> tuple[Drawings, list[summary.SummaryRow]]:
    """Every figure, on as many cores as this process may use (drawing is CPU-bound and each
    figure is independent); workers are forked, so they start at once with matplotlib loaded.
    The summary's verdicts are worked out here meanwhile."""
    images = [
        x.image
        for group in (rows.throughput, rows.failed, rows.memory, rows.energy, rows.server, rows.tune)
        for x in group
    ]
    variants = [x.variant for group in (rows.throughput, rows.failed, rows.memory) for x in group]
    palette = plots.Palette(images, variants)
    workers = min(len(FIGURES), len(os.sched_getaffinity(0)))
    if workers < 2:
        figures = {name: _draw(name, rows, palette, folder) for name in FIGURES}
        return figures, summary.fastest(rows.offline_runs, price_per_hour)
    drawn = dataclasses.replace(rows, offline_runs=[])  # the summary's runs are no figure's: not sent
    with worker_pool(workers) as pool:  # workers that do not outlive a killed bench-ctl
        futures = {name: pool.submit(_draw, name, drawn, palette, folder) for name in FIGURES}
        fastest = summary.fastest(rows.offline_runs, price_per_hour)
        return {name: futures[name].result() for name in sorted(futures)}, fastest


def build_report(
    db: Path, selection: Selection, out: Path, price_per_hour: float | None = None
) -> ReportOutcome:
    """Read the selected results, draw figures A-G, write `out/index.html` beside them (with
    `price_per_hour`, the host's dollars per hour, the summary's cost per 1M inferences).

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
    drawn: Drawings = {}

    def fill(into: Path) -> None:
        figures, fastest = draw_all(rows, into, price_per_hour)
        drawn.update(figures)
        html = page.render(rows, drawn, str(db), fastest, price_per_hour)
        (into / report_folder.INDEX).write_text(html)

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
