"""`bench-ctl compare`: configurations side by side on one host, with intervals and verdicts.

A cell is the mean over a configuration's runs (repetitions) with its 95 % Student-t interval,
exactly as the `summary` view computes it, at one batch size and one value of the model's named
dimensions (runs at seq=16 and seq=64 are two rows, never one mean); with one run, throughput
gets the within-run batch-means interval and says so. `--baseline` adds, per cell, the ratio to
the baseline and the verdict of the one comparison rule of `controller/analysis/stats.py`.
"""

from __future__ import annotations

import math
import socket
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from controller.analysis import metrics, stats
from controller.analysis.metrics import COMPARABLE, HIGHER_IS_BETTER, MEAN_TIME
from controller.analysis.reports import (
    BuildPair,
    Cell,
    CompareRow,
    Comparison,
    DataScore,
    HostPair,
    HostPairRow,
    VerdictCell,
    point_label,
)
from controller.errors import BenchError, did_you_mean
from controller.store import db as store
from schemas import SCENARIO_MODELS

RULE = stats.RULE


class Earlier(NamedTuple):
    """An earlier build of an image on a host, by its framework version."""

    image: str
    host: str
    version: str


def current_host() -> str:
    return socket.gethostname()


def _label(image: str, variant: str | None, device: str, host: str | None) -> str:
    label = image + (f" [{variant}]" if variant else "") + ("" if device == "cpu" else f" @{device}")
    return label + (f" on {host}" if host else "")


def _choose_hosts(stored: list[str], host: str | None, across: bool, model: str) -> list[str]:
    if across:
        return stored
    if host is not None:
        if host not in stored:
            raise BenchError(f"no results for model {model!r} from host {host!r}", did_you_mean(host, stored))
        return [host]
    here = current_host()
    if here in stored:
        return [here]
    raise BenchError(
        f"no results for model {model!r} from this host ({here}); results exist from {', '.join(stored)}",
        "pick one with --host H, or compare hosts with --across-hosts",
    )


def _noisy(rows: list[dict[str, Any]]) -> list[bool]:
    return [bool(r["noisy"]) for r in rows]


Dims = tuple[tuple[str, int], ...]


def _dims(row: dict[str, Any]) -> Dims:
    """A row's named dimensions as a sortable key (none for results stored before they existed)."""
    return tuple(sorted((row.get("dims") or {}).items()))


def _tokens(used: list[dict[str, Any]]) -> float | None:
    """The mean tokens/s of the runs a cell is made of, where every one has it."""
    values = [r["tokens_per_s"] for r in used]
    if not values or any(v is None for v in values):
        return None
    return sum(float(v) for v in values) / len(values)


def _data_score(rows: list[dict[str, Any]]) -> DataScore | None:
    """Accuracy on the labelled data of the worst run, beside the fp32 reference's."""
    scored = [r for r in rows if r["data_top1"] is not None]
    if not scored:
        return None
    worst = min(scored, key=lambda r: float(r["data_top1"]))
    return DataScore(
        samples=worst["data_samples"],
        top1=worst["data_top1"],
        top5=worst["data_top5"],
        fp32_top1=worst["data_fp32_top1"],
        fp32_top5=worst["data_fp32_top5"],
    )


def _cell(rows: list[dict[str, Any]], metric: str, include_noisy: bool = False) -> Cell:
    """A configuration's runs at one batch size as a cell: the mean of its clean runs (every run
    when none is clean, or with `include_noisy`) with its interval, as `verdict_cell` judges them."""
    used = stats.clean_runs(rows, _noisy(rows), include_noisy)
    values = [float(r["value"]) for r in used]
    noisy = any(bool(r["noisy"]) for r in used)
    left_out = len(rows) - len(used)
    precision = ",".join(sorted({str(r["precision"]) for r in rows if r["precision"]})) or None
    rel = max((r["rel_err"] for r in rows if r["rel_err"] is not None), default=None)
    common: dict[str, Any] = {
        "noisy": noisy,
        "noisy_left_out": left_out,
        "precision": precision,
        "rel_err": rel,
        "tokens_per_s": _tokens(used),
        "data": _data_score(rows),
    }
    if len(values) >= 2:
        ci = stats.mean_ci(values)
        return Cell(value=ci.estimate, low=ci.low, high=ci.high, runs=len(values), method="t", **common)
    value = values[0]
    within = used[0]["within_run_ci_rel"]
    if metric in HIGHER_IS_BETTER and within is not None and within < 1:
        # Throughput (and tokens/s, its multiple) is batch / mean iteration time: the interval of
        # the time, inverted.
        return Cell(
            value=value, low=value / (1 + within), high=value / (1 - within), runs=1,
            method="batch-means", **common,
        )  # fmt: skip
    if metric in MEAN_TIME and within is not None:
        return Cell(
            value=value, low=value * (1 - within), high=value * (1 + within), runs=1,
            method="batch-means", **common,
        )  # fmt: skip
    return Cell(value=value, low=None, high=None, runs=1, method="none", **common)


