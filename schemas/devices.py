"""Device names (`cpu`, `cuda:N`) and whether this host has an NVIDIA GPU: one definition for
the controller and the runners."""

from __future__ import annotations

from pathlib import Path


def cuda_index(device: str) -> int | None:
    """N of `cuda:N`; None for the CPU."""
    kind, _, index = device.partition(":")
    return int(index) if kind == "cuda" else None


def nvidia_gpu_present(dev: Path = Path("/dev")) -> bool:
    """Whether a GPU's device node exists (`/dev/nvidia0`, ...). `/dev/nvidiactl` alone is not a
    GPU: the driver can be loaded on a machine whose GPUs are gone or hidden."""
    return any(dev.glob("nvidia[0-9]*"))
