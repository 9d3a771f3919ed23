"""`python -m runners --spec SPEC --out RESULT`: the entrypoint every image runs.

Run with the controller's interpreter and PYTHONPATH=<repo> (numpy and pydantic are all the null
runner needs), exactly as a subprocess, the way a launcher starts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.paths import REPO_ROOT
from schemas import RunResult, load_result


def spec_doc(model_dir: Path, cache_dir: Path, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run_id": "20250101T000000Z-null-fake-0abc12",
        "image": "null",
        "model": "fake",
        "model_dir": str(model_dir),
        "cache_dir": str(cache_dir),
        "batch_sizes": [1, 3],
        "policy": {"warmup_min_s": 0.05, "min_time_s": 0.1, "max_time_s": 0.5, "window_s": 0.02},
        "options": {"framework": "null", "work_us": 20},
    }
    doc.update(over)
    return doc


def entrypoint(tmp_path: Path, spec: dict[str, Any] | str) -> tuple[subprocess.CompletedProcess[str], Path]:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    out = tmp_path / "out" / "result.json"
    out.parent.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "runners", "--spec", str(spec_path), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, out


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"nosuchkey": 1}, "nosuchkey"),
        ({"batch_sizes": [0]}, "batch_sizes"),
        ({"model": "../x"}, "model"),
        ({"options": {"framework": "null", "fault": "nope"}}, "options"),
        ({"schema_version": 3}, "schema_version"),
    ],
)
def test_invalid_spec_exits_2_and_writes_nothing(
    tmp_path: Path, fake_model: Path, change: dict[str, Any], needle: str
) -> None:
    doc = spec_doc(fake_model, tmp_path / "cache", **change)
    proc, out = entrypoint(tmp_path, doc)
    assert proc.returncode == 2, proc.stderr
    assert "invalid spec" in proc.stderr and needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("text", ["{not json", "[]", ""])
def test_unreadable_spec_exits_2(tmp_path: Path, text: str) -> None:
    proc, out = entrypoint(tmp_path, text)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert list(out.parent.iterdir()) == []


def test_valid_null_spec_writes_valid_result(tmp_path: Path, fake_model: Path) -> None:
    proc, out = entrypoint(tmp_path, spec_doc(fake_model, tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temporary files left
    result = load_result(out)
    assert isinstance(result, RunResult)
    assert result.status == "ok"
    assert result.run_id == "20250101T000000Z-null-fake-0abc12"
    assert [m.batch_size for m in result.measurements] == [1, 3]
    assert all(m.iterations == len(m.latencies_ms or []) for m in result.measurements)
    assert result.launch is None  # filled by the controller, not the runner
    assert result.accuracy is not None and result.accuracy.samples == 8
    assert result.fingerprint is not None and result.fingerprint.packages
    assert "status ok" in proc.stderr


def test_fault_raise_is_error_result_exit_0(tmp_path: Path, fake_model: Path) -> None:
    doc = spec_doc(fake_model, tmp_path / "cache", options={"framework": "null", "fault": "raise"})
    proc, out = entrypoint(tmp_path, doc)
    assert proc.returncode == 0, proc.stderr
    result = load_result(out)
    assert result.status == "error"
    assert result.message == "RuntimeError: injected framework failure (null runner, fault=raise)"
    assert "Traceback" in proc.stderr  # the log keeps the traceback; the result keeps one line


def test_missing_model_is_error_result(tmp_path: Path) -> None:
    proc, out = entrypoint(tmp_path, spec_doc(tmp_path / "nomodel", tmp_path / "cache"))
    assert proc.returncode == 0
    result = load_result(out)
    assert result.status == "error" and "no manifest" in (result.message or "")


def test_runner_imports_no_controller(tmp_path: Path, fake_model: Path) -> None:
    """Images ship schemas and runners only: the entrypoint must not import controller."""
    code = (
        "import sys, runpy; sys.argv=['runners', '--help']\n"
        "try:\n    runpy.run_module('runners', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "from runners.frameworks import null; from runners import harness, exporter\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'controller'], 'controller imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _run_with_out(tmp_path: Path, spec_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "runners", "--spec", str(spec_path), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["missing-folder", "folder", "read-only"])
def test_bad_out_is_refused_before_measuring(tmp_path: Path, fake_model: Path, kind: str) -> None:
    spec_path = tmp_path / "spec.json"
    # A long measurement: refusing it must not wait for it.
    doc = spec_doc(fake_model, tmp_path / "cache", policy={"min_time_s": 20, "max_time_s": 30})
    spec_path.write_text(json.dumps(doc))
    if kind == "missing-folder":
        out = tmp_path / "nope" / "result.json"
    elif kind == "folder":
        out = tmp_path / "adir"
        out.mkdir()
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
                pytest.skip("chattr +i is not supported here")
        else:
            ro.chmod(0o555)
        out = ro / "result.json"
    try:
        proc = _run_with_out(tmp_path, spec_path, out)
    finally:
        if kind == "read-only":
            subprocess.run(["chattr", "-i", str(tmp_path / "ro")], capture_output=True)
            (tmp_path / "ro").chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "--out" in proc.stderr
    assert "Traceback" not in proc.stderr and "[runner]" not in proc.stderr


@pytest.mark.parametrize(
    "data", [b"\xff\xfe\x00{", b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 50_000 + b"1" + b"}" * 50_000]
)
def test_undecodable_or_deep_spec_exits_2(tmp_path: Path, data: bytes) -> None:
    spec_path = tmp_path / "spec.json"
    spec_path.write_bytes(data)
    out = tmp_path / "out" / "result.json"
    out.parent.mkdir()
    proc = _run_with_out(tmp_path, spec_path, out)
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    assert list(out.parent.iterdir()) == []
