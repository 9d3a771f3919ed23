"""Options of the null runner: the harness itself, no framework."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions


class NullOptions(FrameworkOptions):
    """The harness itself: returns a preallocated zero output. `fault` exercises failure paths."""

    framework: Literal["null"] = "null"
    runner: ClassVar[str] = "runners.frameworks.null:NullRunner"
    work_us: float = Field(
        0.0, ge=0, le=60e6, description="busy work this long per iteration, with the GIL released"
    )
    work_us_per_sample: float = Field(
        0.0,
        ge=0,
        le=60e6,
        description="more busy work per sample of the batch: an iteration works "
        "work_us + work_us_per_sample * batch size",
    )
    threads_option: ClassVar[str | None] = "threads"
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="threads doing the work at once (each its work_us), as a framework's would",
    )
    tag: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]{0,40}$",
        description="no effect: tells apart identical configurations (A/A calibration)",
    )
    fault: Literal["none", "raise", "exit", "hang", "bad-output", "oom"] = "none"
