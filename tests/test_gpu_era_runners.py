"""TensorFlow (XLA on/off), PyTorch (eager/compiled), ensembles and GPU refusals, on this CPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.conftest import Bench, Cli, write_fake_model

TINY = [
    "--set",
    "policy.min_time_s=0.2",
    "--set",
    "policy.max_time_s=2",
    "--set",
    "policy.min_iterations=2",
    "--set",
    "policy.window_s=0.05",
    "--set",
    "policy.warmup_iterations=1",
    "--set",
    "policy.warmup_min_s=0",
]


@pytest.fixture
def two_fake_models(bench: Bench) -> None:
    write_fake_model(bench.models / "fa", name="fa")
    write_fake_model(bench.models / "fb", name="fb")


def results_of(stdout: str) -> list[dict[str, Any]]:
    doc = json.loads(stdout)
    return doc if isinstance(doc, list) else [doc]


@pytest.mark.frameworks
def test_tensorflow_xla_on_and_off_differ_in_compile(
    cli: Cli, bench: Bench, mobilenetv2: Path, ensure_env: Callable[[str], Path]
) -> None:
    ensure_env("tf")
    docs = results_of(
        cli(
            "run",
            "-i",
            "tf",
            "-m",
            "mobilenetv2",
            "-b",
            "1",
            "--launcher",
            "local",
            "--sweep",
            "xla=true,false",
            *TINY,
            "--json",
        ).stdout
    )
    assert [d["status"] for d in docs] == ["ok", "ok"], [d["message"] for d in docs]
    compile_notes = []
    for d in docs:
        phases = {p["name"]: p for p in d["phases"]}
        assert phases["compile"]["seconds"] > 0
        compile_notes.append(phases["compile"]["note"])
        assert d["accuracy"]["top1_agreement"] == 1.0 and d["accuracy"]["rel_err"] < 1e-3
    assert "xla=on" in compile_notes[0] and "xla=off" in compile_notes[1]
    rows = bench.rows("SELECT variant, compile_s FROM runs ORDER BY variant")
    assert [r[0] for r in rows] == ["xla=False", "xla=True"]
    assert rows[0][1] != rows[1][1]


@pytest.mark.frameworks
def test_torch_default_runs_eager_and_compiled(
    cli: Cli, bench: Bench, mobilenetv2: Path, ensure_env: Callable[[str], Path]
) -> None:
    ensure_env("torch")
    result = cli("run", "-i", "torch", "-m", "mobilenetv2", "-b", "8", "--launcher", "local", *TINY, "--json")
    docs = results_of(result.stdout)
    assert [d["spec"]["options"]["mode"] for d in docs] == ["eager", "compile"], result.stderr
    for d in docs:
        assert d["status"] == "ok", d["message"]
        assert d["accuracy"]["top1_agreement"] == 1.0 and d["accuracy"]["rel_err"] < 1e-3
        assert d["precision"] == "fp32"
    variants = bench.rows("SELECT coalesce(variant, '') FROM results ORDER BY variant")
    assert variants == [("",), ("mode=compile",)]


@pytest.mark.frameworks
def test_torch_cuda_graphs_need_a_gpu(
    cli: Cli, bench: Bench, mobilenetv2: Path, ensure_env: Callable[[str], Path]
) -> None:
    ensure_env("torch")
    result = cli(
        "run",
        "-i",
        "torch",
        "-m",
        "mobilenetv2",
        "-b",
        "1",
        "--launcher",
        "local",
        "--cpu",
        "--set",
        "mode=cudagraphs",
        *TINY,
        "--json",
    )
    assert result.exit_code == 1
    doc = results_of(result.stdout)[0]
    assert doc["status"] == "unsupported" and "GPU" in doc["message"]


def test_gpu_only_image_without_gpu_is_unsupported(cli: Cli, bench: Bench, fake_model: Path) -> None:
    from schemas.devices import nvidia_gpu_present

    if nvidia_gpu_present():
        pytest.skip("this machine has an NVIDIA GPU")
    result = cli("run", "-i", "trt10", "-m", "fake", "--json")
    assert result.exit_code == 1
    doc = results_of(result.stdout)[0]
    assert doc["status"] == "unsupported" and "NVIDIA GPU" in doc["message"]
    assert doc["spec"]["device"] == "cuda:0" and doc["launch"]["launcher"] == "preflight"
    assert bench.rows("SELECT image, status, batch_size FROM results") == [("trt10", "unsupported", None)]
    assert "Traceback" not in result.output


def test_null_ensemble_reports_members_and_slowdown(
    cli: Cli, bench: Bench, null_env: Path, two_fake_models: None
) -> None:
    result = cli(
        "run",
        "-i",
        "null",
        "-m",
        "fa,fb",
        "--ensemble",
        "-b",
        "1,4",
        "--launcher",
        "local",
        "--set",
        "work_us=200",
        *TINY,
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = results_of(result.stdout)[0]
    assert doc["spec"]["model"] == "fa+fb" and [m["model"] for m in doc["spec"]["members"]] == ["fa", "fb"]
    for m in doc["measurements"]:
        assert [mm["model"] for mm in m["members"]] == ["fa", "fb"]
        for mm in m["members"]:
            assert mm["alone_latency_mean_ms"] >= 0.2 and mm["slowdown"] > 0
    assert doc["accuracy"]["reference"].startswith("mean of")
    rows = bench.rows("SELECT model, batch_size, json_array_length(ensemble_members) FROM results ORDER BY 2")
    assert rows == [("fa+fb", 1, 2), ("fa+fb", 4, 2)]


@pytest.mark.parametrize(
    ("scenario", "sets"),
    [
        ("server", ["--set", "server.target_qps=100", "--set", "server.min_duration_s=1",
                    "--set", "server.min_queries=64", "--set", "server.max_batch=2"]),
        ("single-stream", []),
        ("multi-stream", ["--set", "multi-stream.samples_per_query=2", "--set", "multi-stream.interval_ms=20",
                          "--set", "multi-stream.min_duration_s=1", "--set", "multi-stream.min_queries=32"]),
    ],
)  # fmt: skip
def test_null_ensemble_is_served_in_every_scenario(
    cli: Cli, bench: Bench, null_env: Path, two_fake_models: None, scenario: str, sets: list[str]
) -> None:
    """A query to an ensemble goes to every member (one thread each): each member's busy-wait of
    work_us runs once per query, together, so a query costs about one member's work, not two."""
    result = cli(
        "run", "-i", "null", "-m", "fa,fb", "--ensemble", "--scenario", scenario,
        "-b", "1,2" if scenario != "single-stream" else "1", "--launcher", "local",
        "--set", "work_us=2000", *sets, *TINY, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = results_of(result.stdout)[0]
    assert doc["status"] == "ok" and doc["spec"]["model"] == "fa+fb"
    (m,) = doc["measurements"] if scenario != "single-stream" else doc["measurements"][:1]
    assert m["scenario"] == scenario
    assert m["latency_p50_ms"] >= 2.0  # at least one member's work per query
    if scenario == "server":
        assert m["valid"] is True and m["achieved_qps"] > 90
    rows = bench.rows("SELECT DISTINCT model, scenario FROM results")
    assert rows == [("fa+fb", scenario)]


def test_colocated_processes_refuse_other_scenarios(cli: Cli, bench: Bench, two_fake_models: None) -> None:
    result = cli(
        "run", "-i", "null", "-m", "fa,fb", "--ensemble", "--colocate", "processes",
        "--scenario", "single-stream",
    )  # fmt: skip
    assert result.exit_code == 2 and "offline only" in result.stderr and "hint:" in result.stderr


def test_several_models_without_ensemble_run_in_turn(
    cli: Cli, bench: Bench, null_env: Path, two_fake_models: None
) -> None:
    result = cli("run", "-i", "null", "-m", "fa,fb", "-b", "1", "--launcher", "local", *TINY, "--json")
    assert result.exit_code == 0, result.output
    assert [d["spec"]["model"] for d in results_of(result.stdout)] == ["fa", "fb"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-m", "fa", "--ensemble"], "at least two"),
        (["-m", "fa,fa", "--ensemble"], "twice"),
        (["-m", "fa,nosuch", "--ensemble"], "nosuch"),
    ],
)
def test_ensemble_bad_input(cli: Cli, bench: Bench, args: list[str], needle: str) -> None:
    write_fake_model(bench.models / "fa", name="fa")
    result = cli("run", "-i", "null", *args)
    assert result.exit_code == 2 and needle in result.stderr and "hint:" in result.stderr
    assert bench.run_dirs() == []


