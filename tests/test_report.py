"""`bench-ctl report`: the page and its figures from a store of real null-runner runs, opened in
headless Chromium; bad input refused with nothing written; unfair pairs and fits on synthetic data."""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import Result

from controller.paths import REPO_ROOT
from tests.conftest import SHORT_POLICY, Bench, Cli, chromium, write_fake_model

ARTIFACTS = REPO_ROOT / ".bench" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def null_store(tmp_path_factory: pytest.TempPathFactory, session_home: Path, null_env: Path) -> Path:
    """A store of real null-runner runs: 2 repetitions at 1,2,4, one run that runs out of memory,
    and a server sweep of two rates with a latency bound."""
    from typer.testing import CliRunner

    from controller.cli.app import app

    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    write_fake_model(home / "models" / "fake")
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    env = {"BENCH_HOME": str(home), "BENCH_DB": str(root / "results.duckdb")}
    base = ["run", "-i", "null", "-m", "fake", "--launcher", "local", *SHORT_POLICY]
    runs = [
        (0, [*base, "-b", "1,2,4", "--repeat", "2", "--set", "work_us_per_sample=300"]),
        (1, [*base, "-b", "1,2,4", "--set", "fault=oom", "--set", "policy.memory_limit_mb=300"]),
        (
            0,
            [
                *base,
                "-b",
                "1,2",
                "--scenario",
                "server",
                "--sweep",
                "server.target_qps=50,100",
                "--set",
                "server.latency_bound_ms=100",
                "--set",
                "server.min_duration_s=0.3",
                "--set",
                "server.min_queries=20",
            ],
        ),
    ]
    for code, args in runs:
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == code, result.output
    return root / "results.duckdb"


def report(cli: Cli, db: Path, out: Path, *extra: str) -> Result:
    return cli("report", "--db", str(db), "--out", str(out), *extra)


def body_attributes(dom: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", dom)
    assert tag, dom[:500]
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag.group(1))}


