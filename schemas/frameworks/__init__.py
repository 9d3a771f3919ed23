"""Every framework's options model, found by module: adding a framework adds one module here.

Each module of this package defines one `FrameworkOptions` subclass; `OPTION_MODELS` maps the
framework names to them and `schemas.spec` builds the spec's discriminated union from it.
"""

from __future__ import annotations

import importlib
import pkgutil

from schemas.frameworks.base import FrameworkOptions


def _discover() -> dict[str, type[FrameworkOptions]]:
    found: dict[str, type[FrameworkOptions]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, FrameworkOptions)
                and value is not FrameworkOptions
                and value.__module__ == module.__name__
            ):
                name = value.framework_name()
                if name in found:
                    raise TypeError(f"framework {name!r} is declared twice: {found[name]} and {value}")
                found[name] = value
    return dict(sorted(found.items()))


OPTION_MODELS: dict[str, type[FrameworkOptions]] = _discover()

__all__ = ["OPTION_MODELS", "FrameworkOptions"]
