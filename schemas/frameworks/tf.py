"""Options of TensorFlow: SavedModel served through a tf.function."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.frameworks.base import CORES, FrameworkOptions, tunable


class TensorflowOptions(FrameworkOptions):
    """TensorFlow: SavedModel served through a tf.function."""

    framework: Literal["tensorflow"] = "tensorflow"
    runner: ClassVar[str] = "runners.frameworks.tf:TensorflowRunner"
    # A search tries XLA both ways (the default is one of them, by device) and the threads;
    # memory_growth changes what the process holds, not the speed.
    xla: bool | None = Field(
        None,
        description="jit_compile the function; None: on for GPU, off for CPU",
        json_schema_extra=tunable(True, False),
    )
    memory_growth: bool = Field(True, description="grow GPU memory on demand instead of taking it all")
    threads_option: ClassVar[str | None] = "threads"
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op parallelism threads; None: the cores the runner was given",
        json_schema_extra=tunable(1, 2, 4, CORES),
    )
