"""`bench-ctl sweep` and `bench-ctl rerun`: measure a plan's matrix, resumably, or repeat runs here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from controller import store
from controller.cli.console import (
    DbOpt,
    JsonOpt,
    LauncherOpt,
    err,
    handles_errors,
    info,
    launcher_choice,
    out,
    runner_line,
    safe,
)
from controller.cli.fleet import (
    AccountOpt,
    ConstraintOpt,
    CpusPerTaskOpt,
    NodeLauncherOpt,
    PartitionOpt,
    TimeLimitOpt,
    slurm_options_of,
)
from controller.cli.lazy import lazy
from controller.errors import BenchError
from controller.launch.choice import LauncherChoice
from controller.paths import Paths

if TYPE_CHECKING:
    from controller.cli import render
    from controller.run import fleet, rerun, sweep
    from schemas import RunResult
else:
    render = lazy("controller.cli.render")
    fleet = lazy("controller.run.fleet")
    rerun = lazy("controller.run.rerun")
    sweep = lazy("controller.run.sweep")

commands = typer.Typer()

# unsupported is an answer about the host, not a failure
FAILED = ("error", "timeout", "cancelled", "preempted", "node_fail")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _listing(sp: sweep.SweepPlan) -> tuple[Table, list[str]]:
    """The cells as a table, and the reasons (unsupported, failed) its notes [n] point to."""
    reasons: list[str] = []
    t = Table("#", "runs", "image", "model", "batch sizes", "scenario", "options", "here", "est.")
    for d in sp.due:
        c = d.cell
        style = "green" if d.why == "done" else ("yellow" if "unsupported" in d.why else "white")
        if d.why.startswith("failed"):
            style = "red"
        note = ""
        if d.reason:
            if d.reason not in reasons:
                reasons.append(d.reason)
            note = f" [{reasons.index(d.reason) + 1}]"
        t.add_row(
            str(c.index),
            str(c.runs_index),
            c.image.name,
            c.request.model.replace(",", "+"),
            ",".join(str(b) for b in c.request.batch_sizes),
            c.request.scenario,
            safe(c.options),
            f"[{style}]{safe(d.why + note)}[/]",
            duration(d.estimate_s) if d.estimate_s else "",
        )
    return t, reasons


def _headline(sp: sweep.SweepPlan) -> str:
    cells = len(sp.cells)
    to_record = [d for d in sp.due if d.runs and d.cell.unsupported]
    measure = [d for d in sp.due if d.runs and not d.cell.unsupported]
    parts = [
        f"plan {sp.plan.name}: {cells} cells",
        f"{sp.cells_done} of {cells} already done on this host ({sp.host.hostname}, identity {sp.host.key})",
        f"{len(measure)} to measure: {sum(d.runs for d in measure)} runs, about {duration(sp.estimate_s)}",
    ]
    if to_record:
        parts.append(f"{len(to_record)} unsupported here (recorded once, not measured)")
    elsewhere = sum(1 for d in sp.due if d.claimed_elsewhere)
    if elsewhere:
        parts.append(f"{elsewhere} left to another sweep that is measuring them")
    return "; ".join(parts)


@commands.command("sweep")
@handles_errors
def sweep_command(
    plan: Annotated[Path, typer.Argument(help="plan file (TOML), e.g. plans/smoke.toml")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the cells, what is due here and the estimate; run nothing")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="run again the cells whose last run failed here")
    ] = False,
    launcher: LauncherOpt = "auto",
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    constraint: ConstraintOpt = None,
    time_limit: TimeLimitOpt = None,
    cpus_per_task: CpusPerTaskOpt = None,
    node_launcher: NodeLauncherOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the cells of PLAN that are not yet done on this host, with a progress bar and ETA.

    A cell is one configuration (image, model or ensemble, options, batch sizes, scenario), run
    `repetitions` times in rounds so candidates are measured side by side. Done-ness is kept in the
    store per cell, host identity and image lock: after an interruption the same command runs only
    what is missing, and new hardware or a new lock makes every cell due again. Cells this host
    cannot run (a GPU image without a GPU) are recorded once as unsupported.
    """
    choice = launcher_choice(launcher)
    slurm = slurm_options_of(choice, partition, account, constraint, time_limit, cpus_per_task, node_launcher)
    paths = Paths.from_env(db)
    if slurm is not None and not dry_run:
        synced = fleet.sync(paths, info)  # jobs that ended since: their cells may be done now
        if synced.stored:
            info(f"stored {len(synced.stored)} result(s) of jobs that ended since the last look")
    if dry_run:
        _print_dry_run(sweep.prepare(plan, paths, retry_failed, True, slurm), as_json)
        return
    # Each due cell is claimed while this sweep lives: a second sweep of it here skips it.
    with sweep.cell_claims(paths) as claims:
        sp = sweep.prepare(plan, paths, retry_failed, False, slurm, log=info, claims=claims)
        info(_headline(sp))
        sweep.export_missing(sp, paths, info, runner_line)
        if sp.missing_models:  # now exported: check the cells against the models themselves
            sp = sweep.prepare(plan, paths, retry_failed, False, slurm, log=info, claims=claims)
        if slurm is not None:
            results = sweep.submit(sp, slurm, paths, info, claims=claims).results
        else:
            results = _run_with_progress(sp.due, paths, choice)
    failed = [r for r in results if r.status in FAILED]
    _print_results(results, as_json)
    if not as_json:
        left = sum(1 for d in sp.due if d.failed_earlier)
        made = f"{len(results)} runs made" if results else "nothing was due here"
        out.print(
            f"sweep {sp.plan.name}: {made}, {len(failed)} failed"
            + (f"; {left} cells failed earlier and were skipped (--retry-failed)" if left else "")
            + "; answers: bench-ctl compare --model MODEL, or SQL over the `summary` view",
            soft_wrap=True,
        )
    if failed:
        raise typer.Exit(1)


