"""`bench-ctl fleet status` and `bench-ctl fleet sync`: runs submitted to Slurm (--launcher slurm)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from controller.cli.console import DbOpt, JsonOpt, handles_errors, info, out
from controller.cli.lazy import lazy
from controller.errors import BenchError
from controller.paths import Paths

if TYPE_CHECKING:
    from controller.cli import render
    from controller.run import fleet
    from schemas.plan import SlurmOptions
else:
    render = lazy("controller.cli.render")
    fleet = lazy("controller.run.fleet")

commands = typer.Typer(
    no_args_is_help=True,
    help="Runs submitted to Slurm (--launcher slurm): their jobs, and the results of jobs that ended "
    "while no bench-ctl followed them.",
)

# The flags of `run` and `sweep` for --launcher slurm (a plan's [slurm] table has the same keys).
PartitionOpt = Annotated[
    str | None, typer.Option("--partition", help="--launcher slurm: the partition to submit to")
]
AccountOpt = Annotated[str | None, typer.Option("--account", help="--launcher slurm: the account to charge")]
ConstraintOpt = Annotated[
    str | None, typer.Option("--constraint", help="--launcher slurm: node features the job needs, e.g. h100")
]
TimeLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--time-limit",
        help="--launcher slurm: the job's time limit in minutes (default: the run's timeout plus 5)",
    ),
]
NodeLauncherOpt = Annotated[
    str | None,
    typer.Option(
        "--node-launcher",
        help="--launcher slurm: how nodes run the runner: auto (Docker where the node has the image), "
        "local or docker",
    ),
]
CpusPerTaskOpt = Annotated[
    int | None,
    typer.Option(
        "--cpus-per-task",
        help="--launcher slurm: cores per job (default: each job has a node to itself, --exclusive)",
    ),
]
SLURM_FLAGS = {
    "partition": "--partition",
    "account": "--account",
    "constraint": "--constraint",
    "time_limit_min": "--time-limit",
    "cpus_per_task": "--cpus-per-task",
    "node_launcher": "--node-launcher",
}


def slurm_options_of(
    launcher: str,
    partition: str | None,
    account: str | None,
    constraint: str | None,
    time_limit: int | None,
    cpus: int | None,
    node_launcher: str | None = None,
) -> SlurmOptions | None:
    """The Slurm flags of `run` or `sweep`, checked; None when the launcher is not slurm."""
    given = {
        "partition": partition,
        "account": account,
        "constraint": constraint,
        "time_limit_min": time_limit,
        "cpus_per_task": cpus,
        "node_launcher": node_launcher,
    }
    if launcher != "slurm":
        named = [SLURM_FLAGS[k] for k, v in given.items() if v is not None]
        if named:
            raise BenchError(f"{', '.join(named)} needs --launcher slurm", "add --launcher slurm, or drop it")
        return None
    from pydantic import ValidationError

    from schemas.plan import SlurmOptions

    try:
        return SlurmOptions.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        flag = SLURM_FLAGS.get(str(first["loc"][0]), str(first["loc"][0]))
        raise BenchError(
            f"{flag} {first.get('input')!r}: {first['msg']}", "e.g. --partition gpu --time-limit 60"
        ) from None


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
    if not listed:
        out.print(
            "no Slurm jobs recorded in this store: submit with `bench-ctl run|sweep --launcher slurm`"
            if everything
            else "no open Slurm jobs (--all: also those whose results are stored)"
        )
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
