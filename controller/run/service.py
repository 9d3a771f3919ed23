"""Service functions behind `bench-ctl run`: launch planned runs, keep and store their results."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from controller.analysis import comparison, stats
from controller.analysis.comparison import current_host
from controller.analysis.reports import Comparison
from controller.catalog import models as model_store
from controller.catalog.images import ImageInfo, get_image
from controller.errors import BenchError
from controller.launch.base import Launcher, LineSink, failed_result
from controller.launch.local import LocalLauncher
from controller.launch.select import select_launcher
from controller.paths import Paths
from controller.run.planning import (
    RunRequest,
    check_runnable,
    default_timeout,
    new_group_id,
    plan,
    policy_of,
    preflight,
    tagged,
    validate,
)
from controller.store import db as store
from schemas import LaunchInfo, MeasurementPolicy, RunResult, RunSpec
from schemas.atomic import write_atomic

MAX_RUNS = 2000


def run_all(req: RunRequest, paths: Paths, log: LineSink, on_line: LineSink) -> list[RunResult]:
    """Validate every configuration first (nothing runs if one is wrong), then run them in rounds.

    Each round runs every configuration once, in turn (A B A B ...), so that drift and neighbours
    hit every candidate alike; `policy.repetitions` rounds, then, with `policy.target_ci`, more
    rounds of the configurations whose interval is still too wide, up to `max_repetitions`.
    Every run is a fresh runner process; one group id ties the command's runs together."""
    requests = validate(req, paths)
    policy = policy_of(req)
    reps = policy.repetitions
    most = len(requests) * (max(reps, policy.max_repetitions) if policy.target_ci else reps)
    if most > MAX_RUNS:
        raise BenchError(
            f"this command could start {most:,} runs (more than {MAX_RUNS})",
            "fewer configurations or repetitions at a time",
        )
    check_destinations(paths)
    group = new_group_id()
    done: list[list[RunResult]] = [[] for _ in requests]
    order: list[RunResult] = []
    rounds = 0
    while True:
        due = [i for i, runs in enumerate(done) if _wants_more(runs, policy, rounds)]
        if not due:
            break
        rounds += 1
        for k, i in enumerate(due, 1):
            r = requests[i]
            what = " ".join([r.image, r.model, *r.sets[len(req.sets) :]])
            if len(requests) > 1 or reps > 1 or rounds > 1:
                log(f"round {rounds}, run {k}/{len(due)}: {what}")
            rep = len(done[i]) + 1
            attempt = partial(run, r, paths, log, on_line, group=group, repetition=rep)
            runs = run_clean(attempt, log, policy.noisy_reruns if reps > 1 or policy.target_ci else 0)
            done[i].append(runs[-1])
            order.extend(runs)
    return order


def noisy(result: RunResult) -> bool:
    """An ok run with a measurement the runner could not make of clean windows."""
    return result.status == "ok" and any(m.noisy for m in result.measurements)


def noise_summary(result: RunResult) -> str:
    """The noise figures of a run's noisy measurements, in words."""
    parts = []
    for m in result.measurements:
        if m.noisy:
            starved = f", starved {m.starved_share:.0%}" if m.starved_share is not None else ""
            parts.append(f"batch {m.batch_size}: {m.other_cpu_cores or 0:.2f} other cores busy{starved}")
    return "; ".join(parts)


def run_clean(attempt: Callable[[], RunResult], log: LineSink, reruns: int) -> list[RunResult]:
    """Run once, and again (at most `reruns` times, `policy.noisy_reruns`) while the run is noisy:
    other load starved it, so its figures are not the configuration's. Every run is kept and
    stored; the last one stands for the repetition (compare leaves the noisy ones out)."""
    runs = [attempt()]
    while noisy(runs[-1]) and len(runs) <= reruns:
        log(f"  noisy ({noise_summary(runs[-1])}): measuring it again ({len(runs)} of at most {reruns} more)")
        runs.append(attempt())
    if reruns and noisy(runs[-1]):
        log(f"  still noisy after {reruns} more runs: the host is too busy to measure this cleanly")
    return runs


def _wants_more(runs: list[RunResult], policy: MeasurementPolicy, rounds: int) -> bool:
    """Whether a configuration gets another repetition after `rounds` rounds."""
    if rounds < policy.repetitions:
        return True
    if any(r.status != "ok" for r in runs):
        return False  # a failure is not noise: more runs would not narrow anything
    return needs_more_runs(policy, len(runs), widest_interval(points_of(runs)))


