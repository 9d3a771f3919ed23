"""Options of TensorRT: an engine built from the ONNX artifact."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions, tunable


class TensorRTOptions(FrameworkOptions):
    """TensorRT engine built from the ONNX artifact."""

    framework: Literal["tensorrt"] = "tensorrt"
    runner: ClassVar[str] = "runners.frameworks.trt:TensorRTRunner"
    # A search tries the builder's optimization level and CUDA graphs; fp32 only with --precision
    # any (int8 is no candidate: it needs calibration data only the user has).
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", json_schema_extra=tunable("fp32", changes_precision=True)
    )
    workspace_mb: int = Field(4096, ge=16, description="builder workspace limit")
    opt_batch: int | None = Field(None, ge=1, description="profile's optimal batch; None: the largest")
    builder_optimization_level: int | None = Field(
        None,
        ge=0,
        le=5,
        description="how long the builder searches tactics; None: TensorRT's default (3)",
        # Levels below the default search fewer tactics: faster builds, rarely faster engines.
        json_schema_extra=tunable(4, 5),
    )
    cuda_graph: bool = Field(
        False,
        description="replay each batch size from a captured CUDA graph",
        json_schema_extra=tunable(True),
    )
    calibration: str | None = Field(
        None,
        description="int8: representative samples, .npy of one input's or .npz of input name -> "
        "samples; None: the model's own data (models add --data)",
    )
    cache: bool = Field(True, description="cache serialized engines")