def _print_dry_run(sp: sweep.SweepPlan, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_dry_json(sp), indent=1))
        return
    table, reasons = _listing(sp)
    out.print(table)
    for i, reason in enumerate(reasons, 1):
        out.print(f"[{i}] {safe(reason)}", soft_wrap=True)
    if sp.missing_models:
        out.print(f"models to export first: {', '.join(sp.missing_models)}")
    out.print(_headline(sp), soft_wrap=True)


def _run_with_progress(due: list[sweep.Due], paths: Paths, launcher: LauncherChoice) -> list[RunResult]:
    total = sum(d.runs for d in due)
    if not total:
        return []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("runs", total=total)

        def done(d: sweep.Due, r: RunResult) -> None:
            took = time.monotonic() - started
            progress.advance(task)
            progress.console.print(
                f"[dim]cell {d.cell.index}/{len(due)} {safe(d.cell.label)}: {r.status}"
                f" ({duration(took)} so far)[/]",
                soft_wrap=True,
            )

        said: set[str] = set()

        def log(line: str) -> None:  # the launcher each image gets: said once, not per run
            if line.startswith("launcher:"):
                if line in said:
                    return
                said.add(line)
            info(line)

        def more(n: int) -> None:  # policy.target_ci added runs: the bar's total grows
            progress.update(task, total=(progress.tasks[0].total or total) + n)

        outcome = sweep.run(due, paths, launcher, log, runner_line, on_result=done, on_more=more)
    return outcome.results


@commands.command("rerun")
@handles_errors
def rerun_command(
    run_id: Annotated[str | None, typer.Argument(help="a stored run to measure again here")] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="every configuration of a group (one command's runs)")
    ] = None,
    plan: Annotated[
        Path | None, typer.Option("--plan", help="a plan: the same as `bench-ctl sweep PLAN` here")
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option("--repeat", "-r", help="runs per configuration (default: as many as it had)"),
    ] = None,
    launcher: LauncherOpt = "auto",
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure stored runs again on this host, with the same specs (image, model, batch sizes,
    options, policy, scenario), interleaved. Then `bench-ctl compare --model M --across-hosts`
    shows each configuration on both hosts with its interval."""
    choice = launcher_choice(launcher)
    if plan is not None:
        if run_id or group:
            raise BenchError("--plan excludes RUN_ID and --group", "give one of them")
        sweep_command(plan, dry_run=False, retry_failed=False, launcher=launcher, db=db, as_json=as_json)
        return
    if choice == LauncherChoice.slurm:
        raise BenchError(
            "bench-ctl rerun RUN_ID (--group) measures on this host",
            "use --launcher auto, local or docker; on Slurm: bench-ctl rerun --plan PLAN --launcher slurm",
        )
    if repeat is not None and repeat < 1:
        raise BenchError(f"--repeat {repeat}: must be at least 1", "e.g. --repeat 5")
    paths = Paths.from_env(db)
    if paths.db.exists():
        store.ensure_store(paths.db)  # an older store is upgraded first, as run does
    requests = rerun.requests_for(paths.db, run_id, group)
    if repeat is not None:
        requests = [(r, repeat) for r, _ in requests]
    due = sweep.due_of(requests, paths)
    info(
        f"rerun: {len(due)} configuration(s), {sum(d.runs for d in due)} runs here "
        f"(about {duration(sum(d.estimate_s for d in due))})"
    )
    results = _run_with_progress(due, paths, choice)
    _print_results(results, as_json)
    if any(r.status in FAILED for r in results):
        raise typer.Exit(1)


def _print_results(results: list[RunResult], as_json: bool) -> None:
    if as_json:
        lean = {"measurements": {"__all__": {"latencies_ms"}}}
        print(json.dumps([json.loads(r.model_dump_json(exclude=lean)) for r in results], indent=1))
    else:
        render.run_lines(out, results)


def _dry_json(sp: sweep.SweepPlan) -> dict[str, object]:
    return {
        "plan": sp.plan.name,
        "host": sp.host.model_dump() | {"key": sp.host.key},
        "missing_models": sp.missing_models,
        "runs_due": sp.runs_due,
        "estimate_s": round(sp.estimate_s, 1),
        "cells": [
            {
                "index": d.cell.index,
                "runs_table": d.cell.runs_index,
                "key": d.cell.key,
                "image": d.cell.image.name,
                "model": d.cell.request.model,
                "ensemble": d.cell.request.ensemble,
                "batch_sizes": d.cell.request.batch_sizes,
                "scenario": d.cell.request.scenario,
                "options": d.cell.options,
                "repetitions": d.cell.repetitions,
                "done_ok": d.done,
                "noisy_ok": d.state.noisy,
                "runs_due": d.runs,
                "state": d.why,
                "reason": d.reason,
                "estimate_s": round(d.estimate_s, 1),
            }
            for d in sp.due
        ],
    }
