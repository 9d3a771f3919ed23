"""A result file is stored only as the run the controller planned into its folder: a result that
claims another run id (edited in a shared run folder, or written by a broken runner) would
replace that run in the store, so it is refused and the planned run is stored as failed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.catalog.images import ImageInfo, get_image
from controller.launch.base import LineSink, ProcessOutcome
from controller.launch.local import LocalLauncher
from controller.launch.slurm import JobState
from controller.paths import Paths
from controller.run import fleet, pipeline
from controller.run.planning import RunRequest, plan
from controller.store import db as store
from schemas import RunResult, RunSpec
from tests.conftest import Bench, Cli, MakeResult


def _store(bench: Bench, *results: RunResult) -> None:
    with store.connect(bench.db) as con:
        for r in results:
            store.ingest(con, r)


def _forged(result: RunResult, run_id: str, throughput: float) -> str:
    """A copy of `result` claiming `run_id`, with other numbers: what an edit of result.json makes."""
    doc = json.loads(result.model_dump_json())
    doc["run_id"] = doc["spec"]["run_id"] = run_id
    for m in doc["measurements"]:
        m["throughput_sps"] = throughput
    return json.dumps(doc)


def _victim(bench: Bench) -> tuple[float, int]:
    rows = bench.rows("SELECT max(throughput_sps), count(*) FROM results WHERE run_id = 'victim'")
    return float(rows[0][0]), int(rows[0][1])


class CompletedJobs:
    """Slurm as `fleet.follow` asks it: every job has ended COMPLETED on node n1."""

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        return {j: JobState(j, "COMPLETED", None, "n1") for j in job_ids}


def _registered_job(bench: Bench, spec: RunSpec, job_id: str = "4242") -> fleet.Job:
    run_dir = bench.runs / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(spec.model_dump_json())
    now = datetime.now(UTC)
    job = fleet.Job(
        run_id=spec.run_id,
        job_id=job_id,
        image=spec.image,
        model=spec.model,
        run_dir=str(run_dir),
        submitted_at=now,
        state="RUNNING",
        updated_at=now,
    )
    fleet.register(bench.db, job)
    return job


@pytest.mark.parametrize("spec_json", ["kept", "forged", "gone"])
def test_fleet_sync_refuses_a_result_claiming_another_run(
    bench: Bench, make_result: MakeResult, spec_json: str
) -> None:
    """The issue's repro: run V stored; job J of run R ends; R's result.json edited to say V (and
    its spec.json too, or removed). Before, `fleet sync` said "job J: ok", V held the forged
    numbers and R was missing. The registry's run id is the one that counts."""
    victim = make_result(run_id="victim")
    planned = make_result(run_id="20260101T000000Z-null-fake-000abc")
    _store(bench, victim)
    before = _victim(bench)
    job = _registered_job(bench, planned.spec)
    run_dir = Path(job.run_dir)
    (run_dir / "result.json").write_text(_forged(planned, "victim", 1e9))
    if spec_json == "forged":
        (run_dir / "spec.json").write_text(victim.spec.model_dump_json())
    elif spec_json == "gone":
        (run_dir / "spec.json").unlink()
    said: list[str] = []
    report = fleet.sync(Paths.from_env(), said.append, client=CompletedJobs())  # type: ignore[arg-type]
    assert _victim(bench) == before, "the forged result replaced another run"
    [result] = report.stored
    assert result.run_id == planned.run_id and result.status == "error"
    assert "claimed another run id ('victim')" in (result.message or "")
    assert result.launch is not None and result.launch.job_id == "4242" and result.launch.node == "n1"
    assert bench.rows("SELECT status, job_id FROM runs WHERE run_id = ?", [planned.run_id]) == [
        ("error", "4242")
    ]
    refusals = [line for line in said if "refused" in line]
    assert len(refusals) == 1 and "claims run 'victim'" in refusals[0], said
    assert bench.rows("SELECT status FROM jobs") == [("error",)]
    # The run folder now holds what the store holds for R.
    kept = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert kept.run_id == planned.run_id and kept.status == "error"


@pytest.mark.parametrize("spec_json", ["kept", "gone"])
def test_fleet_sync_still_stores_a_jobs_own_result(
    bench: Bench, make_result: MakeResult, spec_json: str
) -> None:
    planned = make_result(run_id="20260101T000000Z-null-fake-000abd")
    job = _registered_job(bench, planned.spec)
    (Path(job.run_dir) / "result.json").write_text(planned.model_dump_json())
    if spec_json == "gone":
        (Path(job.run_dir) / "spec.json").unlink()
    report = fleet.sync(Paths.from_env(), lambda _: None, client=CompletedJobs())  # type: ignore[arg-type]
    assert [(r.run_id, r.status) for r in report.stored] == [(planned.run_id, "ok")]
    launch = report.stored[0].launch
    assert launch is not None and launch.launcher == "local" and launch.job_id == "4242"


