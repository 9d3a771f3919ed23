"""The report's `index.html`: static, self-contained (no CDN, no server), readable without script.

Every figure is an <img> of its PNG (linking to the SVG), followed by what the figure leaves out
(failed runs and why, unfair precision pairs), the SQL that produced it and its numbers with the
runs each point rests on. The one inline script only records, on the <body>, whether every image
loaded and whether any script error happened: what the browser check reads.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from controller.analysis import stats
from controller.analysis.figures.data import AccuracyRow, FailedRun, Line, Query, ReportData, dims_label
from controller.analysis.figures.plots import Drawn, failure_reason, precisions, unfair
from controller.analysis.figures.summary import Estimate, SearchAnswer, SummaryRow, answers, searches

GENERATOR = "bench-ctl report"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1700px; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto; font-size: 0.85em;
      user-select: all; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.empty { color: #666; font-style: italic; } .unfair { color: #b00000; } .meta { color: #555; }
.faster { color: #006400; } .insufficient { color: #8a6d00; }
details { margin: 0.4em 0; } summary { cursor: pointer; }
"""

# Records on <body> whether every image decoded and whether a script error happened.
CHECK_SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    if (e instanceof ErrorEvent) { errors.push(String(e.message)); }
  }, true);
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
    var body = document.body;
    body.setAttribute("data-images", String(images.length));
    body.setAttribute("data-broken", broken.map(function (i) { return i.getAttribute("src"); }).join(" "));
    body.setAttribute("data-script-errors", errors.join(" | "));
    body.setAttribute("data-check", broken.length === 0 && errors.length === 0 ? "ok" : "failed");
  });
})();
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "\n".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(v)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def sql_block(query: Query) -> str:
    return (
        f"<details><summary>SQL ({esc(query.name)}): runs as it is in <code>bench-ctl query</code></summary>"
        f"<pre>{esc(query.sql)}</pre></details>"
    )


def image(drawn: Drawn, alt: str) -> str:
    return (
        f'<figure><a href="{esc(drawn.svg)}"><img src="{esc(drawn.png)}" alt="{esc(alt)}" '
        f'width="{drawn.width}" height="{drawn.height}"></a>'
        f'<figcaption class="meta">PNG; <a href="{esc(drawn.svg)}">SVG</a></figcaption></figure>'
    )


def notes(drawn: Drawn | None) -> str:
    if drawn is None or not drawn.notes:
        return ""
    return "<ul>" + "".join(f'<li class="unfair">{esc(n)}</li>' for n in drawn.notes) + "</ul>"


def data_block(title: str, content: str) -> str:
    return f"<details><summary>{esc(title)}</summary>{content}</details>"


def rows_table(rows: Sequence[Any]) -> str:
    """Typed rows (dataclasses) as a table, one column per field."""
    if not rows:
        return '<p class="empty">None.</p>'
    names = [f.name for f in fields(rows[0])]
    cells = [[_cell(getattr(r, n)) for n in names] for r in rows]
    numeric = [i for i, n in enumerate(names) if isinstance(getattr(rows[0], n), int | float)]
    return table(names, cells, numeric)


def numbers(title: str, rows: Sequence[Any]) -> str:
    """A figure's rows, folded (the runs each point rests on among them)."""
    return data_block(f"{title} ({len(rows)} rows)", rows_table(rows)) if rows else ""


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):  # the model's named dimensions
        return dims_label(value)
    return str(value)


def _failures(failed: list[FailedRun]) -> str:
    if not failed:
        return "<p>No offline run failed.</p>"
    counts = Counter(
        (
            f.model,
            f.image,
            f.variant,
            f.host,
            f.status,
            failure_reason(f.status, f.message),
            _first(f.message),
        )
        for f in failed
    )
    rows = [(*key, n) for key, n in sorted(counts.items())]
    return data_block(
        f"Missing points: {len(failed)} failed run(s), and why",
        table(["model", "image", "variant", "host", "status", "reason", "message", "runs"], rows, [7]),
    )


