"""Options of TensorRT: an engine built from the ONNX artifact."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions


class TensorRTOptions(FrameworkOptions):
    """TensorRT engine built from the ONNX artifact."""

    framework: Literal["tensorrt"] = "tensorrt"
    runner: ClassVar[str] = "runners.frameworks.trt:TensorRTRunner"
    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    workspace_mb: int = Field(4096, ge=16, description="builder workspace limit")
    opt_batch: int | None = Field(None, ge=1, description="profile's optimal batch; None: the largest")
    builder_optimization_level: int | None = Field(None, ge=0, le=5)
    cuda_graph: bool = Field(False, description="replay each batch size from a captured CUDA graph")
    calibration: str | None = Field(None, description="int8: .npy of representative inputs")
    cache: bool = Field(True, description="cache serialized engines")
