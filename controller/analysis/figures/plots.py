"""The report's figures, drawn with matplotlib (Agg, no display) into PNG and SVG files.

Each function takes the rows `data.read_all` read and returns the files it wrote, or None when
there is nothing to draw (the page then says so). Colours follow the image, so a framework has
the same colour in every figure; a line whose precision is not the fp32 of its neighbours is
dashed and labelled (an unfair pair); a point that is missing because its run failed is an x at
the foot of the panel with the reason.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib draws: never a display

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from controller.analysis.figures.data import (
    EnergyPoint,
    FailedRun,
    Line,
    LoadPhases,
    MemoryPoint,
    SearchRecord,
    ServerPoint,
    ThroughputPoint,
    TuneTrial,
    dims_label,
)
from controller.analysis.figures.summary import searches

DPI = 100
MIN_WIDTH = 8.0  # inches: room for a figure's title above a single panel and its legend
SUPTITLE = 0.4
LEGEND_CHARS = 38  # characters of a legend line at 7 points in Layout.legend inches
COLORS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
PHASE_COLORS = {
    "import": "#9ecae1",
    "model read": "#4292c6",
    "compile": "#fd8d3c",
    "first inference": "#74c476",
}
# Each figure's files, NAME.png and NAME.svg: the names a report folder may hold of ours.
FIGURE_NAMES = {
    "a": "a_throughput",
    "b": "b_memory",
    "c": "c_energy",
    "d": "d_load_time",
    "e": "e_server",
    "g": "g_tune",
}
FAIR_PRECISION = "fp32"  # the reference's precision; "none" (the null runner) compares with anything


@dataclass(frozen=True)
class Drawn:
    """A figure written as `NAME.png` and `NAME.svg` in the report's folder."""

    name: str
    width: int
    height: int
    notes: list[str] = field(default_factory=list)

    @property
    def png(self) -> str:
        return f"{self.name}.png"

    @property
    def svg(self) -> str:
        return f"{self.name}.svg"


class Palette:
    """One colour per image, one marker per variant, the same in every figure of a report."""

    def __init__(self, images: Iterable[str], variants: Iterable[str]) -> None:
        self._color = {name: COLORS[i % len(COLORS)] for i, name in enumerate(sorted(set(images)))}
        self._marker = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(sorted(set(variants)))}

    def color(self, image: str) -> str:
        return self._color.get(image, "#333333")

    def marker(self, variant: str) -> str:
        return self._marker.get(variant, "o")


def failure_reason(status: str, message: str) -> str:
    """A short reason for a failed run: what the study's bare gaps never said."""
    low = message.lower()
    if status == "unsupported":
        return "unsupported"
    if status == "timeout":
        return "timeout"
    if "out of memory" in low or "oom" in low.split() or "memoryerror" in low or "cannot allocate" in low:
        return "out of memory"
    if any(w in low for w in ("compile", "build", "convert", "unsupported op")):
        return "compile error"
    return "error"


def precisions(values: Iterable[str | None]) -> set[str]:
    """Precisions that matter for fairness (the null runner's 'none' does not)."""
    out: set[str] = set()
    for v in values:
        out.update(p for p in (v or "").split(",") if p and p != "none")
    return out


def unfair(line_precisions: dict[Line, set[str]]) -> dict[Line, str]:
    """Lines computed in another precision than fp32 lines beside them: {line: 'bf16'}."""
    everything = set().union(*line_precisions.values()) if line_precisions else set()
    if FAIR_PRECISION not in everything or len(everything) < 2:
        return {}
    return {
        line: ",".join(sorted(ps - {FAIR_PRECISION}))
        for line, ps in line_precisions.items()
        if ps - {FAIR_PRECISION}
    }


@dataclass(frozen=True)
class Layout:
    """A grid of panels placed by hand, in inches: a legend column right of each panel, room for
    a two-line title above it and tick labels below. (Matplotlib's constrained layout measures
    every label twice per save: over many panels, most of the report's time.)"""

    panel: tuple[float, float] = (4.3, 2.9)
    left: float = 0.85
    legend: float = 2.4
    bottom: float = 0.6
    title: float = 0.75  # up to four lines: model, host, unfair pair, noisy points


