"""Options of LiteRT (TensorFlow Lite's runtime): the SavedModel converted by TensorFlow's converter."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import CORES, FrameworkOptions, tunable


class LiteRTOptions(FrameworkOptions):
    """LiteRT: the SavedModel converted to a .tflite flatbuffer (fp32, fp16 weights or
    dynamic-range int8), run by LiteRT's interpreter with the XNNPACK delegate on the CPU."""

    framework: Literal["litert"] = "litert"
    runner: ClassVar[str] = "runners.frameworks.litert:LiteRTRunner"
    precision: Literal["fp32", "fp16", "dynamic-int8"] = Field(
        "fp32",
        description="converter option: fp32; fp16 weights (Optimize.DEFAULT, float16); dynamic-int8: "
        "int8 weights, activations quantized at run time (Optimize.DEFAULT, no calibration data)",
        json_schema_extra=tunable("fp16", "dynamic-int8", changes_precision=True),
    )
    xnnpack: bool = Field(
        True,
        description="apply the XNNPACK delegate (False: the built-in kernels only)",
        json_schema_extra=tunable(False),
    )
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None,
        ge=1,
        description="interpreter threads; None: the cores the runner was given",
        json_schema_extra=tunable(1, 2, 4, CORES),
    )
    cache: bool = Field(True, description="keep converted models (.tflite) and reuse them")
