"""Options of OpenVINO Runtime."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import CORES, FrameworkOptions, tunable


class OpenVinoOptions(FrameworkOptions):
    """OpenVINO Runtime."""

    framework: Literal["openvino"] = "openvino"
    runner: ClassVar[str] = "runners.frameworks.ov:OpenVinoRunner"
    # A search tries the hint, streams (one, two, one per core), threads and the fed layout; the
    # precision hint only with --precision any (bf16 and f16 compute in less than f32).
    hint: Literal["latency", "throughput"] = Field("latency", json_schema_extra=tunable("throughput"))
    streams: int | None = Field(
        None, ge=1, description="None: chosen by the hint", json_schema_extra=tunable(1, 2, CORES)
    )
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None,
        ge=1,
        description="INFERENCE_NUM_THREADS; None: the cores the runner was given",
        json_schema_extra=tunable(1, 2, 4, CORES),
    )
    precision: Literal["f32", "bf16", "f16"] | None = Field(
        "f32",
        description="inference precision hint: f32 by default, as the other CPU frameworks compute, so "
        "that comparisons are like for like; auto (None) keeps the device's own choice (bf16 on CPUs "
        "with AMX or AVX512-BF16)",
        json_schema_extra=tunable("bf16", "f16", None, changes_precision=True),
    )
    layout: Literal["NHWC", "NCHW"] | None = Field(
        None,
        description="layout of the tensor fed to the model; None keeps the model's",
        json_schema_extra=tunable("NHWC", "NCHW"),
    )
    cache: bool = Field(True, description="cache compiled blobs (CACHE_DIR)")
    static_shapes: bool = Field(
        True, description="compile one model per batch size (in the compile phase) instead of a dynamic batch"
    )