@pytest.mark.frameworks
def test_ort_ensemble_of_two_models(
    cli: Cli, bench: Bench, mobilenetv2: Path, ensure_env: Callable[[str], Path]
) -> None:
    ensure_env("ort")
    added = cli("models", "add", "mnv2copy", str(mobilenetv2 / "model.onnx"), "--launcher", "local")
    assert added.exit_code == 0, added.output
    result = cli(
        "run",
        "-i",
        "ort",
        "-m",
        "mobilenetv2,mnv2copy",
        "--ensemble",
        "-b",
        "2",
        "--launcher",
        "local",
        *TINY,
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = results_of(result.stdout)[0]
    m = doc["measurements"][0]
    assert m["throughput_sps"] > 0 and {mm["model"] for mm in m["members"]} == {"mobilenetv2", "mnv2copy"}
    # The members' reference batches differ (TensorFlow export vs ONNX Runtime registration).
    assert doc["accuracy"] is None


def colocated_null_run(cli: Cli, *sets: str, timeout: str | None = None) -> Result:
    """`bench-ctl run` of the null image on fa and fb as co-located processes, with these options."""
    args = ["run", "-i", "null", "-m", "fa,fb", "--ensemble", "--colocate", "processes", "-b", "1"]
    args += ["--launcher", "local", "--json", *(["--timeout", timeout] if timeout else [])]
    for item in sets:
        args += ["--set", item]
    return cli(*args)


def test_colocated_processes_meet_and_report_slowdown(
    cli: Cli, bench: Bench, null_env: Path, two_fake_models: None
) -> None:
    result = colocated_null_run(cli, "work_us=300", "policy.min_time_s=0.5", "policy.window_s=0.05")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(r["spec"]["model"], r["spec"]["role"]) for r in doc["runs"]] == [
        ("fa", "alone"),
        ("fb", "alone"),
        ("fa", "colocated"),
        ("fb", "colocated"),
    ]
    assert {r["spec"]["group"] for r in doc["runs"]} == {doc["group"]}
    row = doc["rows"][0]
    assert [m["model"] for m in row["members"]] == ["fa", "fb"]
    assert row["ensemble_sps"] == min(m["colocated_sps"] for m in row["members"])
    assert all(m["slowdown"] > 0 for m in row["members"])
    logs = [(bench.runs / r["run_id"] / "runner.log").read_text() for r in doc["runs"][2:]]
    assert all("co-located parties met" in log for log in logs)
    roles = bench.rows("SELECT role, count(*) FROM results GROUP BY role ORDER BY role")
    assert roles == [("alone", 2), ("colocated", 2)]


