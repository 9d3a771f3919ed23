"""`--launcher slurm` and `bench-ctl fleet` against a real one-node Slurm (tests/slurm_cluster.py).

Runs of the null runner are submitted as jobs, followed, cancelled, timed out, left behind by a
killed controller and stored later; input mistakes are one line and exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from controller.launch.slurm import (
    SlurmClient,
)
from controller.paths import REPO_ROOT
from schemas import RunResult
from tests import slurm_cluster
from tests.conftest import REPO_BENCH, Bench, Cli, write_fake_model

pytestmark = pytest.mark.usefixtures("null_env")


@pytest.fixture(scope="module")
def cluster() -> Iterator[slurm_cluster.SlurmCluster]:
    missing = slurm_cluster.missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed here (no {', '.join(missing)}): apt-get install slurm-wlm munge")
    c = slurm_cluster.start()
    try:
        yield c
    finally:
        c.stop()


@dataclass
class OverTimeLimit:
    """A hanging run with a one-minute limit, submitted when this module starts: Slurm ends it
    60 to 90 s later (limits are whole minutes, checked every 30 s), while the other tests run."""

    proc: subprocess.Popen[str]
    home: Path
    db: Path

    def finish(self) -> tuple[int, list[dict[str, Any]]]:
        out, err = self.proc.communicate(timeout=180)
        assert out.strip(), f"no JSON on stdout:\n{err}"
        return self.proc.returncode, [json.loads(out)]


@pytest.fixture(scope="module", autouse=True)
def over_time_limit(
    cluster: slurm_cluster.SlurmCluster,
    tmp_path_factory: pytest.TempPathFactory,
    session_home: Path,
    null_env: Path,
) -> Iterator[OverTimeLimit]:
    home = tmp_path_factory.mktemp("time-limit") / "home"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    write_fake_model(home / "models" / "fake")
    db = home.parent / "results.duckdb"
    env = {
        **os.environ,
        **cluster.env,
        "BENCH_HOME": str(home),
        "BENCH_DB": str(db),
        "BENCH_SLURM_POLL_S": "1",
    }
    cmd = [sys.executable, "-m", "controller.cli", "run", "-i", "null", "-m", "fake", "-b", "1"]
    cmd += [
        "--launcher",
        "slurm",
        "--cpus-per-task",
        "1",
        "--node-launcher",
        "local",
        "--time-limit",
        "1",
        "--set",
        "fault=hang",
        "--json",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield OverTimeLimit(proc, home, db)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def slurm(cluster: slurm_cluster.SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> slurm_cluster.SlurmCluster:
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.setenv("BENCH_SLURM_POLL_S", "0.3")
    return cluster


def slurm_run(cli: Cli, short_policy: list[str], *extra: str) -> tuple[Result, list[dict[str, Any]]]:
    result = cli(
        "run",
        "--image",
        "null",
        "--model",
        "fake",
        "--launcher",
        "slurm",
        "-b",
        "1,2",
        "--cpus-per-task",
        "1",
        "--node-launcher",
        "local",
        *short_policy,
        *extra,
        "--json",
    )
    assert result.stdout.strip(), f"no JSON on stdout:\n{result.output}"
    doc = json.loads(result.stdout)
    return result, doc if isinstance(doc, list) else [doc]


def jobs_of(bench: Bench) -> list[tuple[Any, ...]]:
    return bench.rows("SELECT run_id, job_id, state, node, status, stored_at FROM jobs ORDER BY job_id")


def test_runs_land_once_with_job_id_and_node(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str], slurm: slurm_cluster.SlurmCluster
) -> None:
    result, docs = slurm_run(cli, short_policy, "--set", "work_us=50", "--repeat", "2")
    assert result.exit_code == 0, result.output
    runs = [RunResult.model_validate(d) for d in docs]
    assert [r.status for r in runs] == ["ok", "ok"]
    for r in runs:
        assert r.launch is not None and r.launch.job_id and r.launch.node == slurm_cluster.NODE
        assert r.launch.launcher == "local" and r.launch.image_ref == "local:null"
        assert [m.batch_size for m in r.measurements] == [1, 2]
        script = (bench.runs / r.run_id / "job.sh").read_text()
        assert "#SBATCH --cpus-per-task=1" in script and "--gres" not in script
        assert (bench.runs / r.run_id / f"slurm-{r.launch.job_id}.out").exists()
    assert len({r.launch.job_id for r in runs if r.launch}) == 2
    assert {r.spec.repetition for r in runs} == {1, 2} and len({r.spec.group for r in runs}) == 1
    stored = bench.rows("SELECT run_id, job_id, node, status FROM results ORDER BY run_id, batch_size")
    assert len(stored) == 4 and {s[3] for s in stored} == {"ok"}
    assert {(s[0], s[1], s[2]) for s in stored} == {
        (r.run_id, r.launch.job_id, slurm_cluster.NODE) for r in runs if r.launch
    }
    registry = jobs_of(bench)
    assert [(j[2], j[4]) for j in registry] == [("COMPLETED", "ok"), ("COMPLETED", "ok")]
    assert all(j[5] is not None for j in registry)
    # Nothing is left to store, and a sync stores nothing twice.
    again = cli("fleet", "sync")
    assert again.exit_code == 0 and "stored 0 result(s); 0 job(s)" in again.stdout, again.output
    assert bench.count("runs") == 2


def _scancel_when_running(cluster: slurm_cluster.SlurmCluster, bench: Bench, done: threading.Event) -> None:
    """scancel this test's job once it runs (polling the cluster, not the store)."""
    env = {**os.environ, **cluster.env}
    while not done.is_set():
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i|%T|%j"], env=env, capture_output=True, text=True
        ).stdout.splitlines()
        ours = (
            [ln.split("|") for ln in out if f"bench:{bench.run_dirs()[0].name}" in ln]
            if bench.run_dirs()
            else []
        )
        if ours and ours[0][1] == "RUNNING":
            subprocess.run(["scancel", ours[0][0]], env=env, check=True)
            return
        time.sleep(0.2)


