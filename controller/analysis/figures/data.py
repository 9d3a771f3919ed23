"""What each figure of the report reads: its SQL (printed beside the figure) and its typed rows.

Throughput comes from the `summary` view (the groups and intervals `compare` uses); with --where,
the view's SELECT over the selected results alone, so an interval never includes a run the
selection left out. Everything else reads `results` (or `runs` for the per-run phase timings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import duckdb

from controller.analysis.figures.selection import Selection
from controller.store import db as store


def dims_label(dims: dict[str, int] | None) -> str:
    """The model's named dimensions of a point, `seq=64 heads=12` ('' when it has none)."""
    return " ".join(f"{k}={v}" for k, v in sorted((dims or {}).items()))


@dataclass(frozen=True)
class Line:
    """What a line of a figure stands for: a configuration on a host (at the model's dimensions,
    `dims`, or at a batch size, where a figure draws against a dimension)."""

    model: str
    image: str
    variant: str
    host: str
    dims: str = ""

    def label(self, with_host: bool) -> str:
        text = self.image + (f" [{self.variant}]" if self.variant else "")
        text += f" {self.dims}" if self.dims else ""
        return f"{text} @ {self.host}" if with_host else text

    @property
    def configuration(self) -> Line:
        """The line without its dimensions: the configuration it measures."""
        return Line(self.model, self.image, self.variant, self.host)


@dataclass(frozen=True)
class ThroughputPoint:
    model: str
    image: str
    variant: str
    host: str
    batch_size: int
    repetitions: int
    throughput_sps: float
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    precision: str | None
    noisy: bool | None
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions
    sequence_dim: str | None = None
    tokens_per_s: float | None = None  # models with a sequence dimension


@dataclass(frozen=True)
class FailedRun:
    model: str
    image: str
    variant: str
    host: str
    run_id: str
    status: str
    message: str
    measured: list[int]
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class MemoryPoint:
    model: str
    image: str
    variant: str
    host: str
    batch_size: int
    runs: int
    host_mem_mb: float | None
    device_mem_mb: float | None
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class EnergyPoint:
    model: str
    image: str
    variant: str
    host: str
    gpu: str
    batch_size: int
    runs: int
    throughput_sps: float
    energy_j_per_4096: float  # gross: idle power included
    energy_j_per_4096_net: float | None  # idle power subtracted
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class LoadPhases:
    model: str
    image: str
    variant: str
    host: str
    warm: bool
    runs: int
    import_s: float
    model_read_s: float
    compile_s: float
    first_inference_s: float
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class ServerPoint:
    model: str
    image: str
    variant: str
    host: str
    run_id: str
    target_qps: float | None
    achieved_qps: float
    latency_p99_ms: float
    valid: bool | None
    invalid_reason: str | None
    latency_bound_ms: float | None
    noisy: bool | None
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class AccuracyRow:
    """A configuration's outputs against the reference (its worst run), and its accuracy on the
    user's labelled data beside the fp32 reference's."""

    model: str
    image: str
    variant: str
    host: str
    framework: str
    precision: str | None
    reference: str | None
    runs: int
    max_abs_err: float | None
    rel_err: float | None
    top1_agreement: float | None
    top5_agreement: float | None
    cosine_min: float | None
    worst_output: str | None
    outputs: str | None  # JSON: the worst run's agreement per output
    data_samples: int | None
    data_top1: float | None
    data_fp32_top1: float | None
    data_top5: float | None
    data_fp32_top5: float | None
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class RunPoint:
    """One offline run at one batch size: what the summary's cells and verdicts are made of (the
    comparison rule takes each run's value, never the group's mean)."""

    model: str
    image: str
    variant: str
    host: str
    device: str
    batch_size: int
    run_id: str
    throughput_sps: float
    latency_mean_ms: float | None
    within_run_ci_rel: float | None
    noisy: bool
    precision: str | None
    energy_j_per_4096: float | None  # gross: idle power included
    energy_j_per_4096_net: float | None  # idle power subtracted
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions


@dataclass(frozen=True)
class TuneTrial:
    """A run of a `bench-ctl tune` search (its group id holds TUNE_GROUP_MARK): one candidate's
    options (JSON, every option of the framework) at one batch size."""

    model: str
    image: str
    variant: str
    host: str
    framework: str
    group_id: str
    batch_size: int
    run_id: str
    options: str
    throughput_sps: float
    latency_mean_ms: float
    noisy: bool
    dims: dict[str, int] = field(default_factory=dict)  # the model's named dimensions
    cell: str | None = None  # the candidate's cell (a search's record lists its cells)


