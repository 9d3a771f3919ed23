"""`bench-ctl tune`: every framework at its best for a model on this host, under a latency bound."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from controller.cli.console import (
    DbOpt,
    JsonOpt,
    LauncherOpt,
    handles_errors,
    info,
    launcher_choice,
    out,
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
from controller.paths import Paths

if TYPE_CHECKING:
    from controller.run import request as run_request
    from controller.run import tune
else:
    tune = lazy("controller.run.tune")
    run_request = lazy("controller.run.request")

commands = typer.Typer()

BUDGET_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|min|h)?\s*")
BUDGET_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_budget(text: str) -> float:
    """`20m`, `90s`, `1.5h` (a bare number is minutes) -> seconds, above 0 and at most a week."""
    m = BUDGET_RE.fullmatch(text)
    if m is None:
        raise BenchError(
            f"--budget {text!r} is not a duration", "e.g. --budget 20m, --budget 90s, --budget 2h"
        )
    seconds = float(m.group(1)) * BUDGET_UNITS[m.group(2) or "m"]
    if not 0 < seconds <= 7 * 86400:
        raise BenchError(f"--budget {text!r}: a budget is above 0 and at most a week", "e.g. --budget 20m")
    return seconds


@commands.command("tune")
@handles_errors
def tune_command(
    model: Annotated[str, typer.Option("--model", "-m", help="model from the model store")],
    images: Annotated[
        str, typer.Option("--images", "-i", help="comma-separated images, e.g. ort,openvino,iree")
    ],
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", "-b", help="batch sizes tried, e.g. 1,8 (each a candidate)")
    ] = "1",
    objective: Annotated[
        str, typer.Option("--objective", help="throughput (samples/s, higher) or latency (mean ms, lower)")
    ] = "throughput",
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="offline (back-to-back batches) or server (Poisson queries: each candidate's answer is "
            "the highest rate that holds --bound p99<=X, max_batch and the batcher's delay searched too)",
        ),
    ] = "offline",
    bound: Annotated[
        str | None,
        typer.Option(
            "--bound", help="latency bound every answer must hold, e.g. p99<=20ms (p50, p90, p99, p999, mean)"
        ),
    ] = None,
    precision: Annotated[
        str, typer.Option("--precision", help="same: keep each framework's precision; any: search it too")
    ] = "same",
    min_agreement: Annotated[
        float | None,
        typer.Option(
            "--min-agreement", help="with --precision any: lowest top-1 agreement with the reference"
        ),
    ] = None,
    budget: Annotated[
        str, typer.Option("--budget", help="time the search may take, e.g. 20m, 90s, 2h")
    ] = "20m",
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="fix an option (not searched), e.g. --set policy.max_time_s=10; for one image: "
            "--set ort:intra_op_threads=1",
        ),
    ] = None,
    write_plan: Annotated[
        Path | None,
        typer.Option("--write-plan", help="write the winners as a plan (TOML) for sweep and rerun"),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="print each image's space, its size and a full grid's time; run nothing"
        ),
    ] = False,
    price_per_hour: Annotated[
        float | None,
        typer.Option(
            "--price-per-hour",
            help="dollars per hour of this host: the answer gives each image's cost per 1M inferences",
        ),
    ] = None,
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
    """Find each image's best settings for MODEL on this host by racing its candidates (every
    combination of the options its framework declares, at each batch size): short runs first,
    candidates significantly worse than their image's leader dropped by the comparison rule that
    decides `compare`, more runs for those left. Every trial is an ordinary stored run, so a
    second call goes on from what is done. The answer: per image the best configuration with its
    interval beside its defaults, the winner against the runner-up, the Pareto front. With
    --launcher slurm each round's trials are submitted together as jobs and followed."""
    if objective not in ("throughput", "latency"):
        raise BenchError(f"unknown objective {objective!r}", "--objective throughput or --objective latency")
    if scenario not in ("offline", "server"):
        raise BenchError(
            f"tune searches the offline or the server scenario, not {scenario!r}",
            "--scenario offline (the default) or --scenario server --bound p99<=20ms",
        )
    if precision not in ("same", "any"):
        raise BenchError(f"unknown --precision {precision!r}", "--precision same or --precision any")
    if price_per_hour is not None and not (math.isfinite(price_per_hour) and price_per_hour > 0):
        raise BenchError(f"--price-per-hour {price_per_hour:g} is not a price", "dollars per hour, above 0")
    choice = launcher_choice(launcher)
    slurm = slurm_options_of(choice, partition, account, constraint, time_limit, cpus_per_task, node_launcher)
    req = tune.TuneRequest(
        model=model,
        images=[s.strip() for s in images.split(",") if s.strip()],
        batch_sizes=run_request.parse_batch_sizes(batch_sizes),
        objective=objective,
        scenario=scenario,
        bound=bound,
        precision=precision,
        min_agreement=min_agreement,
        budget_s=parse_budget(budget),
        sets=sets or [],
        launcher=choice,
        price_per_hour=price_per_hour,
        slurm=slurm,
    )
    paths = Paths.from_env(db)
    tune.check(req)
    if dry_run:
        spaces = tune.dry_run(req, paths)
        if as_json:
            out.print_json(json.dumps([s.__dict__ for s in spaces], default=str))
            return
        _print_spaces(spaces, req.budget_s)
        return
    answer = tune.tune(req, paths, info, lambda line: None)
    if write_plan is not None:
        write_plan.write_text(tune.plan_text(answer, req))
        info(f"wrote the winners as a plan: {write_plan} (bench-ctl sweep {write_plan})")
    if as_json:
        out.print_json(answer.model_dump_json())
    else:
        _print_answer(answer)
    if answer.winner is None:  # every candidate failed, none holds the bound, or the budget ended first
        raise typer.Exit(1)


