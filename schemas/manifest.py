"""The model store's manifest: what a model folder holds and how it was made.

A model is a list of named inputs and a list of named outputs. Each shape holds `None` for the
batch dimension, integers for fixed sizes and names (`"seq"`) for other dynamic dimensions, whose
values a run sets (`dims`, defaults in the manifest's own `dims`).

Version 1 manifests (one float input, one output) are read as version 2: `upgrade_manifest`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from schemas.limits import KERAS_MODELS as KERAS_MODELS  # re-exported: it lives in schemas.limits
from schemas.limits import MAX_DIM
from schemas.strict import Strict

MANIFEST_VERSION: Final = 2
# Written by the exporter into its output folder while it runs: {"step": ..., "peak_mem_mb": ...}.
# Read by bench-ctl when the exporter dies, removed when it succeeds; never part of a model.
EXPORT_PROGRESS_FILE: Final = "export-progress.json"

DType = Literal["float32", "float16", "int64", "int32", "bool"]
DTYPES: Final = ("float32", "float16", "int64", "int32", "bool")
# The range a dtype holds, for `--int-range` checks (bool: 0 and 1).
DTYPE_RANGES: Final = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1), "bool": (0, 1)}
DIM_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
DEFAULT_INT_RANGE: Final = (0, 100)  # integer inputs without data: uniform in [0, 100)


class ArtifactFile(Strict):
    path: str = Field(description="file name inside the model folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class InputValues(Strict):
    """How the harness makes an input when no data is given (the rule in docs/models.md):
    floats uniform in [0, 1), integers uniform in [low, high), `ones` for masks."""

    kind: Literal["uniform", "integers", "ones"]
    low: int | None = None
    high: int | None = Field(None, description="exclusive")

    @model_validator(mode="after")
    def _range(self) -> InputValues:
        if self.kind == "integers" and (self.low is None or self.high is None or self.high <= self.low):
            raise ValueError("integers need low < high")
        return self


class TensorInfo(Strict):
    """One input or output of the model."""

    name: str = Field(min_length=1, max_length=256)
    dtype: DType = "float32"
    shape: list[int | str | None] = Field(
        description="None: the batch dimension; an integer: fixed; a name: a dynamic dimension"
    )
    layout: Literal["NHWC", "NCHW"] | None = Field(None, description="image inputs: channel order")
    values: InputValues | None = Field(None, description="inputs: how samples are made without data")

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int | str | None]) -> list[int | str | None]:
        for d in v:
            if isinstance(d, str) and not DIM_NAME_RE.fullmatch(d):
                raise ValueError(f"dimension name {d!r} is not an identifier")
            if isinstance(d, int) and not 0 <= d <= MAX_DIM:
                raise ValueError(f"dimension {d} is out of range")
        return v

    @property
    def dim_names(self) -> list[str]:
        return [d for d in self.shape if isinstance(d, str)]

    def concrete(self, batch_size: int, dims: dict[str, int]) -> list[int]:
        """The shape at this batch size and these dimension values."""
        return [batch_size if d is None else dims[d] if isinstance(d, str) else d for d in self.shape]

    @property
    def class_scores(self) -> bool:
        """[batch, classes] of floats, classes > 1: top-1 and top-5 mean something."""
        return (
            self.dtype.startswith("float")
            and len(self.shape) == 2
            and self.shape[0] is None
            and isinstance(self.shape[1], int)
            and self.shape[1] > 1
        )


class DataInfo(Strict):
    """The user's samples (`models add --data`): one array per input, first axis the samples."""

    samples: int = Field(ge=1)
    labels: bool = False
    fp32_top1: float | None = Field(None, ge=0, le=1, description="the reference's top-1 on the labels")
    fp32_top5: float | None = Field(None, ge=0, le=1)
    scored_output: str | None = Field(None, description="the output scored against the labels")