def _figure(panels: int, cols: int, layout: Layout = Layout()) -> tuple[Figure, list[Axes]]:
    """A figure of `panels` panels in rows of `cols`, and a title line above them."""
    cols = max(1, min(cols, panels))
    rows = math.ceil(panels / cols)
    cell_w = layout.left + layout.panel[0] + layout.legend
    cell_h = layout.title + layout.panel[1] + layout.bottom
    width, height = max(cell_w * cols, MIN_WIDTH), cell_h * rows + SUPTITLE
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = []
    for i in range(panels):
        row, col = divmod(i, cols)
        x0 = col * cell_w + layout.left
        y0 = height - SUPTITLE - (row + 1) * cell_h + layout.bottom
        axes.append(
            fig.add_axes((x0 / width, y0 / height, layout.panel[0] / width, layout.panel[1] / height))
        )
    return fig, axes


def _suptitle(fig: Figure, text: str) -> None:
    height = fig.get_size_inches()[1]
    fig.text(0.5, 1 - 0.12 / height, text, ha="center", va="top", fontsize=11)


def _legend(ax: Axes) -> None:
    """The legend beside the panel, where it hides no line."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # Long labels (a variant's options) wrap inside the legend column instead of leaving the figure.
        wrapped = [textwrap.fill(label, LEGEND_CHARS, subsequent_indent="  ") for label in labels]
        ax.legend(
            handles, wrapped, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0
        )


def _panels(keys: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """(model, host) panels, ensembles last, and the columns: one per host when there are a few."""
    panels = sorted(set(keys), key=lambda k: ("+" in k[0], k[0], k[1]))
    hosts = len({h for _, h in panels})
    return panels, hosts if 1 < hosts <= 3 else 2


def _save(fig: Figure, folder: Path, name: str, notes: list[str]) -> Drawn:
    fig.savefig(folder / f"{name}.png", dpi=DPI)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, faster, searchable
        fig.savefig(folder / f"{name}.svg")
    w, h = fig.get_size_inches()
    return Drawn(name=name, width=round(w * DPI), height=round(h * DPI), notes=notes)


def _plain(value: float, _pos: object = None) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _log2_batch_axis(ax: Axes, sizes: Sequence[int], label: str = "batch size") -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(sizes))
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    if ticks:
        ax.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.4)
    ax.set_xlabel(label)


def _log_y(ax: Axes, values: Iterable[float], base: int = 2) -> None:
    """A log y axis with plain numbers, when the values span enough of it to carry labelled ticks
    (a narrower span stays linear rather than showing an axis without numbers)."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= base * 2:
        ax.set_yscale("log", base=base)
        if base == 10:
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))


def _title(model: str, host: str) -> str:
    """A panel's title; a long one on two lines, so it is not wider than its panel."""
    return f"{model} @ {host}" if len(model) + len(host) < 40 else f"{model}\n@ {host}"


def _noisy(flags: Iterable[bool | None]) -> str:
    """A title's note of the points with noisy runs (other load starved the runner), ringed."""
    values = list(flags)
    busy = sum(1 for f in values if f)
    return f"\n{busy} of {len(values)} points with noisy runs (ringed)" if busy else ""


NOISY_RING = "#e08000"


def _ring_noisy(ax: Axes, xs: Sequence[float], ys: Sequence[float], noisy: Sequence[bool | None]) -> None:
    """A ring around each point made with noisy runs: its value may be low because of other load."""
    ring = [(x, y) for x, y, n in zip(xs, ys, noisy, strict=True) if n]
    if ring:
        ax.scatter(
            [x for x, _ in ring], [y for _, y in ring], s=90, facecolors="none", edgecolors=NOISY_RING,
            linewidths=1.5, zorder=5,
        )  # fmt: skip


def _runs_label(counts: Iterable[int]) -> str:
    c = sorted(set(counts))
    if not c:
        return ""
    return f"n={c[0]}" if len(c) == 1 else f"n={c[0]}-{c[-1]}"


def _missing_x(failed: FailedRun, panel_sizes: Sequence[int]) -> int:
    """Where a failed run's missing point goes: the first batch size it did not reach."""
    if not failed.measured:
        return min(panel_sizes) if panel_sizes else 1
    last = max(failed.measured)
    later = [b for b in panel_sizes if b > last]
    return min(later) if later else last * 2


