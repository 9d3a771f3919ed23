"""The answers at the top of the report, and the searches of figure G, from the runs themselves.

The summary: per model, host, batch size and value of the model's dimensions, the fastest
configuration (highest mean throughput over its clean runs, with its 95 % interval as `compare`
makes it) and its verdict against the runner-up by the one comparison rule
(`stats.verdict_of_runs`: never a verdict of noisy runs, never one whose interval includes 1).
Any stored results have one; `tune` trials are results like the others.

The searches: a `bench-ctl tune` call's trials share a group id; a candidate is an image's
options at a batch size. The options a search varied are those that differ between the image's
trials; its defaults are the candidate whose varied options are all at the framework's defaults
(as `tune` decides). A search the store's `searches` table records is its candidates' cells,
and its best per image is the one its answer names; the summary gives each question's newest
answer (`answers`).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.analysis import stats
from controller.analysis.figures.data import RunPoint, SearchRecord, TuneTrial, dims_label
from controller.analysis.metrics import cost_per_million
from controller.analysis.reports import pareto as pareto_front
from controller.analysis.reports import point_label
from schemas import FRAMEWORK_OPTION_MODELS

ENERGY_SAMPLES = 4096  # the store's energy is for 4096 inferences (the study's D)


@dataclass(frozen=True)
class Estimate:
    """A mean over clean runs with its 95 % interval: Student-t over two runs or more; one run's
    within-run interval (`batch-means`); `none` without one."""

    value: float
    low: float | None
    high: float | None
    runs: int
    method: str


def _estimate(values: Sequence[float], within: Sequence[float | None], per_time: bool) -> Estimate:
    """As `compare` makes a cell: `per_time` for a metric in proportion to the mean iteration
    time (a cost), else its inverse (throughput), for one run's within-run interval."""
    if len(values) >= 2:
        ci = stats.mean_ci(values)
        return Estimate(ci.estimate, ci.low, ci.high, len(values), "t")
    value, w = values[0], within[0]
    if w is None or not 0 <= w < 1:
        return Estimate(value, None, None, 1, "none")
    if per_time:
        return Estimate(value, value * (1 - w), value * (1 + w), 1, "batch-means")
    return Estimate(value, value / (1 + w), value / (1 - w), 1, "batch-means")


@dataclass(frozen=True)
class Configuration:
    """What a summary row names: an image with its options on a device."""

    image: str
    variant: str
    device: str

    @property
    def label(self) -> str:
        text = self.image + (f" [{self.variant}]" if self.variant else "")
        return text + ("" if self.device == "cpu" else f" @{self.device}")


@dataclass(frozen=True)
class SummaryRow:
    model: str
    host: str
    batch_size: int
    dims: dict[str, int]
    point: str  # b8, or b8 seq=64
    configurations: int  # measured at this point
    fastest: str
    precision: str
    throughput: Estimate
    runner_up: str | None
    runner_up_throughput: Estimate | None
    verdict: str | None  # faster, no significant difference, insufficient data (or slower)
    message: str  # the verdict with its ratio and interval, or why there is none
    cost: Estimate | None  # dollars per 1M inferences, with a price per hour
    energy_j: float | None  # gross energy per inference (idle power included)
    energy_net_j: float | None  # net: idle power subtracted


def _clean(runs: list[RunPoint]) -> list[RunPoint]:
    return stats.clean_runs(runs, [r.noisy for r in runs])


