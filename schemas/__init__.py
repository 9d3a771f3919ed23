"""Contracts shared by the controller and the runners (pydantic v2). Imports nothing of ours.

Names are resolved on first use (PEP 562), so a program that needs one contract (or only the
constants of `schemas.limits`) does not build every model: `bench-ctl --help` builds none."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

HOME = {
    "Accuracy": "schemas.result",
    "ArtifactFile": "schemas.manifest",
    "Barrier": "schemas.spec",
    "EnsembleMember": "schemas.spec",
    "FRAMEWORK_OPTION_MODELS": "schemas.spec",
    "Fingerprint": "schemas.result",
    "FrameworkOptions": "schemas.frameworks",
    "GpuTelemetry": "schemas.result",
    "LaunchInfo": "schemas.result",
    "MAX_BATCH_SIZE": "schemas.limits",
    "MODEL_NAME_RE": "schemas.spec",
    "Measurement": "schemas.result",
    "MeasurementPolicy": "schemas.spec",
    "MemberMeasurement": "schemas.result",
    "ModelManifest": "schemas.manifest",
    "MultiStreamScenario": "schemas.spec",
    "NullOptions": "schemas.frameworks.null",
    "OfflineScenario": "schemas.spec",
    "OnnxRuntimeOptions": "schemas.frameworks.ort",
    "OpenVinoOptions": "schemas.frameworks.ov",
    "PHASES": "schemas.result",
    "Phase": "schemas.result",
    "RunResult": "schemas.result",
    "RunSpec": "schemas.spec",
    "SCENARIO_MODELS": "schemas.spec",
    "SCHEMA_VERSION": "schemas.spec",
    "Scenario": "schemas.spec",
    "SchemaVersionError": "schemas.upgrades",
    "ServerScenario": "schemas.spec",
    "SingleStreamScenario": "schemas.spec",
    "Status": "schemas.result",
    "TensorRTOptions": "schemas.frameworks.trt",
    "TensorflowOptions": "schemas.frameworks.tf",
    "TorchOptions": "schemas.frameworks.torch",
    "load_result": "schemas.upgrades",
    "upgrade": "schemas.upgrades",
}

if TYPE_CHECKING:  # the same names, for the type checker (explicit re-exports)
    from schemas.frameworks import FrameworkOptions as FrameworkOptions
    from schemas.frameworks.null import NullOptions as NullOptions
    from schemas.frameworks.ort import OnnxRuntimeOptions as OnnxRuntimeOptions
    from schemas.frameworks.ov import OpenVinoOptions as OpenVinoOptions
    from schemas.frameworks.tf import TensorflowOptions as TensorflowOptions
    from schemas.frameworks.torch import TorchOptions as TorchOptions
    from schemas.frameworks.trt import TensorRTOptions as TensorRTOptions
    from schemas.limits import MAX_BATCH_SIZE as MAX_BATCH_SIZE
    from schemas.manifest import ArtifactFile as ArtifactFile
    from schemas.manifest import ModelManifest as ModelManifest
    from schemas.result import PHASES as PHASES
    from schemas.result import Accuracy as Accuracy
    from schemas.result import Fingerprint as Fingerprint
    from schemas.result import GpuTelemetry as GpuTelemetry
    from schemas.result import LaunchInfo as LaunchInfo
    from schemas.result import Measurement as Measurement
    from schemas.result import MemberMeasurement as MemberMeasurement
    from schemas.result import Phase as Phase
    from schemas.result import RunResult as RunResult
    from schemas.result import Status as Status
    from schemas.spec import FRAMEWORK_OPTION_MODELS as FRAMEWORK_OPTION_MODELS
    from schemas.spec import MODEL_NAME_RE as MODEL_NAME_RE
    from schemas.spec import SCENARIO_MODELS as SCENARIO_MODELS
    from schemas.spec import SCHEMA_VERSION as SCHEMA_VERSION
    from schemas.spec import Barrier as Barrier
    from schemas.spec import EnsembleMember as EnsembleMember
    from schemas.spec import MeasurementPolicy as MeasurementPolicy
    from schemas.spec import MultiStreamScenario as MultiStreamScenario
    from schemas.spec import OfflineScenario as OfflineScenario
    from schemas.spec import RunSpec as RunSpec
    from schemas.spec import Scenario as Scenario
    from schemas.spec import ServerScenario as ServerScenario
    from schemas.spec import SingleStreamScenario as SingleStreamScenario
    from schemas.upgrades import SchemaVersionError as SchemaVersionError
    from schemas.upgrades import load_result as load_result
    from schemas.upgrades import upgrade as upgrade


def __getattr__(name: str) -> Any:
    if name in HOME:
        value = getattr(importlib.import_module(HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
