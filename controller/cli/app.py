"""bench-ctl: run inference-framework microbenchmarks in pinned images and query the results."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from controller import store
from controller.analysis.metrics import COMPARABLE
from controller.cli import doctor as cli_doctor
from controller.cli import fleet as cli_fleet
from controller.cli import report as cli_report
from controller.cli import store as cli_store
from controller.cli import sweep as cli_sweep
from controller.cli import tune as cli_tune
from controller.cli.console import (
    DbOpt,
    JsonOpt,
    LauncherOpt,
    build_line,
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
from controller.errors import BenchError, Terminated
from controller.paths import Paths
from schemas.encoders import TRANSFORMER_MODELS
from schemas.limits import KERAS_MODELS

if TYPE_CHECKING:
    from controller.analysis import comparison, configurations
    from controller.analysis.reports import HostPair
    from controller.catalog import models as model_store
    from controller.cli import render
    from controller.run import colocate as colocate_service
    from controller.run import peak, pipeline, planning, rounds
    from controller.run import request as run_request
    from schemas import ModelManifest, RunResult
    from schemas.manifest import TensorInfo
else:
    comparison = lazy("controller.analysis.comparison")
    configurations = lazy("controller.analysis.configurations")
    model_store = lazy("controller.catalog.models")
    render = lazy("controller.cli.render")
    colocate_service = lazy("controller.run.colocate")
    planning = lazy("controller.run.planning")
    peak = lazy("controller.run.peak")
    pipeline = lazy("controller.run.pipeline")
    rounds = lazy("controller.run.rounds")
    run_request = lazy("controller.run.request")

# --json leaves out the raw per-iteration latencies (they stay in result.json and the store).
LEAN = {"measurements": {"__all__": {"latencies_ms"}}}

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help=__doc__,
    rich_markup_mode=None,
)
images_app = typer.Typer(no_args_is_help=True, help="The image catalog: list and build images.")
models_app = typer.Typer(no_args_is_help=True, help="The model store: export, add, list and remove models.")
app.add_typer(images_app, name="images")
app.add_typer(models_app, name="models")
app.add_typer(cli_sweep.commands)
app.add_typer(cli_tune.commands)
app.add_typer(cli_store.commands)
app.add_typer(cli_doctor.commands)
app.add_typer(cli_fleet.commands, name="fleet")
app.add_typer(cli_report.commands)


@app.command()
@handles_errors
def run(
    image: Annotated[
        str,
        typer.Option(
            "--image",
            "-i",
            help="image to run in (bench-ctl images list); a comma-separated list runs each, interleaved",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help=(
                "model from the store (bench-ctl models list); a comma-separated list runs each in turn, "
                "or together with --ensemble"
            ),
        ),
    ],
    batch_sizes: Annotated[
        str | None,
        typer.Option(
            "--batch-sizes",
            "-b",
            help=(
                "comma-separated, e.g. 1,8,32 (the default for offline); server: 1,2,4,8, the sizes the "
                "batcher pads to; single-stream: 1; multi-stream: 8"
            ),
        ),
    ] = None,
    cpu: Annotated[
        bool, typer.Option("--cpu", help="run on the CPU (default for images that have a CPU runner)")
    ] = False,
    gpu: Annotated[
        int | None,
        typer.Option(
            "--gpu", help="run on GPU N (the container sees that GPU only); default for GPU-only images: 0"
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help=(
                "framework option KEY=VALUE (repeatable), e.g. --set precision=f32; "
                "policy.KEY=VALUE sets the measurement policy, e.g. --set policy.max_time_s=10; "
                "server.KEY=VALUE the server scenario, e.g. --set server.target_qps=200; "
                "dim.NAME=N a dimension of the model's inputs, e.g. --set dim.seq=128"
            ),
        ),
    ] = None,
    sweeps: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            help=(
                "run once per value: KEY=V1,V2 (repeatable; combinations multiply), "
                "e.g. --sweep hint=latency,throughput"
            ),
        ),
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble",
            help=(
                "run the listed models together on one device, one thread each, and report ensemble "
                "predictions/s and each member's slowdown against running alone"
            ),
        ),
    ] = False,
    colocate: Annotated[
        str,
        typer.Option(
            "--colocate",
            help=(
                "with --ensemble: threads (one runner, a thread per member) or processes (a runner "
                "or container per member, started together after each is measured alone)"
            ),
        ),
    ] = "threads",
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat",
            "-r",
            help=(
                "independent runner processes per configuration, interleaved across configurations "
                "(same as --set policy.repetitions=N); 5 or more lets compare call differences"
            ),
        ),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help=(
                "offline (back-to-back batches, throughput) | single-stream (one query at a time, p90) | "
                "multi-stream (multi-stream.samples_per_query every multi-stream.interval_ms, p99) | "
                "server (Poisson arrivals at server.target_qps, dynamic batching up to server.max_batch "
                "within server.max_delay_ms, padded to a -b size; VALID/INVALID), e.g. "
                "--scenario server --set server.target_qps=200 --set server.max_batch=8"
            ),
        ),
    ] = "offline",
    find_peak: Annotated[
        bool,
        typer.Option(
            "--find-peak",
            help=(
                "with --scenario server and server.latency_bound_ms: search (double, then bisect) the "
                "highest server.target_qps whose run is VALID; every probed rate is stored as its own run"
            ),
        ),
    ] = False,
    launcher: LauncherOpt = "auto",
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="seconds before the runner is killed")
    ] = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    constraint: ConstraintOpt = None,
    time_limit: TimeLimitOpt = None,
    cpus_per_task: CpusPerTaskOpt = None,
    node_launcher: NodeLauncherOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure MODEL in IMAGE at each batch size and store the result in the database.

    With several images, models, --sweep values or --repeat N, every configuration runs once per
    round, in turn (A B A B ...), each run a fresh runner process.

    A framework failure is stored as a result with a status (error, unsupported, timeout) and
    this command exits with code 1; invalid input exits with code 2 and stores nothing.
    """
    choice = launcher_choice(launcher)
    slurm_options = slurm_options_of(
        choice, partition, account, constraint, time_limit, cpus_per_task, node_launcher
    )
    req = run_request.from_flags(
        image=image,
        model=model,
        batch_sizes=batch_sizes,
        cpu=cpu,
        gpu=gpu,
        sets=sets or [],
        sweeps=sweeps or [],
        repeat=repeat,
        ensemble=ensemble,
        launcher=choice,
        timeout_s=timeout,
        scenario=scenario,
    )
    if colocate not in ("threads", "processes"):
        raise BenchError(f"unknown --colocate {colocate!r}", "valid: threads, processes")
    paths = Paths.from_env(db)
    if slurm_options is not None and (colocate == "processes" or find_peak):
        raise BenchError(
            "--launcher slurm submits independent runs; --colocate processes and --find-peak run here",
            "use --launcher local or docker for them",
        )
    if colocate == "processes":
        run_colocated(req, paths, as_json)
    elif find_peak:
        run_find_peak(req, paths, as_json, repeat)
    else:
        show_results(rounds.run_all(req, paths, info, runner_line, slurm=slurm_options), paths, as_json)