def _mean(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.fmean(have) if have and len(have) == len(values) else None


def fastest(points: Sequence[RunPoint], price_per_hour: float | None = None) -> list[SummaryRow]:
    """Per model, host, batch size and dimensions: the fastest configuration and its verdict
    against the runner-up (the next by mean throughput)."""
    groups: dict[tuple[str, str, int, str], dict[Configuration, list[RunPoint]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for p in points:
        key = (p.model, p.host, p.batch_size, dims_label(p.dims))
        groups[key][Configuration(p.image, p.variant, p.device)].append(p)
    rows = []
    for (model, host, bs, _), configs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])
    ):
        ranked = sorted(
            configs.items(),
            key=lambda kv: (-statistics.fmean(r.throughput_sps for r in _clean(kv[1])), kv[0].label),
        )
        (best, runs), second = ranked[0], ranked[1] if len(ranked) > 1 else None
        used = _clean(runs)
        dims = dict(runs[0].dims or {})
        tput = _estimate([r.throughput_sps for r in used], [r.within_run_ci_rel for r in used], False)
        verdict, message, runner_tput = None, "the only configuration measured here", None
        if second is not None:
            other = second[1]
            v = stats.verdict_of_runs(
                [r.throughput_sps for r in runs], [r.noisy for r in runs],
                [r.throughput_sps for r in other], [r.noisy for r in other], higher_is_better=True,
            )  # fmt: skip
            verdict, message = v.verdict, v.message
            clean_other = _clean(other)
            runner_tput = _estimate(
                [r.throughput_sps for r in clean_other], [r.within_run_ci_rel for r in clean_other], False
            )
        cost = None
        if price_per_hour is not None:
            costs = [cost_per_million(price_per_hour, r.throughput_sps) for r in used]
            cost = _estimate(costs, [r.within_run_ci_rel for r in used], True)
        gross = _mean([r.energy_j_per_4096 for r in used])
        net = _mean([r.energy_j_per_4096_net for r in used])
        rows.append(
            SummaryRow(
                model=model,
                host=host,
                batch_size=bs,
                dims=dims,
                point=point_label(bs, dims),
                configurations=len(configs),
                fastest=best.label,
                precision=",".join(sorted({r.precision for r in runs if r.precision})),
                throughput=tput,
                runner_up=second[0].label if second else None,
                runner_up_throughput=runner_tput,
                verdict=verdict,
                message=message,
                cost=cost,
                energy_j=gross / ENERGY_SAMPLES if gross is not None else None,
                energy_net_j=net / ENERGY_SAMPLES if net is not None else None,
            )
        )
    return rows


# --------------------------------------------------------------------------- tune searches


@dataclass(frozen=True)
class Candidate:
    """One candidate of a search: its trials, and its means over the clean ones."""

    image: str
    framework: str
    batch_size: int
    options: dict[str, Any]  # the options the search varied
    label: str  # `ort b1 intra_op_threads=2`, or `ort b1 defaults`
    is_default: bool
    trials: tuple[TuneTrial, ...]
    throughput_sps: float
    latency_mean_ms: float


@dataclass(frozen=True)
class Search:
    model: str
    host: str
    group_id: str  # the search's id: its record's, else its trials' group id
    dims: str
    candidates: tuple[Candidate, ...]
    best: tuple[Candidate, ...]  # per image: the highest mean throughput
    front: tuple[Candidate, ...]  # no other candidate has both more throughput and less latency

    @property
    def trials(self) -> list[TuneTrial]:
        return [t for c in self.candidates for t in c.trials]


def _defaults(framework: str) -> dict[str, Any] | None:
    """The framework's option defaults as they read in the stored JSON (None: a framework this
    code does not know)."""
    model = FRAMEWORK_OPTION_MODELS.get(framework)
    if model is None:
        return None
    return {k: json.loads(json.dumps(f.default, default=str)) for k, f in model.model_fields.items()}


def _candidates(trials: list[TuneTrial]) -> list[Candidate]:
    """An image's candidates in one search: its trials by (batch size, options)."""
    options = [json.loads(t.options) if t.options else {} for t in trials]
    keys = sorted({k for o in options for k in o})
    varied = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in options}) > 1]
    defaults = _defaults(trials[0].framework)
    by: dict[tuple[int, str], list[TuneTrial]] = defaultdict(list)
    values: dict[tuple[int, str], dict[str, Any]] = {}
    for t, o in zip(trials, options, strict=True):
        mine = {k: o.get(k) for k in varied}
        key = (t.batch_size, json.dumps(mine, sort_keys=True))
        by[key].append(t)
        values[key] = mine
    out = []
    for key, mine_trials in sorted(by.items()):
        mine = values[key]
        if defaults is None:
            is_default = all(t.variant == "" for t in mine_trials)
            changed = mine
        else:
            changed = {k: v for k, v in mine.items() if defaults.get(k) != v}
            is_default = not changed
        text = " ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"
        clean = stats.clean_runs(mine_trials, [t.noisy for t in mine_trials])
        out.append(
            Candidate(
                image=mine_trials[0].image,
                framework=mine_trials[0].framework,
                batch_size=key[0],
                options=mine,
                label=f"{mine_trials[0].image} b{key[0]} {text}",
                is_default=is_default,
                trials=tuple(mine_trials),
                throughput_sps=statistics.fmean(t.throughput_sps for t in clean),
                latency_mean_ms=statistics.fmean(t.latency_mean_ms for t in clean),
            )
        )
    return out


