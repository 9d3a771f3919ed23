"""Rich rendering of service results. Commands print these, or JSON with --json."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from controller.analysis import stats
from controller.analysis.metrics import describe
from controller.analysis.reports import (
    BuildPair,
    Cell,
    CompareRow,
    Comparison,
    DataScore,
    HostPair,
    HostPairRow,
    VerdictCell,
)
from controller.cli.console import printable, safe

if TYPE_CHECKING:
    from controller.catalog.models import ModelEntry
    from controller.launch.build import ImageStatus
    from controller.run.colocate import Colocated
from controller import store
from schemas import Accuracy, Measurement, RunResult

STATUS_STYLE = {
    "ok": "green",
    "error": "red",
    "timeout": "red",
    "unsupported": "yellow",
    "cancelled": "yellow",
    "preempted": "yellow",
    "node_fail": "red",
}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def table(console: Console, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(*(safe(c) for c in cols), show_lines=False)
    for row in rows:
        t.add_row(*(safe(_fmt(v)) for v in row))
    console.print(t)
    console.print(f"[dim]{len(rows)} row(s)[/]")


def csv_rows(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """CSV on stdout: the values as stored into a pipe or file (it is data), with control
    characters escaped when a terminal shows it."""
    w = csv.writer(sys.stdout)
    if sys.stdout.isatty():
        w.writerow([printable(c) for c in cols])
        w.writerows([printable(_csv_value(v)) for v in row] for row in rows)
        return
    w.writerow(cols)
    w.writerows(rows)


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def run_summary(console: Console, result: RunResult, run_dir: Path) -> None:
    style = STATUS_STYLE.get(result.status, "white")
    launch = result.launch
    head = (
        f"[bold]{safe(result.spec.image)}[/] / {safe(result.framework)} "
        f"{safe(result.framework_version or '')}"
        f" on {safe(result.spec.model)}{safe(dims_text(result.spec.dims, ' '))}, {result.spec.device}: "
        f"[{style}]{result.status}[/]"
    )
    console.print(head)
    if result.message:
        console.print(f"  [{style}]{safe(result.message, lines=True)}[/]", soft_wrap=True)
        if (run_dir / "runner.log").exists():
            console.print(f"  [dim]runner log: {safe(run_dir)}/runner.log[/]")
    if result.phases:
        phases = ", ".join(
            f"{safe(p.name)} {p.seconds:.2f}s"
            + ("" if p.cache_hit is None else (" (cache hit)" if p.cache_hit else " (cache miss)"))
            for p in result.phases
        )
        console.print(f"  load {result.load_time_s:.2f}s: {phases}")
    if result.accuracy:
        a = result.accuracy
        console.print(f"  precision {safe(result.precision)}; vs {safe(a.reference)}: {agreement_text(a)}")
        if a.data is not None:
            d = a.data
            fp32 = f" (fp32 {d.fp32_top1:.1%})" if d.fp32_top1 is not None else ""
            top5 = f", top-5 {d.top5:.1%}" if d.top5 is not None else ""
            console.print(f"  accuracy on {d.samples} labelled samples: top-1 {d.top1:.1%}{fp32}{top5}")
    if result.measurements:
        tokens = any(m.tokens_per_s is not None for m in result.measurements)
        t = Table(
            "batch", "samples/s", *(["tokens/s"] if tokens else []), "p50 ms", "p90 ms", "p99 ms",
            "iterations", "stable", "peak RSS MB", "other load",
        )  # fmt: skip
        for m in result.measurements:
            t.add_row(
                str(m.batch_size),
                f"{m.throughput_sps:,.1f}",
                *([_fmt_rate(m.tokens_per_s)] if tokens else []),
                f"{m.latency_p50_ms:.3f}",
                f"{m.latency_p90_ms:.3f}",
                f"{m.latency_p99_ms:.3f}",
                str(m.iterations),
                "yes" if m.stable else "[yellow]no[/]",
                _fmt(m.peak_host_mem_mb),
                noise_text(m),
            )
        console.print(t)
        for m in result.measurements:
            if m.scenario == "server":
                verdict = (
                    "[green]VALID[/]" if m.valid else f"[red]INVALID[/] ({safe(m.invalid_reason or '')})"
                )
                hist = safe(", ".join(f"{k}: {v}" for k, v in (m.batch_histogram or {}).items()))
                console.print(
                    f"  server: target {m.target_qps:g} qps, offered {m.offered_qps or 0:,.1f}, "
                    f"achieved {m.achieved_qps or 0:,.1f}; mean {m.latency_mean_ms:.3f} ms = queueing "
                    f"{m.queueing_mean_ms or 0:.3f} + compute {m.compute_mean_ms or 0:.3f}; "
                    f"p99.9 {m.latency_p999_ms or 0:.3f} ms; batches formed {hist} "
                    f"(mean {m.mean_batch or 0:.2f}, padding {m.padding_waste or 0:.0%}): {verdict}",
                    soft_wrap=True,
                )
            if m.scenario == "multi-stream":
                verdict = (
                    "[green]VALID[/]" if m.valid else f"[red]INVALID[/] ({safe(m.invalid_reason or '')})"
                )
                console.print(
                    f"  multi-stream: {m.achieved_qps or 0:,.1f} queries/s of {m.batch_size}; p99 "
                    f"{m.latency_p99_ms:.3f} ms per query (waiting {m.queueing_mean_ms or 0:.3f} ms on "
                    f"average): {verdict}",
                    soft_wrap=True,
                )
            for mm in m.members or []:
                console.print(
                    f"  batch {m.batch_size}: {safe(mm.model)} alone "
                    f"{mm.alone_throughput_sps:,.1f} samples/s, "
                    f"{mm.alone_latency_mean_ms:.2f} ms -> {mm.together_latency_mean_ms:.2f} ms together "
                    f"(slowdown x{mm.slowdown:.2f})"
                )
    run_warnings(console, result)
    where = f"{launch.launcher} ({launch.image_ref})" if launch else "?"
    raw = safe(run_dir / "result.json")
    console.print(f"  [dim]run {safe(result.run_id)} via {safe(where)}; raw result {raw}[/]")


def dims_text(dims: dict[str, int], lead: str = "") -> str:
    """A run's named dimensions, `seq=128 heads=12` ('' when the model has none)."""
    return lead + " ".join(f"{k}={v}" for k, v in sorted(dims.items())) if dims else ""