def open_in_chromium(index: Path, screenshot: Path | None = None) -> dict[str, str]:
    """Load the page in headless Chromium; the <body> attributes its inline check wrote."""
    browser = chromium()
    assert browser is not None
    with tempfile.TemporaryDirectory() as profile:
        flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
        dom = subprocess.run(
            [*flags, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        if screenshot is not None:
            subprocess.run(
                [*flags, f"--screenshot={screenshot}", "--window-size=1400,2400", index.as_uri()],
                capture_output=True,
                timeout=120,
                check=True,
            )
    return body_attributes(dom)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.browser
def test_report_opens_in_chromium_with_every_figure(cli: Cli, null_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = report(cli, null_store, out)
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in out.glob("*.png"))
    # Throughput (with the failed run), load time and the server sweep have data; memory of
    # ensembles and GPU energy do not, and the page says so instead of drawing empty axes.
    assert pngs == ["a_throughput.png", "d_load_time.png", "e_server.png"]
    assert sorted(p.name for p in out.glob("*.svg")) == [p.replace(".png", ".svg") for p in pngs]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    verdict = open_in_chromium(out / "index.html", shot)
    print(f"screenshot of the report: {shot}")
    assert verdict.get("data-check") == "ok", verdict
    assert verdict["data-images"] == str(len(pngs)) and verdict["data-broken"] == ""
    assert verdict["data-script-errors"] == ""
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The check can fail: the same page with a figure missing is reported broken.
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "d_load_time.png").unlink()
    verdict = open_in_chromium(broken / "index.html")
    assert verdict["data-check"] == "failed" and verdict["data-broken"] == "d_load_time.png", verdict


def test_report_page_names_sql_fingerprints_and_failures(cli: Cli, null_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = report(cli, null_store, out, "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["runs"] == 5 and outcome["empty"] == ["B", "C", "G"]  # G: no tune search
    page = (out / "index.html").read_text()
    assert 'src="a_throughput.png"' in page and 'href="a_throughput.svg"' in page
    assert "http://" not in page and "https://" not in page  # nothing from a network
    # Every figure shows the SQL that produced it, and that SQL runs as it is in `bench-ctl query`.
    sqls = [html.unescape(s) for s in re.findall(r"<pre>(.*?)</pre>", page, re.S)]
    assert len(sqls) == 12
    searches_sql = next(s for s in sqls if "FROM searches" in s)
    assert cli("query", searches_sql, "--db", str(null_store), "--format", "json").exit_code == 0
    throughput_sql = next(s for s in sqls if "FROM summary" in s)
    query = cli("query", throughput_sql, "--db", str(null_store), "--format", "json")
    assert query.exit_code == 0, query.output
    groups = json.loads(query.stdout)
    assert [(g["batch_size"], g["repetitions"]) for g in groups] == [(1, 2), (2, 2), (4, 2)]
    assert all(g["ci_method"] == "t" and g["throughput_ci_low"] < g["throughput_sps"] for g in groups)
    # The failed run is a missing point with its reason, not a silent gap.
    assert "out of memory" in page
    # Hosts, fingerprints and environments.
    assert socket.gethostname() in page and "cpu_model" in page and "memory_total_mb" in page
    lock = next(s for s in sqls if "image_digest" in s)
    rows = json.loads(cli("query", lock, "--db", str(null_store), "--format", "json").stdout)
    assert rows and all(r["lock_hash"] and r["lock_hash"] in page for r in rows)
    assert sum(r["runs"] for r in rows) == 5
    # The server sweep: two runs, each with its latency bound.
    server_sql = next(s for s in sqls if "scenario = 'server'" in s)
    server = json.loads(cli("query", server_sql, "--db", str(null_store), "--format", "json").stdout)
    assert sorted(r["target_qps"] for r in server) == [50.0, 100.0]
    assert all(r["latency_bound_ms"] == 100.0 for r in server)
    # The page opens with the fastest configuration per batch size: real runs of one configuration.
    summary = page[page.index('<section id="summary">') : page.index('<section id="a">')]
    assert summary.count("<b>null") == 3, summary
    assert summary.count("the only configuration measured here") == 3 and "(n=2)" in summary


def test_report_where_and_model_select(cli: Cli, null_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = report(cli, null_store, out, "--model", "fake", "--where", "batch_size <= 2", "--json")
    assert result.exit_code == 0, result.output
    page = html.unescape((out / "index.html").read_text())
    assert "AND (batch_size <= 2)" in page  # the intervals are over the selected results alone
    throughput_sql = next(s for s in re.findall(r"<pre>(.*?)</pre>", page, re.S) if "summary" in s)
    groups = json.loads(cli("query", throughput_sql, "--db", str(null_store), "--format", "json").stdout)
    assert [g["batch_size"] for g in groups] == [1, 2]


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("this is not sql", "is not a condition over the results view: Parser Error"),
        ("1=1); DROP TABLE runs; SELECT (1", "is not a condition over the results view: Parser Error"),
        ("1=1) UNION SELECT (1", "is not a condition over the results view: Parser Error"),
        ("no_such_column > 1", "is not a condition over the results view: Binder Error"),
        ("  ", "--where is empty"),
    ],
)
def test_report_refuses_a_where_that_is_not_a_read_condition(
    cli: Cli, null_store: Path, tmp_path: Path, where: str, says: str
) -> None:
    before = null_store.read_bytes()
    out = tmp_path / "report"
    result = report(cli, null_store, out, "--where", where)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "hint:" in lines[0], result.output
    assert not out.exists() and leftovers(tmp_path) == []
    assert null_store.read_bytes() == before


def test_report_of_an_empty_store_says_so(cli: Cli, bench: Bench, tmp_path: Path) -> None:
    from controller.store import db as store

    store.ensure_store(bench.db)
    out = tmp_path / "report"
    result = report(cli, bench.db, out)
    assert result.exit_code == 2
    assert "holds no results yet" in result.output and "hint: run a benchmark first" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and leftovers(tmp_path) == []
    missing = report(cli, tmp_path / "nothing.duckdb", out)
    assert missing.exit_code == 2 and "no result database" in missing.output and not out.exists()


def test_report_needs_the_parent_folder(cli: Cli, null_store: Path, tmp_path: Path) -> None:
    result = report(cli, null_store, tmp_path / "not" / "there" / "report")
    assert result.exit_code == 2 and "does not exist (hint: create the parent folder first)" in result.output
    assert not (tmp_path / "not").exists()


def test_report_of_a_model_with_no_results(cli: Cli, null_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = report(cli, null_store, out, "--model", "resnet50")
    assert result.exit_code == 2
    assert result.output.strip() == "error: no results for model 'resnet50' (hint: valid: fake)"
    assert not out.exists() and leftovers(tmp_path) == []
    result = report(cli, null_store, out, "--host", "elsewhere")
    assert result.exit_code == 2 and "no results from host 'elsewhere'" in result.output


def test_report_replaces_an_earlier_report_and_nothing_else(
    cli: Cli, null_store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    assert report(cli, null_store, out).exit_code == 0
    listed = json.loads((out / "bench-report.json").read_text())["files"]
    assert sorted(listed) == sorted(p.name for p in out.iterdir()) and "e_server.png" in listed
    (out / "thesis.txt").write_text("keep me")
    (out / "data").mkdir()
    (out / "data" / "runs.csv").write_text("1,2\n")
    result = report(cli, null_store, out, "--where", "scenario = 'offline'")
    assert result.exit_code == 0, result.output
    # Figure E is not drawn this time: its files go with the old report; the user's stay.
    assert not (out / "e_server.png").exists() and (out / "a_throughput.png").exists()
    assert (out / "thesis.txt").read_text() == "keep me" and (out / "data" / "runs.csv").exists()
    assert "e_server.png" not in json.loads((out / "bench-report.json").read_text())["files"]
    assert leftovers(tmp_path) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = report(cli, null_store, mine)
    assert result.exit_code == 2 and "holds files but no report of bench-ctl report" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_failure_while_drawing_leaves_nothing(
    cli: Cli, null_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.analysis.figures import plots

    out = tmp_path / "report"
    assert report(cli, null_store, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_args: object) -> None:
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(plots, "load_times", broken)
    result = report(cli, null_store, out)
    assert result.exit_code == 1 and "internal error" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier report is intact
    assert leftovers(tmp_path) == []


def test_unfair_pairs_and_power_laws_on_synthetic_results(cli: Cli, bench: Bench, tmp_path: Path) -> None:
    from benchmarks.synthetic import synthetic_results
    from controller.store import db as store

    with store.connect(bench.db) as con:
        store.ingest_many(con, [(r, None) for r in synthetic_results(800, seed=2)])
    out = tmp_path / "report"
    result = report(cli, bench.db, out, "--host", "synthetic-gpu-a100", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["empty"] == ["G"] and len(outcome["figures"]) == 5
    notes = "\n".join(outcome["notes"])
    # OpenVINO's bf16 and TensorRT's fp16 beside fp32 lines are marked, per model and host.
    assert (
        "resnet50 @ synthetic-gpu-a100: openvino (bf16), openvino [hint=throughput] (bf16), trt10 (fp16) "
        "computed in another precision than the fp32 lines beside it"
    ) in notes
    assert re.search(r"NVIDIA A100-SXM4-80GB: E = \S+ \* T\^-0\.\d+ over \d+ points", notes), notes
    page = (out / "index.html").read_text()
    # openvino (two variants, bf16) and trt10 (fp16), for each of 5 models
    assert page.count("beside fp32: unfair") == 15
    assert "synthetic-cpu-epyc" not in page  # --host keeps other hosts out


def test_power_law_recovers_a_known_exponent() -> None:
    from controller.analysis.figures.plots import power_law

    t = [10.0, 40.0, 160.0, 640.0]
    fit = power_law(t, [5.0 * x**-0.7 for x in t])
    assert fit is not None
    assert fit[0] == pytest.approx(5.0) and fit[1] == pytest.approx(-0.7)
    assert power_law([10.0, 10.0, 20.0], [1.0, 2.0, 3.0]) is None  # two distinct throughputs: no fit


@pytest.mark.parametrize(
    ("status", "message", "reason"),
    [
        ("error", "runner killed by the kernel: out of memory (SIGKILL)", "out of memory"),
        ("error", "synthetic: CUDA out of memory at batch size 1024", "out of memory"),
        ("unsupported", "TensorRT needs an NVIDIA GPU", "unsupported"),
        ("timeout", "no result after 600 s", "timeout"),
        ("error", "failed to build the engine", "compile error"),
        ("error", "injected framework failure", "error"),
    ],
)
def test_failure_reasons(status: str, message: str, reason: str) -> None:
    from controller.analysis.figures.plots import failure_reason

    assert failure_reason(status, message) == reason
