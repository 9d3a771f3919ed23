"""`bench-ctl report`: the study's figures from the store, as a static page (controller/analysis/figures/)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.console import DbOpt, JsonOpt, handles_errors, info, out, safe
from controller.errors import BenchError
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
    price_per_hour: Annotated[
        float | None,
        typer.Option(
            "--price-per-hour",
            help="dollars per hour of the host: the summary's cost per 1M inferences "
            "(price / 3600 / samples per second x 1e6)",
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option("--plan", help="take the price per hour from this plan's price_per_hour"),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the study's figures from the store as a static page: OUT/index.html, PNG and SVG files.

    A: throughput against batch size with 95% intervals, failed points and their reasons, unfair
    precision pairs marked; B: ensemble memory; C: energy per 4096 predictions with a power law
    per device; D: load time by phase, cold and warm; E: server p99 against achieved rate; F:
    accuracy and precision used; G: each tune search's trials, latency against throughput, with
    its Pareto front, defaults and best. Above them, the fastest configuration per model and batch
    size with its verdict against the runner-up (and its cost per 1M inferences with a price per
    hour). Each figure shows its SQL; the page names hosts, fingerprints, versions and image
    digests. OUT may be new, empty or hold an earlier report: then only the files that report
    wrote (listed in its bench-report.json) are replaced; anything else is kept.
    """
    from controller.analysis.figures import (  # matplotlib: only this command pays for it
        Selection,
        build_report,
    )

    selection = Selection(models=list(model or []), host=host, where=where)
    price = _price(price_per_hour, plan)
    outcome = build_report(Paths.from_env(db).db, selection, out_dir, price)
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


def _price(price_per_hour: float | None, plan: Path | None) -> float | None:
    """The host's dollars per hour: --price-per-hour, or the plan's price_per_hour."""
    if price_per_hour is not None and plan is not None:
        raise BenchError("--price-per-hour and --plan both give a price", "give one of them")
    if price_per_hour is not None:
        if not (math.isfinite(price_per_hour) and price_per_hour > 0):
            raise BenchError(
                f"--price-per-hour {price_per_hour:g} is not a price", "dollars per hour, above 0"
            )
        return price_per_hour
    if plan is None:
        return None
    from controller.run import plans

    loaded = plans.load(plan)
    if loaded.price_per_hour is None:
        raise BenchError(
            f"plan {plan} has no price_per_hour", "add price_per_hour = 2.5 to it, or give --price-per-hour"
        )
    return loaded.price_per_hour