def show_results(results: list[RunResult], paths: Paths, as_json: bool) -> None:
    """A command's runs as JSON, or one run's summary, or a line per run and the comparison."""
    if as_json:
        docs = [json.loads(r.model_dump_json(exclude=LEAN)) for r in results]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=1))
    elif len(results) == 1:
        render.run_summary(out, results[0], paths.runs / results[0].run_id)
    else:
        render.run_lines(out, results)
        render.group_summary(out, rounds.group_summary(paths.db, results))
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


def run_find_peak(req: planning.RunRequest, paths: Paths, as_json: bool, repeat: int | None) -> None:
    if req.scenario != "server":
        raise BenchError(
            "--find-peak needs --scenario server", "e.g. --scenario server --set server.latency_bound_ms=50"
        )
    if not any(s.partition("=")[0].strip() == "server.latency_bound_ms" for s in req.sets):
        raise BenchError("--find-peak needs a latency bound", "e.g. --set server.latency_bound_ms=50")
    if (repeat is not None and repeat > 1) or req.sweeps:
        raise BenchError("--find-peak runs one probe per rate", "drop --repeat and --sweep")
    probes, found = peak.find_peak(req, paths, info, runner_line)
    if as_json:
        docs = [json.loads(r.model_dump_json(exclude=LEAN)) for r in probes]
        print(json.dumps({"peak_qps": found, "probes": docs}, indent=1))
    else:
        render.peak(out, probes, found)
    if any(r.status != "ok" for r in probes):
        raise typer.Exit(1)


