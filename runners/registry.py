"""Framework name -> runner class. The framework's options model names its runner
(`schemas.frameworks`), imported lazily so an image imports only its own framework."""

from __future__ import annotations

import importlib
from typing import Any

from runners.base import Runner
from schemas.frameworks import OPTION_MODELS


def runner_class(framework: str) -> type[Runner[Any]]:
    try:
        target = OPTION_MODELS[framework].runner
    except KeyError:
        raise KeyError(
            f"no runner for framework {framework!r}; known: {', '.join(sorted(OPTION_MODELS))}"
        ) from None
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise TypeError(f"{target} is not a Runner")
    return cls
