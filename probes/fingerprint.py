"""The environment a result was produced in, read from inside the runner's own process."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

from probes import energy
from schemas import Fingerprint

# CPU features that change inference speed or precision choices.
INTERESTING_FLAGS = {
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "sse4_2",
    "asimd",
    "sve",
}
# Variables that change how frameworks use threads; recorded when set.
TUNING_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_XLA_FLAGS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "KMP_AFFINITY",
)


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, sorted(flags)


def cpu_model() -> str:
    """The CPU's model name (falls back to the platform's processor or machine name)."""
    return _cpuinfo()[0]


def cpu_flags() -> list[str]:
    """Every feature flag of the CPU (what code compiled for the host may use)."""
    return _cpuinfo()[1]


def cpu_limit() -> float | None:
    """Cores this process may use: the smaller of its affinity mask and its cgroup CPU quota."""
    limits: list[float] = []
    try:
        limits.append(float(len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        pass
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            limits.append(int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def memory_total_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def packages() -> dict[str, str]:
    """Every installed distribution and its version."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return dict(sorted(found.items()))


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_governor() -> str | None:
    """The cpufreq scaling governor of CPU 0 (performance, powersave, ...), where exposed."""
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def turbo() -> bool | None:
    """Whether turbo/boost is on: intel_pstate's no_turbo, or the generic cpufreq boost switch."""
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    if no_turbo in ("0", "1"):
        return no_turbo == "0"
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    return boost == "1" if boost in ("0", "1") else None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def collect(framework: str, framework_version: str, gpus: list[dict[str, str]] | None = None) -> Fingerprint:
    model, all_flags = _cpuinfo()
    flags = sorted(set(all_flags) & INTERESTING_FLAGS)
    return Fingerprint(
        host=socket.gethostname(),
        python=sys.version.split()[0],
        os=f"{platform.system()} {platform.release()} ({platform.machine()})",
        cpu_model=model,
        cpu_flags=flags,
        cpu_count=os.cpu_count() or 1,
        cpu_limit=cpu_limit(),
        memory_total_mb=memory_total_mb(),
        framework=framework,
        framework_version=framework_version,
        packages=packages(),
        gpus=gpus or [],
        env={k: os.environ[k] for k in TUNING_VARS if k in os.environ},
        cpu_governor=cpu_governor(),
        turbo=turbo(),
        load_average=load_average(),
        cpu_energy=energy.availability(),
    )
