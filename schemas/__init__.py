"""Contracts shared by the controller and the runners (pydantic v2). Imports nothing of ours."""

from schemas.frameworks import FrameworkOptions
from schemas.frameworks.null import NullOptions
from schemas.frameworks.ort import OnnxRuntimeOptions
from schemas.frameworks.ov import OpenVinoOptions
from schemas.frameworks.tf import TensorflowOptions
from schemas.frameworks.torch import TorchOptions
from schemas.frameworks.trt import TensorRTOptions
from schemas.manifest import ArtifactFile, ModelManifest
from schemas.result import (
    PHASES,
    Accuracy,
    Fingerprint,
    GpuTelemetry,
    LaunchInfo,
    Measurement,
    MemberMeasurement,
    Phase,
    RunResult,
    Status,
)
from schemas.spec import (
    FRAMEWORK_OPTION_MODELS,
    MAX_BATCH_SIZE,
    MODEL_NAME_RE,
    SCENARIO_MODELS,
    SCHEMA_VERSION,
    Barrier,
    EnsembleMember,
    MeasurementPolicy,
    MultiStreamScenario,
    OfflineScenario,
    RunSpec,
    Scenario,
    ServerScenario,
    SingleStreamScenario,
)
from schemas.upgrade import SchemaVersionError, load_result, upgrade

__all__ = [
    "FRAMEWORK_OPTION_MODELS",
    "MAX_BATCH_SIZE",
    "MODEL_NAME_RE",
    "PHASES",
    "SCENARIO_MODELS",
    "SCHEMA_VERSION",
    "Accuracy",
    "ArtifactFile",
    "Barrier",
    "EnsembleMember",
    "Fingerprint",
    "FrameworkOptions",
    "GpuTelemetry",
    "LaunchInfo",
    "Measurement",
    "MeasurementPolicy",
    "MemberMeasurement",
    "ModelManifest",
    "MultiStreamScenario",
    "NullOptions",
    "OfflineScenario",
    "OnnxRuntimeOptions",
    "OpenVinoOptions",
    "Phase",
    "RunResult",
    "RunSpec",
    "Scenario",
    "SchemaVersionError",
    "ServerScenario",
    "SingleStreamScenario",
    "Status",
    "TensorRTOptions",
    "TensorflowOptions",
    "TorchOptions",
    "load_result",
    "upgrade",
]
