"""pytest plugin of the GPU acceptance check (`pytest -p gpucheck.plugin`).

For each `gpu`-marked test it appends one JSON line to the file named by $BENCH_SELFTEST_RECORD:
the GPU path its marker names, the outcome, why it was skipped or failed, and the `detail` the
test recorded with `record_property`. Collection errors are recorded too. Without the variable it
does nothing.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from gpucheck.check import RECORD_ENV, marker_key

if TYPE_CHECKING:
    import pytest

_paths: dict[str, str] = {}
_setup_s: dict[str, float] = {}  # fixtures can do a test's work (a shared run): count their time


def _write(doc: dict[str, Any]) -> None:
    target = os.environ.get(RECORD_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(doc) + "\n")


def _first_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple):
        return _first_line(str(longrepr[2]).removeprefix("Skipped: "))
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return _first_line(str(crash.message).removeprefix("Failed: "))
    lines = [ln for ln in report.longreprtext.splitlines() if ln.strip()]
    return lines[-1].strip()[:400] if lines else report.outcome


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is not None:
            _paths[item.nodeid] = marker_key(marker.args)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        lines = [ln for ln in report.longreprtext.splitlines() if ln.strip()]
        where = report.nodeid or "a test file"
        _write(
            {"collect_error": where, "reason": lines[-1].strip().removeprefix("E   ")[:400] if lines else ""}
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    key = _paths.get(report.nodeid)
    if key is None:
        return
    if report.when == "setup":
        _setup_s[report.nodeid] = report.duration
    final = report.when == "call" or (report.when == "setup" and not report.passed) or report.failed
    if not final:
        return
    properties = dict(report.user_properties)
    _write(
        {
            "path": key,
            "nodeid": report.nodeid,
            "outcome": report.outcome,
            "reason": "" if report.passed else _reason(report),
            "detail": str(properties.get("detail", "")),
            "seconds": round(
                report.duration + (_setup_s.get(report.nodeid, 0.0) if report.when == "call" else 0.0), 2
            ),
        }
    )
