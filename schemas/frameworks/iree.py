"""Options of IREE: the ONNX artifact imported to MLIR and compiled ahead of time."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions


class IreeOptions(FrameworkOptions):
    """IREE (MLIR compiler and runtime): the ONNX artifact imported by IREE's ONNX importer and
    compiled ahead of time, for the CPU (llvm-cpu) or, on a GPU host, CUDA."""

    framework: Literal["iree"] = "iree"
    runner: ClassVar[str] = "runners.frameworks.iree:IreeRunner"
    static_shapes: bool = Field(
        True,
        description="compile one module per batch size (in the compile phase) instead of a dynamic batch",
    )
    target_cpu: Literal["host", "generic"] = Field(
        "host", description="llvm-cpu: code for this host's CPU features, or for a generic CPU of its kind"
    )
    opt_level: Literal["O0", "O1", "O2", "O3"] = Field("O2", description="iree-compile --iree-opt-level")
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU: worker threads of the task executor; None: the cores the runner was given",
    )
    cache: bool = Field(True, description="keep compiled modules (.vmfb) and reuse them")