def newest(records: Sequence[SearchRecord]) -> list[SearchRecord]:
    """The newest answer to each question (model, host, images, scenario, objective, bound and
    batch sizes): a call that goes on from an earlier one answers with its trials too."""
    by: dict[tuple[Any, ...], SearchRecord] = {}
    for r in sorted(records, key=lambda r: (r.started_at, r.search_id)):
        by[(r.model, r.host, tuple(r.images), r.scenario, r.objective, r.bound, tuple(r.batch_sizes))] = r
    return sorted(by.values(), key=lambda r: (r.model, r.host, r.started_at))


def _answer_cells(record: SearchRecord) -> set[str]:
    """The cells of the candidates a search's answer names as each image's best."""
    doc = json.loads(record.answer)
    return {im["best"]["cell"] for im in doc.get("images", []) if im.get("best") and im["best"].get("cell")}


def searches(trials: Sequence[TuneTrial], records: Sequence[SearchRecord] = ()) -> list[Search]:
    """Each search with its candidates, best and front. A search with a record (the store's
    `searches` table) is its candidates' cells, the trials of earlier calls it went on from
    included, and its best per image is the one its answer names (by its own objective and
    bound); trials without a record group by their group id, model, host and dimensions, the
    best of an image being its highest mean throughput."""
    groups: dict[tuple[str, str, str, str], list[TuneTrial]] = defaultdict(list)
    marked: dict[str, set[str]] = {}  # search id: the cells its answer names as best
    claimed: set[str] = set()
    for record in newest([r for r in records if r.scenario == "offline"]):
        cells = set(record.cells)
        mine = [t for t in trials if t.cell in cells and t.model == record.model and t.host == record.host]
        for t in mine:
            groups[(t.model, record.search_id, t.host, dims_label(t.dims))].append(t)
            claimed.add(t.run_id)
        marked[record.search_id] = _answer_cells(record)
    for t in trials:
        if t.run_id not in claimed:
            groups[(t.model, t.group_id, t.host, dims_label(t.dims))].append(t)
    out = []
    for key, mine in sorted(groups.items()):
        model, group, host, dims = key
        by_image: dict[str, list[TuneTrial]] = defaultdict(list)
        for t in mine:
            by_image[t.image].append(t)
        cands = [c for image in sorted(by_image) for c in _candidates(by_image[image])]
        best = []
        for image in sorted(by_image):
            theirs = [c for c in cands if c.image == image]
            named = [c for c in theirs if {t.cell for t in c.trials} & marked.get(group, set())]
            best.append(named[0] if named else max(theirs, key=lambda c: c.throughput_sps))
        out.append(Search(model, host, group, dims, tuple(cands), tuple(best), tuple(pareto_front(cands))))
    return out


@dataclass(frozen=True)
class SearchAnswer:
    """A summary row per question asked of `bench-ctl tune`: its answer as the search gave it."""

    model: str
    host: str
    question: str  # `server, p99 <= 20 ms, b1,8` or `offline, throughput, b1`
    search_id: str
    winner: str | None
    value: Estimate | None
    unit: str
    runner_up: str | None
    verdict: str | None
    stopped: str | None


def _figure_estimate(f: dict[str, Any] | None) -> Estimate | None:
    if not f:
        return None
    method = "t" if f.get("low") is not None else "none"
    return Estimate(f["mean"], f.get("low"), f.get("high"), f["runs"], method)


def answers(records: Sequence[SearchRecord]) -> list[SearchAnswer]:
    """The newest answer to each question, as the summary shows it."""
    out = []
    for r in newest(records):
        doc = json.loads(r.answer)
        sizes = "b" + ",".join(map(str, r.batch_sizes))
        if r.scenario == "server":
            question, unit = f"server, {r.bound}, max_batch {sizes}", "queries/s (peak under the bound)"
        else:
            question = f"offline, {r.objective}" + (f", {r.bound}" if r.bound else "") + f", {sizes}"
            unit = "samples/s" if r.objective == "throughput" else "ms (mean latency)"
        winner, runner = doc.get("winner"), doc.get("runner_up")
        out.append(
            SearchAnswer(
                model=r.model,
                host=r.host,
                question=question,
                search_id=r.search_id,
                winner=winner["label"] if winner else None,
                value=_figure_estimate(winner),
                unit=unit,
                runner_up=runner["label"] if runner else None,
                verdict=doc.get("winner_verdict"),
                stopped=r.stopped,
            )
        )
    return out
