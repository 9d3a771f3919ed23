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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import slurm_cluster

from controller.launchers.slurm import (
    JobState,
    SlurmClient,
    SlurmOptions,
    batch_script,
    parse_sacct,
    parse_squeue,
)
from controller.paths import REPO_ROOT
from schemas import MeasurementPolicy, RunResult, RunSpec

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


@pytest.fixture
def slurm(cluster: slurm_cluster.SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> slurm_cluster.SlurmCluster:
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.setenv("BENCH_SLURM_POLL_S", "0.3")
    return cluster


def slurm_run(cli: Any, short_policy: list[str], *extra: str) -> tuple[Any, list[dict[str, Any]]]:
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
        *short_policy,
        *extra,
        "--json",
    )
    assert result.stdout.strip(), f"no JSON on stdout:\n{result.output}"
    doc = json.loads(result.stdout)
    return result, doc if isinstance(doc, list) else [doc]


def jobs_of(bench: Any) -> list[tuple[Any, ...]]:
    return bench.rows("SELECT run_id, job_id, state, node, status, stored_at FROM jobs ORDER BY job_id")


def test_runs_land_once_with_job_id_and_node(
    cli: Any, bench: Any, fake_model: Path, short_policy: list[str], slurm: Any
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


def _scancel_when_running(cluster: slurm_cluster.SlurmCluster, bench: Any, done: threading.Event) -> None:
    """scancel the first of our jobs once it runs (polling the cluster, not the store)."""
    env = {**os.environ, **cluster.env}
    while not done.is_set():
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i|%T|%j"], env=env, capture_output=True, text=True
        ).stdout.splitlines()
        ours = sorted((ln.split("|") for ln in out if "bench:" in ln), key=lambda f: int(f[0]))
        if ours and ours[0][1] == "RUNNING":
            subprocess.run(["scancel", ours[0][0]], env=env, check=True)
            return
        time.sleep(0.2)


def test_scancel_gives_cancelled_and_time_limit_gives_timeout(
    cli: Any, bench: Any, fake_model: Path, short_policy: list[str], slurm: Any
) -> None:
    """Two hanging runs with a one-minute limit: the first is cancelled while it runs, the second
    runs into Slurm's time limit (about 70 s: Slurm counts limits in minutes)."""
    done = threading.Event()
    canceller = threading.Thread(target=_scancel_when_running, args=(slurm, bench, done), daemon=True)
    canceller.start()
    try:
        result, docs = slurm_run(
            cli, short_policy, "--set", "fault=hang", "--repeat", "2", "--time-limit", "1"
        )
    finally:
        done.set()
        canceller.join(5)
    assert result.exit_code == 1, result.output
    runs = sorted((RunResult.model_validate(d) for d in docs), key=lambda r: int(r.launch.job_id or 0))
    assert [r.status for r in runs] == ["cancelled", "timeout"], [r.message for r in runs]
    cancelled, timed_out = runs
    assert "CANCELLED" in (cancelled.message or "")
    assert "TIMEOUT (TimeLimit)" in (timed_out.message or "") and "time limit" in (timed_out.message or "")
    for r in runs:
        assert r.launch is not None and r.launch.launcher == "slurm"
        assert r.launch.job_id and r.launch.node == slurm_cluster.NODE
        assert r.measurements == []
    rows = bench.rows("SELECT status, job_id, node, message FROM results ORDER BY job_id")
    assert [x[0] for x in rows] == ["cancelled", "timeout"]
    assert all(x[1] and x[2] == slurm_cluster.NODE for x in rows)
    assert [(j[2], j[4]) for j in jobs_of(bench)] == [("CANCELLED", "cancelled"), ("TIMEOUT", "timeout")]


def test_killed_controller_then_fleet_sync_stores_everything_once(
    cli: Any, bench: Any, fake_model: Path, short_policy: list[str], slurm: Any
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
        "--set",
        "work_us=50",
        "--repeat",
        "3",
        *short_policy,
    ]
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
    everything = json.loads(cli("fleet", "status", "--all", "--json").stdout)
    assert [j["status"] for j in everything] == ["ok"] * 3


