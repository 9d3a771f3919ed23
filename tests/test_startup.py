"""Start-up imports only what a command uses: `--help` loads no service, and the quick read-only
commands load none of scipy, matplotlib, pandas or the docker SDK (each costs a visible fraction
of a second on every call). `benchmarks/startup.py` measures the times; this holds the imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEVER_AT_START = {"scipy", "matplotlib", "pandas", "docker"}
PROBE = """
import atexit, json, sys
watched = {watched}
def report():
    print("LOADED " + json.dumps(sorted(m for m in watched if m in sys.modules)), file=sys.stderr)
atexit.register(report)
from controller.cli import main
sys.argv = ["bench-ctl", *sys.argv[1:]]
main()
"""


def loaded(args: list[str], tmp_path: Path, watched: set[str]) -> set[str]:
    env = {
        "BENCH_HOME": str(tmp_path / "home"),
        "BENCH_DB": str(tmp_path / "r.duckdb"),
        "PATH": "/usr/bin:/bin",
    }
    code = PROBE.format(watched=sorted(watched))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("LOADED "))
    return set(json.loads(line.removeprefix("LOADED ")))


def test_help_loads_no_service(tmp_path: Path) -> None:
    heavy = NEVER_AT_START | {"duckdb", "numpy", "pydantic", "psutil"}
    assert loaded(["--help"], tmp_path, heavy) == set()


@pytest.mark.parametrize(
    "args", [["query", "select 1"], ["models", "list"], ["compare", "--model", "nothing-stored"]]
)
def test_quick_commands_load_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    from controller.store import db

    db.ensure_store(tmp_path / "r.duckdb")
    assert loaded(args, tmp_path, NEVER_AT_START) == set()


def test_lazy_names_are_never_shadowed_by_a_submodule() -> None:
    """A package that resolves names on first use must not name a submodule like one of them:
    importing the submodule would set the package attribute to the module (it did: `upgrade`)."""
    import importlib
    from types import ModuleType

    import schemas
    from controller import store

    for package, homes in (
        (schemas, schemas.HOME),
        (store, {n: f"controller.store.{m}" for n, m in store.PUBLIC.items()}),
    ):
        for module in set(homes.values()):
            importlib.import_module(module)
        for name in homes:
            assert not isinstance(getattr(package, name), ModuleType), f"{package.__name__}.{name}"
