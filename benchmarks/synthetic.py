"""Synthetic results: real, schema-valid `RunResult` objects with made-up but plausible figures.

For benchmarks of the store and the report (ingest speed, `bench-ctl report` over 10,000 results),
never for answers: every result is labelled synthetic twice, its host is `synthetic-...` and its
message or framework version says so, and its run_id starts with `synthetic-`.

    from benchmarks.synthetic import synthetic_results
    results = synthetic_results(10_000, seed=0)

The mix resembles the study: two CPU and two GPU hosts, ONNX Runtime, OpenVINO (bf16, beside
fp32 runs), TensorFlow, PyTorch and TensorRT (fp16), with a variant each for three of them (graph
optimization, throughput hint, torch.compile), the paper's four networks plus an ensemble of three,
batch sizes 1..1024, repetitions, out-of-memory failures at large batch sizes, unsupported GPU
images on CPU hosts, compile-cache hits and misses, NVML energy on GPUs and a few server runs.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from schemas import (  # noqa: E402
    Accuracy,
    EnsembleMember,
    Fingerprint,
    GpuTelemetry,
    LaunchInfo,
    Measurement,
    MeasurementPolicy,
    MemberMeasurement,
    Phase,
    RunResult,
    RunSpec,
)
from schemas.spec import ServerScenario  # noqa: E402


@dataclass(frozen=True)
class Host:
    name: str
    cpu_model: str
    gpu: str | None  # NVML name; None: CPU only
    speed: float  # relative to the first host
    device_mem_mb: float  # runs that need more fail with out of memory


@dataclass(frozen=True)
class Engine:
    image: str
    framework: str
    version: str
    options: dict[str, object]
    precision: str
    gpu_only: bool
    speed: float  # relative throughput at saturation


HOSTS = [
    Host("synthetic-cpu-epyc", "AMD EPYC 9654 (synthetic)", None, 1.0, 0.0),
    Host("synthetic-cpu-xeon", "Intel Xeon Platinum 8480 (synthetic)", None, 1.3, 0.0),
    Host("synthetic-gpu-v100", "Intel Xeon Gold 6248 (synthetic)", "Tesla V100-SXM2-32GB", 8.0, 12_000.0),
    Host("synthetic-gpu-a100", "AMD EPYC 7763 (synthetic)", "NVIDIA A100-SXM4-80GB", 18.0, 40_000.0),
]
ENGINES = [
    Engine("ort", "onnxruntime", "1.32.0", {"framework": "onnxruntime"}, "fp32", False, 1.0),
    Engine(
        "ort",
        "onnxruntime",
        "1.32.0",
        {"framework": "onnxruntime", "graph_optimization": "basic"},
        "fp32",
        False,
        0.8,
    ),
    Engine("openvino", "openvino", "2026.4.1", {"framework": "openvino"}, "bf16", False, 2.3),
    Engine(
        "openvino",
        "openvino",
        "2026.4.1",
        {"framework": "openvino", "hint": "throughput"},
        "bf16",
        False,
        2.6,
    ),
    Engine("tf", "tensorflow", "2.21.0", {"framework": "tensorflow"}, "fp32", False, 0.8),
    Engine("torch", "torch", "2.15.0", {"framework": "torch"}, "fp32", False, 0.9),
    Engine("torch", "torch", "2.15.0", {"framework": "torch", "mode": "compile"}, "fp32", False, 1.1),
    Engine("trt10", "tensorrt", "10.13.0", {"framework": "tensorrt"}, "fp16", True, 2.5),
]
# (name, samples/s of the reference engine at saturation on the first host, GFLOPs, weights MB)
MODELS = [
    ("resnet50", 180.0, 4.1, 98.0),
    ("densenet201", 90.0, 4.3, 77.0),
    ("efficientnetb0", 420.0, 0.4, 21.0),
    ("vgg19", 45.0, 19.6, 549.0),
]
ENSEMBLE = ("vgg19", "resnet50", "densenet201")
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
START = datetime(2026, 1, 1, tzinfo=UTC)


def _spec(
    run_id: str,
    engine: Engine,
    model: str,
    device: str,
    batch_sizes: list[int],
    repetition: int,
    server_qps: float | None,
) -> RunSpec:
    names = model.split("+") if "+" in model else []
    members = [EnsembleMember(model=m, model_dir=f"/models/{m}") for m in names]
    scenario = (
        ServerScenario(target_qps=server_qps, max_batch=max(batch_sizes), latency_bound_ms=50.0)
        if server_qps
        else None
    )
    return RunSpec.model_validate(
        {
            "run_id": run_id,
            "image": engine.image,
            "model": model,
            "model_dir": f"/models/{model}",
            "cache_dir": f"/cache/{engine.image}",
            "device": device,
            "batch_sizes": batch_sizes,
            "policy": MeasurementPolicy(),
            "options": engine.options,
            "members": members,
            "group": f"synthetic-{run_id[-12:]}",
            "repetition": repetition,
            **({"scenario": scenario} if scenario else {}),
        }
    )


def _measurement(
    rng: random.Random,
    batch: int,
    sps: float,
    host: Host,
    weights_mb: float,
    members: list[str],
    server_qps: float | None,
) -> Measurement:
    mean_ms = 1000.0 * batch / sps
    p50 = mean_ms * rng.uniform(0.97, 1.0)
    p90 = mean_ms * rng.uniform(1.02, 1.08)
    p99 = p90 * rng.uniform(1.02, 1.3)
    iterations = max(10, int(5.0 * sps / batch))
    gpu = None
    energy = None
    if host.gpu:
        power = 70.0 + 230.0 * batch / (batch + 16) * rng.uniform(0.95, 1.05)
        energy = power * 4096 / sps
        gpu = GpuTelemetry(
            device_index=0,
            name=host.gpu,
            samples=50,
            duration_s=5.0,
            avg_power_w=power,
            max_power_w=power * 1.1,
            idle_power_w=45.0,
            energy_j=power * 5.0,
            energy_source="counter",
            peak_process_mem_mb=weights_mb * 2 + batch * 12.0 * len(members or [""]),
        )
    server = {}
    if server_qps:
        achieved = min(server_qps, sps * 0.9)
        server = {
            "scenario": "server",
            "target_qps": server_qps,
            "offered_qps": server_qps * rng.uniform(0.98, 1.02),
            "achieved_qps": achieved,
            "latency_p999_ms": p99 * 1.2,
            "mean_batch": min(batch, max(1.0, server_qps / sps * batch)),
            "valid": achieved >= 0.95 * server_qps and p99 <= 50.0,
            "invalid_reason": None if achieved >= 0.95 * server_qps else "achieved rate below offered",
        }
        if server["valid"] is False and server["invalid_reason"] is None:
            server["invalid_reason"] = "p99 above latency_bound_ms"
    return Measurement(
        batch_size=batch,
        iterations=iterations,
        duration_s=iterations * mean_ms / 1000.0,
        throughput_sps=sps,
        latency_mean_ms=mean_ms,
        latency_stdev_ms=mean_ms * 0.03,
        latency_min_ms=p50 * 0.95,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        latency_max_ms=p99 * 1.1,
        warmup_iterations=3,
        warmup_s=0.5,
        windows=4,
        stable=rng.random() > 0.03,
        peak_host_mem_mb=300.0 + weights_mb * 1.5 + batch * 0.6 * 224 * 224 * 3 * 4 / 1e6,
        gpu=gpu,
        members=[
            MemberMeasurement(
                model=m,
                alone_throughput_sps=sps * 2.5,
                alone_latency_mean_ms=mean_ms / 2.5,
                together_latency_mean_ms=mean_ms,
                slowdown=2.5,
            )
            for m in members
        ]
        or None,
        energy_j_per_4096=energy,
        energy_j_per_4096_net=None if energy is None else energy * 0.8,
        within_run_ci_rel=rng.uniform(0.002, 0.02),
        other_cpu_cores=rng.uniform(0.0, 0.3),
        noisy=False,
        **server,
    )


def synthetic_results(n: int, seed: int) -> list[RunResult]:
    """`n` valid results, the same for the same seed; labelled synthetic (host, run_id, version)."""
    rng = random.Random(seed)
    models = [*MODELS, ("+".join(ENSEMBLE), 0.0, 0.0, 0.0)]
    out: list[RunResult] = []
    i = 0
    while len(out) < n:
        host = HOSTS[i % len(HOSTS)]
        engine = ENGINES[(i // len(HOSTS)) % len(ENGINES)]
        model, base, _, weights = models[(i // (len(HOSTS) * len(ENGINES))) % len(models)]
        repetition = i // (len(HOSTS) * len(ENGINES) * len(models)) + 1
        i += 1
        if "+" in model:
            parts = [next(m for m in MODELS if m[0] == name) for name in ENSEMBLE]
            base = 1.0 / sum(1.0 / p[1] for p in parts)
            weights = sum(p[3] for p in parts)
        run_id = f"synthetic-{seed}-{len(out):06d}-{engine.image}"
        device = "cuda:0" if host.gpu else "cpu"
        server_qps = base * host.speed * 0.4 * rng.choice([0.5, 1.0, 1.5]) if rng.random() < 0.05 else None
        if "+" in model:
            server_qps = None
        batch_sizes = [1, 2, 4, 8] if server_qps else BATCH_SIZES[: rng.choice([6, 8, 11])]
        spec = _spec(run_id, engine, model, device, batch_sizes, repetition, server_qps)
        started = START + timedelta(minutes=len(out))
        precision = engine.precision if (host.gpu or engine.image == "openvino") else "fp32"
        status, message, measurements = "ok", None, []
        if engine.gpu_only and not host.gpu:
            status, message = "unsupported", "synthetic: TensorRT needs an NVIDIA GPU"
        else:
            speed = base * host.speed * engine.speed * rng.gauss(1.0, 0.03)
            for b in spec.measured_batch_sizes:
                sps = speed * b / (b + (8.0 if host.gpu else 1.5))
                members = list(ENSEMBLE) if "+" in model else []
                m = _measurement(rng, b, sps, host, weights, members, server_qps)
                if m.gpu and (m.gpu.peak_process_mem_mb or 0.0) > host.device_mem_mb:
                    status, message = "error", f"synthetic: CUDA out of memory at batch size {b}"
                    break
                measurements.append(m)
        cache_hit = repetition > 1
        compile_s = rng.uniform(0.5, 3.0) * (0.1 if cache_hit else 1.0) * (5.0 if engine.gpu_only else 1.0)
        out.append(
            RunResult(
                run_id=run_id,
                spec=spec,
                status=status,  # type: ignore[arg-type]
                message=message,
                started_at=started,
                finished_at=started + timedelta(seconds=30),
                framework=engine.framework,
                framework_version=f"{engine.version}+synthetic",
                precision=None if status == "unsupported" else precision,
                phases=[]
                if status == "unsupported"
                else [
                    Phase(name="import", seconds=rng.uniform(0.3, 2.5)),
                    Phase(name="model_read", seconds=rng.uniform(0.1, 0.6) * math.log2(2 + weights / 50)),
                    Phase(name="compile", seconds=compile_s, cache_hit=cache_hit),
                    Phase(name="first_inference", seconds=rng.uniform(0.01, 0.2)),
                ],
                accuracy=None
                if status == "unsupported"
                else Accuracy(
                    reference="tensorflow-fp32",
                    samples=8,
                    max_abs_err=1e-6 if precision == "fp32" else 0.03,
                    rel_err=1e-5 if precision == "fp32" else 0.012,
                    top1_agreement=1.0,
                    top5_agreement=1.0 if precision == "fp32" else 0.875,
                ),
                measurements=measurements,
                peak_host_mem_mb=max((m.peak_host_mem_mb or 0.0 for m in measurements), default=300.0),
                fingerprint=Fingerprint(
                    host=host.name,
                    python="3.11.2",
                    os="Linux (synthetic)",
                    cpu_model=host.cpu_model,
                    cpu_flags=["avx2", "avx512f"],
                    cpu_count=64,
                    memory_total_mb=512_000.0,
                    framework=engine.framework,
                    framework_version=f"{engine.version}+synthetic",
                    packages={engine.framework: engine.version},
                    gpus=[{"name": host.gpu, "driver": "550.54", "cuda": "12.4"}] if host.gpu else [],
                ),
                launch=LaunchInfo(
                    launcher="docker",
                    host=host.name,
                    image_ref=f"inference-bench/{engine.image}:synthetic",
                    image_digest="sha256:" + hashlib.sha256(f"{engine.image}-{seed}".encode()).hexdigest(),
                    exit_code=0,
                ),
            )
        )
    return out
