"""`bench-ctl tune`: each framework at its best for one model on this host, found by racing.

The candidates of an image are every combination of its options' declared values (the search
space on its options model, `schemas.frameworks.base.search_space`) at each batch size, the
framework's defaults among them. Every trial is an ordinary run of one candidate (stored, with
the candidate's cell key, so that a second call reuses what is done), and the search spends its
runs where they decide something:

- Rounds: each live candidate gets one more run per round, the candidates of every image
  interleaved, up to `FINAL_RUNS` runs.
- After each round a candidate is dropped when it is significantly worse than its image's
  leader (the best mean so far): with 4 or more runs on each side by the project's comparison
  rule (`stats.verdict`: Mann-Whitney and the ratio's interval, the same rule as `compare`);
  before that when their 95 % intervals do not overlap by more than the minimum effect (a
  single run's interval is its within-run batch-means interval). Noisy runs are left out.
- A candidate whose latency breaks the bound in most of its runs is dropped as infeasible.
- The defaults are never dropped: they get `FINAL_RUNS` runs, so that tuned against default is
  a verdict. An image is done when one candidate besides its defaults is left with its runs
  made, or when every live one has them (a tie: reported as not significantly different).
- The budget: a trial is started only while the time spent plus its estimate fits; when a round
  would not fit, the lower half of the live candidates (by mean) is cut first.

The answer per image is its leader with its interval, its defaults beside, and the verdict of
one against the other; across images, the winner's verdict against the runner-up, and the
latency-throughput Pareto front of every candidate measured."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from controller.analysis import stats
from controller.analysis.metrics import cost_per_million
from controller.analysis.reports import pareto as pareto_front
from controller.catalog import hosts
from controller.catalog.images import get_image
from controller.errors import BenchError, did_you_mean
from controller.launch.base import LauncherChoice, LineSink
from controller.paths import Paths
from controller.run import pipeline, planning, plans, rounds
from controller.run.peak import PEAK_PRECISION, PEAK_START_QPS, PEAK_STEP, Bracket, probe_ok, probe_runs
from controller.run.request import RunRequest
from controller.store import db as store
from schemas import FRAMEWORK_OPTION_MODELS
from schemas.frameworks.base import scenario_space, search_space
from schemas.plan import SlurmOptions
from schemas.spec import ServerScenario, tail_free_schedule_s

FINAL_RUNS = 5  # runs of a finalist and of the defaults: the rule needs 4 a side, one spare
# The rounds' targets: one more run each up to FINAL_RUNS, and a last round at FINAL_RUNS for a
# candidate that joined after the first (the best values combined after a screened round one).
ROUNDS = (*range(1, FINAL_RUNS + 1), FINAL_RUNS)
MAX_CANDIDATES = 256  # per image: a larger grid is refused (fix some options with --set)
STARTUP_S = 15.0  # a trial's start-up when this host has no history
# Early rounds judge a candidate by its runs' mean against the run-to-run spread pooled over the
# image's candidates (`run_spread`); before any has two runs, a busy host's spread is assumed.
FIRST_ROUND_SPREAD = 0.05
SPREAD_FLOOR = 0.01  # the least spread assumed, however alike the runs came out
Z = 1.96  # two-sided 95 %, the final rule's own level
# A trial is a short ordinary run unless the user sets these.
TRIAL_POLICY = {"policy.min_time_s": "1", "policy.max_time_s": "5", "policy.warmup_min_s": "0.3"}
# A server trial is a peak search of short probes: each probe offers at least this many queries
# over at least this long (raise them with --set for a steadier p99), and for at least the bound
# over QPS_TOLERANCE (`probe_policy`).
PROBE_POLICY = {"server.min_duration_s": "2", "server.min_queries": "64"}
PROBES_PER_TRIAL = 4  # a dry run's guess: a peak search from a known peak takes three or four
WARM_STEP = 1.1  # a trial from the candidate's own earlier peak: the bracket in two probes
COLD_STEP = 4.0  # from a guess: past the peak in few probes (the bracket is bisected by its ratio)
NEAR_STEP = 1.25  # from the peak of another candidate of the image at the same max_batch
# A candidate's peak search gives up below this fraction of the image's best peak: a rate that
# low cannot make it the image's answer, and probing on down to PEAK_MAX_PROBES costs minutes.
PEAK_FLOOR = 0.5
SERVER_KEY = "peak:"  # a server candidate's cell: its probes, apart from any plan's cells
DELAY = "server.max_delay_ms"
BOUND_RE = re.compile(r"\s*(p50|p90|p99|p999|mean)\s*<=\s*([0-9]+(?:\.[0-9]+)?)\s*(us|ms|s)?\s*")
BOUND_METRICS = {
    "p50": "latency_p50_ms",
    "p90": "latency_p90_ms",
    "p99": "latency_p99_ms",
    "p999": "latency_p999_ms",
    "mean": "latency_mean_ms",
}
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
Objective = Literal["throughput", "latency"]


@dataclass(frozen=True)
class Bound:
    """A latency bound, e.g. p99 <= 20 ms, on every run of a candidate."""

    name: str  # p99
    metric: str  # latency_p99_ms
    limit_ms: float

    @property
    def text(self) -> str:
        return f"{self.name} <= {self.limit_ms:g} ms"


def parse_bound(text: str) -> Bound:
    m = BOUND_RE.fullmatch(text)
    if m is None:
        name = text.partition("<")[0].strip()
        if "<=" in text and name not in BOUND_METRICS and re.fullmatch(r"[a-z0-9]+", name):
            raise BenchError(
                f"--bound {text!r}: no latency metric {name!r}", did_you_mean(name, list(BOUND_METRICS))
            )
        raise BenchError(
            f"--bound {text!r} is not METRIC<=VALUE", "e.g. --bound p99<=20ms (p50, p90, p99, p999, mean)"
        )
    name, value, unit = m.group(1), float(m.group(2)), m.group(3) or "ms"
    limit = value * UNIT_MS[unit]
    if not limit > 0:
        raise BenchError(f"--bound {text!r}: the bound must be above 0", "e.g. --bound p99<=20ms")
    return Bound(name, BOUND_METRICS[name], limit)


class TuneRequest(BaseModel):
    """What `bench-ctl tune` was asked."""

    model: str
    images: list[str]
    batch_sizes: list[int]
    objective: Objective = "throughput"
    scenario: Literal["offline", "server"] = "offline"
    bound: str | None = None
    precision: Literal["same", "any"] = "same"
    min_agreement: float | None = Field(None, gt=0, le=1)
    budget_s: float = Field(gt=0)
    sets: list[str] = Field(default_factory=list)
    launcher: LauncherChoice = LauncherChoice.auto
    price_per_hour: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="the host's, in dollars"
    )
    slurm: SlurmOptions | None = Field(None, description="with --launcher slurm: where the trials run")


@dataclass
class Trial:
    run_id: str
    value: float  # the objective's metric
    throughput: float
    latency_mean_ms: float
    bound_value: float | None  # the bound's metric
    within_rel: float | None
    noisy: bool
    top1: float | None


@dataclass(frozen=True)
class Probe:
    """One probe of a server trial's peak search: its rate, and what the run measured there."""

    rate: float
    held: bool
    noisy: bool
    run_id: str
    achieved_qps: float
    latency_mean_ms: float
    latency_p99_ms: float
    top1: float | None


@dataclass(frozen=True)
class Refused:
    """A trial that shows the candidate cannot hold the bound at any rate tried."""

    reason: str