def test_scancel_gives_cancelled(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str], slurm: slurm_cluster.SlurmCluster
) -> None:
    done = threading.Event()
    canceller = threading.Thread(target=_scancel_when_running, args=(slurm, bench, done), daemon=True)
    canceller.start()
    try:
        result, docs = slurm_run(cli, short_policy, "--set", "fault=hang")
    finally:
        done.set()
        canceller.join(5)
    assert result.exit_code == 1, result.output
    r = RunResult.model_validate(docs[0])
    assert r.status == "cancelled", r.message
    assert "ended CANCELLED" in (r.message or "")
    assert r.launch is not None and r.launch.launcher == "slurm"
    assert r.launch.job_id and r.launch.node == slurm_cluster.NODE and r.measurements == []
    assert bench.rows("SELECT status, job_id, node FROM results") == [
        ("cancelled", r.launch.job_id, slurm_cluster.NODE)
    ]
    assert [(j[2], j[4]) for j in jobs_of(bench)] == [("CANCELLED", "cancelled")]


def kill_once_submitted(cmd: list[str], env: dict[str, str]) -> list[str]:
    """Start bench-ctl, SIGKILL it once it says its jobs are submitted; the lines it printed."""
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "job(s) submitted" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return seen


def test_killed_controller_then_fleet_sync_stores_everything_once(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str], slurm: slurm_cluster.SlurmCluster
) -> None:
    env = {**os.environ, "SLURM_CONF": str(slurm.conf), "BENCH_SLURM_POLL_S": "0.3"}
    cmd = [
        sys.executable,
        "-m",
        "controller.cli",
        "run",
        "-i",
        "null",
        "-m",
        "fake",
        "--launcher",
        "slurm",
        "-b",
        "1",
        "--cpus-per-task",
        "1",
        "--node-launcher",
        "local",
        "--set",
        "work_us=50",
        "--repeat",
        "3",
        *short_policy,
    ]
    seen = kill_once_submitted(cmd, env)
    assert any("3 job(s) submitted" in ln for ln in seen), "".join(seen)
    client = SlurmClient()
    ids = [str(j[1]) for j in jobs_of(bench)]
    assert len(ids) == 3
    deadline = time.monotonic() + 60
    while any(s.active for s in client.states(ids).values()):
        assert time.monotonic() < deadline, "the jobs did not finish within 60 s"
        time.sleep(0.3)
    assert bench.count("runs") == 0
    status = cli("fleet", "status", "--json")
    assert status.exit_code == 0, status.output
    listed = json.loads(status.stdout)
    assert [(j["state"], j["status"]) for j in listed] == [("COMPLETED", None)] * 3
    synced = cli("fleet", "sync")
    assert synced.exit_code == 0, synced.output
    assert "stored 3 result(s); 0 job(s) still queued or running" in synced.stdout
    again = cli("fleet", "sync")
    assert "stored 0 result(s)" in again.stdout
    rows = bench.rows(
        "SELECT run_id, count(*), any_value(status), any_value(job_id) FROM runs GROUP BY run_id"
    )
    assert len(rows) == 3 and all(r[1] == 1 and r[2] == "ok" and r[3] in ids for r in rows)
    assert cli("fleet", "status", "--json").stdout.strip() == "[]"
    assert "no open Slurm jobs (--all" in cli("fleet", "status").stdout
    everything = json.loads(cli("fleet", "status", "--all", "--json").stdout)
    assert [j["status"] for j in everything] == ["ok"] * 3


