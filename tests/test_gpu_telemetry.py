"""NVML tracker on replayed readings: the real sampling, energy and throttle code paths."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from probes import gpu

RECORDING = Path(__file__).parent / "data" / "nvml_replay_h100_like.json"


class ReplayNvml:
    """Answers NVML queries from a recording: each call returns the next recorded value."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, recording: dict[str, Any], energy: bool = True, pid: int = 4242) -> None:
        self.rec = recording
        self.pos = {k: 0 for k in recording["series"]}
        self.pid = pid
        self.energy = energy

    def _next(self, key: str) -> float:
        values = self.rec["series"][key]
        i = min(self.pos[key], len(values) - 1)
        self.pos[key] += 1
        return values[i]

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlDeviceGetName(self, _h: str) -> bytes:
        return self.rec["name"].encode()

    def nvmlDeviceGetPowerUsage(self, _h: str) -> int:
        return int(self._next("power_mw"))

    def nvmlDeviceGetMemoryInfo(self, _h: str) -> SimpleNamespace:
        return SimpleNamespace(
            used=int(self._next("used_mb") * gpu.MB), total=int(self.rec["total_mb"] * gpu.MB)
        )

    def nvmlDeviceGetComputeRunningProcesses(self, _h: str) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(pid=self.pid, usedGpuMemory=int(self._next("process_mb") * gpu.MB)),
            SimpleNamespace(pid=1, usedGpuMemory=512 * gpu.MB),
        ]

    def nvmlDeviceGetClockInfo(self, _h: str, _clock: int) -> int:
        return int(self._next("sm_mhz"))

    def nvmlDeviceGetTemperature(self, _h: str, _sensor: int) -> int:
        return int(self._next("temp_c"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, _h: str) -> int:
        return int(self._next("reasons"))

    def nvmlDeviceGetTotalEnergyConsumption(self, _h: str) -> int:
        if not self.energy:
            raise RuntimeError("NVMLError_NotSupported")
        return int(self._next("energy_mj"))

    def nvmlDeviceGetUUID(self, _h: str) -> str:
        return self.rec["uuid"]

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.rec["driver"]

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return int(self.rec["cuda"])

    def nvmlDeviceGetPowerManagementLimit(self, _h: str) -> int:
        return int(self.rec["power_limit_mw"])

    def nvmlDeviceGetCudaComputeCapability(self, _h: str) -> tuple[int, int]:
        return (9, 0)


class StepClock:
    """A clock that advances by a fixed step each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def recording() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDING.read_text())
    return data


def run_tracker(nvml: ReplayNvml, samples: int) -> gpu.GpuTracker:
    tracker = gpu.GpuTracker(nvml, 0, pid=nvml.pid, interval_s=3600, clock=StepClock(0.1))
    tracker.measure_idle(0.0)
    with tracker:
        for _ in range(samples):
            tracker.sample()
    return tracker


def test_energy_from_counter(recording: dict[str, Any]) -> None:
    t = run_tracker(ReplayNvml(recording), 6).telemetry()
    e = recording["series"]["energy_mj"]
    assert t.energy_source == "counter"
    assert t.energy_j == pytest.approx((e[1] - e[0]) / 1000)
    assert t.name == recording["name"]
    assert t.idle_power_w == pytest.approx(recording["series"]["power_mw"][0] / 1000)
    assert t.energy_j is not None and t.avg_power_w == pytest.approx(t.energy_j / t.duration_s)


def test_energy_integrated_when_no_counter(recording: dict[str, Any]) -> None:
    tracker = run_tracker(ReplayNvml(recording, energy=False), 4)
    t = tracker.telemetry()
    assert t.energy_source == "integrated"
    # idle read took power[0]; the 6 samples (enter, 4, exit) took power[1..6], 0.1 s apart.
    p = [v / 1000 for v in recording["series"]["power_mw"][1:7]]
    expected = sum(0.1 * (a + b) / 2 for a, b in itertools.pairwise(p))
    assert t.energy_j == pytest.approx(expected)
    assert t.max_power_w == pytest.approx(max(p))


def test_memory_process_and_baseline(recording: dict[str, Any]) -> None:
    t = run_tracker(ReplayNvml(recording), 5).telemetry()
    s = recording["series"]
    assert t.baseline_mem_used_mb == pytest.approx(s["used_mb"][0])
    assert t.peak_mem_used_mb == pytest.approx(max(s["used_mb"][1:8]))
    assert t.peak_process_mem_mb == pytest.approx(max(s["process_mb"][:7]))


def test_process_memory_falls_back_to_peak_minus_baseline(recording: dict[str, Any]) -> None:
    nvml = ReplayNvml(recording, pid=99)  # inside a container NVML reports host pids
    tracker = gpu.GpuTracker(nvml, 0, pid=1234, interval_s=3600, clock=StepClock(0.1))
    tracker.measure_idle(0.0)
    with tracker:
        tracker.sample()
    t = tracker.telemetry()
    assert t.peak_mem_used_mb is not None and t.baseline_mem_used_mb is not None
    assert t.peak_process_mem_mb == pytest.approx(t.peak_mem_used_mb - t.baseline_mem_used_mb)


def test_throttle_flag_ignores_idle_and_app_clocks(recording: dict[str, Any]) -> None:
    t = run_tracker(ReplayNvml(recording), 2).telemetry()
    # The first readings carry only gpu_idle (0x1): not throttling.
    assert not t.throttled
    t = run_tracker(ReplayNvml(recording), 8).telemetry()
    assert t.throttled
    assert "sw_power_cap" in t.throttle_reasons


def test_energy_per_4096_raw_and_net(recording: dict[str, Any]) -> None:
    t = run_tracker(ReplayNvml(recording), 6).telemetry()
    raw, net = gpu.energy_per_predictions(t, samples=2048)
    assert t.energy_j is not None and raw is not None and net is not None
    assert raw == pytest.approx(t.energy_j * 2)
    assert t.idle_power_w is not None
    assert net == pytest.approx((t.energy_j - t.idle_power_w * t.duration_s) * 2)
    assert 0 < net < raw


def test_decode_reasons() -> None:
    assert gpu.decode_reasons(0x1 | 0x4 | 0x40) == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert gpu.decode_reasons(0) == []


def test_device_info(recording: dict[str, Any]) -> None:
    info = gpu.device_info(ReplayNvml(recording), 0)
    assert info["name"] == recording["name"]
    assert info["uuid"] == recording["uuid"]
    assert info["compute_capability"] == "9.0"
    assert info["power_limit_w"] == "700"
    assert info["cuda_driver"] == "12.8"


def test_physical_index_respects_container_remap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_CUDA_INDEX", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu.physical_index("cuda:3") == 3
    monkeypatch.setenv("BENCH_CUDA_INDEX", "0")
    assert gpu.physical_index("cuda:3") == 0


def test_physical_index_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Slurm job given GPU 5 has CUDA_VISIBLE_DEVICES=5: its cuda:0 is NVML's GPU 5."""
    monkeypatch.delenv("BENCH_CUDA_INDEX", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,2")
    assert gpu.physical_index("cuda:0") == 5 and gpu.physical_index("cuda:1") == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f3a")  # UUIDs: NVML's own order is kept
    assert gpu.physical_index("cuda:0") == 0


def test_load_nvml_absent_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> ModuleType:
        if name == "pynvml":
            raise ImportError("no pynvml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert gpu.load_nvml() is None


def test_with_telemetry_attaches_readings_and_energy(recording: dict[str, Any]) -> None:
    from runners.core.measure import SteadyState, summarize
    from schemas import MeasurementPolicy

    tracker = run_tracker(ReplayNvml(recording), 6)
    state = SteadyState(latencies_ns=[10_000_000] * 512, elapsed_ns=5_120_000_000, windows=[1e7])
    m = gpu.with_telemetry(summarize(4, state, MeasurementPolicy()), tracker)
    assert m.gpu == tracker.telemetry()
    raw, net = gpu.energy_per_predictions(tracker.telemetry(), 4 * 512)
    assert (m.energy_j_per_4096, m.energy_j_per_4096_net) == (raw, net)
    energy_j = tracker.telemetry().energy_j
    assert energy_j is not None and m.energy_j_per_4096 == pytest.approx(energy_j * 2)


def test_integrated_energy_is_the_trapezoid_of_the_window(recording: dict[str, Any]) -> None:
    tracker = run_tracker(ReplayNvml(recording), 4)
    # Idle took power[0]; the window's 6 samples (enter, 4, exit) took power[1..6], 0.1 s apart.
    p = [v / 1000 for v in recording["series"]["power_mw"][1:7]]
    assert tracker.integrated_energy_j() == pytest.approx(
        sum(0.1 * (a + b) / 2 for a, b in itertools.pairwise(p))
    )
    assert tracker.telemetry().energy_source == "counter"  # the counter still wins where there is one