def axis_dim(points: Sequence[ThroughputPoint]) -> str | None:
    """The dimension a panel is drawn against: one whose value differs between its points (the
    model's sequence dimension first); None when every point has the same dimensions."""
    values: dict[str, set[int]] = defaultdict(set)
    for p in points:
        for k, v in (p.dims or {}).items():
            values[k].add(v)
    varying = sorted(k for k, vs in values.items() if len(vs) > 1)
    if not varying:
        return None
    first = sorted({p.sequence_dim for p in points if p.sequence_dim in varying} - {None})
    return str(first[0]) if first else varying[0]


@dataclass(frozen=True)
class Panel:
    """How a panel of figure A is drawn: against batch size (`axis` None), a line per
    configuration; or against the dimension `axis`, a line per configuration and batch size. The
    dimensions every point shares go in the title; others that vary, in the line's label."""

    axis: str | None
    shared: str

    def x(self, p: ThroughputPoint) -> int | None:
        return p.batch_size if self.axis is None else (p.dims or {}).get(self.axis)

    def line(self, p: ThroughputPoint | FailedRun, batch_size: int | None = None) -> Line:
        other = {k: v for k, v in (p.dims or {}).items() if k != self.axis and k not in self.shared_names}
        parts = ([f"b{batch_size}"] if self.axis is not None and batch_size is not None else []) + [
            dims_label(other)
        ]
        return Line(p.model, p.image, p.variant, p.host, " ".join(x for x in parts if x))

    @property
    def shared_names(self) -> set[str]:
        return {pair.split("=")[0] for pair in self.shared.split()}


def panel_of(points: Sequence[ThroughputPoint]) -> Panel:
    axis = axis_dim(points)
    values: dict[str, set[int | None]] = defaultdict(set)
    for p in points:
        for k in {k for q in points for k in (q.dims or {})}:
            values[k].add((p.dims or {}).get(k))
    shared = {k: next(iter(vs)) for k, vs in values.items() if len(vs) == 1 and None not in vs}
    return Panel(axis, dims_label({k: v for k, v in shared.items() if v is not None}))


