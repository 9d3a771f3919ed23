"""Rounds: every configuration of a command once per round, in turn (A B A B ...), then more
rounds while an interval is wider than `policy.target_ci`, with noisy runs measured again."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from controller.analysis import comparison, stats
from controller.analysis.comparison import current_host
from controller.analysis.reports import Comparison
from controller.errors import BenchError
from controller.launch.base import LineSink
from controller.paths import Paths
from controller.run.pipeline import Here, check_destinations, execute_here, prepare
from controller.run.planning import RunRequest, new_group_id
from controller.store import db as store
from schemas import MeasurementPolicy, RunResult
from schemas.plan import SlurmOptions

MAX_RUNS = 2000


def run_all(
    req: RunRequest, paths: Paths, log: LineSink, on_line: LineSink, slurm: SlurmOptions | None = None
) -> list[RunResult]:
    """Plan every configuration first (nothing runs if one is wrong), then run them in rounds.
    With `slurm`, every run is a job instead, submitted at once and followed to the end.

    Each round runs every configuration once, in turn (A B A B ...), so that drift and neighbours
    hit every candidate alike; `policy.repetitions` rounds, then, with `policy.target_ci`, more
    rounds of the configurations whose interval is still too wide, up to `max_repetitions`.
    Every run is a fresh runner process; one group id ties the command's runs together."""
    if slurm is not None:
        from controller.run import fleet  # the fleet builds on these rounds' limits

        return fleet.run_all(req, slurm, paths, log)
    planned = prepare(req, paths)
    policy = planned[0].spec.policy
    reps = policy.repetitions
    most = len(planned) * (max(reps, policy.max_repetitions) if policy.target_ci else reps)
    if most > MAX_RUNS:
        raise BenchError(
            f"this command could start {most:,} runs (more than {MAX_RUNS})",
            "fewer configurations or repetitions at a time",
        )
    check_destinations(paths)
    here = Here(paths, log, on_line, req.launcher)
    group = new_group_id()
    done: list[list[RunResult]] = [[] for _ in planned]
    order: list[RunResult] = []
    rounds = 0
    while True:
        due = [i for i, runs in enumerate(done) if _wants_more(runs, policy, rounds)]
        if not due:
            break
        rounds += 1
        for k, i in enumerate(due, 1):
            p = planned[i]
            what = " ".join([p.label, *p.request.sets[len(req.sets) :]])
            if len(planned) > 1 or reps > 1 or rounds > 1:
                log(f"round {rounds}, run {k}/{len(due)}: {what}")
            rep = len(done[i]) + 1
            attempt = partial(execute_here, p, here, group=group, repetition=rep)
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
        log(f"  {measuring_again(runs[-1], len(runs), reruns)}")
        runs.append(attempt())
    if reruns and noisy(runs[-1]):
        log(f"  {still_noisy(reruns)}")
    return runs


def measuring_again(result: RunResult, made: int, reruns: int) -> str:
    """Why a noisy run is made again, in words: the `made`-th of at most `reruns` more."""
    return f"noisy ({noise_summary(result)}): measuring it again ({made} of at most {reruns} more)"


def still_noisy(reruns: int) -> str:
    """Why a noisy run stands: the `reruns` runs allowed for noise are spent."""
    return f"still noisy after {reruns} more runs: the host is too busy to measure this cleanly"


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