@dataclass(frozen=True)
class Unfinished:
    """A trial the budget ended before its end (a peak search between two probes): its runs are
    stored, and the next call goes on from them."""

    reason: str


@dataclass
class Candidate:
    image: str
    framework: str
    options: dict[str, Any]  # the searched options' values
    batch_size: int
    planned: planning.PlannedRun | None  # None: a simulated candidate (benchmarks/tune_search.py)
    key: str
    is_default: bool
    defaults: dict[str, Any] = field(default_factory=dict)  # the searched options' defaults
    trials: list[Trial] = field(default_factory=list)
    dropped: str | None = None
    failed: str | None = None
    # A server trial an interrupted call left unfinished: its repetition and its probes so far.
    partial: tuple[int, Bracket, list[Probe]] | None = None

    @property
    def label(self) -> str:
        changed = {k: v for k, v in self.options.items() if self.defaults.get(k) != v}
        text = " ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"
        return f"{self.image} b{self.batch_size} {text}"

    @property
    def alive(self) -> bool:
        return self.dropped is None and self.failed is None

    def values(self) -> list[float]:
        """The objective's value of each clean run (every run when none is clean)."""
        return stats.clean_runs([t.value for t in self.trials], [t.noisy for t in self.trials])

    def mean(self) -> float | None:
        v = self.values()
        return statistics.fmean(v) if v else None


@dataclass
class Search:
    request: TuneRequest
    candidates: list[Candidate]
    bound: Bound | None
    higher_is_better: bool
    started: float = field(default=math.nan)  # by `clock`, when the search was made
    runs_made: int = 0  # every run started, noisy ones made again included
    trials_made: int = 0  # the trials those runs made
    seconds_per_trial: list[float] = field(default_factory=list)
    seconds_per_probe: list[float] = field(default_factory=list)  # a server trial's probes
    stopped: str | None = None
    screened: bool = False  # the budget allowed one-option changes from the defaults only
    decided: bool = False  # whether the budget was weighed, once every image had a run
    # Seconds, as the budget counts them (a simulated search, benchmarks/tune_search.py, brings
    # its own).
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if math.isnan(self.started):
            self.started = self.clock()

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(c.image for c in self.candidates))

    def of(self, image: str) -> list[Candidate]:
        return [c for c in self.candidates if c.image == image]

    def elapsed(self) -> float:
        return self.clock() - self.started


# --------------------------------------------------------------------------- the candidates


@dataclass(frozen=True)
class Knobs:
    """The scenario's part of a candidate: its batch size (the server's max_batch), the batch
    sizes its runner compiles, and, for the server, the batcher's delay."""

    batch_size: int
    batch_sizes: list[int]
    sets: list[str]
    options: dict[str, Any]
    defaults: dict[str, Any]


def scenario_knobs(req: TuneRequest, bound: Bound | None, fixed: set[str]) -> list[Knobs]:
    """Offline: each -b size. Server: each -b size as max_batch (the runner compiling the -b
    sizes up to it, as the batcher pads a group to one of them), at each delay the scenario
    declares below the bound (`schemas.spec.ServerScenario`), unless `--set` fixes it."""
    if req.scenario != "server":
        return [Knobs(bs, [bs], [], {}, {}) for bs in req.batch_sizes]
    assert bound is not None
    space = scenario_space(ServerScenario, req.batch_sizes, bound.limit_ms)
    delays: list[Any] = [None] if DELAY in fixed else space["max_delay_ms"]
    out = []
    for mb in space["max_batch"]:
        for delay in delays:
            mine = {DELAY: delay} if delay is not None else {}
            out.append(
                Knobs(
                    mb,
                    [b for b in req.batch_sizes if b <= mb],
                    [f"server.max_batch={mb}", *(f"{k}={v:g}" for k, v in mine.items())],
                    mine,
                    {DELAY: delays[0]} if mine else {},
                )
            )
    return out


def candidates(req: TuneRequest, paths: Paths, host_key: str, bound: Bound | None = None) -> list[Candidate]:
    """Every candidate of every image, planned (checked) before anything runs."""
    out: list[Candidate] = []
    server = req.scenario == "server"
    policy = {**TRIAL_POLICY, **(probe_policy(bound) if server else {})}
    base_sets = [*req.sets, *(f"{k}={v}" for k, v in policy.items() if not _given(req.sets, k))]
    if server:
        assert bound is not None
        base_sets += [f"server.latency_bound_ms={bound.limit_ms:g}", f"server.target_qps={PEAK_START_QPS:g}"]
    here = req.slurm is None
    # What a runner is given: here, this process's cores; on Slurm, the cores each job asks for.
    cores = (req.slurm.cpus_per_task if req.slurm else None) or planning.cores_given()
    cores = cores or len(os.sched_getaffinity(0))
    for name in req.images:
        image = get_image(name)
        planning.check_runnable(image)
        model = FRAMEWORK_OPTION_MODELS[image.framework]
        mine = planning.sets_for(name, base_sets)
        fixed = {s.partition("=")[0].strip() for s in mine}
        space = {
            k: v
            for k, v in search_space(model, cores, allow_precision=req.precision == "any").items()
            if k not in fixed
        }
        if not space and not any(k in fixed for k in search_space(model, cores, True)):
            raise BenchError(
                f"image {name} ({image.framework}) declares no options to search",
                "tune images whose options declare a search space (bench-ctl tune --dry-run lists them)",
            )
        combos = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
        knobs = scenario_knobs(req, bound, fixed)
        size = len(combos) * len(knobs)
        if size > MAX_CANDIDATES:
            raise BenchError(
                f"image {name} has {size:,} candidates (more than {MAX_CANDIDATES})",
                "fix some options with --set " + " ".join(f"{name}:{k}=..." for k in list(space)[:2]),
            )
        for combo in combos:
            sets = [*mine, *(f"{k}={_text(v)}" for k, v in combo.items())]
            defaults = {k: model.model_fields[k].default for k in combo}
            for kn in knobs:
                one = RunRequest(
                    image=name,
                    model=req.model,
                    batch_sizes=kn.batch_sizes,
                    sets=[*sets, *kn.sets],
                    launcher=req.launcher,
                    scenario=req.scenario,
                )
                [planned] = pipeline.prepare(one, paths, here=here)
                key = plans.cell_key(planned.spec, planned.image, host_key)
                if server:  # its probes' cell, apart from any plan's (a hash as cells are)
                    key = hashlib.sha256((SERVER_KEY + key).encode()).hexdigest()[: len(key)]
                options, base = {**combo, **kn.options}, {**defaults, **kn.defaults}
                out.append(
                    Candidate(
                        name, image.framework, options, kn.batch_size, planned, key, options == base, base
                    )
                )
    return out


def probe_policy(bound: Bound | None) -> dict[str, str]:
    """A server probe's schedule: PROBE_POLICY, lasting at least the bound over QPS_TOLERANCE.
    A probe whose queries all finish within the bound can end up to the bound after its last
    arrival; on a shorter schedule that tail alone is a shortfall of the achieved rate past the
    tolerance (INVALID), and the search would find where the tail's noise crosses 5 % instead of
    where p99 crosses the bound (seen on resnet50 under p99 <= 400 ms: 2 s probes failed at a p99
    of 200 ms)."""
    assert bound is not None
    seconds = max(float(PROBE_POLICY["server.min_duration_s"]), tail_free_schedule_s(bound.limit_ms))
    return {**PROBE_POLICY, "server.min_duration_s": f"{seconds:g}"}