def needs_more_runs(policy: MeasurementPolicy, made: int, widest: float) -> bool:
    """With `policy.target_ci`: whether `made` ok runs whose widest interval is `widest` (relative
    half-width) call for another, below the cap of max(repetitions, max_repetitions)."""
    if policy.target_ci is None or made >= max(policy.repetitions, policy.max_repetitions):
        return False
    return widest > policy.target_ci


Point = tuple[int, float, float | None]  # batch size, throughput, the run's own relative interval


def points_of(runs: list[RunResult]) -> list[Point]:
    """Each clean measurement of `runs` (noisy ones say nothing of the configuration's spread)."""
    return [
        (m.batch_size, m.throughput_sps, m.within_run_ci_rel)
        for r in runs
        for m in r.measurements
        if not m.noisy
    ]


def widest_interval(points: list[Point]) -> float:
    """The widest relative half-width of a throughput interval over the batch sizes: Student-t
    across the runs, or the run's own batch-means interval when there is only one (infinite when
    a batch size has no interval at all)."""
    by_batch: dict[int, list[tuple[float, float | None]]] = {}
    for bs, value, within in points:
        by_batch.setdefault(bs, []).append((value, within))
    widest = 0.0
    for values in by_batch.values():
        if len(values) == 1:
            width = values[0][1]
        else:
            width = stats.mean_ci([v for v, _ in values]).relative_half_width
        widest = max(widest, float("inf") if width is None else width)
    return widest if by_batch else float("inf")


def run(
    req: RunRequest,
    paths: Paths,
    log: LineSink,
    on_line: LineSink,
    db: Path | None = None,
    group: str | None = None,
    repetition: int | None = None,
    cell: str | None = None,
) -> RunResult:
    """Plan, launch, validate, keep the raw JSON, ingest. Framework failures come back as results."""
    image = get_image(req.image)
    check_runnable(image)
    for m in req.models:
        model_store.read_manifest(paths, m)
    tags = {"group": group, "repetition": repetition, "cell": cell}
    reason = preflight(image, req)
    if reason is not None:
        return record_unsupported(req, paths, image, reason, log, db, **tags)
    launcher = select_launcher(req.launcher, image, paths, log)
    spec = tagged(plan(req, paths, launcher, image), **tags)
    launcher.prepare(image, log)
    return execute(image, spec, launcher, paths, req.timeout_s, on_line, db=db)


def record_unsupported(
    req: RunRequest,
    paths: Paths,
    image: ImageInfo,
    reason: str,
    log: LineSink,
    db: Path | None = None,
    **tags: Any,
) -> RunResult:
    """Nothing to launch: validate the request all the same, then record why it cannot run."""
    spec = tagged(plan(req, paths, LocalLauncher(paths), image), **tags)
    run_dir = paths.runs / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=1) + "\n")
    now = datetime.now(UTC)
    info = LaunchInfo(
        launcher="preflight", host=socket.gethostname(), image_ref=image.name, lock_hash=image.lock_hash
    )
    result = failed_result(spec, "unsupported", reason, now, info)
    log(f"not launched: {reason}")
    return keep(result, run_dir, paths, db)


def execute(
    image: ImageInfo,
    spec: RunSpec,
    launcher: Launcher,
    paths: Paths,
    timeout_s: float | None,
    on_line: LineSink,
    shared: list[Path] | None = None,
    db: Path | None = None,
) -> RunResult:
    """Launch one planned spec in its own run folder, then keep and store its result."""
    run_dir = paths.runs / spec.run_id
    try:
        run_dir.mkdir(parents=True)
        result = launcher.launch(
            image, spec, run_dir, timeout_s or default_timeout(spec), on_line, shared or []
        )
    except OSError as e:
        raise run_folder_error(run_dir, e) from None
    return keep(result, run_dir, paths, db)


def run_folder_error(folder: Path, e: OSError) -> BenchError:
    return BenchError(
        f"cannot write the run folder {folder}: {e.strerror or e}",
        "free space there, or point BENCH_HOME at a writable disk",
        exit_code=1,
    )


def check_destinations(paths: Paths) -> None:
    """The store and the run folders can take a result: checked before anything is measured."""
    store.ensure_store(paths.db)
    check_run_folder(paths)


def check_run_folder(paths: Paths) -> None:
    """Fail before measuring when run folders cannot be written (full disk, read-only mount)."""
    try:
        paths.runs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=paths.runs, prefix=".probe.") as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise run_folder_error(paths.runs, e) from None


