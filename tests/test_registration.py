"""One registration point: a framework's options model (schemas/frameworks) names its runner;
the image catalog, the spec's union and the runner registry are derived from it, and checked
against each other here."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import ClassVar, Literal

from controller.catalog.images import images
from runners.base import Runner
from runners.registry import runner_class
from schemas import RunSpec
from schemas.frameworks import OPTION_MODELS, FrameworkOptions

FRAMEWORK_MODULES = ("onnxruntime", "openvino", "tensorflow", "tensorrt", "torch", "iree", "ai_edge_litert")


def registration_problems(
    image_frameworks: dict[str, str], option_models: dict[str, type[FrameworkOptions]]
) -> list[str]:
    """What is missing between the catalog's images, the options models and the runners."""
    problems = []
    for image, framework in sorted(image_frameworks.items()):
        if framework not in option_models:
            problems.append(f"image {image} names framework {framework!r}, which has no options model")
    for framework, model in option_models.items():
        if framework not in image_frameworks.values():
            problems.append(f"framework {framework!r} has no image")
        module, _, attr = model.runner.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            problems.append(f"framework {framework!r} names runner {model.runner}, which is missing ({e})")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Runner)):
            problems.append(f"{model.runner} is not a Runner")
        elif getattr(cls, "options_model", None) is not model:
            problems.append(f"{model.runner} is not a Runner[{model.__name__}]")
    return problems


def test_every_image_framework_and_runner_are_registered() -> None:
    catalog = {name: info.framework for name, info in images().items()}
    assert registration_problems(catalog, OPTION_MODELS) == []


def test_the_check_finds_an_image_without_options_and_options_without_runner_or_image() -> None:
    class GhostOptions(FrameworkOptions):
        framework: Literal["ghost"] = "ghost"
        runner: ClassVar[str] = "runners.frameworks.ghost:GhostRunner"

    class MislabelledOptions(FrameworkOptions):
        framework: Literal["mislabelled"] = "mislabelled"
        runner: ClassVar[str] = "runners.frameworks.null:NullRunner"

    problems = registration_problems(
        {"ort": "onnxruntime", "new": "brandnew", "ghost": "ghost", "m": "mislabelled"},
        {**OPTION_MODELS, "ghost": GhostOptions, "mislabelled": MislabelledOptions},
    )
    assert any("image new names framework 'brandnew'" in p for p in problems)
    assert any(
        "'ghost' names runner runners.frameworks.ghost:GhostRunner, which is missing" in p for p in problems
    )
    assert any("NullRunner is not a Runner[MislabelledOptions]" in p for p in problems)
    assert any("framework 'openvino' has no image" in p for p in problems)


def test_the_registry_and_the_spec_union_come_from_the_options_models() -> None:
    for framework, model in OPTION_MODELS.items():
        cls = runner_class(framework)
        assert cls.options_model is model and cls.name == framework
        spec = RunSpec.model_validate(
            {
                "run_id": "r",
                "image": "x",
                "model": "m",
                "model_dir": "/m",
                "cache_dir": "/c",
                "options": {"framework": framework},
            }
        )
        assert type(spec.options) is model


def test_runner_modules_import_no_framework() -> None:
    """The registry imports runner modules lazily, but a module must not import its framework at
    import time either: its image is the only place that has it."""
    code = (
        "import sys\n"
        "from schemas.frameworks import OPTION_MODELS\n"
        "from runners.registry import runner_class\n"
        "for f in OPTION_MODELS: runner_class(f)\n"
        f"print(sorted(m for m in {FRAMEWORK_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