def _fmt_rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.1f} %"


def data_text(d: DataScore) -> str:
    """Accuracy on the user's labelled data beside the fp32 reference's on the same samples."""
    return f"data top-1 {_pct(d.top1)}" + (f" vs fp32 {_pct(d.fp32_top1)}" if d.fp32_top1 is not None else "")


def noise_text(m: Measurement) -> str:
    """Other load during a measurement and what it cost the runner: the cores busy elsewhere,
    the share of time its threads waited for a CPU, the windows left out, the wait for quiet."""
    if m.other_cpu_cores is None and m.starved_share is None:
        return ""
    parts = [f"{m.other_cpu_cores:.2f} cores" if m.other_cpu_cores is not None else "? cores"]
    if m.starved_share is not None:
        parts.append(f"starved {m.starved_share:.0%}")
    if m.windows_discarded:
        parts.append(f"{m.windows_discarded} windows ({m.discarded_s or 0:.1f}s) left out")
    if m.quiet_wait_s:
        parts.append(f"waited {m.quiet_wait_s:.1f}s")
    text = ", ".join(parts)
    return f"[yellow]noisy:[/] {text}" if m.noisy else text


UNFAITHFUL_REL_ERR = 0.05  # max abs error over the reference's output range beyond which a cell is marked


def plus_minus(value: float, half_width: float | None) -> str:
    """`value ± half-width`, both to the half-width's second significant digit."""
    if half_width is None or half_width <= 0 or not math.isfinite(half_width):
        return f"{value:,.4g}"
    decimals = max(0, 1 - math.floor(math.log10(half_width)))
    return f"{value:,.{decimals}f} ± {half_width:,.{decimals}f}"


def _cell_text(cell: Cell, tokens: bool = False) -> str:
    """A cell: mean ± half-width, its runs, flags; with `tokens` (throughput of a model with a
    sequence dimension) its tokens/s; then the precision, error and accuracy on labelled data."""
    hw = cell.half_width
    if cell.method == "t" and hw is not None:
        text = f"{plus_minus(cell.value, hw)} [dim](n={cell.runs})[/]"
    elif cell.method == "batch-means" and hw is not None:
        text = f"{plus_minus(cell.value, hw)} [dim](1 run: within-run interval)[/]"
    else:
        text = f"{cell.value:,.4g} [dim](1 run: no interval)[/]"
    if cell.noisy:
        text += " [yellow]noisy[/]"
    elif cell.noisy_left_out:
        text += f" [dim]({cell.noisy_left_out} noisy left out)[/]"
    if cell.rel_err is not None and cell.rel_err > UNFAITHFUL_REL_ERR:
        text += " [red]outputs differ[/]"
    if tokens and cell.tokens_per_s is not None:
        text += f"\n[dim]{cell.tokens_per_s:,.0f} tokens/s[/]"
    extra = " ".join(
        x for x in (cell.precision or "", f"err {cell.rel_err:.1e}" if cell.rel_err is not None else "") if x
    )
    text += f"\n[dim]{safe(extra)}[/]" if extra else ""
    return text + (f"\n{data_text(cell.data)}" if cell.data else "")


