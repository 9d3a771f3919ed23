"""What comparisons answer: typed reports that `render` prints and `--json` dumps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel

IntervalMethod = Literal["t", "batch-means", "none"]
VerdictKind = Literal["faster", "slower", "no significant difference", "insufficient data"]


def point_label(batch_size: int, dims: dict[str, int]) -> str:
    """Where a row was measured: `b8`, or `b8 seq=64` for a model with named dimensions."""
    return " ".join([f"b{batch_size}", *(f"{k}={v}" for k, v in sorted(dims.items()))])


class DataScore(BaseModel):
    """Accuracy on the user's labelled samples beside the fp32 reference's on the same samples
    (the worst run of a cell)."""

    samples: int | None
    top1: float
    top5: float | None = None
    fp32_top1: float | None = None
    fp32_top5: float | None = None


class Cell(BaseModel):
    """One configuration at one batch size: the mean over its runs and its 95 % interval."""

    value: float
    low: float | None
    high: float | None
    runs: int
    method: IntervalMethod  # t: across runs; batch-means: one run, within-run only; none
    noisy: bool = False  # the value includes runs flagged noisy (none was clean, or --include-noisy)
    noisy_left_out: int = 0  # runs flagged noisy that the value leaves out
    precision: str | None = None
    rel_err: float | None = None
    tokens_per_s: float | None = None  # models with a sequence dimension: mean over the runs used
    data: DataScore | None = None

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2


class VerdictCell(BaseModel):
    """A configuration against the baseline at one batch size, by the one comparison rule."""

    ratio: float
    ratio_low: float | None
    ratio_high: float | None
    p_value: float | None
    verdict: VerdictKind
    message: str
    note: str | None = None  # why no verdict could be made beyond the test, e.g. "5 of 6 runs noisy"


class CompareRow(BaseModel):
    """One batch size at one value of the model's dimensions: runs at other values are other rows."""

    batch_size: int
    dims: dict[str, int] = {}
    point: str  # point_label(batch_size, dims)
    cells: dict[str, Cell]
    verdicts: dict[str, VerdictCell]


class Comparison(BaseModel):
    model: str
    metric: str
    higher_is_better: bool
    hosts: list[str]
    labels: list[str]
    baseline: str | None
    rule: str
    rows: list[CompareRow]
    left_out: list[str] = []  # runs of earlier builds, not pooled with the newest
    price_per_hour: float | None = None  # the host's, for cost_per_million
    not_shown: list[str] = []  # configurations `--only` and `--top` left out, in words


class HostPairRow(BaseModel):
    """One configuration at one batch size (and value of the model's dimensions) on two sides: each
    side, and new against old."""

    label: str
    batch_size: int
    dims: dict[str, int] = {}
    point: str  # point_label(batch_size, dims)
    old: Cell | None
    new: Cell | None
    verdict: VerdictCell | None


class HostPair(BaseModel):
    """The same configurations measured on two hosts (a rerun on new hardware)."""

    model: str
    metric: str
    higher_is_better: bool
    old_host: str
    new_host: str
    rule: str
    rows: list[HostPairRow]
    left_out: list[str] = []  # runs of earlier builds, not pooled with the newest
    price_per_hour: float | None = None  # the hosts', for cost_per_million


class BuildPair(BaseModel):
    """The same configurations measured with two builds of one image on one host (before and
    after an upgrade of the framework or its packages)."""

    model: str
    metric: str
    higher_is_better: bool
    host: str
    image: str
    old_build: str
    new_build: str
    rule: str
    rows: list[HostPairRow]
    left_out: list[str] = []  # builds older than old_build
    price_per_hour: float | None = None  # the host's, for cost_per_million


class LatencyThroughput(Protocol):
    @property
    def throughput_sps(self) -> float: ...
    @property
    def latency_mean_ms(self) -> float: ...


P = TypeVar("P", bound=LatencyThroughput)


def pareto(points: Sequence[P]) -> list[P]:
    """The points no other beats on both throughput (higher) and mean latency (lower), by
    latency: the front `tune` answers with and the report draws."""
    front = [
        p
        for p in points
        if not any(
            o.throughput_sps >= p.throughput_sps
            and o.latency_mean_ms <= p.latency_mean_ms
            and (o.throughput_sps > p.throughput_sps or o.latency_mean_ms < p.latency_mean_ms)
            for o in points
        )
    ]
    return sorted(front, key=lambda p: p.latency_mean_ms)
