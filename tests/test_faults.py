"""Every case of the fault suite (tests/faults.py) under pytest: each must survive, lose no row
and leave no runner behind. `make faults` runs the same cases and prints their figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import faults


@pytest.mark.parametrize("name", list(faults.CASES))
def test_fault(name: str, null_env: Path, ensure_env: Callable[[str], Path]) -> None:
    out = faults.run_case(name)
    if out.skipped:
        pytest.skip(out.skipped)
    assert out.orphans == 0, f"{out.orphans} runner process(es) left behind: {out.detail}"
    assert out.rows_lost == 0, f"{out.rows_lost} row(s) lost: {out.detail}"
    assert out.survived, out.detail


def test_make_faults_counts_the_hostile_input_tests() -> None:
    """The total `make faults` prints names the hostile-input tests too: each test of
    tests/test_hostile*.py once (a parametrized one once per input)."""
    import ast

    defined = 0
    for f in sorted((faults.REPO / "tests").glob("test_hostile*.py")):
        tree = ast.parse(f.read_text())
        defined += sum(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in tree.body)
    assert faults.hostile_tests() >= defined > 0
