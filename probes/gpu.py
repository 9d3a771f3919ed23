"""NVML telemetry (nvidia-ml-py): power, energy, memory, clocks, temperature, throttling.

`GpuTracker` samples in a background thread while a steady state runs, never inside the timed
loop. The NVML module is injected (`nvml=`), so the same code runs on `pynvml` and, in tests, on
a replay of recorded readings.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from schemas import GpuTelemetry, Measurement
from schemas.devices import cuda_index

MB = 1024 * 1024
PREDICTIONS = 4096  # the study's D: energy is reported per 4096 predictions

# Throttle/clock-event reason bits (nvml.h, nvmlClocksEventReason*). Idle and the application's
# own clock setting are not throttling; the rest lower clocks against the workload's will.
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
NOT_THROTTLING = {"gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting"}


def load_nvml() -> Any | None:
    """The initialized pynvml module, or None where NVML is absent (no driver, no package)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def physical_index(device: str) -> int:
    """Index of `cuda:N` as NVML sees it here (a container given one GPU sees it as 0).

    CUDA numbers the GPUs of CUDA_VISIBLE_DEVICES from 0 (Slurm sets it to the GPUs a job was
    given); NVML numbers every GPU of the machine, so `cuda:N` is NVML's GPU at place N there."""
    override = os.environ.get("BENCH_CUDA_INDEX")
    index = cuda_index(device)
    if index is None:
        raise ValueError(f"{device} is not a CUDA device")
    if override is not None:
        return int(override)
    # Under Slurm (or any scheduler) CUDA_VISIBLE_DEVICES names the physical GPUs this job got.
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible) and visible[index].isdigit():
        return int(visible[index])
    return index


def decode_reasons(mask: int) -> list[str]:
    return [name for bit, name in REASONS.items() if mask & bit]


def _call(fn: Any, *args: Any) -> Any | None:
    """An NVML query that some GPUs do not support: None instead of NVMLError_NotSupported."""
    try:
        return fn(*args)
    except Exception:
        return None


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Samples:
    t: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    used_mb: list[float] = field(default_factory=list)
    process_mb: list[float] = field(default_factory=list)
    sm_mhz: list[float] = field(default_factory=list)
    temp_c: list[float] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)


