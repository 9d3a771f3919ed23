"""What a runner is asked to do: `RunSpec` and the framework options it carries."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Final, Literal, Union

from pydantic import Field, field_validator, model_validator

from schemas.frameworks import OPTION_MODELS, FrameworkOptions
from schemas.frameworks.base import BATCH_SIZES, tunable
from schemas.limits import DEVICE_RE as DEVICE_RE
from schemas.limits import MAX_BATCH_SIZE as MAX_BATCH_SIZE
from schemas.limits import MAX_DIM, check_batch_sizes
from schemas.limits import MAX_TIMEOUT_S as MAX_TIMEOUT_S
from schemas.manifest import DIM_NAME_RE
from schemas.strict import Strict

SCHEMA_VERSION: Final = 2

# Matched with fullmatch: `$` would accept a trailing newline, `\d` any Unicode digit.
MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# Upper bounds on durations a user may ask for: finite, and small enough that a timeout or a Slurm
# time limit derived from them stays a number a person (and sbatch) can read.
MAX_SCHEDULE_S: Final = 86_400  # a scenario's arrival schedule lasts at most a day
# A server run is INVALID when its achieved rate falls short of the offered one by more than this.
# A run whose queries finish within a latency bound of L can fall short through its tail alone by
# up to L over its schedule's length, so a schedule shorter than L / QPS_TOLERANCE cannot tell a
# queue that keeps up from one that does not (tune's probes last at least that long).
QPS_TOLERANCE: Final = 0.05


def tail_free_schedule_s(latency_bound_ms: float) -> float:
    """The shortest schedule on which a tail within the bound is no shortfall past QPS_TOLERANCE."""
    return latency_bound_ms / 1e3 / QPS_TOLERANCE


MAX_ITERATIONS: Final = 10**9


class MeasurementPolicy(Strict):
    """How long to measure one batch size and when the measurement counts as stable.

    Steady state runs in windows of at least `window_s` seconds and `window_min_iterations`
    iterations. It stops once `min_time_s` and `min_iterations` are met and the mean latencies of
    the last `stable_windows` windows agree within `tolerance` (relative spread), or at
    `max_time_s` or `max_iterations`, in which case the measurement is flagged unstable.
    """

    warmup_iterations: int = Field(3, ge=0, le=MAX_ITERATIONS)
    warmup_min_s: float = Field(0.5, ge=0, le=3600)
    min_iterations: int = Field(10, ge=1, le=MAX_ITERATIONS)
    max_iterations: int = Field(
        100_000, ge=1, le=MAX_ITERATIONS, description="hard cap; keeps result files bounded"
    )
    min_time_s: float = Field(2.0, ge=0, le=MAX_SCHEDULE_S)
    max_time_s: float = Field(30.0, gt=0, le=MAX_SCHEDULE_S)
    window_s: float = Field(0.5, gt=0, le=3600)
    window_min_iterations: int = Field(2, ge=1, le=MAX_ITERATIONS)
    stable_windows: int = Field(3, ge=2, le=1000)
    tolerance: float = Field(0.10, gt=0, lt=1)
    keep_latencies: bool = True
    repetitions: int = Field(
        1, ge=1, le=1000, description="independent runner processes per configuration (bench-ctl --repeat)"
    )
    target_ci: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="stop once the 95% interval's half-width is within this fraction of the mean: "
        "within a run (more windows, up to max_time_s) and across runs (more repetitions, up to "
        "max_repetitions)",
    )
    max_repetitions: int = Field(
        10, ge=1, le=1000, description="cap on repetitions added for target_ci (at least repetitions)"
    )
    noise_cores: float = Field(
        0.25,
        ge=0,
        le=100_000,
        description="other processes' cores beyond those the runner's threads leave free that make the "
        "host busy: the quiet wait's bound, and the noise rule where threads' waits cannot be read",
    )
    starved_share: float = Field(
        0.02,
        ge=0,
        le=1,
        description="a steady-state window is left out of the figures when the runner's threads waited "
        "for a CPU this share of their runnable time (other load had it); the measurement is noisy when "
        "fewer than stable_windows clean windows (or min_iterations) remain by max_time_s",
    )
    quiet_wait_s: float = Field(
        1.0,
        ge=0,
        le=600,
        description="before each steady state, wait up to this long for other load to leave a core to "
        "each of the runner's threads (within noise_cores)",
    )
    noisy_reruns: int = Field(
        2,
        ge=0,
        le=10,
        description="with repetitions (and in a peak search), a run that came out noisy is made again at "
        "most this many times; every run is stored, and compare leaves the noisy ones out",
    )
    memory_limit_mb: int | None = Field(
        None,
        ge=64,
        le=2**30,
        description="memory cap of the runner: the container's limit with Docker, the address-space "
        "limit (RLIMIT_AS) of a local runner; default: 80% of the host's memory with Docker, none locally",
    )

    @model_validator(mode="after")
    def _max_after_min(self) -> MeasurementPolicy:
        if self.max_time_s < self.min_time_s:
            raise ValueError("max_time_s must be >= min_time_s")
        if self.max_iterations < self.min_iterations:
            raise ValueError("max_iterations must be >= min_iterations")
        return self


if TYPE_CHECKING:
    AnyFrameworkOptions = FrameworkOptions
else:
    # The spec's `options`: one of the declared frameworks' models, chosen by its `framework` field.
    AnyFrameworkOptions = Annotated[
        Union[tuple(OPTION_MODELS.values())],  # noqa: UP007
        Field(discriminator="framework"),
    ]

FRAMEWORK_OPTION_MODELS: dict[str, type[FrameworkOptions]] = OPTION_MODELS


class EnsembleMember(Strict):
    """One model of a co-located ensemble."""

    model: str
    model_dir: str

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str) -> str:
        return _check_model_name(v)


def _check_model_name(v: str) -> str:
    if not MODEL_NAME_RE.fullmatch(v):
        raise ValueError(f"invalid model name {v!r}: use lowercase letters, digits, '_', '-', '.' (no paths)")
    return v


class Barrier(Strict):
    """Co-located processes meet here before each steady state, so their measurements overlap."""

    dir: str = Field(description="folder shared by the parties, as the runner sees it")
    party: str
    parties: list[str] = Field(min_length=2)
    timeout_s: float = Field(600.0, gt=0)


class OfflineScenario(Strict):
    """Back-to-back batches of each `-b` size (the closed loop, asynchronous runners keep their
    requests in flight); the metric is throughput. Its length is the measurement policy's."""

    name: Literal["offline"] = "offline"