def throughput(
    points: list[ThroughputPoint], failed: list[FailedRun], palette: Palette, folder: Path
) -> Drawn | None:
    """A: throughput against batch size, log2 axes, a panel per model (and host: hosts are never
    mixed in a panel), a line per image and variant. Where a panel's points differ in one of the
    model's dimensions (a sweep over dim.seq), it is drawn against that dimension instead, a line
    per configuration and batch size: runs at other values of a dimension are never one point."""
    panels, cols = _panels([(p.model, p.host) for p in points] + [(f.model, f.host) for f in failed])
    if not panels:
        return None
    fig, axes = _figure(len(panels), cols)
    notes: list[str] = []
    against: set[str] = set()  # the dimensions panels are drawn against
    by_batch = False  # a panel is drawn against batch size
    for ax, (model, host) in zip(axes, panels, strict=True):
        mine = [p for p in points if (p.model, p.host) == (model, host)]
        panel = panel_of(mine)
        lines: dict[Line, list[ThroughputPoint]] = defaultdict(list)
        off_axis = 0
        for p in mine:
            if panel.x(p) is None:
                off_axis += 1
                continue
            lines[panel.line(p, p.batch_size)].append(p)
        fails = [f for f in failed if (f.model, f.host) == (model, host)]
        by_batch |= panel.axis is None
        if panel.axis is not None:
            against.add(panel.axis)
            fails = [f for f in fails if (f.dims or {}).get(panel.axis) is not None]
        drawn = {line.configuration for line, pts in lines.items() if pts}
        for f in fails:
            if Line(f.model, f.image, f.variant, f.host) not in drawn:
                lines.setdefault(panel.line(f), [])
        marked = unfair({line: precisions(p.precision for p in pts) for line, pts in lines.items()})
        sizes = sorted({p.batch_size for pts in lines.values() for p in pts})
        for line, pts in sorted(lines.items(), key=lambda kv: kv[0].label(True)):
            label = line.label(False)
            if line in marked:
                label += f" ({marked[line]}!)"
            color = palette.color(line.image)
            marker = palette.marker(line.variant)
            if panel.axis is not None and pts:
                marker = MARKERS[sizes.index(pts[0].batch_size) % len(MARKERS)]
            if not pts:
                ax.plot([], [], color=color, marker="x", linestyle="none", label=f"{label}: no result")
                continue
            pts = sorted(pts, key=lambda p: panel.x(p) or 0)
            x = np.array([panel.x(p) for p in pts])
            y = np.array([p.throughput_sps for p in pts])
            low = np.array([p.ci_low if p.ci_method == "t" and p.ci_low else p.throughput_sps for p in pts])
            high = np.array(
                [p.ci_high if p.ci_method == "t" and p.ci_high else p.throughput_sps for p in pts]
            )
            ax.errorbar(
                x,
                y,
                yerr=[np.clip(y - low, 0, None), np.clip(high - y, 0, None)],
                color=color,
                marker=marker,
                markersize=4,
                linewidth=1.4,
                linestyle="--" if line in marked else "-",
                capsize=3,
                label=f"{label} {_runs_label(p.repetitions for p in pts)}",
            )
            _ring_noisy(ax, list(x), list(y), [p.noisy for p in pts])
        if panel.axis is None:
            missing = {f.run_id: _missing_x(f, sizes) for f in fails}
            _draw_missing(ax, fails, missing, panel.line, palette)
            _log2_batch_axis(ax, sizes + list(missing.values()))
        else:
            values = sorted({int(v) for pts in lines.values() for p in pts if (v := panel.x(p)) is not None})
            missing = {f.run_id: int((f.dims or {})[panel.axis]) for f in fails}
            _draw_missing(ax, fails, missing, panel.line, palette)
            _log2_batch_axis(ax, values + list(missing.values()), panel.axis)
        _log_y(ax, [p.throughput_sps for pts in lines.values() for p in pts])
        ax.set_ylabel("samples / s")
        title = _title(model, host) + (f" ({panel.shared})" if panel.shared else "")
        if marked:
            title += "\nunfair: " + ", ".join(sorted({f"{line.image} {p}" for line, p in marked.items()}))
            title += " beside fp32 (dashed)"
            what = ", ".join(f"{line.label(False)} ({p})" for line, p in sorted(marked.items(), key=str))
            notes.append(
                f"{model} @ {host}: {what} computed in another precision than the fp32 lines beside it"
            )
        if off_axis:
            notes.append(
                f"{model} @ {host}: {off_axis} point(s) without a value of {panel.axis} left out of "
                "the figure (see the numbers)"
            )
        title += _noisy(p.noisy for pts in lines.values() for p in pts)
        ax.set_title(title, fontsize=9, color="#b00000" if marked else "black")
        ax.grid(True, which="major", alpha=0.3)
        _legend(ax)
    drawn_against = sorted(against) + (["batch size"] if by_batch else [])
    what = " or ".join(drawn_against)
    _suptitle(fig, f"Throughput against {what} (n runs per point, bars: 95 % interval, x: missing point)")
    return _save(fig, folder, FIGURE_NAMES["a"], notes)


def _draw_missing(
    ax: Axes,
    fails: list[FailedRun],
    x_of: dict[str, int],
    line_of: Callable[[FailedRun], Line],
    palette: Palette,
) -> None:
    """An x at the foot of the panel where a point is missing (`x_of` each run), with why (and how
    many runs)."""
    where: dict[tuple[Line, int, str], int] = defaultdict(int)
    for f in fails:
        where[(line_of(f), x_of[f.run_id], failure_reason(f.status, f.message))] += 1
    rows = sorted({line for line, _, _ in where}, key=lambda line: line.label(True))
    for (line, x, reason), count in sorted(where.items(), key=lambda kv: (kv[0][0].label(True), kv[0][1])):
        y = 0.04 + 0.07 * rows.index(line)
        color = palette.color(line.image)
        ax.plot([x], [y], transform=ax.get_xaxis_transform(), marker="x", color=color, markersize=7, mew=2)
        text = reason + (f" x{count}" if count > 1 else "")
        ax.annotate(
            text,
            (x, y),
            xycoords=ax.get_xaxis_transform(),
            xytext=(5, -3),
            textcoords="offset points",
            fontsize=7,
            color=color,
        )


