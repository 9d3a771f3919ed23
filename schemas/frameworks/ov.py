"""Options of OpenVINO Runtime."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions


class OpenVinoOptions(FrameworkOptions):
    """OpenVINO Runtime."""

    framework: Literal["openvino"] = "openvino"
    runner: ClassVar[str] = "runners.frameworks.ov:OpenVinoRunner"
    hint: Literal["latency", "throughput"] = "latency"
    streams: int | None = Field(None, ge=1, description="None: chosen by the hint")
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None, ge=1, description="INFERENCE_NUM_THREADS; None: the cores the runner was given"
    )
    precision: Literal["f32", "bf16", "f16"] | None = Field(
        "f32",
        description="inference precision hint: f32 by default, as the other CPU frameworks compute, so "
        "that comparisons are like for like; auto (None) keeps the device's own choice (bf16 on CPUs "
        "with AMX or AVX512-BF16)",
    )
    layout: Literal["NHWC", "NCHW"] | None = Field(
        None, description="layout of the tensor fed to the model; None keeps the model's"
    )
    cache: bool = Field(True, description="cache compiled blobs (CACHE_DIR)")
    static_shapes: bool = Field(
        True, description="compile one model per batch size (in the compile phase) instead of a dynamic batch"
    )