@dataclass(frozen=True)
class SearchRecord:
    """A `bench-ctl tune` call as the store's `searches` table holds it: the question it asked
    (scenario, objective, latency bound), its candidates' cells and its answer (JSON)."""

    search_id: str
    model: str
    host: str
    images: list[str]
    scenario: str
    objective: str
    bound: str | None
    batch_sizes: list[int]
    started_at: str
    stopped: str | None
    answer: str
    cells: list[str]


@dataclass(frozen=True)
class HostRow:
    host: str
    cpu_model: str | None
    cpu_count: int | None
    memory_total_mb: float | None
    os: str | None
    python: str | None
    gpus: str
    runs: int


@dataclass(frozen=True)
class ImageRow:
    host: str
    image: str
    framework: str
    framework_version: str | None
    launcher: str | None
    image_digest: str | None
    lock_hash: str | None
    runs: int


@dataclass(frozen=True)
class Query:
    """One figure's SQL, as printed beside it (runs as it is in `bench-ctl query`)."""

    name: str
    sql: str


def _key(prefix: str = "") -> str:
    """The columns that name a line; results older than variants (or hosts) read as ''. Each
    figure's SQL also groups by the model's named dimensions, `dims` (its last column): runs at
    seq=16 and seq=64 are never one point."""
    return (
        f"{prefix}model, {prefix}image, coalesce({prefix}variant, '') AS variant, "
        f"coalesce({prefix}host, '') AS host"
    )


def newest_build(when: str) -> str:
    """A QUALIFY clause keeping, per configuration (host, image, options, device, model, scenario),
    the rows of the newest build of the image that measured it (its lock hash), by `when`: runs of
    two builds are never drawn as one line, as `compare` never pools them."""
    return (
        "QUALIFY coalesce(lock_hash, '') = arg_max(coalesce(lock_hash, ''), "
        f"{when})\n        OVER (PARTITION BY host, image, variant, device, model, scenario)"
    )


def _selected(selection: Selection) -> str:
    """The selected rows of `results`, of the newest build of each configuration, as a CTE named
    `selected`."""
    condition = selection.condition()
    where = "" if condition == "true" else f"\n    WHERE {condition}"
    return f"WITH selected AS (\n    SELECT * FROM results{where}\n    {newest_build('started_at')}\n)\n"


def _selected_runs(selection: Selection) -> str:
    """The selection as a condition on `runs` ('true': every run)."""
    condition = selection.condition()
    return "true" if condition == "true" else f"run_id IN (SELECT run_id FROM results WHERE {condition})"


def throughput_sql(selection: Selection) -> str:
    head = ""
    if selection.where:
        inner = store.summary_select(selection.where).strip().replace("\n", "\n    ")
        head = f"WITH summary AS (\n    {inner}\n)\n"
    return (
        head + f"SELECT {_key()}, batch_size, repetitions, throughput_sps,\n"
        "       throughput_ci_low, throughput_ci_high, ci_method, precision, noisy,\n"
        "       dims, sequence_dim, tokens_per_s\n"
        f"FROM summary\nWHERE scenario = 'offline' AND {selection.condition(with_where=False)}\n"
        f"{newest_build('last_run_at')}\n"
        "ORDER BY model, image, variant, host, batch_size, dims"
    )


def failed_sql(selection: Selection) -> str:
    return (
        _selected(selection) + f"SELECT {_key()}, run_id, status, coalesce(message, status),\n"
        "       coalesce(list(batch_size ORDER BY batch_size) FILTER (WHERE batch_size IS NOT NULL), []),\n"
        "       dims\n"
        "FROM selected\nWHERE status <> 'ok' AND scenario = 'offline'\n"
        "GROUP BY model, image, variant, host, dims, run_id, status, message\n"
        "ORDER BY model, image, variant, host, run_id"
    )


def memory_sql(selection: Selection) -> str:
    return (
        _selected(selection) + f"SELECT {_key()}, batch_size, count(*) AS runs,\n"
        "       avg(peak_host_mem_mb) AS host_mem_mb, avg(peak_device_mem_mb) AS device_mem_mb, dims\n"
        "FROM selected\n"
        "WHERE status = 'ok' AND scenario = 'offline' AND ensemble_members IS NOT NULL\n"
        "GROUP BY model, image, variant, host, dims, batch_size\n"
        "ORDER BY model, image, variant, host, batch_size, dims"
    )


