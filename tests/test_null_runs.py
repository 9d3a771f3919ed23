"""Runs through the real local launcher with the null image: success and every failure path.

The null image's environment holds numpy and pydantic only (built on first use by uv).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from schemas import RunResult, load_result
from tests.conftest import Bench, Cli

pytestmark = pytest.mark.usefixtures("null_env")


def null_run(
    cli: Cli, short_policy: list[str], *extra: str, batch_sizes: str = "1,2"
) -> tuple[Result, dict[str, Any]]:
    result = cli(
        "run",
        "--image",
        "null",
        "--model",
        "fake",
        "--launcher",
        "local",
        "--batch-sizes",
        batch_sizes,
        *short_policy,
        *extra,
        "--json",
    )
    assert result.stdout.strip(), f"no JSON on stdout:\n{result.output}"
    return result, json.loads(result.stdout)


def stored(bench: Bench, run_id: str) -> list[dict[str, Any]]:
    rows = bench.rows(
        "SELECT status, batch_size, message FROM results WHERE run_id = ? ORDER BY batch_size", [run_id]
    )
    return [dict(zip(("status", "batch_size", "message"), r, strict=True)) for r in rows]


def test_null_run_ok(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result, doc = null_run(cli, short_policy, "--set", "work_us=50")
    assert result.exit_code == 0, result.output
    r = RunResult.model_validate(doc)
    assert r.status == "ok" and r.message is None
    assert r.framework == "null" and r.precision == "none"
    assert [m.batch_size for m in r.measurements] == [1, 2]
    assert all(m.latencies_ms is None for m in r.measurements), "--json output drops raw latencies"
    assert [p.name for p in r.phases] == ["import", "model_read", "compile", "first_inference"]
    assert r.accuracy is not None and r.accuracy.reference == "test-fp32" and r.accuracy.samples == 8
    assert r.launch is not None and r.launch.launcher == "local" and r.launch.exit_code == 0
    assert r.launch.image_ref == "local:null" and r.launch.lock_hash
    assert r.fingerprint is not None and r.fingerprint.framework == "null"
    # The run folder keeps spec, log and the full result (with latencies).
    run_dir = bench.runs / r.run_id
    assert [p.name for p in bench.run_dirs()] == [r.run_id]
    assert {"spec.json", "result.json", "runner.log"} <= {p.name for p in run_dir.iterdir()}
    kept = load_result(run_dir / "result.json")
    assert kept.run_id == r.run_id and kept.launch == r.launch
    assert all(m.latencies_ms and len(m.latencies_ms) == m.iterations for m in kept.measurements)
    assert "[runner]" in (run_dir / "runner.log").read_text()
    rows = stored(bench, r.run_id)
    assert [(x["status"], x["batch_size"]) for x in rows] == [("ok", 1), ("ok", 2)]
    # The policy was applied.
    assert r.spec.policy.max_time_s == 1.0 and r.spec.policy.window_s == 0.05
    assert all(m.duration_s < 3 for m in r.measurements)


def test_null_run_table_output(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result = cli(
        "run",
        "-i",
        "null",
        "-m",
        "fake",
        "--launcher",
        "local",
        "-b",
        "1",
        *short_policy,
        "--set",
        "work_us=50",
    )
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout and "samples/s" in result.stdout
    assert bench.count("results") == 1


def test_fault_raise(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result, doc = null_run(cli, short_policy, "--set", "fault=raise")
    assert result.exit_code == 1
    r = RunResult.model_validate(doc)
    assert r.status == "error"
    assert "RuntimeError" in (r.message or "") and "injected" in (r.message or "")
    assert r.measurements == []
    assert r.launch is not None and r.launch.exit_code == 0  # the runner itself reported the failure
    assert stored(bench, r.run_id) == [{"status": "error", "batch_size": None, "message": r.message}]


def test_fault_exit(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result, doc = null_run(cli, short_policy, "--set", "fault=exit")
    assert result.exit_code == 1
    r = RunResult.model_validate(doc)
    assert r.status == "error"
    assert "137" in (r.message or ""), r.message
    assert r.launch is not None and r.launch.exit_code == 137
    assert r.launch.stderr_tail and "[runner]" in r.launch.stderr_tail
    # The stored copy keeps the stderr tail; the database keeps the exit code.
    kept = load_result(bench.runs / r.run_id / "result.json")
    assert kept.launch is not None and kept.launch.stderr_tail == r.launch.stderr_tail
    assert bench.rows("SELECT exit_code, status FROM runs") == [(137, "error")]
    assert stored(bench, r.run_id) == [{"status": "error", "batch_size": None, "message": r.message}]


def test_fault_hang_times_out(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result, doc = null_run(cli, short_policy, "--set", "fault=hang", "--timeout", "5", batch_sizes="1")
    assert result.exit_code == 1
    r = RunResult.model_validate(doc)
    assert r.status == "timeout"
    assert "timed out after 5s" in (r.message or "")
    assert r.launch is not None and r.launch.wall_s is not None and 4.5 < r.launch.wall_s < 30
    assert stored(bench, r.run_id) == [{"status": "timeout", "batch_size": None, "message": r.message}]


def test_fault_bad_output(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result, doc = null_run(cli, short_policy, "--set", "fault=bad-output")
    assert result.exit_code == 1
    r = RunResult.model_validate(doc)
    assert r.status == "error"
    assert "NaN" in (r.message or "")
    assert r.accuracy is None and r.measurements == []
    assert stored(bench, r.run_id)[0]["status"] == "error"


def test_missing_model_file_is_refused_before_running(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    (fake_model / "reference_output.npy").unlink()
    result = cli("run", "--image", "null", "--model", "fake", "--launcher", "local", *short_policy)
    assert result.exit_code == 2
    assert "reference_output.npy" in result.stderr and "missing" in result.stderr
    assert bench.count("runs") == 0 and bench.run_dirs() == []


def test_gpu_on_cpu_only_image_is_unsupported(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    # The null image's catalog entry lists cpu only: the request is validated, recorded as
    # unsupported, and nothing is launched.
    result, doc = null_run(cli, short_policy, "--gpu", "0", batch_sizes="1")
    assert result.exit_code == 1, result.output
    r = RunResult.model_validate(doc)
    assert r.status == "unsupported" and r.message and "cpu" in r.message
    assert r.spec.device == "cuda:0"
    assert r.measurements == [] and r.phases == []
    assert not (bench.runs / r.run_id / "runner.log").exists()
    assert bench.rows("SELECT status, batch_size, device FROM results") == [("unsupported", None, "cuda:0")]


def test_ingest_run_folder_is_idempotent(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    null_run(cli, short_policy, "--set", "work_us=50")
    null_run(cli, short_policy, "--set", "fault=raise")
    before = (bench.count("runs"), bench.count("measurements"), bench.count("results"))
    assert before == (2, 2, 3)
    r = cli("ingest", str(bench.runs))
    assert r.exit_code == 0 and "ingested 2 result(s)" in r.stdout
    r = cli("ingest", str(bench.run_dirs()[0]))
    assert r.exit_code == 0 and "ingested 1 result(s)" in r.stdout
    assert (bench.count("runs"), bench.count("measurements"), bench.count("results")) == before


def test_sweep_runs_once_per_value(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result = cli(
        "run",
        "--image",
        "null",
        "--model",
        "fake",
        "--launcher",
        "local",
        "--batch-sizes",
        "1",
        *short_policy,
        "--set",
        "work_us=50",
        "--sweep",
        "fault=none,raise",
        "--json",
    )
    assert result.exit_code == 1, result.output  # one of them failed
    docs = json.loads(result.stdout)
    assert [d["spec"]["options"]["fault"] for d in docs] == ["none", "raise"]
    assert [d["status"] for d in docs] == ["ok", "error"]
    assert len(bench.run_dirs()) == 2
    assert sorted(bench.rows("SELECT status FROM results")) == [("error",), ("ok",)]


def test_run_with_db_option(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str], tmp_path: Path
) -> None:
    other = tmp_path / "sub" / "other.duckdb"
    result, doc = null_run(cli, short_policy, "--set", "work_us=50", "--db", str(other), batch_sizes="1")
    assert result.exit_code == 0 and doc["status"] == "ok"
    assert other.exists()
    assert not bench.db.exists()