class SingleStreamScenario(Strict):
    """One query at a time: the next is sent when the last has completed (no request overlap,
    even for asynchronous runners). A query is one batch of each `-b` size (MLPerf's
    single-stream is `-b 1`); its length is the measurement policy's; the metric is p90 latency."""

    name: Literal["single-stream"] = "single-stream"


class ServerScenario(Strict):
    """Queries of one sample arrive as a Poisson process at `target_qps`; a dynamic batcher groups
    waiting samples up to `max_batch` or until the oldest has waited `max_delay_ms`, pads the
    group to the nearest `-b` size (the sizes the framework compiled), runs and completes it.

    The run is VALID when the achieved rate is within 5 % of the offered one, every query
    completed, and p99 latency is within `latency_bound_ms` (when set)."""

    name: Literal["server"] = "server"
    target_qps: float = Field(gt=0, le=1e6, description="offered queries (samples) per second")
    max_batch: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="largest group the batcher forms; None: the largest -b size",
        json_schema_extra=tunable(BATCH_SIZES),
    )
    max_delay_ms: float = Field(
        2.0,
        ge=0,
        le=60_000,
        description="the oldest waiting sample is sent after this long at most",
        json_schema_extra=tunable(0.5, 5.0),
    )
    min_duration_s: float = Field(
        10.0, gt=0, le=86_400, description="the arrival schedule lasts at least this"
    )
    min_queries: int = Field(
        256,
        ge=1,
        le=10_000_000,
        description="the arrival schedule holds at least this (raise it for a steadier p99)",
    )
    latency_bound_ms: float | None = Field(
        None, gt=0, description="p99 latency above this makes the run INVALID; None: no bound"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the arrival schedule")

    @model_validator(mode="after")
    def _schedule(self) -> ServerScenario:
        seconds = self.min_queries / self.target_qps
        if seconds > MAX_SCHEDULE_S:
            raise ValueError(
                f"min_queries / target_qps is {seconds:.3g} s of arrivals, more than {MAX_SCHEDULE_S:,} s "
                "(a day): raise target_qps or lower min_queries"
            )
        return self


class MultiStreamScenario(Strict):
    """Queries of `samples_per_query` samples issued at a fixed `interval_ms`, each run as one
    batch (padded to a -b size); the metric is p99 query latency. A query that must wait more
    than one interval to start is late; more than 1 % late queries make the run INVALID."""

    name: Literal["multi-stream"] = "multi-stream"
    samples_per_query: int = Field(8, ge=1, le=MAX_BATCH_SIZE)
    interval_ms: float = Field(50.0, gt=0, le=60_000, description="time between query issues")
    min_duration_s: float = Field(10.0, gt=0, le=86_400)
    min_queries: int = Field(100, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _schedule(self) -> MultiStreamScenario:
        seconds = self.min_queries * self.interval_ms / 1000
        if seconds > MAX_SCHEDULE_S:
            raise ValueError(
                f"min_queries x interval_ms is {seconds:.3g} s of queries, more than {MAX_SCHEDULE_S:,} s "
                "(a day): lower one of them"
            )
        return self


Scenario = Annotated[
    OfflineScenario | SingleStreamScenario | MultiStreamScenario | ServerScenario,
    Field(discriminator="name"),
]

SCENARIO_MODELS: dict[str, type[Strict]] = {
    "offline": OfflineScenario,
    "single-stream": SingleStreamScenario,
    "multi-stream": MultiStreamScenario,
    "server": ServerScenario,
}


class RunSpec(Strict):
    """One run: one image, one model (or a co-located ensemble), one device, several batch sizes."""

    schema_version: Literal[2] = 2
    run_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    image: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    model: str
    model_dir: str = Field(description="model store folder of this model, as the runner sees it")
    cache_dir: str = Field(description="writable cache folder, as the runner sees it")
    device: str = "cpu"
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    policy: MeasurementPolicy = Field(default_factory=MeasurementPolicy)
    options: AnyFrameworkOptions
    members: list[EnsembleMember] = Field(
        default_factory=list,
        description="ensemble: models run together on the device, one thread each; `model` is 'a+b+c'",
    )
    barrier: Barrier | None = Field(None, description="co-located processes: wait for the others first")
    group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,80}$", description="runs made together (one command, one ensemble)"
    )
    repetition: int | None = Field(None, ge=1, description="which repetition of its configuration (1-based)")
    role: Literal["alone", "colocated"] | None = None
    cell: str | None = Field(
        None, pattern=r"^[0-9a-f]{8,64}$", description="the sweep cell this run measures (bench-ctl sweep)"
    )
    scenario: Scenario = Field(
        default_factory=OfflineScenario, description="how queries reach the runner (MLPerf's scenarios)"
    )
    dims: dict[str, int] = Field(
        default_factory=dict,
        description="the value of each named dynamic dimension of the model's inputs (--set dim.seq=128)",
    )
    sequence_dim: str | None = Field(
        None, description="the dimension that counts tokens: measurements also give tokens/s"
    )

    @model_validator(mode="before")
    @classmethod
    def _version_1(cls, doc: object) -> object:
        """A version 1 spec (no dims) is the same spec in version 2 (schemas/upgrades.py)."""
        if isinstance(doc, dict) and doc.get("schema_version") == 1:
            return {**doc, "schema_version": 2}
        return doc

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: dict[str, int]) -> dict[str, int]:
        for name, value in v.items():
            if not DIM_NAME_RE.fullmatch(name):
                raise ValueError(f"dimension name {name!r} is not an identifier")
            if not 1 <= value <= MAX_DIM:
                raise ValueError(f"dimension {name} goes from 1 to {MAX_DIM}, not {value}")
        return v

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str) -> str:
        if "+" in v:
            for part in v.split("+"):
                _check_model_name(part)
            return v
        return _check_model_name(v)

    @model_validator(mode="after")
    def _ensemble(self) -> RunSpec:
        if self.members:
            if len(self.members) < 2:
                raise ValueError("an ensemble needs at least two members")
            if self.model != "+".join(m.model for m in self.members):
                raise ValueError("an ensemble's model must be its members' names joined by '+'")
        elif "+" in self.model:
            raise ValueError("a model name with '+' names an ensemble: give its members")
        return self

    @model_validator(mode="after")
    def _scenario(self) -> RunSpec:
        sc = self.scenario
        if sc.name != "offline" and self.barrier is not None:
            raise ValueError(f"co-located processes measure offline only, not scenario {sc.name}")
        if (
            isinstance(sc, ServerScenario)
            and sc.max_batch is not None
            and sc.max_batch > max(self.batch_sizes)
        ):
            raise ValueError(
                f"server max_batch {sc.max_batch} is larger than the largest batch size "
                f"{max(self.batch_sizes)}: the batcher pads to a -b size"
            )
        return self

    @property
    def measured_batch_sizes(self) -> list[int]:
        """The batch sizes an ok result holds a measurement for: every -b size, except for the
        server scenario, which makes one measurement labelled with its largest group."""
        sc = self.scenario
        if isinstance(sc, ServerScenario):
            return [sc.max_batch or max(self.batch_sizes)]
        if isinstance(sc, MultiStreamScenario):
            return [sc.samples_per_query]
        return list(self.batch_sizes)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_RE.fullmatch(v):
            raise ValueError(f"invalid device {v!r}: expected 'cpu' or 'cuda:N'")
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        return check_batch_sizes(v)

    @property
    def framework(self) -> str:
        return self.options.framework