VERDICT_STYLE = {
    "faster": "green",
    "slower": "red",
    "no significant difference": "dim",
    "insufficient data": "yellow",
}


def _verdict_text(v: VerdictCell) -> str:
    # Bounds get the digits that keep them off 1 when they are: the printed interval is the one judged.
    ratio = "x" + stats.ratio_text(v.ratio, v.ratio_low, v.ratio_high)
    word: str = "n.s." if v.verdict == "no significant difference" else v.verdict
    word += f": {v.note}" if v.note else ""
    return f"[{VERDICT_STYLE[v.verdict]}]{safe(ratio)} {word}[/]"


def comparison(console: Console, cmp: Comparison) -> None:
    where = cmp.hosts[0] if len(cmp.hosts) == 1 else f"{len(cmp.hosts)} hosts"
    better = "higher is better" if cmp.higher_is_better else "lower is better"
    with_dims = any(row.dims for row in cmp.rows)
    title = (
        f"{safe(cmp.model)}: {safe(describe(cmp.metric, cmp.price_per_hour))} ({better}), "
        f"mean ± 95% half-width, on {safe(where)}"
    )
    names = [safe(label) + (" (baseline)" if label == cmp.baseline else "") for label in cmp.labels]
    points = [safe(row.point) if with_dims else str(row.batch_size) for row in cmp.rows]
    texts = [[_compare_text(cmp, row, label) for label in cmp.labels] for row in cmp.rows]
    t = _grid(title, "batch, dims" if with_dims else "batch", names, points, texts)
    # Configurations become the rows when there are more of them than points and a column each
    # would not fit: cells squeezed to a few characters each say nothing.
    unbounded = console.options.update(max_width=UNBOUNDED)
    as_rows = len(names) > len(points) and console.measure(t, options=unbounded).maximum > console.width
    if as_rows:
        heads = [safe(row.point) for row in cmp.rows]  # b8, b8 seq=64
        t = _grid(title, "configuration", heads, names, [list(col) for col in zip(*texts, strict=True)])
    console.print(t)
    notes = ["err: max abs error on the reference batch relative to the reference's output range"]
    if as_rows:
        notes.append("a row per configuration: too many for a column each at this width")
    if any(c.data for row in cmp.rows for c in row.cells.values()):
        notes.append("data top-1: accuracy on the model's labelled samples, beside the fp32 reference's")
    if with_dims:
        notes.append("a row per batch size and value of the model's dimensions: never pooled across them")
    if cmp.baseline:
        notes.append(f"xR [low, high]: ratio to {cmp.baseline} and its 95% interval; verdict: {cmp.rule}")
    every = [c for row in cmp.rows for c in row.cells.values()]
    if any(c.runs == 1 for c in every):
        notes.append("cells of one run have no interval across runs: use --repeat 5")
    if any(c.noisy_left_out for c in every):
        notes.append(
            "noisy: runs whose runner other load starved; left out of cells and verdicts "
            "(--include-noisy counts them)"
        )
    wide = [c for c in every if c.half_width is not None and c.half_width > 0.1 * abs(c.value)]
    noisy = [c for c in every if c.noisy]
    unfaithful = [c for c in every if c.rel_err is not None and c.rel_err > UNFAITHFUL_REL_ERR]
    if unfaithful:
        console.print(
            f"[red]warning:[/] {len(unfaithful)} cell(s) computed outputs more than "
            f"{UNFAITHFUL_REL_ERR:.0%} of the reference's range away from it (see err and precision): "
            "their speed is not comparable with faithful ones",
            soft_wrap=True,
        )
    if noisy or wide:
        console.print(
            f"[yellow]warning:[/] {len(noisy)} cell(s) made of runs that other load starved (noisy), "
            f"{len(wide)} with an interval wider than ±10%: rerun on a quiet host for a sharper answer",
            soft_wrap=True,
        )
    for note in [*notes, *cmp.left_out, *cmp.not_shown]:
        console.print(f"[dim]{safe(note)}[/]", soft_wrap=True)


UNBOUNDED = 10**5  # characters: a table measured without the terminal's width, as wide as it would be


def _compare_text(cmp: Comparison, row: CompareRow, label: str) -> str:
    """One configuration's cell of a comparison at one point, with its verdict under it."""
    cell = row.cells.get(label)
    text = _cell_text(cell, cmp.metric == "throughput_sps") if cell else ""
    if label in row.verdicts:
        text += "\n" + _verdict_text(row.verdicts[label])
    return text