def energy_sql(selection: Selection) -> str:
    return (
        _selected(selection) + f"SELECT {_key('s.')},\n"
        "       coalesce(json_extract_string(m.gpu, '$.name'), s.device) AS gpu, s.batch_size,\n"
        "       count(*) AS runs, avg(s.throughput_sps) AS throughput_sps,\n"
        "       avg(s.energy_j_per_4096) AS energy_j_per_4096,\n"
        "       avg(s.energy_j_per_4096_net) AS energy_j_per_4096_net, s.dims\n"
        "FROM selected s JOIN measurements m ON m.run_id = s.run_id AND m.batch_size = s.batch_size\n"
        "WHERE s.status = 'ok' AND s.energy_j_per_4096 IS NOT NULL\n"
        "GROUP BY ALL\nORDER BY ALL"
    )


def runs_sql(selection: Selection) -> str:
    return (
        _selected(selection) + f"SELECT {_key()}, device, batch_size, run_id, throughput_sps,\n"
        "       latency_mean_ms, within_run_ci_rel, coalesce(noisy, false), precision,\n"
        "       energy_j_per_4096, energy_j_per_4096_net, dims\n"
        "FROM selected\n"
        "WHERE status = 'ok' AND scenario = 'offline' AND throughput_sps > 0\n"
        "ORDER BY model, host, batch_size, dims, image, variant, device, started_at"
    )


# The mark in the group id of a `bench-ctl tune` search's trials (controller.run.tune.TUNE_GROUP_MARK;
# not imported: the report does not load the run pipeline).
TUNE_GROUP_MARK = "-tune-"


def tune_sql(selection: Selection) -> str:
    """A search's trials as they were made (not only the newest build's: a search is one group)."""
    return (
        f"SELECT {_key()}, framework, group_id, batch_size, run_id, CAST(options AS VARCHAR),\n"
        "       throughput_sps, latency_mean_ms, coalesce(noisy, false), dims, cell\n"
        "FROM results\nWHERE status = 'ok' AND scenario = 'offline'\n"
        f"  AND group_id LIKE '%{TUNE_GROUP_MARK}%' AND throughput_sps > 0 AND latency_mean_ms > 0\n"
        f"  AND {selection.condition()}\n"
        "ORDER BY model, group_id, image, batch_size, started_at"
    )


def searches_sql(selection: Selection) -> str:
    """The finished searches of the selected models and hosts, oldest first."""
    return (
        "SELECT search_id, model, host, images, scenario, objective, bound, batch_sizes,\n"
        "       strftime(started_at, '%Y-%m-%d %H:%M'), stopped, CAST(answer AS VARCHAR), cells\n"
        "FROM searches\nWHERE answer IS NOT NULL\n"
        f"  AND (model, host) IN (SELECT DISTINCT model, host FROM results WHERE {selection.condition()})\n"
        "ORDER BY started_at, search_id"
    )


def load_sql(selection: Selection) -> str:
    return (
        f"SELECT {_key()}, coalesce(compile_cache_hit, false) AS warm, count(*) AS runs,\n"
        "       avg(import_s), avg(model_read_s), avg(compile_s), avg(first_inference_s), dims\n"
        f"FROM runs\nWHERE status = 'ok' AND import_s IS NOT NULL\n  AND {_selected_runs(selection)}\n"
        "GROUP BY ALL\nORDER BY model, image, variant, host, dims, warm"
    )


def server_sql(selection: Selection) -> str:
    return (
        _selected(selection) + f"SELECT {_key()}, run_id, target_qps, achieved_qps,\n"
        "       latency_p99_ms, valid, invalid_reason,\n"
        "       CAST(json_extract(scenario_options, '$.latency_bound_ms') AS DOUBLE) AS latency_bound_ms,\n"
        "       noisy, dims\n"
        "FROM selected\n"
        "WHERE status = 'ok' AND scenario = 'server' AND achieved_qps IS NOT NULL\n"
        "ORDER BY model, image, variant, host, dims, achieved_qps"
    )


def accuracy_sql(selection: Selection) -> str:
    return (
        f"SELECT {_key()}, framework, string_agg(DISTINCT precision, ',') AS precision,\n"
        "       any_value(accuracy_reference) AS reference, count(*) AS runs,\n"
        "       max(max_abs_err), max(rel_err), min(top1_agreement), min(top5_agreement), min(cosine_min),\n"
        "       arg_max(worst_output, rel_err), arg_max(accuracy_outputs, rel_err),\n"
        "       max(data_samples), min(data_top1), arg_min(data_fp32_top1, data_top1),\n"
        "       min(data_top5), arg_min(data_fp32_top5, data_top5), dims\n"
        f"FROM runs\nWHERE status = 'ok' AND {_selected_runs(selection)}\n"
        "GROUP BY model, image, variant, host, dims, framework\nORDER BY model, image, variant, host, dims"
    )