def memory(points: list[MemoryPoint], palette: Palette, folder: Path) -> Drawn | None:
    """B: peak host and device memory of each ensemble against batch size, a line per framework;
    a row per ensemble and host."""
    keys = sorted({(p.model, p.host) for p in points})
    if not keys:
        return None
    fig, axes = _figure(2 * len(keys), 2)
    for i, (model, host) in enumerate(keys):
        lines: dict[Line, list[MemoryPoint]] = defaultdict(list)
        for p in points:
            if (p.model, p.host) == (model, host):
                lines[Line(p.model, p.image, p.variant, p.host, dims_label(p.dims))].append(p)
        sizes = sorted({p.batch_size for pts in lines.values() for p in pts})
        for ax, what in zip(axes[2 * i : 2 * i + 2], ("host", "device"), strict=True):
            plotted: list[float] = []
            for line, pts in sorted(lines.items(), key=lambda kv: kv[0].label(True)):
                vals = [(p, p.host_mem_mb if what == "host" else p.device_mem_mb) for p in pts]
                have = [(p, mb) for p, mb in vals if mb is not None]
                if not have:
                    continue
                plotted.extend(mb for _, mb in have)
                ax.plot(
                    [p.batch_size for p, _ in have],
                    [mb for _, mb in have],
                    color=palette.color(line.image),
                    marker=palette.marker(line.variant),
                    markersize=4,
                    label=f"{line.label(False)} {_runs_label(p.runs for p, _ in have)}",
                )
            _log2_batch_axis(ax, sizes)
            ax.set_ylabel(f"peak {what} memory (MB)")
            ax.set_title(f"{_title(model, host)}: {what} memory", fontsize=9)
            ax.grid(True, alpha=0.3)
            if plotted:
                _log_y(ax, plotted)
                _legend(ax)
            else:
                ax.text(
                    0.5,
                    0.5,
                    "no device memory readings\n(CPU runs, or no NVML)"
                    if what == "device"
                    else "no readings",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    color="#666666",
                )
    _suptitle(fig, "Peak memory of the ensembles against batch size (mean over runs)")
    return _save(fig, folder, FIGURE_NAMES["b"], [])


