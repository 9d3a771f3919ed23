"""Contracts shared by the controller and the runners (pydantic v2). Imports nothing of ours."""

from schemas.manifest import ArtifactFile, ModelManifest
from schemas.result import (
    PHASES,
    Accuracy,
    Fingerprint,
    GpuTelemetry,
    LaunchInfo,
    Measurement,
    Phase,
    RunResult,
    Status,
)
from schemas.spec import (
    FRAMEWORK_OPTION_MODELS,
    MODEL_NAME_RE,
    SCHEMA_VERSION,
    MeasurementPolicy,
    NullOptions,
    OnnxRuntimeOptions,
    OpenVinoOptions,
    RunSpec,
    TensorflowOptions,
    TensorRTOptions,
    TorchOptions,
)
from schemas.upgrade import SchemaVersionError, load_result, upgrade

__all__ = [
    "FRAMEWORK_OPTION_MODELS",
    "MODEL_NAME_RE",
    "PHASES",
    "SCHEMA_VERSION",
    "Accuracy",
    "ArtifactFile",
    "Fingerprint",
    "GpuTelemetry",
    "LaunchInfo",
    "Measurement",
    "MeasurementPolicy",
    "ModelManifest",
    "NullOptions",
    "OnnxRuntimeOptions",
    "OpenVinoOptions",
    "Phase",
    "RunResult",
    "RunSpec",
    "SchemaVersionError",
    "Status",
    "TensorRTOptions",
    "TensorflowOptions",
    "TorchOptions",
    "load_result",
    "upgrade",
]
