"""Options of IREE: the ONNX artifact imported to MLIR and compiled ahead of time."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import CORES, FrameworkOptions, tunable


class IreeOptions(FrameworkOptions):
    """IREE (MLIR compiler and runtime): the ONNX artifact imported by IREE's ONNX importer and
    compiled ahead of time, for the CPU (llvm-cpu) or, on a GPU host, CUDA."""

    framework: Literal["iree"] = "iree"
    runner: ClassVar[str] = "runners.frameworks.iree:IreeRunner"
    static_shapes: bool = Field(
        True,
        description="compile one module per batch size (in the compile phase) instead of a dynamic batch",
    )
    # A search tries the optimization levels (not O0: no optimization), the target CPU, the
    # microkernels and the threads.
    target_cpu: Literal["host", "generic"] = Field(
        "host",
        description="llvm-cpu: code for this host's CPU features, or for a generic CPU of its kind",
        json_schema_extra=tunable("generic"),
    )
    opt_level: Literal["O0", "O1", "O2", "O3"] = Field(
        "O2", description="iree-compile --iree-opt-level", json_schema_extra=tunable("O1", "O3")
    )
    ukernels: Literal["default", "none", "all", "mmt4d"] = Field(
        "default",
        description="llvm-cpu: --iree-llvmcpu-enable-ukernels (microkernels for matmuls and "
        "data-tiling ops instead of generated code); default passes no flag: iree-compile's choice",
        json_schema_extra=tunable("all", "none"),
    )
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU: worker threads of the task executor; None: the cores the runner was given",
        json_schema_extra=tunable(1, 2, 4, CORES),
    )
    cache: bool = Field(True, description="keep compiled modules (.vmfb) and reuse them")