def test_colocated_member_failure_releases_the_others(
    cli: Cli, bench: Bench, null_env: Path, two_fake_models: None
) -> None:
    # bad-output fails each member at its reference check, before the barrier: nobody may hang.
    result = colocated_null_run(cli, "fault=bad-output", "policy.min_time_s=0.3", timeout="60")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [r["status"] for r in doc["runs"]] == ["error"] * 4
    assert all(m["slowdown"] is None for m in doc["rows"][0]["members"])


def test_colocate_needs_ensemble(cli: Cli, bench: Bench) -> None:
    write_fake_model(bench.models / "fa", name="fa")
    result = cli("run", "-i", "null", "-m", "fa", "--colocate", "processes")
    assert result.exit_code == 2 and "--ensemble" in result.stderr


@pytest.mark.frameworks
def test_openvino_throughput_hint_keeps_requests_in_flight(
    cli: Cli, bench: Bench, mobilenetv2: Path, ensure_env: Callable[[str], Path]
) -> None:
    ensure_env("openvino")
    doc = results_of(
        cli(
            "run",
            "-i",
            "openvino",
            "-m",
            "mobilenetv2",
            "-b",
            "2",
            "--launcher",
            "local",
            "--set",
            "hint=throughput",
            *TINY,
            "--json",
        ).stdout
    )[0]
    assert doc["status"] == "ok", doc["message"]
    m = doc["measurements"][0]
    compile_note = next(p["note"] for p in doc["phases"] if p["name"] == "compile")
    assert f"requests in flight={m['in_flight']}" in compile_note
    # Each call submits one batch; the steady state ends when the last one completes, and the
    # latencies are the requests' own (one per submitted batch).
    assert m["throughput_sps"] == pytest.approx(m["batch_size"] * m["iterations"] / m["duration_s"])
    assert bench.rows("SELECT len(latencies_ms) FROM measurements") == [(m["iterations"],)]
    if m["in_flight"] > 1:
        # With N requests busy, each takes about N / rate: far longer than the gap between completions.
        rate = m["iterations"] / m["duration_s"]
        assert m["latency_mean_ms"] / 1000 > 0.5 / rate
    assert bench.rows("SELECT in_flight FROM results") == [(m["in_flight"],)]