def test_two_slurm_sweeps_of_one_plan_submit_each_run_once(
    bench: Bench, fake_model: Path, slurm: slurm_cluster.SlurmCluster, tmp_path: Path
) -> None:
    """The same plan swept twice on Slurm while the first is still submitting (an sbatch that
    takes 3 s, as a busy controller does): one job per run of each cell (the probe had 3 jobs for
    2 cells). A cell is claimed while its jobs are submitted; afterwards its jobs in the registry
    count as in flight for the other sweep."""
    import shutil

    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "sbatch").write_text(f'#!/bin/sh\nsleep 3\nexec {shutil.which("sbatch")} "$@"\n')
    (slow / "sbatch").chmod(0o755)
    plan = tmp_path / "two.toml"
    plan.write_text(
        'name = "two"\nrepetitions = 1\n'
        "policy = { min_time_s = 0.2, max_time_s = 1, window_s = 0.05, warmup_min_s = 0.1 }\n"
        '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\nsweep = { work_us = [0, 10] }\n'
    )
    env = {**os.environ, **slurm.env, "BENCH_SLURM_POLL_S": "0.3", "PATH": f"{slow}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "controller.cli", "sweep", str(plan), "--launcher", "slurm"]
    cmd += ["--cpus-per-task", "1", "--node-launcher", "local"]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    first = start()
    assert first.stderr is not None
    seen = []
    for line in first.stderr:  # its cells are planned (and claimed): it submits now
        seen.append(line)
        if line.startswith("plan two: 2 cells"):
            break
    second = start()
    said = ["".join(seen) + first.communicate(timeout=240)[1], second.communicate(timeout=240)[1]]
    assert [first.returncode, second.returncode] == [0, 0], said
    assert len(jobs_of(bench)) == 2, (jobs_of(bench), said)
    assert "2 due cell(s) are being measured by another sweep" in said[1], said[1]
    rows = bench.rows("SELECT cell, count(*), bool_and(status = 'ok') FROM runs GROUP BY cell")
    assert len(rows) == 2 and all(r[1] == 1 and r[2] for r in rows), rows


def test_run_folder_the_node_cannot_see(
    cli: Cli,
    bench: Bench,
    short_policy: list[str],
    slurm: slurm_cluster.SlurmCluster,
    monkeypatch: pytest.MonkeyPatch,
    session_home: Path,
) -> None:
    """A state folder the node does not mount: the job fails, and the result says why."""
    home = slurm.hidden / f"home-{os.getpid()}-{time.monotonic_ns()}"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    write_fake_model(home / "models" / "fake")
    monkeypatch.setenv("BENCH_HOME", str(home))
    result, docs = slurm_run(cli, short_policy, "--set", "work_us=50")
    assert result.exit_code == 1, result.output
    r = RunResult.model_validate(docs[0])
    assert r.status == "error"
    assert "JobLaunchFailure" in (r.message or "") and "file system" in (r.message or ""), r.message
    assert r.launch is not None and r.launch.job_id
    assert bench.rows("SELECT status FROM results") == [("error",)]


def test_a_percent_in_the_state_folder(
    cli: Cli,
    short_policy: list[str],
    slurm: slurm_cluster.SlurmCluster,
    monkeypatch: pytest.MonkeyPatch,
    session_home: Path,
    tmp_path: Path,
) -> None:
    """sbatch reads `%u` in --output as the user's name: unescaped, the job's output file named a
    folder that does not exist and every job failed to launch."""
    home = tmp_path / "bench-100%u"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    write_fake_model(home / "models" / "fake")
    monkeypatch.setenv("BENCH_HOME", str(home))
    result, docs = slurm_run(cli, short_policy, "--set", "work_us=50")
    assert result.exit_code == 0, result.output
    r = RunResult.model_validate(docs[0])
    assert r.status == "ok" and r.launch is not None and r.launch.job_id, r.message
    assert (home / "runs" / r.run_id / f"slurm-{r.launch.job_id}.out").is_file()


def test_unknown_partition_is_one_line(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str], slurm: slurm_cluster.SlurmCluster
) -> None:
    result = cli(
        "run", "-i", "null", "-m", "fake", "--launcher", "slurm", "--partition", "debgu", *short_policy
    )
    assert result.exit_code == 2
    assert "unknown Slurm partition 'debgu'" in result.stderr and "did you mean 'debug'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_controller_unreachable_is_one_line(
    cli: Cli,
    bench: Bench,
    fake_model: Path,
    short_policy: list[str],
    slurm: slurm_cluster.SlurmCluster,
    tmp_path: Path,
) -> None:
    conf = tmp_path / "slurm.conf"
    text = slurm.conf.read_text()
    port = next(ln for ln in text.splitlines() if ln.startswith("SlurmctldPort="))
    conf.write_text(text.replace(port, f"SlurmctldPort={slurm_cluster._free_port()}") + "MessageTimeout=2\n")
    result = cli(
        "run", "-i", "null", "-m", "fake", "--launcher", "slurm", *short_policy, env={"SLURM_CONF": str(conf)}
    )
    assert result.exit_code == 2, result.output
    assert "Slurm does not answer" in result.stderr and "sinfo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert bench.run_dirs() == []


