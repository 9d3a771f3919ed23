"""Options of ONNX Runtime (CPU execution provider)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import CORES, FrameworkOptions, tunable


class OnnxRuntimeOptions(FrameworkOptions):
    """ONNX Runtime (CPU execution provider)."""

    framework: Literal["onnxruntime"] = "onnxruntime"
    runner: ClassVar[str] = "runners.frameworks.ort:OnnxRuntimeRunner"
    # A search tries the threads, the execution mode and the graph optimization levels ("disable"
    # is the study's ablation, not a setting anyone deploys). The provider, I/O binding, cuDNN's
    # algorithm search and trt_fp16 are GPU settings: they stay as given.
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", json_schema_extra=tunable("basic", "extended")
    )
    threads_option: ClassVar[str | None] = "intra_op_threads"
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="threads of an operator (the calling one included); 0: the cores the runner was given",
        json_schema_extra=tunable(1, 2, 4, CORES),
    )
    inter_op_threads: int = Field(0, ge=0, description="0 lets ONNX Runtime decide")
    execution_mode: Literal["sequential", "parallel"] = Field(
        "sequential", json_schema_extra=tunable("parallel")
    )
    cache: bool = Field(
        True, description="save and reuse the optimized model (TensorRT provider: its engines)"
    )
    provider: Literal["cpu", "cuda", "tensorrt"] | None = Field(
        None, description="execution provider; None: cuda on a GPU device, else cpu"
    )
    io_binding: bool = Field(False, description="GPU: inputs and outputs stay on the device (I/O binding)")
    cudnn_conv_algo_search: Literal["exhaustive", "heuristic", "default"] = "exhaustive"
    trt_fp16: bool = Field(True, description="TensorRT provider: allow FP16 kernels")