def _given(sets: list[str], key: str) -> bool:
    return any(s.partition("=")[0].strip().split(":")[-1] == key for s in sets)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# --------------------------------------------------------------------------- stored trials


def load_trials(db: Path, search: Search) -> None:
    """The runs the store already holds of each candidate (a second call, or one after Ctrl-C,
    goes on from them): ok ones as trials (a trial made again while noisy by its last run, as
    a live call counts it), the last failure as the candidate's."""
    by_key = {c.key: c for c in search.candidates}
    if not db.exists() or not by_key:
        return
    if search.request.scenario == "server":
        load_peak_trials(db, search)
        return
    metric = "throughput_sps" if search.higher_is_better else "latency_mean_ms"
    bound = search.bound.metric if search.bound else "NULL"
    _, rows = store.read(
        db,
        f"SELECT cell, run_id, status, message, {metric}, throughput_sps, latency_mean_ms, {bound}, "
        "within_run_ci_rel, coalesce(noisy, false), top1_agreement, repetition, "
        "lead(repetition) OVER (PARTITION BY cell ORDER BY started_at) FROM results "
        "WHERE cell IN (SELECT unnest(?)) ORDER BY started_at",
        [list(by_key)],
    )
    for key, run_id, status, message, value, tput, lat, bval, within, noisy, top1, rep, next_rep in rows:
        if noisy and rep is not None and next_rep == rep:
            continue  # a noisy run made again at once (policy.noisy_reruns): the trial is its last run
        c = by_key[key]
        if status == "ok" and value is not None:
            c.trials.append(
                Trial(
                    run_id, float(value), float(tput), float(lat), _f(bval), _f(within), bool(noisy), _f(top1)
                )
            )
        elif status not in ("cancelled", "preempted", "node_fail"):
            c.failed = failure_text(status, message)


def failure(result: Any) -> str:
    """Why a run is no trial: its status and message."""
    return failure_text(str(result.status), result.message)


def failure_text(status: str, message: str | None) -> str:
    return f"{status}: {message}" if message else status


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def trial_of(result: Any, search: Search) -> Trial | None:
    """The trial an ok result makes (None for a failure)."""
    if result.status != "ok" or not result.measurements:
        return None
    m = result.measurements[0]
    value = m.throughput_sps if search.higher_is_better else m.latency_mean_ms
    bval = getattr(m, search.bound.metric) if search.bound else None
    top1 = result.accuracy.top1_agreement if result.accuracy else None
    return Trial(
        result.run_id, value, m.throughput_sps, m.latency_mean_ms, bval, m.within_run_ci_rel, m.noisy, top1
    )


def probe_of(result: Any, rate: float) -> Probe:
    m = result.measurements[0]
    top1 = result.accuracy.top1_agreement if result.accuracy else None
    return Probe(
        rate, probe_ok(result), bool(m.noisy), result.run_id, m.achieved_qps or 0.0, m.latency_mean_ms,
        m.latency_p99_ms, top1,
    )  # fmt: skip


def peak_outcome(bracket: Bracket, probes: list[Probe], bound: Bound) -> Trial | Refused:
    """A finished peak search as a trial: the highest rate that held (its value), with what its
    probe measured there; Refused when no rate held, or none at the floor; a noisy trial when
    only noise was measured."""
    if bracket.floored:
        assert bracket.floor is not None and bracket.high is not None
        return Refused(
            f"too slow: {bracket.high:.3g} queries/s did not hold {bound.text}, and that is under "
            f"{PEAK_FLOOR:.0%} of the image's best peak ({bracket.floor / PEAK_FLOOR:.3g})"
        )
    if bracket.low is None and bracket.noisy and probes:
        # Only noise was measured: a noisy trial at the rate probed, which decides nothing (as a
        # noisy run does not), so the candidate stays in the race and is measured again.
        last = probes[-1]
        return Trial(
            last.run_id, last.rate, last.achieved_qps, last.latency_mean_ms, last.latency_p99_ms, None,
            True, last.top1,
        )  # fmt: skip
    if bracket.low is None:
        return Refused(
            f"infeasible: no offered rate held {bound.text} "
            f"(the lowest tried: {min(bracket.rates):.3g} queries/s)"
        )
    at = next(p for p in reversed(probes) if p.held and p.rate == bracket.low and not p.noisy)
    return Trial(
        at.run_id, bracket.low, at.achieved_qps, at.latency_mean_ms, at.latency_p99_ms, None,
        bracket.noisy, at.top1,
    )  # fmt: skip


def load_peak_trials(db: Path, search: Search) -> None:
    """A server candidate's stored probes, by repetition (one peak search each), replayed through
    the search's own rule: a finished search is a trial; an unfinished one (the call was
    interrupted) is the candidate's `partial`, which its next trial goes on from."""
    assert search.bound is not None
    by_key = {c.key: c for c in search.candidates}
    _, rows = store.read(
        db,
        "SELECT cell, coalesce(repetition, 0), run_id, status, message, target_qps, coalesce(valid, false), "
        "coalesce(noisy, false), achieved_qps, latency_mean_ms, latency_p99_ms, top1_agreement FROM results "
        "WHERE cell IN (SELECT unnest(?)) ORDER BY started_at",
        [list(by_key)],
    )
    searches: dict[tuple[str, int], list[Probe]] = {}
    unknown: set[str] = set()  # candidates whose unfinished search's step is not known
    for key, rep, run_id, status, message, rate, valid, noisy, achieved, mean, p99, top1 in rows:
        if status == "ok" and rate is not None and mean is not None:
            probe = Probe(float(rate), bool(valid), bool(noisy), run_id, float(achieved or 0.0), float(mean),
                          float(p99), _f(top1))  # fmt: skip
            searches.setdefault((key, int(rep)), []).append(probe)
        elif status not in ("cancelled", "preempted", "node_fail"):
            by_key[key].failed = failure_text(status, message)
    for (key, rep), probes in sorted(searches.items()):
        c = by_key[key]
        # A noisy probe made again at once (policy.noisy_reruns) counts by its last run.
        kept = [
            p
            for i, p in enumerate(probes)
            if not (p.noisy and i + 1 < len(probes) and probes[i + 1].rate == p.rate)
        ]
        bracket, known = replay(kept)
        if not bracket.done:
            c.partial = (rep, bracket, kept)
            if not known:
                unknown.add(key)
            continue
        apply(search, c, peak_outcome(bracket, kept, search.bound), _quiet)
    # An unfinished search goes on under the floor of the image's peaks as they stand now (and,
    # when its step is not known, with the step its start would have now).
    for c in search.candidates:
        if c.partial is not None:
            rep, bracket, kept = c.partial
            if c.key in unknown:
                bracket.step = start_rate(c, search, rep)[1]
            bracket.floor = peak_floor(c, search)
            if bracket.done:
                c.partial = None
                apply(search, c, peak_outcome(bracket, kept, search.bound), _quiet)


STEPS = (COLD_STEP, NEAR_STEP, WARM_STEP)  # the steps a search of tune's starts with


def _quiet(line: str) -> None:
    """A replayed outcome was logged when it was made: not again."""


