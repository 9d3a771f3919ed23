"""What a run has found so far, phase by phase: the harness fills it and builds the result from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import Accuracy, Measurement, Phase


@dataclass
class RunState:
    phases: list[Phase] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    accuracy: Accuracy | None = None
    framework_version: str | None = None
    precision: str | None = None
    gpus: list[dict[str, str]] = field(default_factory=list)
    threads: int | None = None  # the framework's, as it reports them after compiling
    warnings: list[str] = field(default_factory=list)