def _grid(title: str, corner: str, heads: list[str], names: list[str], cells: list[list[str]]) -> Table:
    """A table of a column per head and a row per name. Headers and names fold onto more lines
    where they must, never cut to an ellipsis: a label is the configuration it names."""
    t = Table(title=title)
    for head in [corner, *heads]:
        t.add_column(head, overflow="fold")
    for name, row in zip(names, cells, strict=True):
        t.add_row(name, *row)
    return t


def host_pair(console: Console, pair: HostPair) -> None:
    """One row per configuration and batch size: the old host, the new one, and new/old."""
    title = f"{safe(pair.new_host)} against {safe(pair.old_host)}"
    _pair(console, pair.model, describe(pair.metric, pair.price_per_hour), pair.higher_is_better, title,
          pair.old_host, pair.new_host, pair.rows, [f"verdict: {pair.rule}", *pair.left_out])  # fmt: skip


def build_pair(console: Console, pair: BuildPair) -> None:
    """One row per configuration and batch size: the old build, the new one, and new/old."""
    title = f"two builds of {safe(pair.image)} on {safe(pair.host)}"
    notes = [f"old: {pair.old_build}", f"new: {pair.new_build}", f"verdict: {pair.rule}", *pair.left_out]
    _pair(console, pair.model, describe(pair.metric, pair.price_per_hour), pair.higher_is_better, title,
          pair.old_build, pair.new_build, pair.rows, notes)  # fmt: skip


def _pair(
    console: Console,
    model: str,
    metric: str,
    higher_is_better: bool,
    title: str,
    old: str,
    new: str,
    rows: Sequence[HostPairRow],
    notes: list[str],
) -> None:
    better = "higher is better" if higher_is_better else "lower is better"
    with_dims = any(row.dims for row in rows)
    tokens = metric == "throughput_sps"
    t = Table(
        "configuration",
        "batch, dims" if with_dims else "batch",
        safe(old) + " (old)",
        safe(new) + " (new)",
        "new/old [95% interval], verdict",
        title=f"{safe(model)}: {safe(metric)} ({better}), mean ± 95% half-width, {title}",
    )
    for row in rows:
        t.add_row(
            safe(row.label),
            safe(row.point) if with_dims else str(row.batch_size),
            _cell_text(row.old, tokens) if row.old else "[dim]not measured[/]",
            _cell_text(row.new, tokens) if row.new else "[dim]not measured[/]",
            _verdict_text(row.verdict) if row.verdict else "",
        )
    console.print(t)
    for note in notes:
        console.print(f"[dim]{safe(note)}[/]", soft_wrap=True)


def run_lines(console: Console, results: Sequence[RunResult]) -> None:
    """One line per run of a command that made several."""
    for r in results:
        style = STATUS_STYLE.get(r.status, "white")
        what = f"{r.spec.image} {r.spec.model}" + (f" [{store.variant(r)}]" if store.variant(r) else "")
        what += dims_text(r.spec.dims, " ")
        rep = f" #{r.spec.repetition}" if r.spec.repetition else ""
        load = f" load {r.load_time_s:.2f}s" if r.load_time_s is not None else ""
        hit = next((p.cache_hit for p in r.phases if p.name == "compile"), None)
        cache = "" if hit is None else (" (warm)" if hit else " (cold)")
        # what other load did to each measurement, as the table of a single run shows it
        noise = "".join(f"; batch {m.batch_size}: {noise_text(m)}" for m in r.measurements if noise_text(m))
        line = f"{safe(what)}{rep}: [{style}]{r.status}[/]{load}{cache}{noise}"
        if r.message:
            line += f" [{style}]{safe(r.message)}[/]"
        console.print(line, soft_wrap=True)
        run_warnings(console, r)


def run_warnings(console: Console, result: RunResult) -> None:
    """What may keep a run's figures from the framework's best here (threads beyond the cores)."""
    for warning in result.warnings:
        console.print(f"  [yellow]warning:[/] {safe(warning)}", soft_wrap=True)


