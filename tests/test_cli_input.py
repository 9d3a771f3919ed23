"""Invalid input to bench-ctl: exit code 2, one line with a hint, nothing written.

None of these reach a runner, so no environment is needed (the checks happen before launching).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import Result

from controller.store import db as store
from schemas import SCHEMA_VERSION, RunResult
from tests.conftest import Bench, Cli, MakeResult


def error_lines(result: Result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def assert_refused(result: Result, bench: Bench, *needles: str) -> str:
    """Exit 2, exactly one stderr line `error: ... (hint: ...)`, nothing printed or stored."""
    lines = error_lines(result)
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "(hint: " in line, f"no hint in: {line}"
    assert "Traceback" not in result.output
    assert result.stdout.strip() == ""
    for n in needles:
        assert n in line, f"{n!r} not in: {line}"
    assert bench.run_dirs() == [], "a run folder was created"
    assert bench.count("runs") == 0, "a row was stored"
    return line


@pytest.fixture
def run_args(fake_model: Path) -> list[str]:
    return ["run", "--model", "fake", "--launcher", "local", "--batch-sizes", "1"]


@pytest.mark.parametrize(
    ("image", "sets", "needles"),
    [
        ("null", ["nosuchkey=1"], ["unknown option", "nosuchkey", "valid:", "fault"]),
        ("ort", ["nosuchkey=1"], ["unknown option", "nosuchkey", "intra_op_threads"]),
        ("ort", ["intra_op_threads=abc"], ["intra_op_threads", "abc", "options of onnxruntime"]),
        ("ort", ["intra_op_threads=-1"], ["intra_op_threads"]),
        ("ort", ["graph_optimization=max"], ["graph_optimization"]),
        ("ort", ["cache=maybe"], ["cache"]),
        ("openvino", ["precision=f64"], ["precision", "f64"]),
        ("null", ["fault"], ["not key=value"]),
        ("null", ["=1"], ["not key=value"]),
        ("null", ["policy.nosuch=1"], ["nosuch", "policy.min_time_s"]),
        ("null", ["framework=onnxruntime"], ["framework"]),
        ("null", ["policy.min_time_s=5", "policy.max_time_s=1"], ["max_time_s"]),
        ("null", ["policy.tolerance=2"], ["tolerance"]),
        ("null", ["policy.max_time_s=inf"], ["max_time_s"]),
        ("null", ["policy.max_time_s=1e400"], ["max_time_s"]),
        ("null", ["work_us=nan"], ["work_us"]),
        ("null", ["work_us=1", "work_us=2"], ["given twice"]),
        ("litert", ["precision=int8"], ["precision", "'fp32', 'fp16' or 'dynamic-int8'"]),
        ("litert", ["delegate=gpu"], ["unknown option", "delegate", "xnnpack"]),
        ("iree", ["precision=fp16"], ["unknown option", "precision", "opt_level"]),
        ("iree", ["target_cpu=native"], ["target_cpu", "native"]),
        ("trt10", ["precision=int8"], ["int8 needs calibration"]),
    ],
)
def test_bad_set(
    cli: Cli, bench: Bench, run_args: list[str], image: str, sets: list[str], needles: list[str]
) -> None:
    args = [*run_args, "--image", image]
    for s in sets:
        args += ["--set", s]
    assert_refused(cli(*args), bench, *needles)


def test_bad_policy_value_names_the_key(cli: Cli, bench: Bench, run_args: list[str]) -> None:
    line = assert_refused(cli(*run_args, "--image", "null", "--set", "policy.max_time_s=abc"), bench)
    assert "policy.max_time_s" in line


@pytest.mark.parametrize(
    "sizes", ["0", "-1", "a", "1,0", "1,,x", "", "1,1", "2.5", "1,,2", "\uff18", "1000000000", "65537", "1,"]
)
def test_bad_batch_sizes(cli: Cli, bench: Bench, fake_model: Path, sizes: str) -> None:
    result = cli("run", "--image", "null", "--model", "fake", "--launcher", "local", "--batch-sizes", sizes)
    assert_refused(result, bench, "--batch-sizes", "e.g. --batch-sizes 1,8,32")


def test_unknown_image_lists_valid_names(cli: Cli, bench: Bench, fake_model: Path) -> None:
    line = assert_refused(
        cli("run", "--image", "nope", "--model", "fake", "--launcher", "local"), bench, "unknown image 'nope'"
    )
    for name in ("null", "ort", "openvino"):
        assert name in line.split("hint:")[1]


def test_unknown_image_suggests_close_name(cli: Cli, bench: Bench, fake_model: Path) -> None:
    assert_refused(
        cli("run", "--image", "opnvino", "--model", "fake", "--launcher", "local"),
        bench,
        "did you mean 'openvino'",
    )


def test_unknown_model_lists_store(cli: Cli, bench: Bench, fake_model: Path) -> None:
    assert_refused(
        cli("run", "--image", "null", "--model", "nosuchmodel", "--launcher", "local"),
        bench,
        "'nosuchmodel' is not in the store",
        "fake",
    )


def test_unknown_keras_model_hints_export(cli: Cli, bench: Bench) -> None:
    assert_refused(
        cli("run", "--image", "null", "--model", "resnet50", "--launcher", "local"),
        bench,
        "bench-ctl models export resnet50",
    )


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc", "..", "Fake"])
def test_model_name_with_path_refused(cli: Cli, bench: Bench, fake_model: Path, name: str) -> None:
    assert_refused(
        cli("run", "--image", "null", "--model", name, "--launcher", "local"),
        bench,
        "invalid model name",
        "no paths",
    )


def test_unknown_launcher(cli: Cli, bench: Bench, fake_model: Path) -> None:
    assert_refused(
        cli("run", "--image", "null", "--model", "fake", "--launcher", "podman"),
        bench,
        "unknown launcher 'podman'",
        "auto, local, docker",
    )


def test_cpu_and_gpu_exclusive(cli: Cli, bench: Bench, fake_model: Path) -> None:
    assert_refused(
        cli("run", "--image", "null", "--model", "fake", "--cpu", "--gpu", "0", "--launcher", "local"),
        bench,
        "--cpu and --gpu",
    )


def test_negative_gpu(cli: Cli, bench: Bench, fake_model: Path) -> None:
    assert_refused(
        cli("run", "--image", "null", "--model", "fake", "--gpu", "-1", "--launcher", "local"),
        bench,
        "--gpu -1",
    )


# --------------------------------------------------------------------------- query


@pytest.fixture
def stored(bench: Bench, make_result: MakeResult) -> RunResult:
    r = make_result()
    with store.connect(bench.db) as con:
        store.ingest(con, r)
    return r


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO runs (run_id) VALUES ('x')",
        "DELETE FROM runs",
        "CREATE TABLE t (a INTEGER)",
        "COPY runs TO '/tmp/bench-test-copy.csv'",
        "ATTACH ':memory:' AS o",
        "UPDATE runs SET host = 'h'",
    ],
)
def test_query_write_refused(cli: Cli, bench: Bench, stored: RunResult, sql: str) -> None:
    before = (bench.count("runs"), bench.count("measurements"))
    result = cli("query", sql)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "refused" in lines[0] and "(hint: " in lines[0], result.stderr
    assert (bench.count("runs"), bench.count("measurements")) == before


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_query_select_and_describe(cli: Cli, bench: Bench, stored: RunResult, fmt: str) -> None:
    result = cli("query", "SELECT run_id, batch_size FROM results ORDER BY batch_size", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert stored.run_id in result.stdout
    if fmt == "json":
        assert [r["batch_size"] for r in json.loads(result.stdout)] == [1, 2]
    result = cli("query", "DESCRIBE results", "-f", "json")
    assert result.exit_code == 0
    assert "throughput_sps" in [r["column_name"] for r in json.loads(result.stdout)]


def test_query_bad_format_and_sql(cli: Cli, bench: Bench, stored: RunResult) -> None:
    r = cli("query", "SELECT 1", "--format", "xml")
    assert r.exit_code == 2 and "unknown format" in r.stderr
    r = cli("query", "SELECT nosuch FROM results")
    assert r.exit_code == 2 and "SQL error" in r.stderr and "hint" in r.stderr


def test_db_option_overrides_env(cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    with store.connect(other) as con:
        store.ingest(con, make_result())
        store.ingest(con, make_result())
    result = cli("query", "SELECT count(DISTINCT run_id) AS n FROM results", "-f", "json", "--db", str(other))
    assert json.loads(result.stdout) == [{"n": 2}]
    assert not bench.db.exists() or bench.count("runs") == 0


# --------------------------------------------------------------------------- other commands


def test_compare_unknown_model_and_metric(cli: Cli, bench: Bench, stored: RunResult) -> None:
    r = cli("compare", "--model", "nosuch")
    assert r.exit_code == 2 and "no successful results" in r.stderr and "hint" in r.stderr
    r = cli("compare", "--model", "fake", "--metric", "throughput")
    assert r.exit_code == 2 and "unknown metric" in r.stderr and "throughput_sps" in r.stderr


def test_ingest_missing_path(cli: Cli, bench: Bench, tmp_path: Path) -> None:
    r = cli("ingest", str(tmp_path / "nope"))
    assert r.exit_code == 2 and "no such file" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("ingest", str(empty))
    assert r.exit_code == 2 and "no result.json" in r.stderr
    assert bench.count("runs") == 0


def test_ingest_newer_schema_version_skipped_with_hint(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    good, newer = tmp_path / "a" / "result.json", tmp_path / "b" / "result.json"
    for p in (good, newer):
        p.parent.mkdir()
    good.write_text(make_result().model_dump_json())
    doc = json.loads(make_result().model_dump_json())
    doc["schema_version"] = SCHEMA_VERSION + 1
    newer.write_text(json.dumps(doc))
    r = cli("ingest", str(tmp_path))
    assert r.exit_code == 1
    assert "ingested 1 result(s)" in r.stdout
    assert "newer than this code" in r.stderr and "update bench-ctl" in r.stderr
    assert bench.count("runs") == 1


def test_ingest_folder_is_idempotent(cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path) -> None:
    for i in range(2):
        r = make_result(status="ok" if i == 0 else "error")
        folder = tmp_path / "runs" / r.run_id
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(r.model_dump_json())
    assert cli("ingest", str(tmp_path / "runs")).exit_code == 0
    n = bench.count("results")
    assert n == 3
    first = next((tmp_path / "runs").iterdir()) / "result.json"
    assert cli("ingest", str(tmp_path / "runs"), str(first)).exit_code == 0
    assert bench.count("results") == n


def test_models_commands_bad_names(cli: Cli, bench: Bench, tmp_path: Path) -> None:
    r = cli("models", "export", "../evil", "--launcher", "local")
    assert r.exit_code == 2 and "invalid model name" in r.stderr
    r = cli("models", "export", "notakerasmodel", "--launcher", "local")
    assert r.exit_code == 2 and "unknown model" in r.stderr and "models add" in r.stderr
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    r = cli("models", "add", "a/b", str(onnx), "--launcher", "local")
    assert r.exit_code == 2 and "invalid model name" in r.stderr
    r = cli("models", "add", "mine", str(tmp_path / "missing.onnx"), "--launcher", "local")
    assert r.exit_code == 2 and "no such file" in r.stderr
    assert [p.name for p in bench.models.iterdir()] == []


def test_models_export_existing_is_skipped(cli: Cli, bench: Bench, fake_model: Path) -> None:
    # A model already in the store is not rebuilt (nothing runs: no tf environment needed).
    (bench.models / "mobilenetv2").symlink_to(fake_model, target_is_directory=True)
    r = cli("models", "export", "mobilenetv2", "--launcher", "local")
    assert r.exit_code == 0
    assert "already in the store" in r.stderr


def test_help_everywhere(cli: Cli) -> None:
    for args in (
        ["--help"],
        ["run", "--help"],
        ["query", "--help"],
        ["models", "add", "--help"],
        ["images", "list", "--help"],
        ["compare", "--help"],
        ["ingest", "--help"],
    ):
        r = cli(*args)
        assert r.exit_code == 0 and "Usage" in r.stdout, args


@pytest.mark.parametrize(
    ("sweep", "extra", "needles"),
    [
        ("fault=none,bogus", [], ["bogus"]),  # one bad value: nothing runs, not even the good one
        ("nosuch=1,2", [], ["unknown option", "nosuch"]),
        ("fault", [], ["not KEY=V1,V2"]),
        ("fault=", [], ["not KEY=V1,V2"]),
        ("fault=none,raise", ["--set", "fault=none"], ["given twice"]),
    ],
)
def test_bad_sweep(
    cli: Cli, bench: Bench, run_args: list[str], sweep: str, extra: list[str], needles: list[str]
) -> None:
    assert_refused(cli(*run_args, "--image", "null", "--sweep", sweep, *extra), bench, *needles)


def test_query_explain_analyze_copy_refused(
    cli: Cli, bench: Bench, stored: RunResult, tmp_path: Path
) -> None:
    target = tmp_path / "leak.csv"
    result = cli("query", f"EXPLAIN ANALYZE COPY (SELECT run_id FROM runs) TO '{target}'")
    assert not target.exists(), "a refused COPY wrote a file"
    assert result.exit_code == 2


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_bad_timeout_refused(
    cli: Cli, bench: Bench, run_args: list[str], short_policy: list[str], null_env: Path, timeout: str
) -> None:
    result = cli(*run_args, "--image", "null", "--timeout", timeout, *short_policy, "--set", "work_us=50")
    assert_refused(result, bench, "--timeout")


def test_huge_sweep_is_refused(cli: Cli, bench: Bench, run_args: list[str]) -> None:
    values = ",".join(str(v) for v in range(1, 200))
    result = cli(*run_args, "--image", "null", "--sweep", f"work_us={values}", "--sweep", "fault=none,raise")
    assert_refused(result, bench, "398 runs")


@pytest.mark.parametrize("kind", ["folder", "not-duckdb", "parent-is-file"])
def test_bad_db_is_refused_before_measuring(
    cli: Cli, bench: Bench, run_args: list[str], tmp_path: Path, kind: str
) -> None:
    if kind == "folder":
        db = tmp_path / "a-folder.duckdb"
        db.mkdir()
    elif kind == "not-duckdb":
        db = tmp_path / "junk.duckdb"
        db.write_bytes(b"x" * 5000)
    else:
        (tmp_path / "file").write_text("x")
        db = tmp_path / "file" / "results.duckdb"
    result = cli(*run_args, "--image", "null", "--db", str(db))
    assert result.exit_code != 0
    lines = error_lines(result)
    assert len(lines) == 1 and "internal error" not in lines[0] and "another process" not in lines[0], lines
    assert bench.run_dirs() == [], "the benchmark ran before the store was checked"


def test_ingest_reports_each_bad_file_and_stores_the_rest(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    docs = {}
    for name in ("good1", "badfield", "infinity", "booltrue", "notutf8", "good2"):
        (runs / name).mkdir(parents=True)
        docs[name] = json.loads(make_result().model_dump_json())
    docs["badfield"]["status"] = "splendid"
    for name, doc in docs.items():
        text = json.dumps(doc)
        if name == "infinity":
            text = text.replace('"throughput_sps": ', '"throughput_sps": Infinity, "x": ', 1)
        if name == "booltrue":
            doc["measurements"][0]["throughput_sps"] = True
            text = json.dumps(doc)
        data = text.encode() if name != "notutf8" else b"\xff\xfe" + text.encode()
        (runs / name / "result.json").write_bytes(data)
    os.mkfifo(tmp_path / "fifo.json")
    r = cli("ingest", str(runs), str(tmp_path / "fifo.json"))
    assert r.exit_code == 1
    assert "ingested 2 result(s)" in r.stdout
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped")]
    assert len(skipped) == 5, r.stderr
    assert any("status" in ln and "badfield" in ln for ln in skipped)
    assert any("fifo.json" in ln and "not a regular file" in ln for ln in skipped)
    assert any("booltrue" in ln and "throughput_sps" in ln for ln in skipped)
    assert bench.count("runs") == 2


def test_ingest_empty_path_is_refused(cli: Cli, bench: Bench) -> None:
    r = cli("ingest", "")
    assert r.exit_code == 2 and "empty path" in r.stderr


def test_ensemble_of_different_inputs_is_refused(cli: Cli, bench: Bench, fake_model: Path) -> None:
    from tests.conftest import write_fake_model

    other = write_fake_model(bench.models / "wide", name="wide")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["inputs"][0]["shape"] = [None, 8]
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = cli("run", "--image", "null", "--model", "fake,wide", "--ensemble", "--launcher", "local")
    assert_refused(result, bench, "different inputs", "fake [None, 4]", "wide [None, 8]")