def test_run_folder_the_node_cannot_see(
    cli: Any,
    bench: Any,
    short_policy: list[str],
    slurm: Any,
    monkeypatch: pytest.MonkeyPatch,
    session_home: Path,
) -> None:
    """A state folder the node does not mount: the job fails, and the result says why."""
    import conftest

    home = slurm.hidden / f"home-{os.getpid()}-{time.monotonic_ns()}"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    conftest.write_fake_model(home / "models" / "fake")
    monkeypatch.setenv("BENCH_HOME", str(home))
    result, docs = slurm_run(cli, short_policy, "--set", "work_us=50")
    assert result.exit_code == 1, result.output
    r = RunResult.model_validate(docs[0])
    assert r.status == "error"
    assert "JobLaunchFailure" in (r.message or "") and "file system" in (r.message or ""), r.message
    assert r.launch is not None and r.launch.job_id
    assert bench.rows("SELECT status FROM results") == [("error",)]


def test_unknown_partition_is_one_line(
    cli: Any, bench: Any, fake_model: Path, short_policy: list[str], slurm: Any
) -> None:
    result = cli(
        "run", "-i", "null", "-m", "fake", "--launcher", "slurm", "--partition", "debgu", *short_policy
    )
    assert result.exit_code == 2
    assert "unknown Slurm partition 'debgu'" in result.stderr and "did you mean 'debug'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_controller_unreachable_is_one_line(
    cli: Any, bench: Any, fake_model: Path, short_policy: list[str], slurm: Any, tmp_path: Path
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


def test_sbatch_absent_is_one_line(cli: Any, bench: Any, fake_model: Path, short_policy: list[str]) -> None:
    result = cli(
        "run", "-i", "null", "-m", "fake", "--launcher", "slurm", *short_policy, env={"PATH": "/nonexistent"}
    )
    assert result.exit_code == 2, result.output
    assert "`sbatch` is not on PATH" in result.stderr and "hint:" in result.stderr
    assert bench.run_dirs() == []


def test_slurm_options_need_the_slurm_launcher(cli: Any, fake_model: Path) -> None:
    result = cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "--partition", "gpu")
    assert result.exit_code == 2 and "--partition needs --launcher slurm" in result.stderr


# --------------------------------------------------------------------------- without a cluster


def _spec(device: str, memory_limit_mb: int | None = None) -> RunSpec:
    return RunSpec(
        run_id="20260101T000000Z-torch-fake-abcdef",
        image="torch",
        model="fake",
        model_dir="/m/fake",
        cache_dir="/c/torch",
        device=device,
        batch_sizes=[1],
        policy=MeasurementPolicy(memory_limit_mb=memory_limit_mb),
        options={"framework": "torch"},
    )


def test_gpu_batch_script_asks_for_a_gpu(tmp_path: Path) -> None:
    options = SlurmOptions(partition="gpu", account="proj1", constraint="h100", cpus=8)
    gpu = batch_script(_spec("cuda:0", memory_limit_mb=32000), tmp_path / "run", tmp_path, options, 1200)
    lines = gpu.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines
    assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH --mem=32000M" in lines
    assert "#SBATCH --time=25" in lines  # (1200 s + 300 s margin) / 60
    assert {"#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --constraint=h100"} <= set(lines)
    assert lines[-1].startswith("exec ") and "controller.node" in lines[-1] and "--timeout 1200" in lines[-1]
    cpu = batch_script(_spec("cpu"), tmp_path / "run", tmp_path, SlurmOptions(time_limit_min=3), 1200)
    assert "--gres" not in cpu and "#SBATCH --exclusive" in cpu and "#SBATCH --mem=0" in cpu
    assert "#SBATCH --time=3" in cpu.splitlines()


def test_slurm_states_parse_and_map() -> None:
    queued = parse_squeue("12|PENDING|Resources|\n13|RUNNING|None|node7\n14|CANCELLED|None|node7\n")
    assert queued["12"] == JobState("12", "PENDING", "Resources", None) and queued["12"].active
    assert queued["13"].node == "node7" and queued["13"].reason is None
    assert not queued["14"].active and queued["14"].status == "cancelled"
    acct = parse_sacct(
        "20|CANCELLED by 0|None|None assigned\n21|TIMEOUT|TimeLimit|n1\n22|PREEMPTED|None|n2\n"
        "23|NODE_FAIL|None|n3\n24|OUT_OF_MEMORY|None|n4\n25|BOOT_FAIL|None|n5\n"
    )
    assert acct["20"].state == "CANCELLED" and acct["20"].node is None
    assert [acct[j].status for j in ("20", "21", "22", "23", "24", "25")] == [
        "cancelled",
        "timeout",
        "preempted",
        "node_fail",
        "error",
        "node_fail",
    ]
