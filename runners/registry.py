"""Framework name -> runner class, imported lazily so an image imports only its own framework."""

from __future__ import annotations

import importlib

from runners.base import Runner

REGISTRY: dict[str, str] = {
    "null": "runners.frameworks.null:NullRunner",
    "onnxruntime": "runners.frameworks.ort:OnnxRuntimeRunner",
    "openvino": "runners.frameworks.ov:OpenVinoRunner",
    "tensorflow": "runners.frameworks.tf:TensorflowRunner",
    "tensorrt": "runners.frameworks.trt:TensorRTRunner",
    "torch": "runners.frameworks.torch_runner:TorchRunner",
}


def runner_class(framework: str) -> type[Runner]:
    try:
        target = REGISTRY[framework]
    except KeyError:
        raise KeyError(
            f"no runner for framework {framework!r}; known: {', '.join(sorted(REGISTRY))}"
        ) from None
    module, _, attr = target.partition(":")
    cls: type[Runner] = getattr(importlib.import_module(module), attr)
    return cls