def power_law(throughputs: Sequence[float], energies: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares fit of E = c * T^k on log-log axes: (c, k); None with under 3 distinct T."""
    t = np.asarray(throughputs, dtype=float)
    e = np.asarray(energies, dtype=float)
    ok = (t > 0) & (e > 0)
    t, e = t[ok], e[ok]
    if len(set(t.tolist())) < 3:
        return None
    k, log_c = np.polyfit(np.log(t), np.log(e), 1)
    return float(math.exp(log_c)), float(k)


def energy(points: list[EnergyPoint], palette: Palette, folder: Path) -> Drawn | None:
    """C: energy per 4096 predictions against throughput, log-log, a power law per device."""
    if not points:
        return None
    fig, axes = _figure(1, 1, Layout(panel=(6.0, 4.4), legend=3.4))
    ax = axes[0]
    gpus = sorted({p.gpu for p in points})
    notes: list[str] = []
    for p_image in sorted({p.image for p in points}):
        pts = [p for p in points if p.image == p_image]
        ax.scatter(
            [p.throughput_sps for p in pts],
            [p.energy_j_per_4096 for p in pts],
            color=palette.color(p_image),
            marker="o",
            s=14,
            alpha=0.7,
            label=f"{p_image} ({_runs_label(p.runs for p in pts)})",
        )
    styles = ["-", "--", ":", "-."]
    for i, gpu in enumerate(gpus):
        pts = [p for p in points if p.gpu == gpu]
        fit = power_law([p.throughput_sps for p in pts], [p.energy_j_per_4096 for p in pts])
        if fit is None:
            notes.append(f"{gpu}: fewer than 3 distinct throughputs, no fit")
            continue
        c, k = fit
        t = np.geomspace(min(p.throughput_sps for p in pts), max(p.throughput_sps for p in pts), 50)
        ax.plot(
            t,
            c * t**k,
            color="black",
            linestyle=styles[i % len(styles)],
            linewidth=1.2,
            label=f"{gpu}: E ~ T^{k:.2f} ({len(pts)} points)",
        )
        notes.append(f"{gpu}: E = {c:.4g} * T^{k:.3f} over {len(pts)} points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.set_xlabel("throughput (samples / s)")
    ax.set_ylabel("energy for 4096 predictions (J, gross)")
    ax.grid(True, which="both", alpha=0.25)
    _legend(ax)
    _suptitle(fig, "Energy per 4096 predictions (gross: idle power included) against throughput")
    return _save(fig, folder, FIGURE_NAMES["c"], notes)


PHASES = ("import", "model read", "compile", "first inference")


def load_times(rows: list[LoadPhases], folder: Path) -> Drawn | None:
    """D: load time as stacked phases, cold and warm compile cache side by side, per configuration;
    a panel per model. A configuration's label counts its cold and warm runs."""
    models = sorted({r.model for r in rows}, key=lambda m: ("+" in m, m))
    if not models:
        return None
    with_host = len({r.host for r in rows}) > 1
    widest = max(len({_load_line(r) for r in rows if r.model == m}) for m in models)
    longest = max(len(line.label(with_host)) for line in {_load_line(r) for r in rows})
    # A tick label is the line's label and its runs, "  n=cold/warm".
    layout = Layout(panel=(max(4.3, 0.45 * widest), 2.6), legend=1.6, bottom=0.45 + 0.055 * (longest + 9))
    fig, axes = _figure(len(models), 1, layout)
    for ax, model in zip(axes, models, strict=True):
        mine = {(_load_line(r), r.warm): r for r in rows if r.model == model}
        lines = sorted({line for line, _ in mine}, key=lambda x: x.label(True))
        for warm, dx in ((False, -0.2), (True, 0.2)):
            bars = [(i, mine[(line, warm)]) for i, line in enumerate(lines) if (line, warm) in mine]
            x = np.array([i + dx for i, _ in bars])
            bottom = np.zeros(len(bars))
            for phase in PHASES:
                seconds = np.array([_phase_s(r, phase) for _, r in bars])
                ax.bar(
                    x,
                    seconds,
                    0.38,
                    bottom=bottom,
                    color=PHASE_COLORS[phase],
                    hatch="//" if warm else None,
                    edgecolor="white",
                    linewidth=0.3,
                    label=f"{phase}{' (warm: hatched)' if phase == 'first inference' else ''}"
                    if not warm
                    else None,
                )
                bottom += seconds
        labels = []
        for line in lines:
            cold, warm_row = mine.get((line, False)), mine.get((line, True))
            labels.append(
                f"{line.label(with_host)}  n={cold.runs if cold else 0}/{warm_row.runs if warm_row else 0}"
            )
        ax.set_xticks(range(len(lines)), labels, fontsize=7, rotation=90)
        ax.set_ylabel("seconds")
        ax.set_title(
            f"{model}: cold (left) and warm (right, hatched) compile cache; n=cold/warm runs", fontsize=9
        )
        ax.grid(True, axis="y", alpha=0.3)
        _legend(ax)
    _suptitle(fig, "Load time by phase: import, model read, compile, first inference (mean over runs)")
    return _save(fig, folder, FIGURE_NAMES["d"], [])


def _load_line(row: LoadPhases) -> Line:
    return Line(row.model, row.image, row.variant, row.host, dims_label(row.dims))


def _phase_s(row: LoadPhases, phase: str) -> float:
    value = {
        "import": row.import_s,
        "model read": row.model_read_s,
        "compile": row.compile_s,
        "first inference": row.first_inference_s,
    }[phase]
    return value or 0.0


def server(points: list[ServerPoint], palette: Palette, folder: Path) -> Drawn | None:
    """E: server runs, p99 latency against achieved rate, each run's latency bound drawn; a panel per
    model and host."""
    panels, cols = _panels([(p.model, p.host) for p in points])
    if not panels:
        return None
    fig, axes = _figure(len(panels), cols)
    for ax, (model, host) in zip(axes, panels, strict=True):
        mine = [p for p in points if (p.model, p.host) == (model, host)]
        lines: dict[Line, list[ServerPoint]] = defaultdict(list)
        for p in mine:
            lines[Line(p.model, p.image, p.variant, p.host, dims_label(p.dims))].append(p)
        for line, pts in sorted(lines.items(), key=lambda kv: kv[0].label(True)):
            pts = sorted(pts, key=lambda p: p.achieved_qps)
            color = palette.color(line.image)
            ax.plot(
                [p.achieved_qps for p in pts],
                [p.latency_p99_ms for p in pts],
                color=color,
                linewidth=1.0,
                label=f"{line.label(False)} ({len(pts)} runs)",
            )
            valid = [p for p in pts if p.valid is not False]
            invalid = [p for p in pts if p.valid is False]
            ax.scatter([p.achieved_qps for p in valid], [p.latency_p99_ms for p in valid], color=color, s=18)
            ax.scatter(
                [p.achieved_qps for p in invalid],
                [p.latency_p99_ms for p in invalid],
                facecolors="white",
                edgecolors=color,
                s=18,
            )
            _ring_noisy(
                ax, [p.achieved_qps for p in pts], [p.latency_p99_ms for p in pts], [p.noisy for p in pts]
            )
        bounds = sorted({p.latency_bound_ms for p in mine if p.latency_bound_ms})
        for b in bounds:
            ax.axhline(b, color="#b00000", linestyle="--", linewidth=1)
            ax.annotate(
                f"p99 bound {b:g} ms",
                (0.01, b),
                xycoords=("axes fraction", "data"),
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=7,
                color="#b00000",
            )
        _log_y(ax, [p.latency_p99_ms for p in mine], 10)
        ax.set_xlabel("achieved queries / s")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_title(f"{_title(model, host)} (hollow: INVALID){_noisy(p.noisy for p in mine)}", fontsize=9)
        ax.grid(True, alpha=0.3)
        _legend(ax)
    _suptitle(fig, "Server scenario: p99 latency against achieved rate")
    return _save(fig, folder, FIGURE_NAMES["e"], [])


def _log_x(ax: Axes, values: Iterable[float]) -> None:
    """A log x axis with plain numbers where the values span a factor of 4 or more."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= 4:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))


def tune(
    trials: list[TuneTrial], palette: Palette, folder: Path, records: Sequence[SearchRecord] = ()
) -> Drawn | None:
    """G: each `bench-ctl tune` search, a panel per model and search: every trial a point (mean
    latency against throughput, a colour per image, a marker per batch size), the Pareto front of
    the candidates' means, each image's defaults (square) and best (star) at their means."""
    found = searches(trials, records)
    if not found:
        return None
    fig, axes = _figure(len(found), 2, Layout(legend=2.8))
    notes: list[str] = []
    for ax, search in zip(axes, found, strict=True):
        sizes = sorted({c.batch_size for c in search.candidates})
        marker = {bs: MARKERS[i % len(MARKERS)] for i, bs in enumerate(sizes)}
        for image in sorted({c.image for c in search.candidates}):
            mine = [t for c in search.candidates if c.image == image for t in c.trials]
            color = palette.color(image)
            for bs in sizes:
                pts = [t for t in mine if t.batch_size == bs]
                if not pts:
                    continue
                ax.scatter(
                    [t.throughput_sps for t in pts], [t.latency_mean_ms for t in pts], color=color,
                    marker=marker[bs], s=14, alpha=0.55,
                    label=f"{image}{f' b{bs}' if len(sizes) > 1 else ''} ({len(pts)} trials)",
                )  # fmt: skip
            _ring_noisy(
                ax,
                [t.throughput_sps for t in mine],
                [t.latency_mean_ms for t in mine],
                [t.noisy for t in mine],
            )
        front = list(search.front)
        ax.plot(
            [c.throughput_sps for c in front], [c.latency_mean_ms for c in front], color="black",
            linestyle="--", linewidth=1.0, marker=".", markersize=5, label="Pareto front (candidate means)",
        )  # fmt: skip
        for c in search.candidates:
            if c.is_default:
                ax.scatter(
                    [c.throughput_sps], [c.latency_mean_ms], marker="s", s=70, facecolors="none",
                    edgecolors=palette.color(c.image), linewidths=1.6, zorder=6,
                    label=f"{c.image} b{c.batch_size} defaults",
                )  # fmt: skip
        for c in search.best:
            ax.scatter(
                [c.throughput_sps], [c.latency_mean_ms], marker="*", s=160, color=palette.color(c.image),
                edgecolors="black", linewidths=0.6, zorder=7, label=f"best: {c.label}",
            )  # fmt: skip
            notes.append(f"{search.model} ({search.group_id}): {c.image} best {c.label}")
        _log_x(ax, [t.throughput_sps for t in search.trials])
        _log_y(ax, [t.latency_mean_ms for t in search.trials], 10)
        ax.set_xlabel("throughput (samples / s)")
        ax.set_ylabel("mean latency (ms)")
        title = _title(search.model, search.host) + (f" ({search.dims})" if search.dims else "")
        title += f"\n{search.group_id}" + _noisy(t.noisy for t in search.trials)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        _legend(ax)
    _suptitle(
        fig, "Tune searches: every trial, mean latency against throughput (star: best, square: defaults)"
    )
    return _save(fig, folder, FIGURE_NAMES["g"], notes)