def _first(message: str) -> str:
    return (message.strip().splitlines() or [""])[0]


def section(anchor: str, title: str, intro: str, body: str, queries: Sequence[Query]) -> str:
    return (
        f'<section id="{anchor}"><h2>{esc(title)}</h2><p>{intro}</p>{body}'
        + "".join(sql_block(q) for q in queries)
        + "</section>"
    )


def figure(drawn: Drawn | None, alt: str, empty: str) -> str:
    """The figure with its notes, or why there is none."""
    if drawn is None:
        return f'<p class="empty">{empty}</p>'
    return image(drawn, alt) + notes(drawn)


INTRO = {
    "a": "Mean over repetitions with its 95 % Student-t interval (error bars) where a configuration ran "
    "more than once (n: runs per point), from the <code>summary</code> view; a panel per model and "
    "host. An x at the foot of a panel is a point missing because its run failed, with the reason. "
    "A dashed line computed in another precision than the fp32 lines beside it: not a fair pair. "
    "Where a panel's points differ in one of the model's named dimensions (a sweep over "
    "<code>dim.seq</code>), it is drawn against that dimension, a line per batch size: runs at other "
    "values of a dimension are never one point. Models with a sequence dimension have their tokens/s "
    "(samples/s x the sequence length) in the numbers.",
    "b": "Peak host (RSS) and device memory of each ensemble against batch size, mean over runs.",
    "c": "GPU energy for D = 4096 predictions against throughput, log-log, with a power law "
    "E = c T<sup>k</sup> fitted per device (least squares on the logarithms). The energy drawn is "
    "gross (<code>energy_j_per_4096</code>: idle power included); the numbers give the net energy "
    "beside it (<code>energy_j_per_4096_net</code>: idle power subtracted).",
    "d": "Import, model read, compile/optimize and first inference, stacked; cold (the compile cache "
    "missed or was not used) beside warm (it hit). Mean over runs.",
    "e": "p99 latency against the achieved rate; each point is one run; the dashed line is the run's "
    "<code>server.latency_bound_ms</code>; hollow points are INVALID.",
    "g": "Each offline <code>bench-ctl tune</code> search: its candidates' cells, as the store's "
    "<code>searches</code> table records them (the trials of earlier calls it went on from included), "
    "or, for trials without a record, a group id holding <code>-tune-</code>. Every trial is a point, "
    "mean latency against throughput, a colour per image and a marker per batch size; ringed points "
    "are noisy. A candidate is an image's options at a batch size; the dashed line is the Pareto front "
    "of the candidates' means (clean runs), the square an image's defaults (its varied options all at "
    "the framework's defaults) and the star its best: the one the search's answer names, by its own "
    "objective and bound (without a record, the highest mean throughput). Server searches are in the "
    "summary's table of searches; their probes are points of figure E.",
    "f": "Outputs on the reference batch against the reference (TensorFlow fp32 for exported models), "
    "and the precision each framework really computed in (worst run of each configuration): top-1/top-5 "
    "agreement for a class-score output, else the lowest cosine similarity, and the output that agreed "
    "least. Where the model has labelled data, the accuracy on it beside the fp32 reference's.",
}
EMPTY = {
    "a": "No offline results.",
    "b": "No ensemble results: <code>bench-ctl run --model resnet50,densenet201 --ensemble</code>.",
    "c": "No energy readings: energy is measured on NVIDIA GPUs (NVML), e.g. <code>--gpu 0</code>.",
    "d": "No load timings.",
    "e": "No server runs: <code>bench-ctl run ... --scenario server --sweep server.target_qps=50,100</code>.",
    "g": "No tune searches: <code>bench-ctl tune --model M --images ort,openvino -b 1,8</code>.",
}
SUMMARY_INTRO = (
    "Per model, host, batch size and value of the model's dimensions: the fastest configuration (the "
    "highest mean throughput over its clean runs, offline, the newest build of each) with its 95 % "
    "interval, as <code>bench-ctl compare</code> makes a cell, and its verdict against the runner-up by "
    "the comparison rule: {rule}. Noisy runs are left out; a difference whose interval includes 1 is "
    "never called."
)