def run_colocated(req: planning.RunRequest, paths: Paths, as_json: bool) -> None:
    if not req.ensemble:
        raise BenchError(
            "--colocate processes needs --ensemble", "e.g. --model a,b --ensemble --colocate processes"
        )
    if req.sweeps:
        raise BenchError("--colocate processes takes no --sweep", "run one configuration at a time")
    if req.scenario != "offline":
        raise BenchError(
            f"--colocate processes measures offline only, not --scenario {req.scenario}",
            "serve an ensemble from one runner: --ensemble without --colocate (threads)",
        )
    colocated = colocate_service.run(req, paths, info, runner_line)
    if as_json:
        print(colocated.model_dump_json(indent=1, exclude={"runs": {"__all__": LEAN}}))
    else:
        for result in colocated.runs:
            render.run_summary(out, result, paths.runs / result.run_id)
        render.colocated(out, colocated)
    if any(r.status != "ok" for r in colocated.runs):
        raise typer.Exit(1)


@app.command()
@handles_errors
def query(
    sql: Annotated[str, typer.Argument(help='read-only SQL, e.g. "SELECT * FROM results LIMIT 5"')],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", help="print at most N rows (default 1000 for a table, all for csv/json; 0: all)"
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="stop the query after this many seconds (Ctrl-C stops it at once)"),
    ] = store.QUERY_TIMEOUT_S,
    db: DbOpt = None,
) -> None:
    """Run read-only SQL over the result database (view `results`, tables `runs`, `measurements`).

    The store is opened read-only, with no access to other files: statements that write (INSERT,
    COPY, ATTACH, SET, ...) or read files (read_csv, glob, ...) are refused. The query reads a
    snapshot of the store, so a run storing its result meanwhile does not wait for it.
    """
    if fmt not in ("table", "csv", "json"):
        raise BenchError(f"unknown format {fmt!r}", "valid: table, csv, json")
    store.check_query_options(limit, timeout)
    cap = (1000 if fmt == "table" else 0) if limit is None else limit
    # One row past the cap says whether there are more; the rest are never fetched.
    cols, rows = store.query(Paths.from_env(db).db, sql, limit=cap + 1 if cap else None, timeout_s=timeout)
    shown = rows[:cap] if cap else rows
    if fmt == "json":
        print(store.to_json(cols, shown))
    elif fmt == "csv":
        render.csv_rows(cols, shown)
    else:
        render.table(out, cols, shown)
    if len(shown) < len(rows):
        err.print(f"[yellow]more rows than the {cap} shown[/] (hint: --limit N, or --limit 0 for all)")