def test_fleet_sync_of_a_job_that_left_nothing_usable(bench: Bench, make_result: MakeResult) -> None:
    """No spec.json and a result.json that is a FIFO: the run is stored as failed with what the
    registry knows of it, instead of an internal error (or a read that waits forever)."""
    planned = make_result(run_id="20260101T000000Z-null-fake-000abe")
    job = _registered_job(bench, planned.spec)
    (Path(job.run_dir) / "spec.json").unlink()
    os.mkfifo(Path(job.run_dir) / "result.json")
    report = fleet.sync(Paths.from_env(), lambda _: None, client=CompletedJobs())  # type: ignore[arg-type]
    [result] = report.stored
    assert (result.run_id, result.status, result.spec.image, result.spec.model) == (
        planned.run_id,
        "error",
        "null",
        "fake",
    )
    assert "ended COMPLETED" in (result.message or "")


class ForgingLauncher(LocalLauncher):
    """The real local launcher, with result.json rewritten to claim another run once the runner
    has finished: a runner's bug, or another user's edit in a shared run folder."""

    def __init__(self, paths: Paths, forged: str) -> None:
        super().__init__(paths)
        self.forged = forged

    def start_runner(
        self,
        image: ImageInfo,
        spec: RunSpec,
        run_dir: Path,
        timeout_s: float,
        on_line: LineSink,
        shared: Sequence[Path] = (),
    ) -> ProcessOutcome:
        outcome = super().start_runner(image, spec, run_dir, timeout_s, on_line, shared)
        (run_dir / "result.json").write_text(self.forged)
        return outcome


@pytest.mark.usefixtures("null_env")
def test_local_launch_refuses_a_result_claiming_another_run(
    bench: Bench, fake_model: Path, make_result: MakeResult, short_policy: list[str]
) -> None:
    victim = make_result(run_id="victim")
    _store(bench, victim)
    before = _victim(bench)
    paths = Paths.from_env()
    image = get_image("null")
    sets = [s for s in short_policy if s != "--set"]
    spec = plan(RunRequest(image="null", model="fake", batch_sizes=[1], sets=sets), paths, image)
    launcher = ForgingLauncher(paths, _forged(victim, "victim", 1e9))
    result = pipeline.launch_and_keep(image, spec, launcher, paths, 60, lambda _: None)
    assert result.run_id == spec.run_id and result.status == "error"
    assert "claimed another run id ('victim')" in (result.message or "")
    assert result.launch is not None and result.launch.launcher == "local"
    assert _victim(bench) == before
    assert bench.rows("SELECT status FROM runs WHERE run_id = ?", [spec.run_id]) == [("error",)]


@pytest.mark.usefixtures("null_env")
def test_sweep_recovery_refuses_a_result_claiming_another_run(
    cli: Cli, bench: Bench, fake_model: Path, make_result: MakeResult, tmp_path: Path
) -> None:
    """A sweep stores results that reached their run folders but not the store: one of them
    edited to claim another run is not stored over it; its own run is stored as failed."""
    import duckdb

    victim = make_result(run_id="victim")
    _store(bench, victim)
    before = _victim(bench)
    plan_file = tmp_path / "p.toml"
    plan_file.write_text(
        'name = "p"\nrepetitions = 1\n'
        "policy = { min_time_s = 0.2, max_time_s = 1, window_s = 0.05, warmup_min_s = 0.1, "
        "noisy_reruns = 0 }\n"  # one run, even if this shared host makes it noisy
        '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'
    )
    assert cli("sweep", plan_file, "--launcher", "local").exit_code == 0
    [(run_id,)] = bench.rows("SELECT run_id FROM runs WHERE cell IS NOT NULL")
    with duckdb.connect(str(bench.db)) as con:
        con.execute("DELETE FROM measurements WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    result_file = bench.runs / run_id / "result.json"
    result_file.write_text(_forged(RunResult.model_validate_json(result_file.read_text()), "victim", 1e9))
    again = cli("sweep", plan_file, "--launcher", "local")
    assert again.exit_code == 0, again.output
    assert f"claims run 'victim', not '{run_id}': refused" in again.output
    assert _victim(bench) == before
    [(status, message)] = bench.rows("SELECT status, message FROM runs WHERE run_id = ?", [run_id])
    assert status == "error" and "claimed another run id ('victim')" in message
