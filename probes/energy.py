"""CPU package energy from RAPL (the kernel's powercap interface), where the host exposes it.

Each package domain (`/sys/class/powercap/intel-rapl:N`, named `package-N`; AMD's RAPL appears
under the same names) has a microjoule counter, `energy_uj`, that wraps at `max_energy_range_uj`.
Two readings around a steady state give the energy all cores of the socket used meanwhile:
the runner's work plus whatever else ran, which `other_cpu_cores` tells. Virtual machines
rarely expose it; there the figure stays None and the run says why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

POWERCAP = Path("/sys/class/powercap")
PREDICTIONS = 4096  # the study's D: energy is reported per 4096 predictions


@dataclass(frozen=True)
class RaplDomain:
    name: str  # package-0, ...
    counter: Path  # .../energy_uj
    max_range_uj: int

    def read_uj(self) -> int:
        return int(self.counter.read_text().strip())


def rapl_packages(root: Path = POWERCAP) -> tuple[list[RaplDomain], list[str]]:
    """(readable package domains, counters that exist but cannot be read, e.g. root-only)."""
    domains: list[RaplDomain] = []
    unreadable: list[str] = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside a package
            continue
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        if not name.startswith("package"):
            continue
        counter = zone / "energy_uj"
        try:
            int(counter.read_text().strip())
            max_range = int((zone / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            unreadable.append(str(counter))
            continue
        domains.append(RaplDomain(name, counter, max_range))
    return domains, unreadable


def availability(root: Path = POWERCAP) -> str:
    """What CPU energy a run on this host gets, in words, for the fingerprint."""
    domains, unreadable = rapl_packages(root)
    if domains:
        return "rapl: " + ", ".join(d.name for d in domains)
    if unreadable:
        return f"unavailable: RAPL counters are not readable by this user ({unreadable[0]})"
    return (
        f"unavailable: no RAPL package counters under {root} (virtual machine or container without powercap)"
    )


class CpuEnergyTracker:
    """Package energy used while the block ran, summed over packages; None where RAPL is absent."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.domains, _ = rapl_packages(root)
        self.energy_j: float | None = None
        self._start: list[int] | None = None

    def _read(self) -> list[int] | None:
        try:
            return [d.read_uj() for d in self.domains]
        except (OSError, ValueError):
            return None

    def __enter__(self) -> CpuEnergyTracker:
        self._start = self._read() if self.domains else None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = self._read() if self._start is not None else None
        if end is None or self._start is None:
            return
        total_uj = 0
        for d, a, b in zip(self.domains, self._start, end, strict=True):
            total_uj += b - a if b >= a else b + d.max_range_uj - a  # the counter wrapped once
        self.energy_j = total_uj / 1e6

    def per_predictions(self, samples: int, predictions: int = PREDICTIONS) -> float | None:
        """Energy for `predictions` predictions, from `samples` measured."""
        if self.energy_j is None or samples <= 0:
            return None
        return self.energy_j / samples * predictions
