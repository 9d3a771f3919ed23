"""`bench-ctl fleet status` and `bench-ctl fleet sync`: runs submitted to Slurm (--launcher slurm)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from controller import fleet, render
from controller.console import DbOpt, JsonOpt, handles_errors, info, out
from controller.paths import Paths

commands = typer.Typer(
    no_args_is_help=True,
    help="Runs submitted to Slurm (--launcher slurm): their jobs, and the results of jobs that ended "
    "while no bench-ctl followed them.",
)


@commands.command("status")
@handles_errors
def fleet_status(
    everything: Annotated[
        bool, typer.Option("--all", help="also the jobs whose results are stored (default: open jobs only)")
    ] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs submitted with --launcher slurm: Slurm's state now, reason, node, and the stored status."""
    listed = fleet.status(Paths.from_env(db), everything)
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in listed], indent=1))
        return
    cols = ["job_id", "run_id", "image", "model", "state", "reason", "node", "status"]
    render.table(out, cols, [[getattr(j, c) for c in cols] for j in listed])


@commands.command("sync")
@handles_errors
def fleet_sync(
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the open jobs until every one has ended")
    ] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store the results of jobs that ended while no bench-ctl followed them (each result once)."""
    report = fleet.sync(Paths.from_env(db), info, wait=wait)
    if as_json:
        lean = {"stored": {"__all__": {"measurements": {"__all__": {"latencies_ms"}}}}}
        print(report.model_dump_json(indent=1, exclude=lean))
        return
    if report.stored:
        render.run_lines(out, report.stored)
    out.print(f"stored {len(report.stored)} result(s); {len(report.waiting)} job(s) still queued or running")
