"""Modules a command needs, imported when the command first uses them.

Every `bench-ctl` call builds the whole command tree (typer reads each command's options), so a
module imported at the top of a command module is paid by `bench-ctl --help` and by every other
command: scipy, DuckDB, pandas, matplotlib and the docker SDK would cost a second. A command
module therefore names its services with `lazy(...)` (and imports them under TYPE_CHECKING for
the type checker); the first attribute read imports the module for real."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy(name: str) -> ModuleType:
    """`name`, imported on first attribute access (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
