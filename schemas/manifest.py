"""The model store's manifest: what a model folder holds and how it was made."""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from schemas.limits import KERAS_MODELS as KERAS_MODELS  # re-exported: it lives in schemas.limits
from schemas.strict import Strict

MANIFEST_VERSION: Final = 1
# Written by the exporter into its output folder while it runs: {"step": ..., "peak_mem_mb": ...}.
# Read by bench-ctl when the exporter dies, removed when it succeeds; never part of a model.
EXPORT_PROGRESS_FILE: Final = "export-progress.json"


class ArtifactFile(Strict):
    path: str = Field(description="file name inside the model folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class ModelManifest(Strict):
    """`manifest.json` of a model folder in the store."""

    manifest_version: Literal[1] = 1
    name: str
    source: Literal["keras", "onnx"]
    created_at: datetime
    input_name: str
    input_shape: list[int | None] = Field(description="None marks the batch dimension")
    input_layout: Literal["NHWC", "NCHW"] | None
    input_dtype: str = "float32"
    output_name: str
    output_shape: list[int | None]
    parameters: int | None = Field(None, ge=0)
    flops_per_sample: int | None = Field(None, ge=0)
    onnx_opset: int | None = None
    seed: int | None = None
    reference: str = Field(description="what computed reference_output.npy, e.g. tensorflow-fp32")
    reference_peak_mean: float | None = Field(
        None, description="mean top-1 probability of the reference batch (1/classes = flat)"
    )
    export_peak_mem_mb: float | None = Field(
        None,
        ge=0,
        description="peak resident memory of the export process in MiB (the kernel's high-water "
        "mark, its child processes included); absent in manifests written before it was recorded",
    )
    files: dict[str, ArtifactFile] = Field(
        description="role -> file: onnx, savedmodel (a folder), reference_input, reference_output"
    )
    tools: dict[str, str] = Field(default_factory=dict, description="versions that produced it")