@app.command()
@handles_errors
def compare(
    model: Annotated[str, typer.Option("--model", "-m", help="model to compare")],
    metric: Annotated[str, typer.Option("--metric", help=", ".join(COMPARABLE))] = "throughput_sps",
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            "-B",
            help="column to compare the others with (e.g. ort): ratio, 95% interval and verdict per cell",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="only this device (cpu, cuda:0)")] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="results of this host (default: the host you are on)")
    ] = None,
    across_hosts: Annotated[
        bool,
        typer.Option(
            "--across-hosts",
            help="every host: with two, each configuration on both and new/old (the older host's "
            "results first); with more, one column per configuration and host",
        ),
    ] = False,
    hosts: Annotated[
        str | None,
        typer.Option(
            "--hosts", help="OLD,NEW: each configuration on both hosts, and new/old with its interval"
        ),
    ] = None,
    builds: Annotated[
        str | None,
        typer.Option(
            "--builds",
            help="IMAGE: its newest build (lock) against the one before, on this host (or --host): "
            "each configuration on both, and new/old with its interval (a framework upgrade)",
        ),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="the scenario whose runs to compare: offline, single-stream, multi-stream, server",
        ),
    ] = "offline",
    include_noisy: Annotated[
        bool,
        typer.Option(
            "--include-noisy",
            help="count runs flagged noisy (starved by other load) in cells and verdicts; by default "
            "they are left out, and a verdict that would rest on them says so",
        ),
    ] = False,
    price_per_hour: Annotated[
        float | None,
        typer.Option(
            "--price-per-hour",
            help="dollars per hour of the host, for --metric cost_per_million "
            "(price / 3600 / samples per second x 1e6)",
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="only the configurations whose label holds TEXT, as the table names them (e.g. "
            "ort, or intra_op_threads=); repeated: those holding any (the baseline is kept)",
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option(
            "--top",
            help="only the N best configurations by the metric at the largest batch size (the "
            "table's last row); those not measured there are left out (the baseline is kept)",
        ),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare configurations of one model on one host: rows are batch sizes, columns configurations
    (the other way round when there are too many for a column each; --only and --top pick some).

    A cell is the mean over the clean runs (repetitions) with its 95% interval; a cell of one run
    says so, and runs flagged noisy are left out (--include-noisy counts them). With --baseline,
    each other cell gets its ratio to the baseline and a verdict by one rule: a Mann-Whitney U
    test on per-run values (p < 0.05), a ratio whose 95% interval excludes 1, and at least a 2%
    difference.
    """
    path = Paths.from_env(db).db
    only = only or []
    configurations.check(top)
    if builds is not None:
        if hosts is not None or across_hosts or baseline is not None:
            raise BenchError(
                "--builds compares two builds of one image on one host",
                "drop --hosts, --across-hosts and --baseline (--host H picks the host)",
            )
        _no_top(top)
        build_pair = comparison.compare_builds(
            path, model, builds, metric, device, scenario, host, include_noisy, price_per_hour
        )
        build_pair = configurations.only_pairs(build_pair, only)
        if as_json:
            print(build_pair.model_dump_json(indent=1))
        else:
            render.build_pair(out, build_pair)
        return
    pair = _host_pair(
        path, model, metric, device, scenario, hosts, across_hosts, host, baseline, include_noisy,
        price_per_hour,
    )  # fmt: skip
    if pair is not None:
        _no_top(top)
        pair = configurations.only_pairs(pair, only)
        if as_json:
            print(pair.model_dump_json(indent=1))
        else:
            render.host_pair(out, pair)
        return
    cmp = comparison.compare(
        path, model, metric, device, baseline, host, across_hosts, None, scenario, include_noisy,
        price_per_hour,
    )  # fmt: skip
    cmp = configurations.choose(cmp, only, top)
    if as_json:
        print(cmp.model_dump_json(indent=1))
    else:
        render.comparison(out, cmp)


def _no_top(top: int | None) -> None:
    if top is not None:
        raise BenchError(
            "--top ranks the columns of one host's table", "drop it here: --only TEXT picks configurations"
        )


def _host_pair(
    db: Path,
    model: str,
    metric: str,
    device: str | None,
    scenario: str,
    hosts: str | None,
    across_hosts: bool,
    host: str | None,
    baseline: str | None,
    include_noisy: bool = False,
    price_per_hour: float | None = None,
) -> HostPair | None:
    """The two-host view, when --hosts names two or --across-hosts finds exactly two."""
    if hosts is None and not across_hosts:
        return None
    if hosts is not None and (across_hosts or host is not None):
        raise BenchError("--hosts excludes --host and --across-hosts", "give --hosts OLD,NEW alone")
    if hosts is not None:
        names = [h.strip() for h in hosts.split(",") if h.strip()]
        if len(names) != 2:
            raise BenchError(f"--hosts {hosts!r} is not OLD,NEW", "e.g. --hosts gpu-old,gpu-new")
        old, new = names
    else:
        found = comparison.hosts_of(db, model, metric, device, scenario, price_per_hour)
        if len(found) != 2:
            return None
        old, new = found
    if baseline is not None:
        raise BenchError(
            "--baseline compares configurations on one host", "drop it: new/old is the ratio here"
        )
    return comparison.compare_hosts(
        db, model, old, new, metric, device, scenario, include_noisy, price_per_hour
    )


@app.command()
@handles_errors
def ingest(
    targets: Annotated[list[str], typer.Argument(help="result.json files or folders holding them")],
    db: DbOpt = None,
) -> None:
    """Validate result files and store them (idempotent: a run_id is stored once).

    A file that does not validate is reported and skipped; the others are stored."""
    if any(not t.strip() for t in targets):
        raise BenchError("an empty path was given", "give result.json files or run folders")
    report = store.ingest_paths([Path(t) for t in targets], Paths.from_env(db).db)
    out.print(f"ingested {len(report.ingested)} result(s)")
    for path, why in report.failed.items():
        err.print(f"[red]skipped[/] {safe(path)}: {safe(why)}", soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@images_app.command("list")
@handles_errors
def images_list(as_json: JsonOpt = False) -> None:
    """Images of the catalog: framework and version, devices, build state, lock hash, local env."""
    from controller.launch import build as images

    rows = images.status(Paths.from_env())
    if as_json:
        print(json.dumps([r.model_dump() for r in rows], indent=1))
    else:
        render.images(out, rows)


@images_app.command("build")
@handles_errors
def images_build(
    names: Annotated[
        list[str] | None, typer.Argument(help="images to build (default: all buildable here)")
    ] = None,
    base_image: Annotated[str | None, typer.Option("--base-image", help="override BASE_IMAGE")] = None,
    local_env: Annotated[
        bool, typer.Option("--local", help="build local environments instead of images")
    ] = False,
) -> None:
    """Build images offline from locked wheels (or with --local, the local environments)."""
    from controller.launch import build as images

    paths = Paths.from_env()
    failures = images.build(paths, names or [], base_image, local_env, info, build_line)
    if failures:
        raise typer.Exit(1)


@models_app.command("export")
@handles_errors
def models_export(
    names: Annotated[list[str], typer.Argument(help=", ".join([*KERAS_MODELS, *TRANSFORMER_MODELS]))],
    force: Annotated[bool, typer.Option("--force", help="rebuild if already in the store")] = False,
    launcher: LauncherOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="seed of the random weights")] = 0,
) -> None:
    """Export the study's Keras applications, or transformer encoders built in PyTorch (bert-tiny,
    bert-base), with seeded random weights (no download) into the model store."""
    from controller.catalog.images import get_image
    from controller.launch.select import select_launcher

    paths = Paths.from_env()
    for name in names:
        model_store.check_export_name(name)
    for name in names:
        if (paths.models / name / "manifest.json").exists() and not force:
            info(f"{name}: already in the store (use --force to rebuild)")
            continue
        image = model_store.export_image(name)
        chosen = select_launcher(launcher_choice(launcher), get_image(image), paths, info)
        info(f"exporting {name} ({image} image)")
        m = model_store.export(paths, name, chosen, runner_line, force=force, seed=seed)
        peak = "" if m.export_peak_mem_mb is None else f", peak memory {m.export_peak_mem_mb / 1024:.1f} GB"
        out.print(
            f"exported {m.name}: {m.parameters:,} parameters, "
            f"{(m.flops_per_sample or 0) / 1e9:.2f} GFLOPs/sample, ONNX opset {m.onnx_opset}{peak}"
        )


@models_app.command("add")
@handles_errors
def models_add(
    name: Annotated[str, typer.Argument(help="name in the store")],
    onnx_file: Annotated[Path, typer.Argument(help="your .onnx file (dynamic batch first in every input)")],
    dim: Annotated[
        list[str] | None,
        typer.Option("--dim", metavar="NAME=N", help="default of a named dimension (repeatable)"),
    ] = None,
    int_range: Annotated[
        list[str] | None,
        typer.Option(
            "--int-range", metavar="NAME=LO:HI", help="values of an integer input, HI exclusive (repeatable)"
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", metavar="FILE.npz", help="your samples: one array per input, optional labels"),
    ] = None,
    seq_dim: Annotated[
        str | None, typer.Option("--seq-dim", metavar="NAME", help="the dimension that counts tokens")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace if already in the store")] = False,
    launcher: LauncherOpt = "auto",
) -> None:
    """Register your own ONNX model; reference outputs come from ONNX Runtime fp32 (docs/models.md)."""
    from controller.catalog.images import get_image
    from controller.launch.select import select_launcher

    paths = Paths.from_env()
    model_store.check_name(name)
    model_store.check_onnx_file(onnx_file)  # before a launcher is chosen (Docker asked)
    options = model_store.AddOptions.read(dim or [], int_range or [], data, seq_dim)
    chosen = select_launcher(launcher_choice(launcher), get_image("ort"), paths, info)
    m = model_store.add(paths, name, onnx_file, chosen, runner_line, force=force, options=options)
    for line in _added_lines(m):
        out.print(safe(line), soft_wrap=True)


def _added_lines(m: ModelManifest) -> list[str]:
    """What `models add` registered: inputs (dtype, shape, how samples are made), outputs, the
    named dimensions' defaults, and the data with ONNX Runtime's accuracy on it."""

    def shape(dims: list[int | str | None]) -> str:
        return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"

    def rule(t: TensorInfo) -> str:
        v = t.values
        if v is None or v.kind == "uniform":
            return "uniform in [0, 1)"
        return "all ones" if v.kind == "ones" else f"integers in [{v.low}, {v.high})"

    layout = f" {m.input_layout}" if m.input_layout else ""
    lines = [f"added {m.name}: {len(m.inputs)} input(s), {len(m.outputs)} output(s), reference {m.reference}"]
    lines += [
        f"  input  {t.name} {t.dtype} {shape(t.shape)}{layout if i == 0 else ''}, {rule(t)}"
        for i, t in enumerate(m.inputs)
    ]
    lines += [f"  output {t.name} {t.dtype} {shape(t.shape)}" for t in m.outputs]
    if m.dims:
        seq = f" ({m.sequence_dim} counts tokens)" if m.sequence_dim else ""
        lines.append("  dims   " + ", ".join(f"{k}={v}" for k, v in m.dims.items()) + seq)
    if m.data is not None:
        d = m.data
        line = f"  data   {d.samples:,} samples"
        if d.labels and d.fp32_top1 is not None:
            top5 = f", top-5 {d.fp32_top5:.1%}" if d.fp32_top5 is not None else ""
            line += (
                f" with labels: ONNX Runtime fp32 top-1 {d.fp32_top1:.1%}{top5} (output {d.scored_output})"
            )
        lines.append(line)
    return lines


@models_app.command("remove")
@handles_errors
def models_remove(name: Annotated[str, typer.Argument(help="model to delete from the store")]) -> None:
    """Delete a model from the store (results that measured it stay in the database)."""
    folder = model_store.remove(Paths.from_env(), name)
    out.print(f"removed {name} ({folder})")


@models_app.command("list")
@handles_errors
def models_list(as_json: JsonOpt = False) -> None:
    """Models in the store with their shapes, sizes and reference."""
    entries = model_store.list_models(Paths.from_env())
    if as_json:
        print(json.dumps([e.model_dump() for e in entries], indent=1))
    else:
        render.models(out, entries)


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main() -> None:
    # SIGTERM and SIGHUP unwind like Ctrl-C: the runner's process group (or container) is killed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    app()


if __name__ == "__main__":
    main()
