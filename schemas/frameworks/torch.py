"""Options of PyTorch: the ONNX artifact converted to a torch.nn.Module (onnx2torch)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions


class TorchOptions(FrameworkOptions):
    """PyTorch: the ONNX artifact converted to a torch.nn.Module (onnx2torch)."""

    framework: Literal["torch"] = "torch"
    runner: ClassVar[str] = "runners.frameworks.torch_runner:TorchRunner"
    mode: Literal["eager", "compile", "cudagraphs"] = Field(
        "eager", description="eager; torch.compile; or CUDA graphs replay (GPU only)"
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="weights and inputs cast to this type"
    )
    channels_last: bool = Field(False, description="memory format of 4-D tensors")
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None, ge=1, description="torch.set_num_threads; None: the cores the runner was given"
    )