def render(
    data: ReportData,
    figures: dict[str, Drawn | None],
    db: str,
    fastest: list[SummaryRow],
    price_per_hour: float | None = None,
) -> str:
    """The whole page; `fastest`: the summary (`summary.fastest`)."""
    q = data.queries
    sections = [
        section(
            "summary",
            "Fastest configuration per model and batch size, and each search's answer",
            SUMMARY_INTRO.format(rule=esc(stats.RULE)),
            _summary(fastest, price_per_hour, len(data.hosts)) + _answers(answers(data.searches)),
            [q["runs"], q["searches"]],
        ),
        section(
            "a",
            "A. Throughput against batch size",
            INTRO["a"],
            figure(figures["a"], "throughput against batch size", EMPTY["a"])
            + _failures(data.failed)
            + numbers("Numbers", data.throughput),
            [q["throughput"], q["failed"]],
        ),
        section(
            "b",
            "B. Memory of the ensembles",
            INTRO["b"],
            figure(figures["b"], "peak memory of ensembles", EMPTY["b"]) + numbers("Numbers", data.memory),
            [q["memory"]],
        ),
        section(
            "c",
            "C. Energy per 4096 predictions",
            INTRO["c"],
            figure(figures["c"], "energy against throughput", EMPTY["c"]) + numbers("Numbers", data.energy),
            [q["energy"]],
        ),
        section(
            "d",
            "D. Load time",
            INTRO["d"],
            figure(figures["d"], "load time by phase", EMPTY["d"]) + numbers("Numbers", data.load),
            [q["load"]],
        ),
        section(
            "e",
            "E. Server scenario",
            INTRO["e"],
            figure(figures["e"], "server p99 latency against rate", EMPTY["e"])
            + numbers("Numbers", data.server),
            [q["server"]],
        ),
        section("f", "F. Accuracy and precision", INTRO["f"], _accuracy(data), [q["accuracy"]]),
        section(
            "g",
            "G. Tune searches",
            INTRO["g"],
            figure(figures.get("g"), "tune searches: mean latency against throughput", EMPTY["g"])
            + _candidates(data)
            + numbers("Trials", data.tune),
            [q["tune"]],
        ),
        section(
            "environment",
            "Hosts, fingerprints and images",
            "Where and with what the results were measured.",
            _environment(data),
            [q["hosts"], q["images"]],
        ),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " · ".join(
        f'<a href="#{a}">{esc(n)}</a>'
        for a, n in [
            ("summary", "fastest"),
            ("a", "A throughput"),
            ("b", "B memory"),
            ("c", "C energy"),
            ("d", "D load time"),
            ("e", "E server"),
            ("f", "F accuracy"),
            ("g", "G tune"),
            ("environment", "hosts"),
        ]
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{GENERATOR}">'
        "<title>inference-bench report</title>"
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head>\n"
        '<body data-check="pending">\n'
        "<h1>inference-bench report</h1>"
        f'<p class="meta">Generated {esc(generated)} from <code>{esc(db)}</code>: {data.runs} run(s), '
        f"{len(data.hosts)} host(s). Selection: {esc(data.selection.describe())}.</p>"
        f"<nav>{nav}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _estimate(e: Estimate | None) -> str:
    """`1,234 [1,200, 1,270] (n=5)`: a mean, its 95 % interval and what it rests on."""
    if e is None:
        return ""
    text = _cell(e.value)
    if e.low is not None and e.high is not None:
        text += f" [{_cell(e.low)}, {_cell(e.high)}]"
    if e.method == "t":
        return text + f" (n={e.runs})"
    return text + (" (1 run: within-run interval)" if e.method == "batch-means" else " (1 run: no interval)")


VERDICT_CLASS = {"faster": "faster", "slower": "unfair", "insufficient data": "insufficient"}


def _summary(rows: list[SummaryRow], price_per_hour: float | None, hosts: int) -> str:
    """The summary: a row per model, host and point; cost and energy where known."""
    if not rows:
        return '<p class="empty">No offline results.</p>'
    with_energy = any(r.energy_j is not None or r.energy_net_j is not None for r in rows)
    heads = ["model", "host", "batch", "configurations", "fastest", "precision", "samples/s [95 % interval]"]
    heads += ["runner-up", "runner-up samples/s", "verdict against the runner-up"]
    if price_per_hour is not None:
        heads.append(f"$ per 1M inferences at ${price_per_hour:g}/h [95 % interval]")
    if with_energy:
        heads.append("J per inference: net (idle power subtracted) / gross")
    body = []
    for r in rows:
        cells = [
            esc(r.model), esc(r.host), esc(r.point), f"<span class=num>{r.configurations}</span>",
            f"<b>{esc(r.fastest)}</b>", esc(r.precision), esc(_estimate(r.throughput)),
            esc(r.runner_up or ""), esc(_estimate(r.runner_up_throughput)),
            f'<span class="{VERDICT_CLASS.get(r.verdict or "", "")}">{esc(r.message)}</span>',
        ]  # fmt: skip
        if price_per_hour is not None:
            cells.append(esc(_estimate(r.cost)))
        if with_energy:
            net = _cell(r.energy_net_j) if r.energy_net_j is not None else "-"
            gross = _cell(r.energy_j) if r.energy_j is not None else "-"
            cells.append(esc(f"{net} / {gross}"))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    note = ""
    if price_per_hour is not None:
        note = (
            f"<p>Cost: ${price_per_hour:g} per hour / 3600 / samples per second x 10<sup>6</sup>, the "
            "mean of each run's own, as <code>bench-ctl compare --metric cost_per_million</code> gives it."
            + (
                " One price for every host of this report: give <code>--host</code> to price one."
                if hosts > 1
                else ""
            )
            + "</p>"
        )
    return note + f"<table><thead><tr>{head}</tr></thead><tbody>" + "\n".join(body) + "</tbody></table>"


def _answers(rows: list[SearchAnswer]) -> str:
    """A row per question asked of `bench-ctl tune` (its newest answer): per model, host and
    bound, the winner with its interval and its verdict against the runner-up."""
    if not rows:
        return ""
    heads = ["model", "host", "question", "winner", "[95 % interval]", "runner-up", "verdict against it"]
    body = []
    for r in rows:
        value = esc(_estimate(r.value) + f" {r.unit}") if r.value else "-"
        stopped = f" <small>({esc(r.stopped)})</small>" if r.stopped else ""
        cells = [
            esc(r.model), esc(r.host), esc(r.question) + f"<br><small>{esc(r.search_id)}</small>",
            f"<b>{esc(r.winner or 'none: no candidate held the bound or ran')}</b>", value,
            esc(r.runner_up or "-"), esc(r.verdict or "-") + stopped,
        ]  # fmt: skip
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    return (
        "<h3>Searches: each question asked of <code>bench-ctl tune</code></h3>"
        "<p>The newest answer to each question (model, host, images, scenario, objective, bound and "
        "batch sizes), from the store's <code>searches</code> table: the winner by the search's own "
        "objective under its bound (a server search's is the highest rate that held p99 under it), "
        "with its 95 % interval over its runs and the comparison rule's verdict against the "
        "runner-up, as the search printed them.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>" + "\n".join(body) + "</tbody></table>"
    )


def _candidates(data: ReportData) -> str:
    """G's numbers: each search's candidates, their means over clean runs, which is marked."""
    rows = []
    for s in searches(data.tune, data.searches):
        front = {c.label for c in s.front}
        best = {c.label for c in s.best}
        for c in s.candidates:
            marks = ", ".join(
                m
                for m, on in (
                    ("defaults", c.is_default),
                    ("best", c.label in best),
                    ("front", c.label in front),
                )
                if on
            )
            rows.append(
                [
                    s.model,
                    s.group_id,
                    c.label,
                    len(c.trials),
                    _cell(c.throughput_sps),
                    _cell(c.latency_mean_ms),
                    marks,
                ]
            )
    if not rows:
        return ""
    heads = ["model", "search", "candidate", "trials", "samples/s", "mean latency ms", "marked"]
    return data_block(f"Candidates ({len(rows)} rows)", table(heads, rows, [3, 4, 5]))


def _accuracy(data: ReportData) -> str:
    """F: a row per configuration; one computed in another precision than fp32 configurations of the
    same model and host is marked, as in figure A."""
    if not data.accuracy:
        return '<p class="empty">No run checked its outputs.</p>'
    used = {_accuracy_line(r): precisions([r.precision]) for r in data.accuracy}
    marked: dict[Line, str] = {}
    for key in {(line.model, line.host) for line in used}:
        marked.update(unfair({line: ps for line, ps in used.items() if (line.model, line.host) == key}))
    with_dims = any(r.dims for r in data.accuracy)
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            *("model", "image", "variant", "host", *(["dims"] if with_dims else [])),
            *("framework", "precision used", "reference", "worst output", "runs"),
            *("max abs err", "rel err", "top-1 agreement", "top-5 agreement", "cosine min"),
            *("data top-1 (fp32)", "data top-5 (fp32)"),
        )
    )
    rows = []
    for r in data.accuracy:
        line = _accuracy_line(r)
        flag = f" ({marked[line]} beside fp32: unfair)" if line in marked else ""
        cells = [
            *(r.model, r.image, r.variant, r.host, *([dims_label(r.dims)] if with_dims else [])),
            *(r.framework, f"{r.precision or ''}{flag}", r.reference, r.worst_output),
        ]
        measured: list[Any] = [
            r.runs,
            r.max_abs_err,
            r.rel_err,
            r.top1_agreement,
            r.top5_agreement,
            r.cosine_min,
        ]
        measured += [_beside(r.data_top1, r.data_fp32_top1), _beside(r.data_top5, r.data_fp32_top5)]
        rows.append(
            f"<tr{' class=unfair' if flag else ''}>"
            + "".join(f"<td>{esc(c)}</td>" for c in cells)
            + "".join(f"<td class=num>{esc(_cell(v))}</td>" for v in measured)
            + "</tr>"
        )
    note = "<p>Error and agreement are of the worst run of each configuration.</p>"
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table>"
    return note + table_html + _per_output(data.accuracy)