def replay(kept: list[Probe]) -> tuple[Bracket, bool]:
    """The bracket a stored peak search made, and whether its step is known: the ratio of its
    first two rates, when that is one of STEPS. A last rate that failed on the way down, above
    where the step led, was the floor the search was given (`Bracket.next_rate`): the search
    ended there, floored, whatever the image's best peak is now."""
    ratio = max(kept[1].rate / kept[0].rate, kept[0].rate / kept[1].rate) if len(kept) > 1 else None
    step = next((s for s in STEPS if ratio is not None and abs(ratio / s - 1) < 1e-4), None)
    bracket = Bracket(kept[0].rate, step or PEAK_STEP)
    for p in kept[:-1]:
        bracket.record(p.rate, p.held, p.noisy)
    last = kept[-1]
    down = not bracket.done and bracket.low is None and bracket.high is not None
    failed = not last.held and not last.noisy
    if down and failed and (step is None or last.rate > bracket.rates[-1] / step * (1 + 1e-4)):
        bracket.floor = last.rate
    bracket.record(last.rate, last.held, last.noisy)
    return bracket, step is not None


def peak_floor(c: Candidate, search: Search) -> float | None:
    """The rate below which the candidate's peak search gives up: PEAK_FLOOR of the best peak
    measured of its image (None for the defaults, whose peak is the tuned one's measure)."""
    if c.is_default:
        return None
    peaks = [m for o in search.of(c.image) if o.failed is None and (m := o.mean()) is not None]
    return PEAK_FLOOR * max(peaks) if peaks else None


def refuse(c: Candidate, reason: str) -> None:
    """The candidate holds the bound at no rate: out of the race (defaults too, as failed: they
    are never dropped, and measuring them again would find the same)."""
    if c.is_default:
        c.failed = reason
    else:
        c.dropped = reason


def start_rate(c: Candidate, search: Search, repetition: int = 1) -> tuple[float, float]:
    """Where a candidate's next peak search starts, and its step: its own last peak (a small
    step), else the best peak of the image's candidates at its max_batch, else a guess.

    A start from a known peak is moved down by a seeded fraction of the bracket's width (up to
    PEAK_PRECISION): started at the last peak itself, each search would narrow the same grid of
    rates and return the same value, an interval of zero width that the 5 % bracket does not
    justify. Dithered, the peaks of a candidate's searches spread over the bracket, and their
    mean and interval estimate the highest rate that holds (less half a bracket, on average)."""
    if c.trials:
        base, step = c.trials[-1].value, WARM_STEP
    else:
        near = [m for o in search.of(c.image) if o.batch_size == c.batch_size and (m := o.mean()) is not None]
        if not near:
            return PEAK_START_QPS, COLD_STEP
        base, step = max(near), NEAR_STEP
    u = random.Random(f"{c.key}:{repetition}").random()
    return base / (1 + PEAK_PRECISION) ** u, step


# --------------------------------------------------------------------------- the race


def run_spread(cands: list[Candidate]) -> float:
    """The relative run-to-run spread of one image's runs (a standard deviation of log values),
    pooled over its candidates with two clean runs or more: how much a fresh process differs is
    mostly the host's, alike for every candidate, so all of them estimate it together. Before
    any candidate has two runs, FIRST_ROUND_SPREAD (a busy host's)."""
    ss, df = 0.0, 0
    for c in cands:
        logs = [math.log(t.value) for t in c.trials if not t.noisy and t.value > 0]
        if len(logs) >= 2:
            mean = statistics.fmean(logs)
            ss += sum((x - mean) ** 2 for x in logs)
            df += len(logs) - 1
    return max(math.sqrt(ss / df), SPREAD_FLOOR) if df else FIRST_ROUND_SPREAD


def log_mean(c: Candidate) -> tuple[float, int, float] | None:
    """The mean log value of the candidate's clean runs, their number and the widest within-run
    interval among them. None without a clean run: noisy runs decide nothing, so a candidate
    with only noisy runs stays in the race."""
    clean = [t for t in c.trials if not t.noisy and t.value > 0]
    if not clean:
        return None
    within = max((t.within_rel or 0.0) for t in clean)
    return statistics.fmean(math.log(t.value) for t in clean), len(clean), within


def interval(c: Candidate, spread: float = 0.0) -> tuple[float, float] | None:
    """The candidate's interval before the rule applies, as printed: its clean runs' geometric
    mean +- Z standard errors of the pooled run-to-run `spread` (or its within-run interval)."""
    lm = log_mean(c)
    if lm is None:
        return None
    centre, n, within = lm
    half = max(Z * spread / math.sqrt(n), within)
    return math.exp(centre - half), math.exp(centre + half)


def better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def leader(cands: list[Candidate], higher: bool) -> Candidate | None:
    """The live candidate with the best mean (the defaults included)."""
    measured = [c for c in cands if c.alive and c.mean() is not None]
    if not measured:
        return None
    best = measured[0]
    for c in measured[1:]:
        if better(c.mean() or 0.0, best.mean() or 0.0, higher):
            best = c
    return best


def worse_than(c: Candidate, lead: Candidate, higher: bool, spread: float = FIRST_ROUND_SPREAD) -> str | None:
    """Why `c` is significantly worse than the leader, or None. With 4 runs a side (clean ones),
    the comparison rule; before, intervals apart by more than the minimum effect."""
    a, b = c.values(), lead.values()
    clean_a = [t for t in c.trials if not t.noisy]
    clean_b = [t for t in lead.trials if not t.noisy]
    if len(clean_a) >= stats.min_repetitions() and len(clean_b) >= stats.min_repetitions():
        v = stats.verdict(b, a, higher)
        return f"significantly worse than {lead.label}: {v.message}" if v.verdict == "faster" else None
    mine, theirs = log_mean(c), log_mean(lead)
    if mine is None or theirs is None:
        return None
    # The difference of log means against its standard error from the pooled spread (each
    # side's own within-run interval counted when wider): surer than 99 % and beyond the
    # minimum effect, or the candidate stays.
    (mc, n, wc), (ml, k, wl) = mine, theirs
    se = math.sqrt(max(spread / math.sqrt(n), wc / Z) ** 2 + max(spread / math.sqrt(k), wl / Z) ** 2)
    gap = (ml - mc) if higher else (mc - ml)
    if gap - Z * se > math.log1p(stats.DEFAULT_MIN_EFFECT):
        return (
            f"{math.exp(gap):.3g}x behind {lead.label} ({n} and {k} runs, run-to-run spread "
            f"{spread:.1%}: beyond the 99 % margin)"
        )
    return None


def infeasible(c: Candidate, bound: Bound | None) -> str | None:
    """Why `c` breaks the latency bound (in most of its runs), or None."""
    if bound is None:
        return None
    values = [t.bound_value for t in c.trials if t.bound_value is not None]
    over = [v for v in values if v > bound.limit_ms]
    if values and len(over) * 2 > len(values):
        typical = statistics.median(values)
        return f"{bound.name} {typical:.3g} ms > {bound.limit_ms:g} ms in {len(over)} of {len(values)} runs"
    return None


def too_inaccurate(c: Candidate, floor: float | None) -> str | None:
    if floor is None:
        return None
    tops = [t.top1 for t in c.trials if t.top1 is not None]
    if tops and min(tops) < floor:
        return f"top-1 agreement {min(tops):.1%} < --min-agreement {floor:.1%}"
    return None


def prune(search: Search) -> None:
    """Drop, per image, the candidates that cannot be its answer."""
    higher = search.higher_is_better
    for image in search.images:
        cands = search.of(image)
        for c in cands:
            if c.alive and not c.is_default:
                c.dropped = infeasible(c, search.bound) or too_inaccurate(c, search.request.min_agreement)
        lead = leader([c for c in cands if infeasible(c, search.bound) is None], higher)
        if lead is None:
            continue
        spread = run_spread(cands)
        for c in cands:
            if c.alive and not c.is_default and c is not lead:
                c.dropped = worse_than(c, lead, higher, spread)


