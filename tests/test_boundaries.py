"""The import rules of the layout, held by a test: each violation is named with its file and line.

- `schemas` imports nothing of ours: it is the contract both sides of the process boundary share.
- `probes` (host probes: fingerprint, RAPL, NVML, parent watch) imports `schemas` at most.
- `runners` imports `schemas` and `probes` only: an image holds nothing else.
- `controller` never imports `runners` (that would drag frameworks into the controller).
- `controller.cli` modules reach the store through `controller.store`'s public names, never its
  internal modules (`controller.store.db`, ...): a command calls a service, it does not run SQL.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("schemas", "probes", "runners", "controller", "gpucheck")
ALLOWED = {
    "schemas": {"schemas"},
    "probes": {"schemas", "probes"},
    "runners": {"schemas", "probes", "runners"},
    "controller": {"schemas", "probes", "controller"},
}


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def violations(root: Path = REPO) -> list[str]:
    bad: list[str] = []
    for top, allowed in ALLOWED.items():
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            in_cli = rel.startswith("controller/cli/")
            for line, module in imports_of(path, root):
                head = module.split(".")[0]
                if head in OURS and head not in allowed:
                    bad.append(
                        f"{rel}:{line} imports {module} ({top} may import {', '.join(sorted(allowed))})"
                    )
                if in_cli and module.startswith("controller.store.") and _is_module(module, root):
                    bad.append(f"{rel}:{line} imports {module}: commands use controller.store's public names")
    return sorted(set(bad))


def _is_module(dotted: str, root: Path) -> bool:
    path = root / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_no_import_crosses_a_boundary() -> None:
    found = violations()
    assert not found, "import boundaries crossed:\n  " + "\n  ".join(found)


@pytest.mark.parametrize(
    ("top", "source", "expected"),
    [
        ("controller", "from runners.core import fingerprint\n", "imports runners.core"),
        ("runners", "import controller.paths\n", "imports controller.paths"),
        ("schemas", "from probes import parent\n", "imports probes"),
        ("controller/cli", "from ..store import db\n", "imports controller.store.db"),
    ],
)
def test_a_crossing_is_named(top: str, source: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "controller" / "store").mkdir(parents=True)
    (tmp_path / "controller" / "store" / "db.py").write_text("")
    (tmp_path / top).mkdir(parents=True, exist_ok=True)
    (tmp_path / top / "probe.py").write_text(source)
    found = violations(tmp_path)
    assert any(expected in v and f"{top}/probe.py:1" in v for v in found), found