def _accuracy_line(r: AccuracyRow) -> Line:
    return Line(r.model, r.image, r.variant, r.host, dims_label(r.dims))


def _beside(value: float | None, fp32: float | None) -> str:
    """An accuracy on the labelled data beside the fp32 reference's: `76.0 % (fp32 76.1 %)`."""
    if value is None:
        return ""
    return f"{100 * value:.1f} %" + (f" (fp32 {100 * fp32:.1f} %)" if fp32 is not None else "")


def _per_output(rows: Sequence[AccuracyRow]) -> str:
    """Agreement per output of the worst run of each configuration with more than one output."""
    lines = []
    for r in rows:
        try:
            outputs = json.loads(r.outputs) if r.outputs else []
        except json.JSONDecodeError:
            continue
        if not isinstance(outputs, list) or len(outputs) < 2:
            continue
        for o in outputs:
            if isinstance(o, dict):
                lines.append(
                    [_accuracy_line(r).label(True), o.get("name")]
                    + [_cell(o.get(k)) for k in ("max_abs_err", "rel_err", "top1_agreement")]
                    + [_cell(o.get(k)) for k in ("top5_agreement", "cosine_min")]
                )
    if not lines:
        return ""
    heads = ["configuration", "output", "max abs err", "rel err", "top-1 agreement", "top-5 agreement"]
    return data_block(
        f"Agreement per output ({len(lines)} rows)", table([*heads, "cosine min"], lines, [2, 3, 4, 5, 6])
    )


def _environment(data: ReportData) -> str:
    return (
        "<h3>Hosts</h3>"
        + rows_table(data.hosts)
        + "<h3>Images and environments</h3>"
        + rows_table(data.images)
    )