def hosts_sql(selection: Selection) -> str:
    return (
        "SELECT coalesce(host, '') AS host, any_value(cpu_model),\n"
        "       max(CAST(json_extract(fingerprint, '$.cpu_count') AS INTEGER)),\n"
        "       max(CAST(json_extract(fingerprint, '$.memory_total_mb') AS DOUBLE)),\n"
        "       string_agg(DISTINCT json_extract_string(fingerprint, '$.os'), '; '),\n"
        "       string_agg(DISTINCT json_extract_string(fingerprint, '$.python'), '; '),\n"
        "       string_agg(DISTINCT CAST(json_extract(fingerprint, '$.gpus') AS VARCHAR), ';'),\n"
        "       count(*) AS runs\n"
        f"FROM runs\nWHERE {_selected_runs(selection)}\nGROUP BY host ORDER BY host"
    )


def images_sql(selection: Selection) -> str:
    return (
        "SELECT coalesce(host, '') AS host, image, framework, framework_version, launcher, image_digest,\n"
        "       lock_hash, count(*) AS runs\n"
        f"FROM runs\nWHERE {_selected_runs(selection)}\nGROUP BY ALL ORDER BY ALL"
    )


T = TypeVar("T")


def _typed(con: duckdb.DuckDBPyConnection, sql: str, cls: type[T]) -> list[T]:
    _, rows = store.fetch(con, sql)
    width = len(fields(cls))  # type: ignore[arg-type]
    assert all(len(r) == width for r in rows), f"{cls.__name__}: the SQL gives {len(rows[0])} columns"
    return [cls(*r) for r in rows]


def _gpus(text: str) -> str:
    """GPU names with driver and CUDA, from the fingerprints' `gpus` lists."""
    seen: list[str] = []
    for chunk in text.split(";"):
        try:
            gpus: Any = json.loads(chunk) if chunk.strip() else []
        except json.JSONDecodeError:
            continue
        for g in gpus if isinstance(gpus, list) else []:
            if not isinstance(g, dict):
                continue
            extra = ", ".join(f"{k} {v}" for k, v in g.items() if k not in ("name", "index") and v)
            item = f"{g.get('name', '?')}" + (f" ({extra})" if extra else "")
            if item not in seen:
                seen.append(item)
    return "; ".join(seen) or "none"


@dataclass(frozen=True)
class ReportData:
    """Everything the report draws, read in one read-only session of the store."""

    selection: Selection
    runs: int
    queries: dict[str, Query]
    throughput: list[ThroughputPoint]
    failed: list[FailedRun]
    memory: list[MemoryPoint]
    energy: list[EnergyPoint]
    load: list[LoadPhases]
    server: list[ServerPoint]
    accuracy: list[AccuracyRow]
    hosts: list[HostRow]
    images: list[ImageRow]
    offline_runs: list[RunPoint] = field(default_factory=list)
    tune: list[TuneTrial] = field(default_factory=list)
    searches: list[SearchRecord] = field(default_factory=list)


def read_all(con: duckdb.DuckDBPyConnection, selection: Selection, runs: int) -> ReportData:
    """Run every figure's SQL on a `store.reader` connection."""
    sql = {
        "throughput": throughput_sql(selection),
        "failed": failed_sql(selection),
        "memory": memory_sql(selection),
        "energy": energy_sql(selection),
        "load": load_sql(selection),
        "server": server_sql(selection),
        "accuracy": accuracy_sql(selection),
        "hosts": hosts_sql(selection),
        "images": images_sql(selection),
        "runs": runs_sql(selection),
        "tune": tune_sql(selection),
        "searches": searches_sql(selection),
    }
    hosts = [
        HostRow(*r[:6], gpus=_gpus(str(r[6] or "")), runs=r[7])  # type: ignore[misc]
        for r in store.fetch(con, sql["hosts"])[1]
    ]
    return ReportData(
        selection=selection,
        runs=runs,
        queries={k: Query(k, v) for k, v in sql.items()},
        throughput=_typed(con, sql["throughput"], ThroughputPoint),
        failed=_typed(con, sql["failed"], FailedRun),
        memory=_typed(con, sql["memory"], MemoryPoint),
        energy=_typed(con, sql["energy"], EnergyPoint),
        load=_typed(con, sql["load"], LoadPhases),
        server=_typed(con, sql["server"], ServerPoint),
        accuracy=_typed(con, sql["accuracy"], AccuracyRow),
        hosts=hosts,
        images=_typed(con, sql["images"], ImageRow),
        offline_runs=_typed(con, sql["runs"], RunPoint),
        tune=_typed(con, sql["tune"], TuneTrial),
        searches=_typed(con, sql["searches"], SearchRecord),
    )