def wants(c: Candidate, search: Search) -> int:
    """How many runs the candidate should have by the end of this round's target."""
    return FINAL_RUNS if c.is_default or c.alive else 0


def image_done(search: Search, image: str) -> bool:
    cands = search.of(image)
    live = [c for c in cands if c.alive and not c.is_default]
    defaults = [c for c in cands if c.is_default and c.failed is None]
    made = all(len(c.trials) >= FINAL_RUNS for c in [*live, *defaults])
    return made and (len(live) <= 1 or all(len(c.trials) >= FINAL_RUNS for c in live))


def due(search: Search, target: int) -> list[Candidate]:
    """This round's trials: every live candidate (and the defaults) short of `target` runs, the
    images interleaved (A B C A B C ...)."""
    per_image = [
        [
            c
            for c in search.of(image)
            if (c.alive or (c.is_default and c.failed is None)) and len(c.trials) < target
        ]
        for image in search.images
        if not image_done(search, image)
    ]
    return [c for group in itertools.zip_longest(*per_image) for c in group if c is not None]


def estimate_s(search: Search, past: float | None) -> float:
    """Seconds a trial takes: this search's own median, else the host's history, else its policy."""
    if search.seconds_per_trial:
        return statistics.median(search.seconds_per_trial)
    if past is not None:
        return past
    first = search.candidates[0]
    return 0.0 if first.planned is None else trial_estimate_s(first, search.request.model, {})