def test_time_limit_gives_timeout(over_time_limit: OverTimeLimit, bench: Bench) -> None:
    """Last in this module: the run submitted when it started has met Slurm's time limit."""
    code, docs = over_time_limit.finish()
    assert code == 1
    r = RunResult.model_validate(docs[0])
    assert r.status == "timeout", r.message
    assert "ended TIMEOUT (TimeLimit)" in (r.message or "") and "time limit" in (r.message or "")
    assert r.launch is not None and r.launch.launcher == "slurm"
    assert r.launch.job_id and r.launch.node == slurm_cluster.NODE and r.measurements == []
    script = (over_time_limit.home / "runs" / r.run_id / "job.sh").read_text()
    assert "#SBATCH --time=1" in script.splitlines()
    kept = Bench(home=over_time_limit.home, db=over_time_limit.db)
    assert kept.rows("SELECT status, job_id, node FROM results") == [
        ("timeout", r.launch.job_id, slurm_cluster.NODE)
    ]


@pytest.fixture
def resnet50(bench: Bench) -> None:
    """resnet50 in this test's model store: the repository's copy (else the sweep exports it)."""
    repo_copy = REPO_BENCH / "models" / "resnet50"
    if (repo_copy / "manifest.json").exists():
        (bench.models / "resnet50").symlink_to(repo_copy.resolve(), target_is_directory=True)


