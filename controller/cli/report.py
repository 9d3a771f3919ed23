"""`bench-ctl report`: the study's figures from the store, as a static page (controller/analysis/figures/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controller.cli.console import DbOpt, JsonOpt, handles_errors, info, out, safe
from controller.paths import Paths

commands = typer.Typer()
MAX_NOTES = 5  # notes printed here; the page lists them all


@commands.command("report")
@handles_errors
def report_command(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="folder to write (index.html, PNG and SVG files, bench-report.json)"
        ),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="only this model (repeatable; an ensemble is a+b+c)"),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="only results of this host")] = None,
    where: Annotated[
        str | None,
        typer.Option(
            "--where", help="only results meeting this SQL condition over `results`, e.g. \"device = 'cpu'\""
        ),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the study's figures from the store as a static page: OUT/index.html, PNG and SVG files.

    A: throughput against batch size with 95% intervals, failed points and their reasons, unfair
    precision pairs marked; B: ensemble memory; C: energy per 4096 predictions with a power law
    per device; D: load time by phase, cold and warm; E: server p99 against achieved rate; F:
    accuracy and precision used. Each figure shows its SQL; the page names hosts, fingerprints,
    versions and image digests. OUT may be new, empty or hold an earlier report: then only the
    files that report wrote (listed in its bench-report.json) are replaced; anything else is kept.
    """
    from controller.analysis.figures import (  # matplotlib: only this command pays for it
        Selection,
        build_report,
    )

    selection = Selection(models=list(model or []), host=host, where=where)
    outcome = build_report(Paths.from_env(db).db, selection, out_dir)
    if as_json:
        print(outcome.model_dump_json(indent=1))
        return
    drawn = ", ".join(outcome.figures) or "no figures"
    out.print(safe(f"wrote {outcome.index} over {outcome.runs} run(s): {drawn}"), soft_wrap=True)
    if outcome.empty:
        info(f"nothing to draw for figure(s) {', '.join(outcome.empty)} (the page says why)")
    for note in outcome.notes[:MAX_NOTES]:
        info(note)
    if len(outcome.notes) > MAX_NOTES:
        info(f"... and {len(outcome.notes) - MAX_NOTES} more note(s) on the page (unfair pairs, power laws)")
