"""What a runner reports: `RunResult`, with phases, measurements, accuracy and fingerprint."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.spec import RunSpec
from schemas.strict import Strict

# cancelled, preempted, node_fail: a scheduler (Slurm) ended the job before the runner reported.
Status = Literal["ok", "error", "timeout", "unsupported", "cancelled", "preempted", "node_fail"]
PHASES = ("import", "model_read", "compile", "first_inference")


class Phase(Strict):
    """One timed phase of loading. `cache_hit` is set where a framework cache was consulted."""

    name: Literal["import", "model_read", "compile", "first_inference", "data_accuracy"]
    seconds: float = Field(ge=0)
    cache_hit: bool | None = None
    note: str | None = None


class OutputAgreement(Strict):
    """One output on the reference batch against its reference."""

    name: str
    max_abs_err: float = Field(ge=0)
    rel_err: float = Field(ge=0, description="max_abs_err / (max - min) of the reference output")
    top1_agreement: float | None = Field(None, ge=0, le=1, description="class-score outputs only")
    top5_agreement: float | None = Field(None, ge=0, le=1, description="class-score outputs only")
    cosine_min: float | None = Field(
        None, ge=-1, le=1, description="the lowest cosine similarity of a sample's output to its reference"
    )


class DataAccuracy(Strict):
    """Accuracy on the user's labelled samples (`models add --data`), beside the fp32 reference's."""

    samples: int = Field(ge=1)
    output: str = Field(description="the output scored against the labels")
    top1: float = Field(ge=0, le=1)
    top5: float | None = Field(None, ge=0, le=1)
    fp32_top1: float | None = Field(None, ge=0, le=1, description="the fp32 reference on the same samples")
    fp32_top5: float | None = Field(None, ge=0, le=1)


class Accuracy(Strict):
    """Outputs on the model's reference batch, compared with the reference outputs. The top-level
    errors are the worst output's; top-1/top-5 those of the first class-score output (None when
    the model has none)."""

    reference: str = Field(description="what produced the reference outputs, e.g. tensorflow-fp32")
    samples: int = Field(ge=1)
    max_abs_err: float = Field(ge=0)
    rel_err: float = Field(ge=0, description="max_abs_err / (max - min) of the reference outputs")
    top1_agreement: float | None = Field(None, ge=0, le=1)
    top5_agreement: float | None = Field(
        None, ge=0, le=1, description="fraction of samples whose top-5 classes are the same set"
    )
    cosine_min: float | None = Field(None, ge=-1, le=1, description="the lowest over every output")
    worst_output: str | None = Field(None, description="the output with the largest rel_err")
    outputs: list[OutputAgreement] = Field(default_factory=list, description="every output")
    data: DataAccuracy | None = None


class GpuTelemetry(Strict):
    """NVML readings during one steady state, sampled in a background thread."""

    device_index: int
    name: str
    samples: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    avg_power_w: float | None = None
    max_power_w: float | None = None
    idle_power_w: float | None = Field(None, description="mean power before the model was loaded")
    energy_j: float | None = Field(None, ge=0)
    energy_source: Literal["counter", "integrated"] | None = None
    peak_mem_used_mb: float | None = Field(None, description="device memory used by all processes")
    baseline_mem_used_mb: float | None = Field(None, description="device memory used before loading")
    peak_process_mem_mb: float | None = Field(
        None, description="device memory of the runner process (NVML process list, else peak - baseline)"
    )
    sm_clock_mhz_mean: float | None = None
    sm_clock_mhz_min: float | None = None
    temperature_c_max: float | None = None
    throttled: bool = False
    throttle_reasons: list[str] = Field(default_factory=list)


class MemberMeasurement(Strict):
    """One ensemble member at one batch size: alone on the device, then co-located."""

    model: str
    alone_throughput_sps: float = Field(gt=0)
    alone_latency_mean_ms: float = Field(ge=0)
    together_latency_mean_ms: float = Field(ge=0, description="its own call's latency inside the ensemble")
    slowdown: float = Field(gt=0, description="together / alone mean latency (1.0: no interference)")


class Measurement(Strict):
    """Steady state of one batch size. Latencies are end to end, per iteration, in ms.

    For an ensemble an iteration is one batch through every member concurrently plus the
    averaging of their outputs, so throughput is ensemble predictions per second."""

    batch_size: int = Field(ge=1)
    iterations: int = Field(ge=1)
    duration_s: float = Field(gt=0)
    throughput_sps: float = Field(gt=0, description="samples per second over the steady state")
    tokens_per_s: float | None = Field(
        None, gt=0, description="models with a sequence dimension: samples/s x its value (spec.sequence_dim)"
    )
    latency_mean_ms: float = Field(ge=0)
    latency_stdev_ms: float = Field(ge=0)
    latency_min_ms: float = Field(ge=0)
    latency_p50_ms: float = Field(ge=0)
    latency_p90_ms: float = Field(ge=0)
    latency_p99_ms: float = Field(ge=0)
    latency_max_ms: float = Field(ge=0)
    warmup_iterations: int = Field(ge=0)
    warmup_s: float = Field(ge=0)
    windows: int = Field(ge=1)
    in_flight: int = Field(
        1, ge=1, description="asynchronous requests kept in flight (latencies are then per request)"
    )
    stable: bool
    peak_host_mem_mb: float | None = Field(None, ge=0)
    gpu: GpuTelemetry | None = None
    members: list[MemberMeasurement] | None = None
    energy_j_per_4096: float | None = Field(None, description="energy for 4096 predictions (the study's E)")
    energy_j_per_4096_net: float | None = Field(None, description="the same with idle power subtracted")
    energy_source: Literal["nvml-counter", "nvml-integrated", "rapl"] | None = Field(
        None, description="where energy_j_per_4096 comes from: the GPU (NVML) or the CPU packages (RAPL)"
    )
    cpu_energy_j: float | None = Field(
        None,
        ge=0,
        description="CPU package energy (RAPL) during the steady state: every process on the socket",
    )
    latencies_ms: list[float] | None = None
    within_run_ci_rel: float | None = Field(
        None,
        ge=0,
        description="half-width of the 95% interval of the mean iteration time, relative to it, from "
        "batch means within this run (respects autocorrelation; says nothing of run-to-run spread)",
    )
    other_cpu_cores: float | None = Field(
        None,
        ge=0,
        description="CPU cores busy outside this runner, on the cores it may use, during the steady state "
        "(the windows kept, where windows were judged): host load, which may or may not have starved it",
    )
    noisy: bool | None = Field(
        None,
        description="the figures could not be made of clean windows: the runner was starved (its threads "
        "waited for a CPU beyond policy.starved_share) for too much of the steady state; where threads' "
        "waits cannot be read, other_cpu_cores exceeded policy.noise_cores",
    )
    starved_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of the runnable time of the runner's threads spent waiting for a CPU (run "
        "queue) over the windows kept; None where the kernel does not tell",
    )
    windows_discarded: int | None = Field(
        None,
        ge=0,
        description="steady-state windows left out of every figure: the runner was starved in them",
    )
    discarded_iterations: int | None = Field(None, ge=0, description="iterations of the windows left out")
    discarded_s: float | None = Field(None, ge=0, description="seconds measured in the windows left out")
    quiet_wait_s: float | None = Field(
        None, ge=0, description="seconds waited before the steady state for other load to leave the cores"
    )
    # Scenarios (None in results made before they existed: offline).
    scenario: Literal["offline", "single-stream", "multi-stream", "server"] | None = Field(
        None, description="how queries reached the runner; None: offline"
    )
    latency_p999_ms: float | None = Field(None, ge=0)
    latency_early_stop_ms: float | None = Field(
        None,
        ge=0,
        description="the scenario's percentile (single-stream p90, multi-stream and server p99) as an upper "
        "bound with 99% confidence (MLPerf's early-stopping estimate); None: too few queries, or offline",
    )
    target_qps: float | None = Field(
        None, gt=0, description="server: the asked arrival rate; multi-stream: queries per second asked"
    )
    offered_qps: float | None = Field(
        None, gt=0, description="server: the rate of the seeded arrival schedule actually offered"
    )
    achieved_qps: float | None = Field(None, ge=0, description="server: completed samples per second")
    queueing_mean_ms: float | None = Field(
        None, ge=0, description="server: mean time from arrival to the start of the sample's batch"
    )
    compute_mean_ms: float | None = Field(
        None, ge=0, description="server: mean time from the start of the sample's batch to completion"
    )
    mean_batch: float | None = Field(None, ge=0, description="server: mean size of the groups formed")
    batch_histogram: dict[str, int] | None = Field(
        None, description="server: groups formed, by size (the size as text)"
    )
    padding_waste: float | None = Field(
        None, ge=0, le=1, description="server: padded samples / samples computed"
    )
    valid: bool | None = Field(None, description="server and multi-stream: LoadGen-style verdict")
    invalid_reason: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Measurement:
        if not (
            self.latency_min_ms
            <= self.latency_p50_ms
            <= self.latency_p90_ms
            <= self.latency_p99_ms
            <= self.latency_max_ms
        ):
            raise ValueError("latency percentiles are not ordered")
        if self.latencies_ms is not None and len(self.latencies_ms) != self.iterations:
            raise ValueError("latencies_ms must hold one value per iteration")
        return self


class Fingerprint(Strict):
    """Where and with what a result was produced."""

    host: str
    python: str
    os: str
    cpu_model: str
    cpu_flags: list[str]
    cpu_count: int
    cpu_limit: float | None = Field(None, description="cores the runner may use (affinity/cgroup)")
    memory_total_mb: float
    framework: str
    framework_version: str
    packages: dict[str, str]
    gpus: list[dict[str, str]] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="tuning variables seen")
    cpu_governor: str | None = Field(None, description="cpufreq scaling governor, where readable")
    turbo: bool | None = Field(None, description="CPU turbo/boost enabled, where readable")
    load_average: list[float] | None = Field(None, description="1, 5, 15 minute load average at start")
    cpu_energy: str | None = Field(
        None, description="CPU energy this run could read: 'rapl: package-0, ...' or 'unavailable: why'"
    )
    image: str | None = Field(None, description="set by the controller: image (or local environment) used")
    image_digest: str | None = Field(None, description="set by the controller: Docker image id")
    lock_hash: str | None = Field(None, description="set by the controller: sha256 of requirements.lock")


class LaunchInfo(Strict):
    """Filled by the controller: how the runner was started."""

    launcher: Literal["local", "docker", "preflight", "slurm"] = Field(
        description="preflight: the controller found the run impossible here and launched nothing; "
        "slurm: the Slurm job ended without a runner result (a job that ran keeps its node's launcher)"
    )
    host: str | None = Field(None, description="host that launched the runner (a container has its own name)")
    image_ref: str
    image_digest: str | None = None
    lock_hash: str | None = None
    exit_code: int | None = None
    wall_s: float | None = None
    stderr_tail: str | None = None
    job_id: str | None = Field(None, description="the scheduler's job id (Slurm), where the run was a job")
    node: str | None = Field(None, description="the scheduler's name of the node that ran the job")


class RunResult(Strict):
    """The outcome of one `RunSpec`. Non-ok results keep whatever was measured before the failure."""

    schema_version: Literal[2] = 2
    run_id: str
    spec: RunSpec
    status: Status
    message: str | None = None
    started_at: datetime
    finished_at: datetime
    framework: str
    framework_version: str | None = None
    precision: str | None = Field(None, description="precision the framework really computed in")
    phases: list[Phase] = Field(default_factory=list)
    accuracy: Accuracy | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    peak_host_mem_mb: float | None = Field(None, ge=0)
    threads: int | None = Field(
        None,
        ge=1,
        description="threads the framework computes with, as it reports them (fingerprint.cpu_limit: "
        "the cores the runner was given)",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="one line each: what may keep the figures from being the framework's best here, "
        "e.g. more threads than cores, with the option to set",
    )
    fingerprint: Fingerprint | None = None
    launch: LaunchInfo | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RunResult:
        if self.run_id != self.spec.run_id:
            raise ValueError("run_id differs from spec.run_id")
        if self.status == "ok":
            got = [m.batch_size for m in self.measurements]
            if got != self.spec.measured_batch_sizes:
                raise ValueError(
                    f"ok result measured batch sizes {got}, spec asked {self.spec.measured_batch_sizes}"
                )
        elif not self.message:
            raise ValueError(f"a {self.status} result needs a message")
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self

    @property
    def load_time_s(self) -> float | None:
        """Import + model read + compile + first inference, the same sum for every framework
        (the pass over the user's labelled data is no part of loading)."""
        if not self.phases:
            return None
        return sum(p.seconds for p in self.phases if p.name != "data_accuracy")