def peak(console: Console, probes: Sequence[RunResult], peak_qps: float | None) -> None:
    """The probes of a --find-peak search, by rate, and the peak."""
    t = Table(
        "target qps", "offered qps", "achieved qps", "p50 ms", "p99 ms", "mean batch", "other load",
        "verdict", "run",
    )  # fmt: skip
    for r in sorted(probes, key=lambda r: r.measurements[0].target_qps or 0 if r.measurements else 0):
        if not r.measurements:
            t.add_row("", "", "", "", "", "", "", f"[red]{r.status}[/]", safe(r.run_id))
            continue
        m = r.measurements[0]
        t.add_row(
            f"{m.target_qps or 0:,.1f}",
            f"{m.offered_qps or 0:,.1f}",
            f"{m.achieved_qps or 0:,.1f}",
            f"{m.latency_p50_ms:.3f}",
            f"{m.latency_p99_ms:.3f}",
            f"{m.mean_batch or 0:.2f}",
            noise_text(m),
            "[green]VALID[/]" if m.valid else f"[red]INVALID[/] {safe(m.invalid_reason or '')}",
            safe(r.run_id),
        )
    console.print(t)
    if peak_qps is None:
        console.print("  peak: no probed rate was VALID; start lower with --set server.target_qps=N")
    else:
        console.print(f"  peak: {peak_qps:,.1f} queries/s held (VALID, p99 within the bound)")


def group_summary(console: Console, comparisons: Sequence[Comparison]) -> None:
    for cmp in comparisons:
        comparison(console, cmp)


def images(console: Console, rows: Sequence[ImageStatus]) -> None:
    t = Table("image", "framework", "version", "devices", "docker image", "size", "lock", "local env")
    for r in rows:
        built = (
            safe(r.image_id[7:19])
            if r.image_id
            else ("[dim]not built[/]" if r.buildable else "[yellow]not buildable here[/]")
        )
        if r.image_id and r.image_stale:
            built += " [yellow](stale)[/]"
        size = f"{r.size_mb:,.0f} MB" if r.size_mb else ""
        t.add_row(
            safe(r.name),
            safe(r.framework),
            safe(r.framework_version or ""),
            safe(",".join(r.devices)),
            built,
            size,
            safe((r.lock_hash or "")[:12]),
            safe(r.local_env),
        )
    console.print(t)
    for r in rows:
        if r.skip_reason:
            console.print(f"[dim]{safe(r.name)}: {safe(r.skip_reason)}[/]", soft_wrap=True)


def models(console: Console, entries: Sequence[ModelEntry]) -> None:
    if not entries:
        console.print("no models yet; export one: bench-ctl models export mobilenetv2")
        return
    t = Table(
        "model",
        "source",
        "input",
        "layout",
        "parameters",
        "GFLOPs/sample",
        "reference",
        "MB",
        "export peak MB",
    )
    for e in entries:
        shape = "x".join("N" if d is None else str(d) for d in e.input_shape)
        t.add_row(
            safe(e.name),
            safe(e.source),
            safe(shape),
            safe(e.input_layout or ""),
            f"{e.parameters:,}" if e.parameters else "",
            f"{e.flops_per_sample / 1e9:.2f}" if e.flops_per_sample else "",
            safe(e.reference),
            f"{e.size_mb:.1f}",
            f"{e.export_peak_mem_mb:,.0f}" if e.export_peak_mem_mb else "",
        )
    console.print(t)


def colocated(console: Console, c: Colocated) -> None:
    heads = [f"{safe(m.model)}: alone / co-located / slowdown" for m in c.rows[0].members]
    t = Table("batch", "ensemble predictions/s", *heads, title=f"co-located processes ({safe(c.group)})")
    for row in c.rows:
        cells = [
            f"{m.alone_sps:,.1f} / {m.colocated_sps:,.1f} / x{m.slowdown:.2f}"
            if m.slowdown and m.alone_sps and m.colocated_sps
            else "failed"
            for m in row.members
        ]
        t.add_row(str(row.batch_size), f"{row.ensemble_sps:,.1f}" if row.ensemble_sps else "", *cells)
    console.print(t)
    console.print(
        "[dim]ensemble predictions/s: the slowest member co-located (each prediction needs every member); "
        "slowdown: throughput alone / co-located[/]"
    )


def agreement_text(a: Accuracy) -> str:
    """The reference check in words: the worst output's errors, top-1/top-5 where an output is
    class scores, the lowest cosine similarity otherwise, and which output was worst."""
    text = f"max abs err {a.max_abs_err:.3g} (rel {a.rel_err:.3g})"
    if a.top1_agreement is not None:
        text += f", top-1 {a.top1_agreement:.0%}"
        if a.top5_agreement is not None:
            text += f", top-5 {a.top5_agreement:.0%}"
    elif a.cosine_min is not None:
        text += f", cosine >= {a.cosine_min:.6f}"
    if len(a.outputs) > 1 and a.worst_output:
        text += f"; worst of {len(a.outputs)} outputs: {safe(a.worst_output)}"
    return text