def _check(metric: str, scenario: str, price_per_hour: float | None = None) -> None:
    if metric not in COMPARABLE:
        raise BenchError(f"unknown metric {metric!r}", did_you_mean(metric, list(COMPARABLE)))
    if metric == metrics.COST and price_per_hour is None:
        raise BenchError(
            f"--metric {metrics.COST} needs the host's price",
            f"e.g. --metric {metrics.COST} --price-per-hour 2.5 (dollars per hour of the host)",
        )
    if price_per_hour is not None and metric != metrics.COST:
        raise BenchError("--price-per-hour prices one metric", f"add --metric {metrics.COST}")
    if price_per_hour is not None and not (math.isfinite(price_per_hour) and price_per_hour > 0):
        raise BenchError(f"--price-per-hour {price_per_hour:g} is not a price", "dollars per hour, above 0")
    if scenario not in SCENARIO_MODELS:
        raise BenchError(f"unknown scenario {scenario!r}", did_you_mean(scenario, list(SCENARIO_MODELS)))


def _results(
    db: Path,
    model: str,
    metric: str,
    device: str | None,
    scenario: str,
    run_ids: list[str] | None = None,
    price_per_hour: float | None = None,
) -> list[dict[str, Any]]:
    """The successful results of `model` in `scenario` with a value of `metric`, oldest first."""
    _check(metric, scenario, price_per_hour)
    value = metrics.value_sql(metric, price_per_hour)
    where = "status = 'ok' AND batch_size IS NOT NULL AND scenario = ? AND model = ?"
    where += " AND device = ?" if device else ""
    params: list[Any] = [scenario, model, device] if device else [scenario, model]
    if run_ids is not None:
        where += " AND list_contains(?, run_id)"
        params.append(run_ids)
    cols, raw = store.read(
        db,
        f"""SELECT run_id, host, image, variant, device, batch_size, dims, {value} AS value,
                   within_run_ci_rel, noisy, precision, rel_err, started_at, lock_hash, framework,
                   framework_version, tokens_per_s, data_samples, data_top1, data_top5, data_fp32_top1,
                   data_fp32_top5
            FROM results WHERE {where} AND {value} IS NOT NULL ORDER BY started_at""",
        params,
    )
    rows = store.rows_as_dicts(cols, raw)
    if not rows and metric == "tokens_per_s":
        raise BenchError(
            f"no results of model {model!r} with tokens/s" + (f" on {device}" if device else ""),
            "tokens/s is measured for models whose manifest names a sequence dimension (sequence_dim); "
            "compare samples/s with --metric throughput_sps",
        )
    if not rows and metric.startswith("energy_"):
        raise BenchError(
            f"no results of model {model!r} with {metric}" + (f" on {device}" if device else ""),
            "energy is read on NVIDIA GPUs (NVML) and on CPUs whose host exposes RAPL (bench-ctl doctor)",
        )
    if not rows:
        raise BenchError(
            f"no successful results for model {model!r}"
            + (f" on {device}" if device else "")
            + (f" in scenario {scenario}" if scenario != "offline" else ""),
            f"run one: bench-ctl run --image ort --model {model} --repeat 5",
        )
    return rows


def newest_builds(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[Earlier, set[str]]]:
    """Keep, of each configuration (host, image, options, device), only the runs of the newest
    build of the image that measured it: a build is its lock (the packages it was made from), and
    runs of two builds (say, before and after an upgrade of the framework) are never pooled.
    `rows` are oldest first. Returns the rows kept and the run ids left out, per earlier build."""

    def cell(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["host"], r["image"], r["variant"], r["device"])

    newest = {cell(r): r["lock_hash"] for r in rows}  # the last one seen is the newest
    kept = []
    left: dict[Earlier, set[str]] = defaultdict(set)
    for r in rows:
        if r["lock_hash"] == newest[cell(r)]:
            kept.append(r)
        else:
            version = (
                f"{r['framework']} {r['framework_version']}" if r["framework_version"] else "another lock"
            )
            left[Earlier(str(r["image"]), str(r["host"]), version)].add(str(r["run_id"]))
    return kept, left