class ModelManifest(Strict):
    """`manifest.json` of a model folder in the store."""

    manifest_version: Literal[2] = 2
    name: str
    source: Literal["keras", "onnx", "pytorch"]
    created_at: datetime
    inputs: list[TensorInfo] = Field(min_length=1)
    outputs: list[TensorInfo] = Field(min_length=1)
    dims: dict[str, int] = Field(
        default_factory=dict, description="default value of each named dynamic dimension"
    )
    sequence_dim: str | None = Field(
        None, description="the dimension that counts tokens: throughput is also tokens/s (batch x it)"
    )
    data: DataInfo | None = None
    parameters: int | None = Field(None, ge=0)
    flops_per_sample: int | None = Field(None, ge=0)
    onnx_opset: int | None = None
    seed: int | None = None
    reference: str = Field(description="what computed the reference outputs, e.g. tensorflow-fp32")
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
        description="role -> file: onnx, savedmodel (a folder), reference_input, reference_output "
        "(.npy for one tensor, .npz of name -> array for several), data (.npz)"
    )
    tools: dict[str, str] = Field(default_factory=dict, description="versions that produced it")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, doc: Any) -> Any:
        return upgrade_manifest(doc) if isinstance(doc, dict) else doc

    @model_validator(mode="after")
    def _dims(self) -> ModelManifest:
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("two inputs have the same name")
        used = {d for t in self.inputs for d in t.dim_names}
        if used - set(self.dims):
            raise ValueError(f"dimension {sorted(used - set(self.dims))[0]!r} has no default in dims")
        for name, value in self.dims.items():
            if not DIM_NAME_RE.fullmatch(name) or not 1 <= value <= MAX_DIM:
                raise ValueError(f"dims: {name}={value} is not a dimension name with a value >= 1")
        if self.sequence_dim is not None and self.sequence_dim not in self.dims:
            raise ValueError(f"sequence_dim {self.sequence_dim!r} is not one of dims")
        return self

    # The first input and output, as version 1 named them (image models have one of each).
    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def input_shape(self) -> list[int | None]:
        """The first input's shape, None for the batch, named dimensions at their defaults."""
        dims = self.dims
        return [None if d is None else dims[d] if isinstance(d, str) else d for d in self.inputs[0].shape]

    @property
    def input_layout(self) -> str | None:
        return self.inputs[0].layout

    @property
    def input_dtype(self) -> str:
        return self.inputs[0].dtype

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    @property
    def output_shape(self) -> list[int | str | None]:
        return self.outputs[0].shape

    @property
    def dim_names(self) -> list[str]:
        """The named dynamic dimensions, in the order the inputs first use them."""
        seen: list[str] = []
        for t in self.inputs:
            seen += [d for d in t.dim_names if d not in seen]
        return seen

    def sample_bytes(self, dims: dict[str, int] | None = None) -> int:
        """Bytes of one sample of every input together."""
        size = {"float32": 4, "float16": 2, "int64": 8, "int32": 4, "bool": 1}
        at = {**self.dims, **(dims or {})}
        total = 0
        for t in self.inputs:
            n = 1
            for d in t.concrete(1, at):
                n *= d
            total += n * size[t.dtype]
        return total


def upgrade_manifest(doc: dict[str, Any]) -> dict[str, Any]:
    """A version 1 manifest (input_name, input_shape, input_layout, input_dtype, output_name,
    output_shape) as version 2 (inputs, outputs). Other versions are returned as they are."""
    if doc.get("manifest_version", 1) != 1 or "inputs" in doc:
        return doc
    old = dict(doc)
    dtype = old.pop("input_dtype", "float32")
    inp = {
        "name": old.pop("input_name", None),
        "dtype": dtype,
        "shape": old.pop("input_shape", None),
        "layout": old.pop("input_layout", None),
        "values": {"kind": "uniform"},
    }
    out = {"name": old.pop("output_name", None), "shape": old.pop("output_shape", None)}
    return {**old, "manifest_version": 2, "inputs": [inp], "outputs": [out]}


def default_values(name: str, dtype: str, int_range: tuple[int, int] | None = None) -> InputValues:
    """The rule for an input's samples when the user gives no data: an input whose name holds
    `mask` is all ones; floats are uniform in [0, 1); integers uniform in `int_range` (default
    [0, 100), and [0, 2) for segment ids: a name holding `token_type` or `segment`, as BERT's
    two-row type table takes); booleans 0 or 1."""
    lowered = name.lower()
    if "mask" in lowered:
        return InputValues(kind="ones")
    if dtype.startswith("float"):
        return InputValues(kind="uniform")
    segments = "token_type" in lowered or "segment" in lowered
    low, high = int_range or ((0, 2) if dtype == "bool" or segments else DEFAULT_INT_RANGE)
    return InputValues(kind="integers", low=low, high=high)
