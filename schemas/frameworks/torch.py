"""Options of PyTorch: the ONNX artifact converted to a torch.nn.Module (onnx2torch)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import CORES, FrameworkOptions, tunable


class TorchOptions(FrameworkOptions):
    """PyTorch: the ONNX artifact converted to a torch.nn.Module (onnx2torch)."""

    framework: Literal["torch"] = "torch"
    runner: ClassVar[str] = "runners.frameworks.torch_runner:TorchRunner"
    # A search tries eager and compiled (not cudagraphs: a search space is the same on every
    # device, and on a GPU compile_mode=reduce-overhead replays CUDA graphs of the compiled
    # module), the compile modes (which only matter compiled), channels_last and the threads;
    # fp16 and bf16 only with --precision any.
    mode: Literal["eager", "compile", "cudagraphs"] = Field(
        "eager",
        description="eager; torch.compile; or CUDA graphs replay (GPU only)",
        json_schema_extra=tunable("compile"),
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", json_schema_extra=tunable("reduce-overhead", "max-autotune")
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32",
        description="weights and inputs cast to this type",
        json_schema_extra=tunable("bf16", "fp16", changes_precision=True),
    )
    channels_last: bool = Field(
        False, description="memory format of 4-D tensors", json_schema_extra=tunable(True)
    )
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None,
        ge=1,
        description="torch.set_num_threads; None: the cores the runner was given",
        json_schema_extra=tunable(1, 2, 4, CORES),
    )