def left_out_notes(left: dict[Earlier, set[str]], hosts: list[str]) -> list[str]:
    return [
        f"{len(ids)} run(s) of {e.image} on {e.host} from an earlier build ({e.version}) left out: a "
        "configuration shows the newest build that measured it (the others stay in `results`)"
        for e, ids in sorted(left.items())
        if e.host in hosts
    ]


def verdict_cell(
    rows: list[dict[str, Any]], base: list[dict[str, Any]], higher: bool, include_noisy: bool = False
) -> VerdictCell | None:
    """A configuration's runs against the baseline's by the one rule (`stats.verdict_of_runs`):
    clean runs only unless `include_noisy`; None when a value is not positive (no ratio)."""
    values, base_values = [float(r["value"]) for r in rows], [float(r["value"]) for r in base]
    if min(values + base_values) <= 0:
        return None
    v = stats.verdict_of_runs(
        values, _noisy(rows), base_values, _noisy(base), higher_is_better=higher, include_noisy=include_noisy
    )
    return VerdictCell(
        ratio=v.ratio.estimate,
        ratio_low=v.ratio.low,
        ratio_high=v.ratio.high,
        p_value=v.p_value,
        verdict=v.verdict,
        message=v.message,
        note=v.note,
    )


def hosts_of(
    db: Path, model: str, metric: str, device: str | None, scenario: str, price_per_hour: float | None = None
) -> list[str]:
    """The hosts with results of `model`, in the order their first result was made."""
    first: dict[str, Any] = {}
    for r in _results(db, model, metric, device, scenario, None, price_per_hour):
        first.setdefault(str(r["host"]), r["started_at"])
    return list(first)