def _duration(seconds: float) -> str:
    from controller.cli.sweep import duration

    return duration(seconds)


def _print_spaces(spaces: list[Any], budget_s: float) -> None:
    t = Table("image", "framework", "options searched", "candidates", "full grid here")
    for s in spaces:
        opts = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in s.options.items())
        t.add_row(safe(s.image), safe(s.framework), safe(opts), str(s.candidates), _duration(s.grid_s))
    out.print(t)
    total = sum(s.grid_s for s in spaces)
    out.print(
        f"a full grid ({tune.FINAL_RUNS} runs each) would take about {_duration(total)} here; "
        f"the budget is {_duration(budget_s)}: the race drops candidates early"
    )


def _fig(f: Any) -> str:
    if f is None:
        return "-"
    ci = f" [{f.low:.4g}, {f.high:.4g}]" if f.low is not None and f.high is not None else ""
    return f"{f.mean:.4g}{ci} ({f.runs} runs)"


def _cost(f: Any) -> str:
    return "-" if f is None or f.cost_per_million is None else f"${f.cost_per_million:.4g}"


def _print_answer(a: Any) -> None:
    if a.scenario == "server":
        head = f"tune {a.model}, server scenario: the highest rate in queries/s that holds {a.bound}"
    else:
        unit = "samples/s" if a.objective == "throughput" else "ms (mean latency)"
        head = f"tune {a.model}: {a.objective} in {unit}" + (f", under {a.bound}" if a.bound else "")
    out.print(safe(head))
    t = Table("image", "best configuration", "best", "defaults", "best vs defaults", "trials", "dropped")
    for im in a.images:
        best = im.best.label.split(" ", 1)[1] if im.best else "-"
        dropped = ", ".join(f"{n} {k}" for k, n in im.dropped.items()) or "-"
        t.add_row(
            safe(im.image), safe(best), _fig(im.best), _fig(im.default), safe(im.verdict or "-"),
            f"{im.trials} trials, {im.candidates} candidates", safe(dropped),
        )  # fmt: skip
    out.print(t)
    if a.price_per_hour is not None:
        out.print(f"$ per 1M inferences at ${a.price_per_hour:g}/h, at the mean throughput:")
        for im in a.images:
            out.print(safe(f"  {im.image}: best {_cost(im.best)}, defaults {_cost(im.default)}"))
    for im in a.images:
        if im.ties:
            out.print(safe(f"{im.image}: not significantly different from its best: {'; '.join(im.ties)}"))
        for f in im.failed:
            out.print(safe(f"{im.image}: failed: {f}"))
    if a.winner is not None:
        out.print(safe(f"winner: {a.winner.label}: {_fig(a.winner)}"))
        if a.runner_up is not None:
            out.print(safe(f"  against the runner-up {a.runner_up.label}: {a.winner_verdict}"))
    else:
        why = (
            "the budget ended before a trial did" if a.stopped else "no candidate measured holds the question"
        )
        out.print(
            f"no winner: {why}" + ("; the same call again goes on from the runs stored" if a.stopped else "")
        )
    front = "; ".join(f"{f.label} ({f.throughput_sps:.4g}/s, {f.latency_mean_ms:.3g} ms)" for f in a.pareto)
    out.print(safe(f"Pareto front (throughput against mean latency): {front or '-'}"))
    out.print(
        f"{a.trials_made} trial(s) made now ({a.runs_made} runs, noisy ones made again included), "
        f"{a.runs_stored} with a value in all (a failed or infeasible one has none), "
        f"of a full grid's {a.full_grid_runs}; "
        f"{_duration(a.seconds)} of a {_duration(a.budget_s)} budget"
        + (f"; {a.stopped}" if a.stopped else "")
    )