def halve(search: Search, images: list[str]) -> None:
    """The budget cannot pay for this round: keep the better half (by mean) of each image's live
    candidates besides its defaults."""
    for image in images:
        live = [c for c in search.of(image) if c.alive and not c.is_default and c.mean() is not None]
        if len(live) <= 1:
            continue
        ranked = sorted(live, key=lambda c: c.mean() or 0.0, reverse=search.higher_is_better)
        for c in ranked[(len(ranked) + 1) // 2 :]:
            c.dropped = "cut for the budget (in the lower half after its runs)"


# A trial, a candidate that holds the bound at no rate, a trial the budget ended, or why it failed.
Outcome = Trial | Refused | Unfinished | str


def apply(search: Search, c: Candidate, outcome: Outcome, log: LineSink) -> None:
    """A trial's outcome on its candidate."""
    if isinstance(outcome, str):
        c.failed = outcome
        log(f"  {c.label}: {c.failed}")
    elif isinstance(outcome, Refused):
        refuse(c, outcome.reason)
        log(f"  {c.label}: {outcome.reason}")
    elif isinstance(outcome, Trial):
        c.trials.append(outcome)
    # An Unfinished trial is never applied: the race stops on it.


def race_waves(
    search: Search, batch: Callable[[list[tuple[Candidate, int]]], list[Outcome]], log: LineSink
) -> None:
    """The race on a cluster: each round's trials are submitted together (a wave of jobs) and
    followed to the end before the round is judged. Round one starts with each image's defaults
    alone, so that the budget is weighed on a wave's measured time (a round is taken to run at
    once: the cluster has nodes for its jobs); a round that would not fit halves the live
    candidates first, and the search stops when not even that fits."""
    budget = search.request.budget_s
    waves: list[float] = []

    def wave(items: list[Candidate]) -> None:
        t0 = search.clock()
        outcomes = batch([(c, len(c.trials) + 1) for c in items])
        waves.append(search.clock() - t0)
        search.seconds_per_trial.append(waves[-1])
        search.runs_made += len(items)
        search.trials_made += len(items)
        for c, outcome in zip(items, outcomes, strict=True):
            apply(search, c, outcome, log)

    prune(search)
    for target in ROUNDS:
        todo = due(search, target)
        if not todo:
            continue
        if not search.decided:
            first = list({c.image: c for c in reversed(todo)}.values())  # each image's first (defaults)
            log(f"round {target}: the defaults first, {len(first)} job(s)")
            wave(first)
            search.decided = True
            if search.elapsed() + FINAL_RUNS * statistics.median(waves) > budget:
                screen(search, log)
            todo = due(search, target)
        if waves and search.elapsed() + statistics.median(waves) > budget:
            halve(search, search.images)
            todo = due(search, target)
            if search.elapsed() + statistics.median(waves) > budget:
                search.stopped = (
                    f"budget spent: {search.elapsed():.0f} s of {budget:.0f} s, "
                    f"and a round takes about {statistics.median(waves):.0f} s"
                )
                log(f"stopping: {search.stopped}")
                return
        if todo:
            live = sum(c.alive for c in search.candidates)
            log(f"round {target}: {len(todo)} job(s), {live} candidate(s) live")
            wave(todo)
        if target == 1 and search.screened:
            combine(search, log)
        prune(search)
        if all(image_done(search, image) for image in search.images):
            return


def race(
    search: Search,
    execute: Callable[[Candidate, int], Outcome],
    log: LineSink,
    past_s: float | None = None,
) -> None:
    """Rounds of trials until every image is done or the budget is spent. `execute(candidate,
    repetition)` makes one trial: its Trial, or why it failed."""
    budget = search.request.budget_s
    prune(search)
    for target in ROUNDS:
        todo = due(search, target)
        if not todo:
            continue
        est = estimate_s(search, past_s)
        if search.elapsed() + est * len(todo) > budget and target > 1:
            halve(search, search.images)
            todo = due(search, target)
        live = sum(c.alive for c in search.candidates)
        log(f"round {target}: {len(todo)} trial(s), {live} candidate(s) live")
        for c in todo:
            if not c.alive and not c.is_default:
                continue  # screened out during this round
            if target == 1 and not search.screened and search.decided is False and _first_runs_made(search):
                search.decided = True
                if not affordable(search, past_s):
                    screen(search, log)
                    if not c.alive:
                        continue  # screened out (one this round kept goes on: its trial is next)
            # The first trial always starts (an estimate before any trial here is a guess).
            est = estimate_s(search, past_s) if search.seconds_per_trial else 0.0
            if search.elapsed() + est > budget:
                search.stopped = (
                    f"budget spent: {search.elapsed():.0f} s of {budget:.0f} s, "
                    f"and a trial takes about {est:.0f} s"
                )
                log(f"stopping: {search.stopped}")
                return
            t0 = search.clock()
            trial = execute(c, len(c.trials) + 1)
            search.runs_made += 1
            if isinstance(trial, Unfinished):
                search.stopped = trial.reason
                log(f"stopping: {search.stopped}")
                return
            search.seconds_per_trial.append(search.clock() - t0)
            search.trials_made += 1
            apply(search, c, trial, log)
        if target == 1 and search.screened:
            combine(search, log)
        prune(search)
        if all(image_done(search, image) for image in search.images):
            return


SCREENED = "not screened: the budget pays for changes of one option at a time from the defaults"


def _first_runs_made(search: Search) -> bool:
    """Every image has a run (its defaults come first): trial times are known."""
    return all(any(c.trials or c.failed for c in search.of(image)) for image in search.images)


def affordable(search: Search, past_s: float | None) -> bool:
    """Whether the budget pays for a run of every candidate and the finalists' runs (the
    defaults, the best and one tied with it, per image, to five runs each)."""
    runs = len(search.candidates) + 3 * (FINAL_RUNS - 1) * len(search.images)
    return search.elapsed() + estimate_s(search, past_s) * runs <= search.request.budget_s


def _changes(c: Candidate) -> list[str]:
    return [k for k, v in c.options.items() if c.defaults.get(k) != v]


def screen(search: Search, log: LineSink) -> None:
    """The budget cannot pay for every candidate: keep, per image, the defaults and the
    candidates that change one option from them (at each batch size); the combination of the
    best values found is added after the first round (`combine`). A candidate an earlier call
    measured stays: its runs cost nothing now."""
    kept = 0
    for c in search.candidates:
        if c.alive and not c.is_default and len(_changes(c)) > 1 and not c.trials:
            c.dropped = SCREENED
        elif c.alive:
            kept += 1
    search.screened = True
    log(
        f"the budget pays for {kept} of {len(search.candidates)} candidates: each option is changed "
        "alone from the defaults first, then the best values are tried together"
    )


def _measured(c: Candidate) -> bool:
    """Whether a trial of the candidate was made (a failed or refused one included)."""
    return bool(c.trials) or c.failed is not None or c.dropped not in (None, SCREENED)


def combine(search: Search, log: LineSink) -> None:
    """After a screened first round: per image and batch size, each option at the value whose
    one-option candidate measured best (the default where none beat it), as one more candidate.
    Where a candidate of several changes was measured already (an earlier call combined, or ran
    the grid), none is added: a second call goes on with the search the first one made, instead
    of combining again from means that have moved since."""
    higher = search.higher_is_better
    for image in search.images:
        for bs in sorted({c.batch_size for c in search.of(image)}):
            cands = [c for c in search.of(image) if c.batch_size == bs]
            if any(len(_changes(c)) > 1 and _measured(c) for c in cands):
                continue
            base = next((c for c in cands if not _changes(c)), None)
            if base is None or base.mean() is None:
                continue
            best = dict(base.options)
            for key in best:
                tried = [c for c in cands if _changes(c) == [key] and c.mean() is not None]
                top = leader(tried, higher)
                if top is not None and better(top.mean() or 0.0, base.mean() or 0.0, higher):
                    best[key] = top.options[key]
            combo = next((c for c in cands if c.options == best), None)
            if combo is not None and combo.dropped == SCREENED:
                combo.dropped = None
                log(f"combining the best values found: {combo.label}")


# --------------------------------------------------------------------------- the answer


class Figure(BaseModel):
    """A candidate's objective over its clean runs: mean and 95 % interval."""

    label: str
    image: str
    batch_size: int
    options: dict[str, Any]
    runs: int
    mean: float
    low: float | None
    high: float | None
    throughput_sps: float
    latency_mean_ms: float
    cell: str | None = Field(None, description="the candidate's cell: its trials' `cell` in the store")
    cost_per_million: float | None = Field(
        None, description="dollars per 1M inferences at the mean throughput (with a price per hour)"
    )


class ImageAnswer(BaseModel):
    image: str
    framework: str
    candidates: int
    trials: int
    best: Figure | None
    default: Figure | None
    verdict: str | None = Field(None, description="best against its defaults, by the comparison rule")
    ratio: float | None = None
    ties: list[str] = Field(default_factory=list, description="live candidates not significantly different")
    dropped: dict[str, int] = Field(default_factory=dict, description="why candidates were dropped: count")
    failed: list[str] = Field(default_factory=list)


class TuneAnswer(BaseModel):
    model: str
    objective: Objective
    scenario: str = "offline"
    bound: str | None
    search_id: str | None = Field(None, description="this call's row in the store's searches table")
    runs_made: int
    trials_made: int
    runs_stored: int
    full_grid_runs: int
    seconds: float
    budget_s: float
    stopped: str | None
    images: list[ImageAnswer]
    winner: Figure | None
    runner_up: Figure | None
    winner_verdict: str | None
    pareto: list[Figure]
    price_per_hour: float | None = None


def figure(c: Candidate) -> Figure | None:
    values = c.values()
    if not values:
        return None
    ci = stats.mean_ci(values) if len(values) >= 2 else None
    clean = [t for t in c.trials if not t.noisy] or c.trials
    return Figure(
        label=c.label,
        image=c.image,
        batch_size=c.batch_size,
        options=c.options,
        runs=len(values),
        mean=statistics.fmean(values),
        low=ci.low if ci else None,
        high=ci.high if ci else None,
        throughput_sps=statistics.fmean(t.throughput for t in clean),
        latency_mean_ms=statistics.fmean(t.latency_mean_ms for t in clean),
        cell=c.key,
    )


def _verdict(a: Candidate, b: Candidate, higher: bool) -> tuple[str, float]:
    v = stats.verdict_of_runs(
        [t.value for t in a.trials],
        [t.noisy for t in a.trials],
        [t.value for t in b.trials],
        [t.noisy for t in b.trials],
        higher,
    )
    return v.message, v.ratio.estimate


def answer(search: Search) -> TuneAnswer:
    higher = search.higher_is_better
    images: list[ImageAnswer] = []
    leaders: list[Candidate] = []
    for image in search.images:
        cands = search.of(image)
        feasible = [
            c
            for c in cands
            if infeasible(c, search.bound) is None and too_inaccurate(c, search.request.min_agreement) is None
        ]
        lead = leader(feasible, higher)
        defaults = [c for c in cands if c.is_default and c.trials]
        default = leader(defaults, higher) if defaults else None
        dropped: dict[str, int] = {}
        for c in cands:
            if c.dropped:
                kind = c.dropped.split(":")[0].split(" (")[0]
                kind = "significantly worse" if kind.startswith("significantly worse") else kind
                kind = "behind beyond the margin" if "behind" in c.dropped.split("(")[0] else kind
                dropped[kind] = dropped.get(kind, 0) + 1
        verdict = ratio = None
        if lead is not None and default is not None and lead is not default:
            verdict, ratio = _verdict(lead, default, higher)
        elif lead is not None and lead is default:
            verdict = "the defaults are the best configuration found"
        ties = [
            c.label
            for c in cands
            if c.alive and lead is not None and c is not lead and not c.is_default and c.trials
        ]
        if lead is not None:
            leaders.append(lead)
        images.append(
            ImageAnswer(
                image=image,
                framework=cands[0].framework,
                candidates=len(cands),
                trials=sum(len(c.trials) for c in cands),
                best=figure(lead) if lead else None,
                default=figure(default) if default else None,
                verdict=verdict,
                ratio=ratio,
                ties=ties,
                dropped=dropped,
                failed=[f"{c.label}: {c.failed}" for c in cands if c.failed],
            )
        )
    ranked = sorted(leaders, key=lambda c: c.mean() or 0.0, reverse=higher)
    winner = ranked[0] if ranked else None
    runner = ranked[1] if len(ranked) > 1 else None
    wv = _verdict(winner, runner, higher)[0] if winner and runner else None
    measured = [
        f for c in search.candidates if (f := figure(c)) is not None and infeasible(c, search.bound) is None
    ]
    return TuneAnswer(
        model=search.request.model,
        objective=search.request.objective,
        scenario=search.request.scenario,
        bound=search.bound.text if search.bound else None,
        runs_made=search.runs_made,
        trials_made=search.trials_made,
        runs_stored=sum(len(c.trials) for c in search.candidates),
        full_grid_runs=len(search.candidates) * FINAL_RUNS,
        seconds=search.elapsed(),
        budget_s=search.request.budget_s,
        stopped=search.stopped,
        images=images,
        winner=figure(winner) if winner else None,
        runner_up=figure(runner) if runner else None,
        winner_verdict=wv,
        pareto=pareto_front(measured),
    )


def priced(answer: TuneAnswer, price_per_hour: float | None) -> TuneAnswer:
    """The answer with each figure's cost per 1M inferences on a host at `price_per_hour`."""
    if price_per_hour is None:
        return answer
    answer.price_per_hour = price_per_hour
    figures = [answer.winner, answer.runner_up, *answer.pareto]
    for f in [*figures, *(x for im in answer.images for x in (im.best, im.default))]:
        if f is not None:
            f.cost_per_million = cost_per_million(price_per_hour, f.throughput_sps)
    return answer


# --------------------------------------------------------------------------- the command


@dataclass
class Space:
    image: str
    framework: str
    options: dict[str, list[Any]]
    candidates: int
    grid_s: float


def dry_run(req: TuneRequest, paths: Paths) -> list[Space]:
    """The space per image, its size, and what a full grid would take here."""
    host = hosts.identity()
    cands = candidates(req, paths, host.key, check(req))
    past = _history(paths)
    out = []
    for image in dict.fromkeys(c.image for c in cands):
        mine = [c for c in cands if c.image == image]
        keys = list(mine[0].options)
        options = {k: list(dict.fromkeys(c.options[k] for c in mine)) for k in keys}
        per = trial_estimate_s(mine[0], req.model, past)
        out.append(Space(image, mine[0].framework, options, len(mine), len(mine) * FINAL_RUNS * per))
    return out


def trial_estimate_s(c: Candidate, model: str, history: dict[tuple[str, str], float]) -> float:
    """Seconds a trial of the candidate takes here before this search has timed one: a run of
    its image and model as this host's history has them, else its policy's time; a server
    trial is PROBES_PER_TRIAL probes, each lasting at least its schedule."""
    planned = c.planned
    assert planned is not None
    past = history.get((c.image, model))
    sc = planned.spec.scenario
    if isinstance(sc, ServerScenario):
        schedule = max(sc.min_duration_s, sc.min_queries / PEAK_START_QPS)
        return PROBES_PER_TRIAL * max(past or STARTUP_S + schedule, sc.min_duration_s)
    return past or STARTUP_S + planned.spec.policy.max_time_s


def _history(paths: Paths) -> dict[tuple[str, str], float]:
    from controller.run import sweep

    try:
        return sweep.history(paths.db, hosts.identity().hostname) if paths.db.exists() else {}
    except BenchError:
        return {}  # a store older than this code (a dry run does not upgrade it): no history


def check(req: TuneRequest) -> Bound | None:
    if not req.images:
        raise BenchError("--images is empty", "e.g. --images ort,openvino,iree")
    if (other := planning.foreign_prefix(req.sets, req.images)) is not None:
        item, who = other
        raise BenchError(
            f"--set {item!r} names image {who!r}, which this search does not tune",
            f"IMAGE:KEY=VALUE sets KEY for one of: {', '.join(req.images)}",
        )
    if req.precision == "any" and req.min_agreement is None:
        raise BenchError(
            "--precision any needs an accuracy floor",
            "e.g. --precision any --min-agreement 0.99 (top-1 agreement)",
        )
    bound = parse_bound(req.bound) if req.bound else None
    if req.scenario == "server":
        check_server(req, bound)
        if req.slurm is not None:
            raise BenchError(
                "--scenario server with --launcher slurm: a peak search probes one rate after another",
                "tune the server scenario with --launcher local or docker (on a node: srun bench-ctl tune)",
            )
    elif req.scenario != "offline":
        raise BenchError(
            f"tune searches the offline or the server scenario, not {req.scenario!r}", "--scenario server"
        )
    return bound


SEARCHED_BY_SERVER = {
    "server.target_qps": "the search finds the highest rate that holds the bound",
    "server.latency_bound_ms": "--bound p99<=20ms sets it",
    "server.max_batch": "-b gives the max_batch values searched, e.g. -b 1,4,8",
}


def check_server(req: TuneRequest, bound: Bound | None) -> None:
    """The server scenario's answer is the highest rate holding a p99 bound: one is needed."""
    if bound is None:
        raise BenchError(
            "--scenario server needs a latency bound to find each candidate's peak rate under",
            "e.g. --scenario server --bound p99<=20ms",
        )
    if bound.name != "p99":
        raise BenchError(
            f"--bound {req.bound!r}: the server scenario's bound is on p99 latency (as MLPerf's)",
            f"e.g. --bound p99<={bound.limit_ms:g}ms",
        )
    if req.objective != "throughput":
        raise BenchError(
            "--objective latency has no meaning in the server scenario: "
            "its answer is the highest rate that holds the bound",
            "leave --objective out, or tune the offline scenario for latency",
        )
    for item in req.sets:
        key = item.partition("=")[0].strip().split(":")[-1]
        if key in SEARCHED_BY_SERVER:
            raise BenchError(f"--set {item!r}: tune sets {key} itself", SEARCHED_BY_SERVER[key])


TUNE_GROUP_MARK = "-tune-"


def tune_group_id() -> str:
    """The group id of one `tune` call's trials: a group id with `-tune-` in it, so the store
    and the report know a search's trials (`group_id LIKE '%-tune-%'`)."""
    return planning.new_group_id().replace("-group-", TUNE_GROUP_MARK)


def record_search(db: Path, search_id: str, search: Search, host: str) -> None:
    """The question of one call in the store's `searches` table, before its first trial: its
    scenario, objective and bound, and the cells of its candidates (whose runs are its trials)."""
    req, bound = search.request, search.bound
    row = {
        "search_id": search_id,
        "model": req.model,
        "host": host,
        "images": req.images,
        "scenario": req.scenario,
        "objective": req.objective,
        "bound": bound.text if bound else None,
        "bound_metric": bound.metric if bound else None,
        "bound_ms": bound.limit_ms if bound else None,
        "batch_sizes": req.batch_sizes,
        "cells": [c.key for c in search.candidates],
        "request": req.model_dump_json(),
        "started_at": datetime.now(UTC),
    }
    with store.connect(db) as con:
        con.execute(
            f"INSERT INTO searches ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )


def finish_search(db: Path, search_id: str, answer: TuneAnswer | None, stopped: str | None) -> None:
    """The call's end: its answer (None when it was interrupted) and why it stopped early."""
    winner = answer.winner.label if answer and answer.winner else None
    with store.connect(db) as con:
        con.execute(
            "UPDATE searches SET finished_at = ?, stopped = ?, winner = ?, answer = ? WHERE search_id = ?",
            [
                datetime.now(UTC),
                stopped,
                winner,
                answer.model_dump_json() if answer else None,
                search_id,
            ],
        )


def tune(req: TuneRequest, paths: Paths, log: LineSink, on_line: LineSink) -> TuneAnswer:
    """Plan every candidate (nothing runs if one is wrong), then race them; the answer."""
    bound = check(req)
    client = None
    if req.slurm is not None:
        from controller.launch.slurm import SlurmClient
        from controller.run import fleet

        client = SlurmClient()
        host = fleet.cluster_identity(req.slurm, client)
    else:
        host = hosts.identity()
    cands = candidates(req, paths, host.key, bound)
    store.ensure_store(paths.db)
    pipeline.check_destinations(paths)
    search = Search(req, cands, bound, req.objective == "throughput")
    load_trials(paths.db, search)
    reused = sum(len(c.trials) for c in cands)
    grid = len(cands) * FINAL_RUNS
    log(
        f"{len(cands)} candidate(s) over {len(req.images)} image(s); a full grid is {grid} runs"
        + (f"; {reused} trial(s) already stored are reused" if reused else "")
    )
    group = tune_group_id()
    record_search(paths.db, group, search, host.hostname)
    if req.slurm is not None:
        assert client is not None
        batch = slurm_batch(search, req.slurm, client, paths, group, log)

        def go() -> None:
            race_waves(search, batch, log)
    else:
        trial = trials_here(search, paths, group, log, on_line)
        history = _history(paths)
        firsts = {c.image: c for c in reversed(cands)}.values()  # each image's first candidate
        past = statistics.median(trial_estimate_s(c, req.model, history) for c in firsts) if cands else None

        def go() -> None:
            race(search, trial, log, past)

    try:
        go()
    except KeyboardInterrupt:
        finish_search(paths.db, group, None, "interrupted")
        raise
    return finished(search, paths, group)


def trials_here(
    search: Search, paths: Paths, group: str, log: LineSink, on_line: LineSink
) -> Callable[[Candidate, int], Outcome]:
    """How a trial is made on this host: a run (offline), or a peak search (server)."""
    here = pipeline.Here(paths, log, on_line, search.request.launcher)
    bound = search.bound

    def peak_trial(c: Candidate, repetition: int) -> Outcome:
        """One server trial: a peak search of the candidate (every probe a stored run, noisy
        ones made again), from its own last peak when it has one, giving up under the image's
        floor (`peak_floor`). The budget is weighed before each probe: a search it ends is
        Unfinished, and the next call goes on from its stored probes."""
        assert bound is not None
        planned = c.planned
        assert planned is not None
        if c.partial is not None and c.partial[0] == repetition:
            _, bracket, probes = c.partial
        else:
            rate, step = start_rate(c, search, repetition)
            bracket, probes = Bracket(rate, step), []
        c.partial = None
        bracket.floor = peak_floor(c, search)
        made = 0  # runs this trial makes (the race counts one)
        log(f"trial: {c.label} (peak search {repetition})")
        reruns = planned.spec.policy.noisy_reruns
        tags = {"group": group, "repetition": repetition, "cell": c.key}
        budget = search.request.budget_s
        t0 = search.clock()
        for rate, runs in probe_runs(bracket, planned.request, paths, here, log, reruns, **tags):
            made += len(runs)
            search.seconds_per_probe.append(search.clock() - t0)
            t0 = search.clock()
            result = runs[-1]
            if result.status != "ok" or not result.measurements:
                search.runs_made += made - 1
                return failure(result)
            p = probe_of(result, rate)
            probes.append(p)
            log(
                f"  {p.rate:.4g} queries/s: p99 {p.latency_p99_ms:.3g} ms, achieved {p.achieved_qps:.4g}/s: "
                + ("held" if p.held else "did not hold")
                + (" (noisy)" if p.noisy else "")
            )
            probe_s = statistics.median(search.seconds_per_probe)
            if not bracket.done and search.elapsed() + probe_s > budget:
                search.runs_made += made - 1
                c.partial = (repetition, bracket, probes)
                return Unfinished(
                    f"budget spent: {search.elapsed():.0f} s of {budget:.0f} s, and a probe takes "
                    f"about {probe_s:.0f} s ({c.label}'s peak search {repetition} goes on next call)"
                )
        search.runs_made += max(made - 1, 0)
        return peak_outcome(bracket, probes, bound)

    def execute(c: Candidate, repetition: int) -> Trial | str:
        """One trial: a run, made again while it is noisy (policy.noisy_reruns), as run --repeat
        does; every run is stored, the last one is the trial."""
        log(f"trial: {c.label} (run {repetition})")
        planned = c.planned
        assert planned is not None

        def attempt() -> Any:
            return pipeline.execute_here(planned, here, group=group, repetition=repetition, cell=c.key)

        reruns = planned.spec.policy.noisy_reruns

        runs = rounds.run_clean(attempt, log, reruns)
        search.runs_made += len(runs) - 1
        result = runs[-1]
        trial = trial_of(result, search)
        if trial is None:
            return failure(result)
        return trial

    return peak_trial if search.request.scenario == "server" else execute


def finished(search: Search, paths: Paths, group: str) -> TuneAnswer:
    """The answer of a search that has ended, recorded with its question."""
    result = priced(answer(search), search.request.price_per_hour)
    result.search_id = group
    finish_search(paths.db, group, result, search.stopped)
    return result


def slurm_batch(
    search: Search, options: SlurmOptions, client: Any, paths: Paths, group: str, log: LineSink
) -> Callable[[list[tuple[Candidate, int]]], list[Outcome]]:
    """A wave of trials as Slurm jobs: every one submitted, then followed to the end; a trial that
    comes out noisy is submitted again (policy.noisy_reruns), in the next wave of jobs."""
    from controller.run import fleet

    executor = fleet.SlurmExecutor(paths, options, log, client)

    def batch(items: list[tuple[Candidate, int]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        left = [c.planned.spec.policy.noisy_reruns if c.planned else 0 for c, _ in items]
        todo = list(range(len(items)))
        while todo:
            start = len(executor.submitted)
            of_run: dict[str, int] = {}
            for i in todo:
                c, rep = items[i]
                assert c.planned is not None
                unsupported = pipeline.execute(c.planned, executor, group=group, repetition=rep, cell=c.key)
                if unsupported is not None:
                    outcomes[i] = f"{unsupported.status}: {unsupported.message}"
                else:
                    of_run[executor.submitted[-1].run_id] = i
            jobs = executor.submitted[start:]
            log(f"{len(jobs)} job(s) submitted; following them (Ctrl-C leaves them running)")
            stored = fleet.follow(jobs, paths, log, client).stored
            todo = []
            for result in stored:
                i = of_run[result.run_id]
                trial = trial_of(result, search)
                if trial is None:
                    outcomes[i] = failure(result)
                elif trial.noisy and left[i] > 0:
                    left[i] -= 1
                    search.runs_made += 1
                    todo.append(i)
                    log(f"  {items[i][0].label}: noisy, submitted again ({left[i]} more at most)")
                else:
                    outcomes[i] = trial
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None]

    return batch


def plan_text(answer: TuneAnswer, req: TuneRequest) -> str:
    """The winners of a search as a plan: one [[runs]] per image, its best configuration, so that
    `bench-ctl sweep` (and `rerun --plan`) measure them on other hardware."""
    lines = [
        f'name = "tuned-{answer.model}"',
        f'description = "the best configuration per image found by bench-ctl tune on '
        f'{hosts.identity().hostname}"',
        f"repetitions = {FINAL_RUNS}",
    ]
    for im in answer.images:
        if im.best is None:
            continue
        sets = {**_plain_sets(req.sets, im.image), **{k: _text(v) for k, v in im.best.options.items()}}
        table = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in sets.items())
        lines += [
            "",
            "[[runs]]",
            f'label = "{im.image}: tuned"',
            f'images = ["{im.image}"]',
            f'models = ["{answer.model}"]',
            f"batch_sizes = [{im.best.batch_size}]",
        ]
        if table:
            lines.append(f"set = {{ {table} }}")
    return "\n".join(lines) + "\n"


def _plain_sets(sets: list[str], image: str) -> dict[str, str]:
    return {k.strip(): v for k, _, v in (s.partition("=") for s in planning.sets_for(image, sets))}


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def _toml_value(text: str) -> str:
    if text in ("true", "false") or re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