def keep(result: RunResult, run_dir: Path, paths: Paths, db: Path | None = None) -> RunResult:
    """Write the result atomically beside the run (with the launch information the runner could
    not know), then store it in one transaction."""
    final = run_dir / "result.json"
    try:
        write_atomic(final, result.model_dump_json(indent=1) + "\n")
    except OSError as e:
        raise run_folder_error(run_dir, e) from None
    try:
        with store.connect(db or paths.db) as con:
            store.ingest(con, result, final)
    except BenchError as e:
        raise BenchError(
            f"measured, but not stored: {e.message}",
            f"the result is kept in {run_dir}/; store it with: bench-ctl ingest {run_dir}"
            + (f" --db {db or paths.db}" if (db or paths.db) != Paths.from_env().db else ""),
            exit_code=1,
        ) from None
    return result


def group_summary(db: Path, results: list[RunResult]) -> list[Comparison]:
    """One command's runs as comparisons, one per model: means and intervals over its repetitions."""
    ok = [r for r in results if r.status == "ok"]
    models = sorted({r.spec.model for r in ok})
    ids = [r.run_id for r in ok]
    # The hosts the runs landed on (Slurm nodes are not this host); several are shown side by side.
    hosts = sorted({store.host_of(r) or current_host() for r in ok})
    where: dict[str, Any] = {"host": hosts[0]} if len(hosts) == 1 else {"across_hosts": True}
    return [
        comparison.compare(db, m, run_ids=ids, scenario=s, **where)
        for m in models
        for s in sorted({r.spec.scenario.name for r in results if r.spec.model == m and r.status == "ok"})
    ]


PEAK_MAX_PROBES = 12
PEAK_PRECISION = 0.05  # bisection stops once the bracket is within 5 % of its lower end
PEAK_START_QPS = 10.0


def probe_ok(result: RunResult) -> bool:
    """A probed rate holds: the server run is VALID (which includes p99 within the bound)."""
    return result.status == "ok" and all(m.valid for m in result.measurements)


def find_peak(
    req: RunRequest, paths: Paths, log: LineSink, on_line: LineSink
) -> tuple[list[RunResult], float | None]:
    """The highest `server.target_qps` whose run is VALID with p99 under `server.latency_bound_ms`,
    as LoadGen's FindPeakPerformance searches: from the start rate (`server.target_qps`, else
    PEAK_START_QPS), double while VALID (halve while INVALID), then bisect the bracket. Every probe
    is its own run, stored, with one group id: a latency-throughput curve. Returns the probes, in
    order, and the peak (None when no probed rate held)."""
    if not any(s.partition("=")[0].strip() == "server.target_qps" for s in req.sets):
        req = req.model_copy(update={"sets": [*req.sets, f"server.target_qps={PEAK_START_QPS:g}"]})
    requests = validate(req, paths)
    if len(requests) != 1:
        raise BenchError(
            f"--find-peak searches one configuration; this command asks for {len(requests)}",
            "one image, one model, no --sweep",
        )
    base = [s for s in requests[0].sets if s.partition("=")[0].strip() != "server.target_qps"]
    given = [s for s in requests[0].sets if s.partition("=")[0].strip() == "server.target_qps"]
    rate = float(given[0].partition("=")[2]) if given else PEAK_START_QPS
    check_destinations(paths)
    group = new_group_id()
    reruns = policy_of(req).noisy_reruns
    probes: list[RunResult] = []
    low: float | None = None  # highest rate that held
    high: float | None = None  # lowest rate that did not
    while len(probes) < PEAK_MAX_PROBES:
        probe_req = requests[0].model_copy(update={"sets": [*base, f"server.target_qps={rate:.6g}"]})
        log(f"peak search, probe {len(probes) + 1}: {rate:.6g} queries/s")
        runs = run_clean(partial(run, probe_req, paths, log, on_line, group=group), log, reruns)
        probes.extend(runs)
        result = runs[-1]
        if result.status != "ok":
            break  # a failure is not a verdict: stop
        m = result.measurements[0]
        held = probe_ok(result)
        log(
            f"  {rate:.6g} queries/s: p99 {m.latency_p99_ms:.2f} ms, achieved {m.achieved_qps or 0:.1f}/s: "
            + ("VALID" if held else f"INVALID ({m.invalid_reason})")
            + (" but noisy" if m.noisy else "")
        )
        if m.noisy:
            # Other load decided this probe, VALID or not: neither bound is known at this rate.
            log(
                f"  peak search stopped: the probe at {rate:.6g} queries/s stayed noisy after "
                f"{reruns} more runs; the peak is of the clean probes below it, if any"
            )
            break
        if held:
            low = rate if low is None else max(low, rate)
        else:
            high = rate if high is None else min(high, rate)
        if low is not None and high is not None:
            if (high - low) / low <= PEAK_PRECISION:
                break
            rate = (low + high) / 2
        elif high is None:
            rate *= 2
        else:
            rate /= 2
    return probes, low