@pytest.mark.frameworks
def test_smoke_plan_on_slurm_every_cell_once_with_its_job(
    cli: Cli,
    bench: Bench,
    resnet50: None,
    slurm: slurm_cluster.SlurmCluster,
    ensure_env: Callable[[str], Path],
) -> None:
    """plans/smoke.toml: the sweep is killed once its jobs are submitted; a rerun submits nothing
    for cells queued or running; `fleet sync --wait` stores the rest; then every cell has its
    repetitions, each run a job of its own, and a third sweep finds everything done."""
    for image in ("ort", "openvino"):
        ensure_env(image)
    # The smoke plan, its runs judged whole: jobs started together on this one host starve each
    # other, and a sweep measures noisy runs again (tests/test_sweep.py checks that); here the
    # cells must be done once their jobs are stored.
    text = (REPO_ROOT / "plans" / "smoke.toml").read_text()
    policy = "policy = { min_time_s = 0.5, max_time_s = 3, warmup_min_s = 0.2 }"
    assert policy in text
    plan = bench.home / "smoke.toml"
    plan.write_text(text.replace(policy, policy[:-2] + ", starved_share = 1, quiet_wait_s = 0 }"))
    env = {**os.environ, "SLURM_CONF": str(slurm.conf), "BENCH_SLURM_POLL_S": "0.3"}
    cmd = [sys.executable, "-m", "controller.cli", "sweep", str(plan), "--launcher", "slurm"]
    cmd += ["--cpus-per-task", "1", "--node-launcher", "local"]
    seen = kill_once_submitted(cmd, env)
    assert any("9 job(s) submitted" in ln for ln in seen), "".join(seen)
    assert len(jobs_of(bench)) == 9
    rerun = cli(
        "sweep", plan, "--launcher", "slurm", "--cpus-per-task", "1", "--node-launcher", "local", "--json"
    )
    assert rerun.exit_code == 0, rerun.output
    assert len(jobs_of(bench)) == 9, "a rerun resubmitted cells that were queued or running"
    synced = cli("fleet", "sync", "--wait")
    assert synced.exit_code == 0, synced.output
    rows = bench.rows(
        "SELECT cell, count(*), count(DISTINCT job_id), bool_and(status = 'ok'), bool_and(node IS NOT NULL) "
        "FROM runs GROUP BY cell ORDER BY cell"
    )
    assert sorted(r[1] for r in rows) == [1, 1, 1, 2, 2, 2]  # 6 cells: 3 with 2 repetitions
    failed = bench.rows("SELECT image, status, message FROM runs WHERE status <> 'ok'")
    assert all(r[1] == r[2] and r[3] and r[4] for r in rows), (rows, failed)
    assert bench.count("runs") == 9 and bench.rows("SELECT count(*) FROM jobs WHERE stored_at IS NULL") == [
        (0,)
    ]
    third = cli("sweep", plan, "--launcher", "slurm", "--cpus-per-task", "1", "--node-launcher", "local")
    assert third.exit_code == 0 and "6 of 6 already done" in third.stderr, third.output
    assert len(jobs_of(bench)) == 9


def test_tune_spreads_each_round_over_the_cluster(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str], slurm: slurm_cluster.SlurmCluster
) -> None:
    """knob_a fixed at the optimum's, knob_b searched (four candidates, knob_b = 1 the optimum 10 %
    ahead): each round's trials are jobs submitted together, every trial lands once with its job,
    the answer is the optimum, and a second call submits nothing."""
    # Each job asks for the node's 8 cores, so the node runs one job at a time: four 1-core jobs at
    # once on this 2-core host would measure each other, and the 10 % optimum with them.
    args = ["tune", "-m", "fake", "-i", "null", "--launcher", "slurm", "--cpus-per-task", "8"]
    args += ["--node-launcher", "local", "--set", "landscape=true", "--set", "knob_a=5"]
    args += ["--set", "work_us=3000", *short_policy, "--budget", "10m", "--json"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    [im] = doc["images"]
    assert im["best"]["options"]["knob_b"] == 1, im
    assert "the defaults first" in r.stderr and "job(s) submitted" in r.stderr
    runs = bench.rows("SELECT count(*), count(DISTINCT job_id), count(DISTINCT cell) FROM runs")[0]
    assert runs[0] == runs[1] == doc["runs_made"] and runs[2] == 4
    assert bench.rows("SELECT count(*) FROM jobs WHERE stored_at IS NULL") == [(0,)]
    host = bench.rows("SELECT host FROM searches")[0][0]
    assert host.startswith("slurm:")
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runs_made"] == 0 and bench.count("runs") == runs[0], again.stderr


def test_tune_refuses_a_server_search_on_slurm(cli: Cli, bench: Bench, fake_model: Path) -> None:
    r = cli("tune", "-m", "fake", "-i", "null", "--launcher", "slurm", "--scenario", "server",
            "--bound", "p99<=50ms")  # fmt: skip
    assert r.exit_code == 2 and "one rate after another" in r.stderr and bench.count("runs") == 0
