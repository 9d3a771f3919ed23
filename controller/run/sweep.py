"""`bench-ctl sweep PLAN`: run the cells of a plan that are not yet done on this host.

Done-ness lives in the store, not in folder names: each run carries its cell's key (spec, host
identity and image lock, hashed), so the same command after an interruption runs only what is
missing, and new hardware or a new lock makes every cell due again. A run that came out noisy
does not count until the cell's runs for noise are spent (`CellState.counted`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from controller.catalog import hosts
from controller.catalog import models as model_store
from controller.catalog.images import get_image
from controller.claims import ClaimSet
from controller.launch.base import (
    RESULT_FILE,
    SPEC_FILE,
    LauncherChoice,
    LineSink,
    claimed_run_id,
    failed_result,
    foreign_result_message,
)
from controller.launch.select import select_launcher
from controller.launch.slurm import SCRIPT_FILE, SlurmClient
from controller.paths import Paths
from controller.run import fleet, pipeline, planning, plans, rounds
from controller.run.planning import new_group_id
from controller.store import db as store
from controller.store import ingest as ingestion
from schemas import LaunchInfo, MultiStreamScenario, RunResult, RunSpec, ServerScenario, load_result
from schemas.plan import Plan, SlurmOptions

SCHEDULER_ENDED = ("cancelled", "preempted", "node_fail")  # statuses that say nothing of the cell
STARTUP_S = 15.0  # a runner's import, model read and compile, when this host has no history


@dataclass
class CellState:
    """What the store holds for a cell on this host."""

    ok: int = 0
    noisy: int = 0  # of the ok runs, those with a noisy measurement (rounds.noisy)
    failed: int = 0
    unsupported: str | None = None
    last_failure: str | None = None

    def counted(self, reruns: int) -> int:
        """The ok runs that count towards the cell's repetitions: the clean ones, and the noisy
        ones beyond the first `reruns` (`policy.noisy_reruns`). A noisy run's figures are not the
        configuration's (compare leaves them out), so it is made again, but at most `reruns`
        times over the cell's life in the store, not per repetition nor per sweep: on a host
        that stays busy, a cell ends after repetitions + reruns runs, and a resumed sweep does
        not start the allowance over."""
        return self.ok - min(self.noisy, reruns)

    def reruns_left(self, reruns: int) -> int:
        """Of the `reruns` runs a cell may make for noise, those not yet spent."""
        return max(0, reruns - self.noisy)


@dataclass
class Due:
    cell: plans.Cell
    state: CellState
    runs: int  # runs still to make
    why: str  # done, due, failed, unsupported ... in words
    estimate_s: float
    reason: str | None = None  # why it is unsupported or failed
    queued: int = 0  # runs submitted to Slurm, not ended yet
    claimed_elsewhere: bool = False  # another live sweep measures it: skipped here
    noise_reruns: int = 0  # runs it may make for noise over its life (policy.noisy_reruns)

    @property
    def done(self) -> int:
        """The stored ok runs that count towards its repetitions (CellState.counted)."""
        return self.state.counted(self.noise_reruns)

    @property
    def failed_earlier(self) -> bool:
        """Skipped because its last run here failed (until --retry-failed)."""
        return self.runs == 0 and bool(self.state.failed) and not self.claimed_elsewhere


@dataclass
class SweepPlan:
    plan: Plan
    cells: list[plans.Cell]
    due: list[Due]
    missing_models: list[str]
    host: hosts.HostIdentity

    @property
    def runs_due(self) -> int:
        return sum(d.runs for d in self.due)

    @property
    def cells_done(self) -> int:
        return sum(1 for d in self.due if d.runs == 0 and not d.claimed_elsewhere)

    @property
    def estimate_s(self) -> float:
        return sum(d.estimate_s for d in self.due)


@dataclass
class SweepOutcome:
    results: list[RunResult] = field(default_factory=list)
    skipped_failed: int = 0


def states(db: Path, keys: list[str]) -> dict[str, CellState]:
    """Per cell key: runs that succeeded (and of them, those that came out noisy: a measurement
    the runner could not make of clean windows), failed, or were found unsupported, as stored."""
    found: dict[str, CellState] = {k: CellState() for k in keys}
    if not db.exists() or not keys:
        return found
    _, rows = store.read(
        db,
        "SELECT cell, status, noisy, count(*), arg_max(message, finished_at) FROM ("
        "SELECT r.cell, r.status, r.message, r.finished_at, r.status = 'ok' AND EXISTS "
        "(SELECT 1 FROM measurements m WHERE m.run_id = r.run_id AND m.noisy) AS noisy "
        "FROM runs r WHERE r.cell IN (SELECT unnest(?))) GROUP BY cell, status, noisy",
        [keys],
    )
    for key, status, is_noisy, n, message in rows:
        st = found[key]
        if status in SCHEDULER_ENDED:
            continue  # the job was cancelled, preempted or lost its node: the cell is due again
        if status == "ok":
            st.ok += int(n)
            st.noisy += int(n) if is_noisy else 0
        elif status == "unsupported":
            st.unsupported = message or "unsupported on this host"
        else:
            st.failed += int(n)
            st.last_failure = f"{status}: {message}" if message else status
    return found


def widest_intervals(db: Path, keys: list[str]) -> dict[str, float]:
    """Per cell key with ok runs: the widest relative half-width of its throughput intervals over
    its batch sizes (`rounds.widest_interval` over the clean measurements of every ok run the
    store holds of it: noisy ones say nothing of the configuration's spread, `rounds.points_of`)."""
    if not db.exists() or not keys:
        return {}
    _, rows = store.read(
        db,
        "SELECT cell, batch_size, throughput_sps, within_run_ci_rel FROM results WHERE status = 'ok' "
        "AND batch_size IS NOT NULL AND throughput_sps IS NOT NULL AND NOT coalesce(noisy, false) "
        "AND cell IN (SELECT unnest(?))",
        [keys],
    )
    points: dict[str, list[rounds.Point]] = {}
    for key, bs, value, within in rows:
        points.setdefault(key, []).append((int(bs), float(value), None if within is None else float(within)))
    return {key: rounds.widest_interval(p) for key, p in points.items()}


def due_state(cell: plans.Cell, st: CellState) -> str:
    """A due cell's state in words: "due", or e.g. "due (2 of 3 done, 1 noisy)"."""
    reruns = cell.spec.policy.noisy_reruns
    done = st.counted(reruns)
    if not done and not st.noisy:
        return "due"
    noisy = f", {st.noisy} noisy" if st.noisy else ""
    if st.noisy and reruns and not st.reruns_left(reruns):
        noisy += ": no runs for noise left"
    return f"due ({done} of {cell.repetitions} done{noisy})"


def narrowing(cell: plans.Cell, ok: int, widest: float | None) -> str | None:
    """Why a cell that has its repetitions gets one more (policy.target_ci), or None."""
    policy = cell.spec.policy
    if widest is None or not rounds.needs_more_runs(policy, ok, widest):
        return None
    cap = max(policy.repetitions, policy.max_repetitions)
    shown = "unknown" if widest == float("inf") else f"±{widest:.1%}"
    return f"interval {shown} > target ±{policy.target_ci:.1%} ({ok} of at most {cap} runs)"


def history(db: Path, host: str) -> dict[tuple[str, str], float]:
    """Seconds per batch size of past ok runs on this host, per (image, model): the estimate's base."""
    if not db.exists():
        return {}
    _, rows = store.read(
        db,
        "SELECT image, model, median(epoch(finished_at) - epoch(started_at)) / max(n) FROM "
        "(SELECT r.image, r.model, r.finished_at, r.started_at, count(m.batch_size) AS n FROM runs r "
        "JOIN measurements m USING (run_id) WHERE r.status = 'ok' AND r.host = ? "
        "GROUP BY r.run_id, r.image, r.model, r.finished_at, r.started_at) GROUP BY image, model",
        [host],
    )
    return {(image, model): float(s) for image, model, s in rows if s is not None}


def estimate(cell: plans.Cell, past: dict[tuple[str, str], float]) -> float:
    """Seconds one run of the cell takes: this host's history for the image and model, else the
    policy's own times (warm-up, then the measuring time, usually well under its maximum)."""
    r = cell.request
    per_batch = past.get((r.image, r.model))
    if per_batch is not None:
        return per_batch * len(r.batch_sizes)
    policy = cell.spec.policy
    measure = min(policy.max_time_s, max(policy.min_time_s, 3 * policy.stable_windows * policy.window_s))
    seconds = STARTUP_S + len(r.batch_sizes) * (policy.warmup_min_s + measure + 1.0)
    sc = cell.spec.scenario
    if isinstance(sc, ServerScenario):
        seconds += max(sc.min_duration_s, sc.min_queries / sc.target_qps)
    elif isinstance(sc, MultiStreamScenario):
        seconds += max(sc.min_duration_s, sc.min_queries * sc.interval_ms / 1000)
    return seconds


def prepare(
    plan_path: Path,
    paths: Paths,
    retry_failed: bool,
    dry_run: bool,
    slurm: SlurmOptions | None = None,
    client: SlurmClient | None = None,
    log: LineSink | None = None,
    claims: ClaimSet | None = None,
) -> SweepPlan:
    """Read the plan, expand its cells and find what is due here; nothing runs.

    With `slurm` (the flags; the plan's `[slurm]` table fills what they leave out) the cells are
    keyed on the cluster and node kind instead of this host, and runs of a cell that are queued
    or running as jobs count as made: a rerun submits only what is neither done nor in flight.
    With `claims` (a sweep about to run), the due cells are claimed (`claim_due`)."""
    plan = plans.load(plan_path)
    missing = plans.missing_models(plan, paths)
    if slurm is not None:
        host = fleet.cluster_identity(slurm_options(plan, slurm), client)
    else:
        host = hosts.identity()
    cells = plans.cells(plan, paths, host.key, check_models=not missing, here=slurm is None)
    if not dry_run:
        store.ensure_store(paths.db)
    due = assess(cells, paths, host, retry_failed, slurm is not None)
    if claims is not None:
        due = claim_due(due, claims, paths, host, retry_failed, slurm is not None, log or (lambda _: None))
    return SweepPlan(plan, cells, due, missing, host)


def assess(
    cells: list[plans.Cell], paths: Paths, host: hosts.HostIdentity, retry_failed: bool, on_slurm: bool
) -> list[Due]:
    """What each cell needs, from what the store holds of it (and, on Slurm, its jobs in flight)."""
    found = states(paths.db, [c.key for c in cells])
    widths = widest_intervals(paths.db, [c.key for c in cells if c.spec.policy.target_ci is not None])
    in_flight = fleet.open_cells(paths.db) if on_slurm else {}
    past = history(paths.db, host.hostname)
    due = []
    for c in cells:
        st = found[c.key]
        queued = in_flight.get(c.key, 0)
        reruns = c.spec.policy.noisy_reruns
        if st.unsupported is not None:
            due.append(Due(c, st, 0, "unsupported (recorded)", 0.0, st.unsupported, noise_reruns=reruns))
        elif c.unsupported is not None:
            due.append(Due(c, st, 1, "unsupported (to record)", 0.0, c.unsupported, noise_reruns=reruns))
        elif st.failed and not retry_failed:
            due.append(Due(c, st, 0, "failed (--retry-failed)", 0.0, st.last_failure, noise_reruns=reruns))
        else:
            done = st.counted(reruns)
            runs = max(0, c.repetitions - done - queued)
            why = "done" if runs == 0 else due_state(c, st)
            wider = narrowing(c, done, widths.get(c.key)) if runs == 0 and not queued else None
            if wider is not None:
                runs, why = 1, f"due: {wider}"
            if queued:
                why = f"{queued} queued or running" + (f", {runs} due" if runs else "")
            seconds = runs * estimate(c, past)
            due.append(Due(c, st, runs, why, seconds, queued=queued, noise_reruns=reruns))
    return due


def claim_due(
    due: list[Due],
    claims: ClaimSet,
    paths: Paths,
    host: hosts.HostIdentity,
    retry_failed: bool,
    on_slurm: bool,
    log: LineSink,
) -> list[Due]:
    """Claim the due cells, so that a second sweep of them on this host (or this cluster) skips
    them while this one lives (controller/claims.py: a killed sweep holds nothing), then look at
    the cells again: another sweep may have measured or submitted some before letting go. Local
    results left unstored are stored first (`recover`), except those of cells another sweep
    holds. Cells claimed by another sweep are skipped, said in one line."""
    elsewhere = {d.cell.key: who for d in due if d.runs and (who := claims.take(d.cell.key)) is not None}
    ours = [d.cell for d in due if d.cell.key not in elsewhere]
    if not on_slurm:
        recover(paths, {c.key for c in ours}, log)
    fresh = {d.cell.key: d for d in assess(ours, paths, host, retry_failed, on_slurm)}
    result = []
    for d in due:
        if d.cell.key in elsewhere:
            why = f"claimed by another sweep ({elsewhere[d.cell.key]})"
            result.append(Due(d.cell, d.state, 0, why, 0.0, queued=d.queued, claimed_elsewhere=True))
            continue
        now = fresh[d.cell.key]
        if not now.runs:
            claims.release(d.cell.key)
        elif (who := claims.take(d.cell.key)) is not None:  # due only now (the store changed)
            elsewhere[d.cell.key] = who
            now = Due(d.cell, now.state, 0, f"claimed by another sweep ({who})", 0.0, claimed_elsewhere=True)
        result.append(now)
    if elsewhere:
        holders = ", ".join(sorted(set(elsewhere.values())))
        log(f"{len(elsewhere)} due cell(s) are being measured by another sweep ({holders}): skipped here")
    return result


def recover(paths: Paths, keys: set[str], log: LineSink) -> int:
    """Store the results of these cells that reached their run folders but not the store (bench-ctl
    was killed between a run's end and its storing, or the store refused it then), so a resumed
    sweep counts them instead of measuring them again. Slurm jobs' folders are left to `fleet sync`.
    Returns how many were stored."""
    if not keys or not paths.runs.is_dir():
        return 0
    folders = {
        p.name: p
        for p in paths.runs.iterdir()
        if (p / RESULT_FILE).is_file() and not (p / SCRIPT_FILE).exists()
    }
    stored: set[str] = set()
    if folders and paths.db.exists():
        _, rows = store.read(
            paths.db, "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?))", [list(folders)]
        )
        stored = {str(r[0]) for r in rows}
    ours = []
    refused = 0
    for name in sorted(set(folders) - stored):
        try:
            spec = RunSpec.model_validate_json((folders[name] / SPEC_FILE).read_bytes())
        except (OSError, ValueError, ValidationError):
            continue  # not a run of a cell (or not readable): `bench-ctl ingest` is the tool for it
        if spec.cell not in keys or spec.run_id != name:
            continue  # a folder is named after the run planned into it: anything else is not ours
        if refuse_foreign(folders[name], spec, paths, log):
            refused += 1
        else:
            ours.append(folders[name])
    if not ours:
        return refused
    report = ingestion.ingest_paths(ours, paths.db)
    if report.ingested:
        log(
            f"stored {len(report.ingested)} result(s) of this plan that were measured but not stored "
            "(bench-ctl stopped before storing them): they count as done"
        )
    for path, why in report.failed.items():
        log(f"not stored: {path}: {why}")
    return len(report.ingested) + refused


def refuse_foreign(folder: Path, spec: RunSpec, paths: Paths, log: LineSink) -> bool:
    """A result in a run folder that claims another run id is not stored (it would replace that
    run): the folder's own run is stored as failed instead, saying so. True when refused."""
    try:
        result = load_result(folder / RESULT_FILE)
    except (OSError, ValueError, ValidationError):
        return False  # invalid: ingesting it reports why
    claimed = claimed_run_id(result, spec.run_id)
    if claimed is None:
        return False
    log(f"not stored: {folder / RESULT_FILE} claims run {claimed!r}, not {spec.run_id!r}: refused")
    info = LaunchInfo(launcher="local", host=socket.gethostname(), image_ref=spec.image)
    pipeline.keep(
        failed_result(spec, "error", foreign_result_message(claimed), datetime.now(UTC), info), folder, paths
    )
    return True


def export_missing(sp: SweepPlan, paths: Paths, log: LineSink, on_line: LineSink) -> None:
    for name in sp.missing_models:
        log(f"model {name} is not in the store: exporting it (bench-ctl models export {name})")
        launcher = select_launcher(LauncherChoice.auto, get_image(model_store.export_image(name)), paths, log)
        model_store.export(paths, name, launcher, on_line)


def run(
    due: list[Due],
    paths: Paths,
    launcher: LauncherChoice,
    log: LineSink,
    on_line: LineSink,
    on_result: Callable[[Due, RunResult], None],
    on_more: Callable[[int], None] | None = None,
) -> SweepOutcome:
    """Run every due cell: in rounds (each due cell once per round, in plan order, so candidates
    are measured side by side), until each has its repetitions, and then, with `policy.target_ci`,
    one more per round while its interval is wider than the target (up to `max_repetitions`).
    A run that comes out noisy does not count while the cell has runs for noise left
    (`Due.noise_reruns`, less those spent: CellState.counted): the cell's next run measures it
    again, with the same repetition number. A cell whose run fails gets no more runs in this
    sweep; a cell unsupported here is recorded once. `on_more(n)`: n runs were added to those
    announced (the bar's total grows)."""
    group = new_group_id()
    here = pipeline.Here(paths, log, on_line, launcher)
    outcome = SweepOutcome(skipped_failed=sum(1 for d in due if d.failed_earlier))
    left = {d.cell.key: d.runs for d in due}
    done_ok = {d.cell.key: d.done for d in due}
    for_noise = {d.cell.key: d.state.reruns_left(d.noise_reruns) for d in due}
    while any(left.values()):
        for d in due:
            key = d.cell.key
            if not left[key]:
                continue
            result = pipeline.execute_here(
                d.cell.planned, here, group=group, repetition=done_ok[key] + 1, cell=key
            )
            outcome.results.append(result)
            if rounds.noisy(result) and for_noise[key]:
                for_noise[key] -= 1
                again = rounds.measuring_again(result, d.noise_reruns - for_noise[key], d.noise_reruns)
                log(f"cell {d.cell.index} {d.cell.label}: {again}")
                if on_more is not None:
                    on_more(1)
            elif result.status == "ok":
                if rounds.noisy(result) and d.noise_reruns:
                    log(f"cell {d.cell.index} {d.cell.label}: {rounds.still_noisy(d.noise_reruns)}")
                done_ok[key] += 1
                left[key] -= 1
                if not left[key] and d.cell.spec.policy.target_ci is not None:
                    wider = narrowing(d.cell, done_ok[key], widest_intervals(paths.db, [key]).get(key))
                    if wider is not None:
                        log(f"cell {d.cell.index} {d.cell.label}: {wider}: one more run")
                        left[key] = 1
                        if on_more is not None:
                            on_more(1)
            else:
                left[key] = 0
            on_result(d, result)
    return outcome


def due_of(requests: list[tuple[planning.RunRequest, int]], paths: Paths) -> list[Due]:
    """Requests to make `n` times each here (a rerun), as due cells: checked and planned first,
    keyed like a sweep's cells so they count for a sweep of the same plan on this host. As with
    `run --repeat`, a noisy run is made again (`policy.noisy_reruns` times at most per
    configuration) when it is one of several or `policy.target_ci` is set."""
    host = hosts.identity()
    past = history(paths.db, host.hostname) if paths.db.exists() else {}
    due = []
    for i, (req, n) in enumerate(requests, 1):
        for p in pipeline.prepare(req, paths):
            cell = plans.planned_cell(i, 0, p, n, host.key)
            policy = cell.spec.policy
            reruns = policy.noisy_reruns if n > 1 or policy.target_ci else 0
            due.append(Due(cell, CellState(), n, "due", n * estimate(cell, past), noise_reruns=reruns))
    return due


def cell_claims(paths: Paths) -> ClaimSet:
    """The claims of a sweep about to run: one file per cell key under the state folder."""
    return ClaimSet(paths.home / "claims", f"sweep pid {os.getpid()} on {socket.gethostname()}")


def slurm_options(plan: Plan, given: SlurmOptions) -> SlurmOptions:
    """The plan's `[slurm]` table with the flags given on the command line taking precedence."""
    return (plan.slurm or SlurmOptions()).merged(given)


def submit(
    sp: SweepPlan,
    given: SlurmOptions,
    paths: Paths,
    log: LineSink,
    client: SlurmClient | None = None,
    claims: ClaimSet | None = None,
) -> SweepOutcome:
    """`sweep --launcher slurm`: every due run of every due cell is submitted at once, a job per
    run (rounds in plan order, so a cell's repetitions are spread over the queue), then the jobs
    are followed and each result stored as it lands. The cells' `claims` are let go once their
    jobs are in the registry: from then on, those count as in flight for another sweep. A job
    that comes out noisy is made again by the next sweep of the plan (`CellState.counted`)."""
    client = client or SlurmClient()
    executor = fleet.SlurmExecutor(paths, slurm_options(sp.plan, given), log, client)
    group = new_group_id()
    outcome = SweepOutcome(skipped_failed=sum(1 for d in sp.due if d.failed_earlier))
    for k in range(max((d.runs for d in sp.due), default=0)):
        for d in sp.due:
            if k >= d.runs:
                continue
            repetition = None if d.cell.unsupported else d.done + d.queued + k + 1
            result = pipeline.execute(
                d.cell.planned, executor, group=group, repetition=repetition, cell=d.cell.key
            )
            if result is not None:
                outcome.results.append(result)
    submitted = executor.submitted
    if claims is not None:
        claims.release_all()
    if submitted:
        log(f"{len(submitted)} job(s) submitted; following them (Ctrl-C leaves them running)")
    if any(d.runs and d.cell.spec.policy.target_ci is not None for d in sp.due):
        log(
            "policy.target_ci: jobs are submitted at once, so cells whose interval is still wider "
            "than the target get one more run each time this sweep is run again"
        )
    outcome.results += fleet.follow(submitted, paths, log, client).stored
    return outcome
