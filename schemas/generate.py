"""Write the JSON Schema files under schemas/json/: `python -m schemas.generate [--check]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.manifest import ModelManifest
from schemas.plan import Plan
from schemas.result import RunResult
from schemas.spec import RunSpec

JSON_DIR = Path(__file__).parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    "run_spec.schema.json": RunSpec,
    "run_result.schema.json": RunResult,
    "model_manifest.schema.json": ModelManifest,
    "plan.schema.json": Plan,
}


def rendered() -> dict[str, str]:
    """File name -> JSON Schema text, as the models define it now."""
    return {
        name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in MODELS.items()
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in rendered().items():
        path = JSON_DIR / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            JSON_DIR.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale JSON Schema files: {', '.join(stale)}; hint: run `make schemas`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
