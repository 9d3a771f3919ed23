"""Read result files of any known schema version; refuse files newer than this code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.result import RunResult
from schemas.spec import SCHEMA_VERSION


class SchemaVersionError(ValueError):
    """A result file this code cannot read as it is."""


def upgrade_to_2(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 2 added the model's dynamic dimensions (spec.dims, spec.sequence_dim), tokens/s
    and per-output agreement, all optional: a version 1 result is the same with none of them.
    Its spec's own version follows the result's."""
    spec = doc.get("spec")
    if isinstance(spec, dict) and spec.get("schema_version") == 1:
        doc = {**doc, "spec": {**spec, "schema_version": 2}}
    return doc


# upgrade_to_N(dict) turns a version N-1 document into version N. Add one function per format
# change and register it here.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: upgrade_to_2}


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a result document to the current schema version."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise SchemaVersionError(f"result has no valid schema_version (got {version!r})")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"result has schema_version {version}, newer than this code ({SCHEMA_VERSION}); "
            "hint: update bench-ctl (git pull) before ingesting it"
        )
    while version < SCHEMA_VERSION:
        version += 1
        doc = UPGRADES[version](doc)
        doc["schema_version"] = version
    return doc


def load_result(path: str | Path) -> RunResult:
    """Parse, upgrade and validate a result file.

    Strict: `true` is no number, `Infinity` and `NaN` are refused (they are not JSON).
    A file of the current version is parsed and validated in one pass (pydantic-core); anything
    else (an older version, or an invalid file, for its precise error) takes the careful path."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return RunResult.model_validate_json(text, strict=True)
    except ValueError:  # ValidationError included
        pass
    doc = json.loads(text, parse_constant=_refuse_constant)
    if not isinstance(doc, dict):
        raise SchemaVersionError(f"{path}: not a JSON object")
    return RunResult.model_validate_json(json.dumps(upgrade(doc)), strict=True)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
