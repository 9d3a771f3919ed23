"""This host's identity: what must stay the same for two measurements to count as "the same host".

A sweep keys each cell on it, so new hardware (another CPU, more memory, other GPUs or driver)
makes every cell due again, while a reboot or a new load average does not."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

from pydantic import BaseModel

from probes import fingerprint

NVIDIA_PROC = Path("/proc/driver/nvidia")


class HostIdentity(BaseModel):
    hostname: str
    cpu_model: str
    cpu_count: int
    memory_gb: int
    gpus: list[str]
    nvidia_driver: str | None

    @property
    def key(self) -> str:
        """A short stable hash of the identity."""
        text = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def nvidia_gpus(root: Path = NVIDIA_PROC) -> list[str]:
    """GPU models the NVIDIA driver lists, in bus order (no NVML needed)."""
    names = []
    for info in sorted((root / "gpus").glob("*/information")):
        try:
            for line in info.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model":
                    names.append(value.strip())
        except OSError:
            continue
    return names


def nvidia_driver(root: Path = NVIDIA_PROC) -> str | None:
    """The loaded driver's version, e.g. '570.86.15', from the kernel module's banner."""
    try:
        banner = (root / "version").read_text()
    except OSError:
        return None
    for word in banner.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def identity() -> HostIdentity:
    """This host's identity, from the kernel's files (fast: no framework, no NVML)."""
    mem_mb = fingerprint.memory_total_mb()
    return HostIdentity(
        hostname=socket.gethostname(),
        cpu_model=fingerprint.cpu_model(),
        cpu_count=os.cpu_count() or 1,
        # Rounded to whole GiB: the kernel's figure moves by a few MiB across boots.
        memory_gb=round(mem_mb / 1024),
        gpus=nvidia_gpus(),
        nvidia_driver=nvidia_driver(),
    )