def _pair_rows(
    rows: list[dict[str, Any]],
    side: Callable[[dict[str, Any]], str],
    old: str,
    new: str,
    metric: str,
    include_noisy: bool = False,
) -> list[HostPairRow]:
    """Each configuration (image, options, device) at each batch size and value of the model's
    dimensions on both sides (`side` of a row: its host, or its build): the old side's cell, the
    new side's, and new/old with its interval and verdict by the one comparison rule."""
    groups: dict[tuple[str, int, Dims, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if side(r) in (old, new):
            label = _label(r["image"], r["variant"], r["device"], None)
            groups[(label, int(r["batch_size"]), _dims(r), side(r))].append(r)
    out = []
    higher = metric in HIGHER_IS_BETTER
    for label, bs, dims in sorted({(label, bs, dims) for label, bs, dims, _ in groups}):
        a, b = groups.get((label, bs, dims, old), []), groups.get((label, bs, dims, new), [])
        out.append(
            HostPairRow(
                label=label,
                batch_size=bs,
                dims=dict(dims),
                point=point_label(bs, dict(dims)),
                old=_cell(a, metric, include_noisy) if a else None,
                new=_cell(b, metric, include_noisy) if b else None,
                verdict=verdict_cell(b, a, higher, include_noisy) if a and b else None,
            )
        )
    return out


def build_name(row: dict[str, Any]) -> str:
    """A build of an image in words: its framework version and the start of its lock hash."""
    lock = str(row["lock_hash"])[:8] if row["lock_hash"] else "no lock recorded"
    return f"{row['framework']} {row['framework_version'] or '(version unknown)'}, lock {lock}"


def compare_builds(
    db: Path,
    model: str,
    image: str,
    metric: str = "throughput_sps",
    device: str | None = None,
    scenario: str = "offline",
    host: str | None = None,
    include_noisy: bool = False,
    price_per_hour: float | None = None,
) -> BuildPair:
    """The newest build of `image` (the last lock it was built from, by first use) against the
    build before it, on one host: each configuration of `model` at each batch size, and new/old
    with its interval and verdict. The question a framework upgrade asks."""
    every = _results(db, model, metric, device, scenario, None, price_per_hour)
    rows = [r for r in every if r["image"] == image]
    if not rows:
        images = sorted({str(r["image"]) for r in every})
        raise BenchError(f"no results of image {image!r} for model {model!r}", did_you_mean(image, images))
    [chosen] = _choose_hosts(sorted({str(r["host"]) for r in rows}), host, False, model)
    rows = [r for r in rows if r["host"] == chosen]

    def lock(r: dict[str, Any]) -> str:
        return str(r["lock_hash"] or "")

    first: dict[str, dict[str, Any]] = {}
    for r in rows:  # oldest first: builds in the order they were first measured
        first.setdefault(lock(r), r)
    builds = list(first)
    if len(builds) < 2:
        raise BenchError(
            f"{model} was measured with one build of {image} on {chosen} ({build_name(first[builds[0]])})",
            "rebuild the image from a new lock (make locks; make images), measure again, then compare",
        )
    old, new = builds[-2], builds[-1]
    earlier = builds[:-2]
    return BuildPair(
        model=model,
        metric=metric,
        higher_is_better=metric in HIGHER_IS_BETTER,
        host=chosen,
        image=image,
        old_build=build_name(first[old]),
        new_build=build_name(first[new]),
        rule=RULE,
        rows=_pair_rows(rows, lock, old, new, metric, include_noisy),
        left_out=[f"earlier build left out: {build_name(first[b])}" for b in earlier],
        price_per_hour=price_per_hour,
    )


def compare_hosts(
    db: Path,
    model: str,
    old: str,
    new: str,
    metric: str = "throughput_sps",
    device: str | None = None,
    scenario: str = "offline",
    include_noisy: bool = False,
    price_per_hour: float | None = None,
) -> HostPair:
    """Each configuration of `model` that either host measured, per batch size: the old host's
    cell, the new host's, and new/old with its interval and verdict (the one comparison rule)."""
    rows, left_out = newest_builds(_results(db, model, metric, device, scenario, None, price_per_hour))
    stored = sorted({str(r["host"]) for r in rows})
    for h in (old, new):
        if h not in stored:
            raise BenchError(f"no results for model {model!r} from host {h!r}", did_you_mean(h, stored))
    if old == new:
        raise BenchError(f"--hosts {old},{new} names one host twice", "give the old host, then the new one")
    higher = metric in HIGHER_IS_BETTER
    out = _pair_rows(rows, lambda r: str(r["host"]), old, new, metric, include_noisy)
    return HostPair(
        model=model,
        metric=metric,
        higher_is_better=higher,
        old_host=old,
        new_host=new,
        rule=RULE,
        rows=out,
        left_out=left_out_notes(left_out, [old, new]),
        price_per_hour=price_per_hour,
    )


def compare(
    db: Path,
    model: str,
    metric: str = "throughput_sps",
    device: str | None = None,
    baseline: str | None = None,
    host: str | None = None,
    across_hosts: bool = False,
    run_ids: list[str] | None = None,
    scenario: str = "offline",
    include_noisy: bool = False,
    price_per_hour: float | None = None,
) -> Comparison:
    """Every configuration of `model` measured on the chosen host(s) in `scenario`, per batch size
    and value of the model's named dimensions (only the runs `run_ids` when given: one command's
    runs)."""
    if host is not None and across_hosts:
        raise BenchError("--host and --across-hosts exclude each other", "choose one")
    rows, left_out = newest_builds(_results(db, model, metric, device, scenario, run_ids, price_per_hour))
    hosts = _choose_hosts(sorted({str(r["host"]) for r in rows}), host, across_hosts, model)
    groups: dict[tuple[str, int, Dims], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["host"] in hosts:
            label = _label(r["image"], r["variant"], r["device"], r["host"] if across_hosts else None)
            groups[(label, int(r["batch_size"]), _dims(r))].append(r)
    labels = sorted({label for label, _, _ in groups})
    if baseline is not None and baseline not in labels:
        raise BenchError(
            f"--baseline {baseline!r} is not a column of this comparison", did_you_mean(baseline, labels)
        )
    higher = metric in HIGHER_IS_BETTER
    out_rows = []
    for bs, dims in sorted({(b, d) for _, b, d in groups}):
        members = {label: groups[(label, bs, dims)] for label in labels if groups.get((label, bs, dims))}
        cells = {label: _cell(runs, metric, include_noisy) for label, runs in members.items()}
        verdicts: dict[str, VerdictCell] = {}
        if baseline is not None and baseline in members:
            for label, runs in members.items():
                cell = (
                    None
                    if label == baseline
                    else verdict_cell(runs, members[baseline], higher, include_noisy)
                )
                if cell is not None:
                    verdicts[label] = cell
        out_rows.append(
            CompareRow(
                batch_size=bs,
                dims=dict(dims),
                point=point_label(bs, dict(dims)),
                cells=cells,
                verdicts=verdicts,
            )
        )
    return Comparison(
        model=model,
        metric=metric,
        higher_is_better=higher,
        hosts=hosts,
        labels=labels,
        baseline=baseline,
        rule=RULE,
        rows=out_rows,
        left_out=left_out_notes(left_out, hosts),
        price_per_hour=price_per_hour,
    )