class GpuTracker:
    """Samples one GPU every `interval_s` between __enter__ and __exit__."""

    def __init__(
        self,
        nvml: Any,
        index: int,
        pid: int | None = None,
        interval_s: float = 0.05,
        clock: Any = time.monotonic,
    ) -> None:
        self.nvml = nvml
        self.index = index
        self.pid = os.getpid() if pid is None else pid
        self.interval_s = interval_s
        self.clock = clock
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.name = _name(nvml.nvmlDeviceGetName(self.handle))
        self.idle_power_w: float | None = None
        self.baseline_mem_mb: float | None = None
        self._samples = _Samples()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy0: float | None = None
        self._energy1: float | None = None
        self._t0 = self._t1 = 0.0

    def measure_idle(self, seconds: float = 1.0) -> None:
        """Power and memory before the model is loaded: the baseline that `*_net` subtracts."""
        powers = []
        end = self.clock() + seconds
        while True:
            p = _call(self.nvml.nvmlDeviceGetPowerUsage, self.handle)
            if p is not None:
                powers.append(p / 1000.0)
            if self.clock() >= end:
                break
            time.sleep(self.interval_s)
        self.idle_power_w = sum(powers) / len(powers) if powers else None
        mem = _call(self.nvml.nvmlDeviceGetMemoryInfo, self.handle)
        self.baseline_mem_mb = mem.used / MB if mem is not None else None

    def sample(self) -> None:
        nv, h, s = self.nvml, self.handle, self._samples
        s.t.append(self.clock())
        p = _call(nv.nvmlDeviceGetPowerUsage, h)
        s.power_w.append(p / 1000.0 if p is not None else float("nan"))
        mem = _call(nv.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            s.used_mb.append(mem.used / MB)
        procs = _call(nv.nvmlDeviceGetComputeRunningProcesses, h) or []
        mine = [pr.usedGpuMemory for pr in procs if pr.pid == self.pid and pr.usedGpuMemory is not None]
        if mine:
            s.process_mb.append(sum(mine) / MB)
        clk = _call(nv.nvmlDeviceGetClockInfo, h, getattr(nv, "NVML_CLOCK_SM", 1))
        if clk is not None:
            s.sm_mhz.append(float(clk))
        temp = _call(nv.nvmlDeviceGetTemperature, h, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        if temp is not None:
            s.temp_c.append(float(temp))
        reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None
        )
        mask = _call(reasons_fn, h) if reasons_fn is not None else None
        if mask:
            s.reasons.update(decode_reasons(int(mask)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _energy_mj(self) -> float | None:
        return _call(self.nvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)

    def __enter__(self) -> GpuTracker:
        self._samples = _Samples()
        self._energy0 = self._energy_mj()
        self._t0 = self.clock()
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="nvml", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        self._t1 = self.clock()
        self._energy1 = self._energy_mj()

    def _powers(self) -> list[tuple[float, float]]:
        s = self._samples
        return [(t, p) for t, p in zip(s.t, s.power_w, strict=True) if p == p]  # drop NaN

    def integrated_energy_j(self) -> float | None:
        """Energy of the last window as the trapezoidal integral of the sampled power (J).

        The fallback where the GPU has no energy counter, and the counter's cross-check where it has."""
        powers = self._powers()
        if len(powers) < 2:
            return None
        return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(powers))

    def telemetry(self) -> GpuTelemetry:
        s = self._samples
        powers = self._powers()
        duration = max(self._t1 - self._t0, 0.0)
        energy, source = None, None
        if self._energy0 is not None and self._energy1 is not None and self._energy1 >= self._energy0:
            energy, source = (self._energy1 - self._energy0) / 1000.0, "counter"
        else:
            energy = self.integrated_energy_j()
            source = "integrated" if energy is not None else None
        peak_used = max(s.used_mb) if s.used_mb else None
        if s.process_mb:
            process = max(s.process_mb)
        elif peak_used is not None and self.baseline_mem_mb is not None:
            process = max(peak_used - self.baseline_mem_mb, 0.0)
        else:
            process = None
        throttling = sorted(s.reasons - NOT_THROTTLING)
        return GpuTelemetry(
            device_index=self.index,
            name=self.name,
            samples=len(s.t),
            duration_s=duration,
            avg_power_w=energy / duration
            if energy is not None and duration > 0
            else (sum(p for _, p in powers) / len(powers) if powers else None),
            max_power_w=max(p for _, p in powers) if powers else None,
            idle_power_w=self.idle_power_w,
            energy_j=energy,
            energy_source=source,
            peak_mem_used_mb=peak_used,
            baseline_mem_used_mb=self.baseline_mem_mb,
            peak_process_mem_mb=process,
            sm_clock_mhz_mean=sum(s.sm_mhz) / len(s.sm_mhz) if s.sm_mhz else None,
            sm_clock_mhz_min=min(s.sm_mhz) if s.sm_mhz else None,
            temperature_c_max=max(s.temp_c) if s.temp_c else None,
            throttled=bool(throttling),
            throttle_reasons=sorted(s.reasons),
        )


def with_telemetry(m: Measurement, tracker: GpuTracker) -> Measurement:
    """The measurement with the tracker's readings and its energy per 4096 predictions."""
    telemetry = tracker.telemetry()
    raw, net = energy_per_predictions(telemetry, m.batch_size * m.iterations)
    # A GPU run's energy is the GPU's: it replaces a CPU (RAPL) figure; the CPU's stays in cpu_energy_j.
    source = f"nvml-{telemetry.energy_source}" if telemetry.energy_source and raw is not None else None
    return m.model_copy(
        update={
            "gpu": telemetry,
            "energy_j_per_4096": raw,
            "energy_j_per_4096_net": net,
            "energy_source": source,
        }
    )


def energy_per_predictions(
    t: GpuTelemetry,
    samples: int,
    predictions: int = PREDICTIONS,
) -> tuple[float | None, float | None]:
    """(raw, idle-subtracted) energy in J for `predictions` predictions, from `samples` measured."""
    if t.energy_j is None or samples <= 0:
        return None, None
    raw = t.energy_j / samples * predictions
    if t.idle_power_w is None:
        return raw, None
    net = max(t.energy_j - t.idle_power_w * t.duration_s, 0.0) / samples * predictions
    return raw, net


def device_info(nvml: Any, index: int) -> dict[str, str]:
    """Static facts of a GPU for the fingerprint: name, UUID, driver, CUDA, clocks, power limit."""
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    info = {"index": str(index), "name": _name(nvml.nvmlDeviceGetName(h))}
    for key, fn, args, scale in (
        ("uuid", "nvmlDeviceGetUUID", (), None),
        ("driver", "nvmlSystemGetDriverVersion", None, None),
        ("cuda_driver", "nvmlSystemGetCudaDriverVersion_v2", None, None),
        ("power_limit_w", "nvmlDeviceGetPowerManagementLimit", (), 1000.0),
        ("max_sm_clock_mhz", "nvmlDeviceGetMaxClockInfo", (getattr(nvml, "NVML_CLOCK_SM", 1),), None),
        ("memory_total_mb", "nvmlDeviceGetMemoryInfo", (), None),
    ):
        f = getattr(nvml, fn, None)
        if f is None:
            continue
        value = _call(f) if args is None else _call(f, h, *args)
        if value is None:
            continue
        if key == "memory_total_mb":
            value = f"{value.total / MB:.0f}"
        elif key == "cuda_driver":
            value = f"{int(value) // 1000}.{int(value) % 1000 // 10}"
        elif scale:
            value = f"{float(value) / scale:g}"
        info[key] = _name(value)
    cc = _call(getattr(nvml, "nvmlDeviceGetCudaComputeCapability", lambda _h: None), h)
    if cc:
        info["compute_capability"] = f"{cc[0]}.{cc[1]}"
    return info
