"""Plans and `bench-ctl sweep`: expansion, resume keyed on cell/host/lock, unsupported cells,
--retry-failed, a SIGKILL half-way, and bad plans refused before anything runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from controller.catalog import hosts
from controller.paths import Paths
from controller.run import pipeline, planning, plans
from schemas import RunResult
from schemas.frameworks.null import NullOptions
from tests.conftest import Bench, Cli, MakeResult

pytestmark = pytest.mark.usefixtures("null_env")

# A busy test host neither delays nor multiplies these runs (tests/conftest.py's SHORT_POLICY);
# noisy runs are made where a test wants them (`starve`).
POLICY = (
    "policy = { min_time_s = 0.2, max_time_s = 1, window_s = 0.05, warmup_min_s = 0.1, "
    "quiet_wait_s = 0, starved_share = 1 }\n"
)


def write_plan(folder: Path, body: str, name: str = "t", repetitions: int = 2) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nrepetitions = {repetitions}\n{POLICY}\n{body}')
    return path


NULL_PAIR = """
[[runs]]
images = ["null"]
models = ["fake"]
batch_sizes = [1, 2]
sweep = { work_us = [0, 100] }
"""


def cells_in_store(bench: Bench) -> dict[str, list[str]]:
    rows = bench.rows("SELECT cell, status FROM runs ORDER BY started_at")
    found: dict[str, list[str]] = {}
    for cell, status in rows:
        found.setdefault(cell, []).append(status)
    return found


def test_plan_expands_model_major_with_sweeps(bench: Bench, fake_model: Path, tmp_path: Path) -> None:
    path = write_plan(
        tmp_path,
        """
[[runs]]
images = ["null"]
models = ["fake"]
batch_sizes = [1]
sweep = { tag = ["a", "b"] }
""",
    )
    plan = plans.load(path)
    cells = plans.cells(plan, Paths.from_env(), hosts.identity().key)
    assert [c.options for c in cells] == ["tag=a", "tag=b"]
    assert len({c.key for c in cells}) == 2 and all(c.repetitions == 2 for c in cells)
    # The plan's policy reaches every run; repetitions do not change what a cell is.
    assert all("policy.min_time_s=0.2" in c.request.sets for c in cells)
    other = plans.cells(plan.model_copy(update={"repetitions": 5}), Paths.from_env(), hosts.identity().key)
    assert [c.key for c in other] == [c.key for c in cells]


def test_cell_key_changes_with_host_and_lock(bench: Bench, fake_model: Path, tmp_path: Path) -> None:
    plan = plans.load(write_plan(tmp_path, NULL_PAIR))
    here = plans.cells(plan, Paths.from_env(), hosts.identity().key)
    new_host = hosts.identity().model_copy(update={"cpu_model": "another CPU"})
    elsewhere = plans.cells(plan, Paths.from_env(), new_host.key)
    assert not {c.key for c in here} & {c.key for c in elsewhere}
    image = here[0].image
    spec = planning.plan(here[0].request, Paths.from_env(), image)
    relocked = plans.cell_key(spec, image.model_copy(update={"lock_hash": "x"}), "h")
    assert relocked != plans.cell_key(spec, image, "h")


def test_sweep_runs_what_is_missing_and_then_nothing(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    path = write_plan(tmp_path, NULL_PAIR)
    first = cli("sweep", path, "--launcher", "local")
    assert first.exit_code == 0, first.output
    assert "0 of 2 already done" in first.output
    stored = cells_in_store(bench)
    assert len(stored) == 2 and all(s == ["ok", "ok"] for s in stored.values())
    # Repetitions are interleaved: A B A B.
    order = [c for (c,) in bench.rows("SELECT cell FROM runs ORDER BY started_at")]
    assert order[0] != order[1] and order[:2] == order[2:]
    again = cli("sweep", path, "--launcher", "local")
    assert again.exit_code == 0 and "2 of 2 already done" in again.output
    assert bench.count("runs") == 4
    # More repetitions in the plan: only the difference runs.
    more = write_plan(tmp_path, NULL_PAIR, repetitions=3)
    third = cli("sweep", more, "--launcher", "local")
    assert third.exit_code == 0, third.output
    assert bench.count("runs") == 6 and all(len(s) == 3 for s in cells_in_store(bench).values())


def test_new_hardware_makes_cells_due_again(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_plan(tmp_path, NULL_PAIR, repetitions=1)
    assert cli("sweep", path, "--launcher", "local").exit_code == 0
    real = hosts.identity

    def upgraded() -> hosts.HostIdentity:
        return real().model_copy(update={"gpus": ["NVIDIA H200"]})

    monkeypatch.setattr(hosts, "identity", upgraded)
    dry = cli("sweep", path, "--dry-run", "--json")
    doc = json.loads(dry.stdout)
    assert doc["runs_due"] == 2 and all(c["state"] == "due" for c in doc["cells"])


def test_target_ci_adds_runs_until_narrow_or_capped(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    """policy.target_ci in a plan: a target no run can meet (0.01 %) takes the cell to its cap of
    max_repetitions, one run per round; a loose one (50 %) is met by the first run. The cap is
    remembered across sweeps, and raising it makes exactly the difference due."""

    def plan(cap: int) -> Path:
        path = tmp_path / "ci.toml"
        path.write_text(
            'name = "ci"\nrepetitions = 1\n'
            "policy = { min_time_s = 0.2, max_time_s = 0.4, window_s = 0.05, warmup_min_s = 0.05, "
            "quiet_wait_s = 0, starved_share = 1 }\n"
            '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'
            f'set = {{ work_us = 100, "policy.target_ci" = 0.0001, "policy.max_repetitions" = {cap} }}\n'
            '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'
            'set = { work_us = 300, "policy.target_ci" = 0.5, "policy.max_repetitions" = 3 }\n'
        )
        return path

    first = cli("sweep", plan(3), "--launcher", "local")
    assert first.exit_code == 0, first.output
    assert "interval" in first.output and "one more run" in first.output
    work = dict(bench.rows("SELECT options->>'work_us', count(*) FROM runs GROUP BY ALL"))
    assert work == {"100.0": 3, "300.0": 1}, work
    order = [w for (w,) in bench.rows("SELECT options->>'work_us' FROM runs ORDER BY started_at")]
    assert order[:2] == ["100.0", "300.0"]  # the narrow cell's first run stays in round 1
    again = cli("sweep", plan(3), "--launcher", "local")
    assert again.exit_code == 0 and "2 of 2 already done" in again.output
    dry = json.loads(cli("sweep", plan(4), "--dry-run", "--json").stdout)
    wide = next(c for c in dry["cells"] if "work_us=100" in c["options"])
    assert wide["runs_due"] == 1 and "of at most 4 runs" in wide["state"], wide
    assert cli("sweep", plan(4), "--launcher", "local").exit_code == 0
    assert bench.count("runs") == 5


NULL_ONE_BATCH = """
[[runs]]
images = ["null"]
models = ["fake"]
batch_sizes = [1]
sweep = { work_us = [0, 100] }
"""


def starve(monkeypatch: pytest.MonkeyPatch, first: dict[float, int]) -> None:
    """The first `first[work_us]` ok runs of each configuration come out noisy, as the runner
    flags a run other load starved of clean windows: their measurements are flagged before the
    result is kept (written and stored), so the store and the sweep see what a busy host gives."""
    real = pipeline.keep
    made: Counter[float] = Counter()

    def keep(result: RunResult, run_dir: Path, paths: Paths) -> RunResult:
        assert isinstance(result.spec.options, NullOptions)
        work = result.spec.options.work_us
        made[work] += result.status == "ok"
        if result.status == "ok" and made[work] <= first.get(work, 0):
            flagged = [m.model_copy(update={"noisy": True}) for m in result.measurements]
            result = result.model_copy(update={"measurements": flagged})
        return real(result, run_dir, paths)

    monkeypatch.setattr(pipeline, "keep", keep)


def runs_by_work(bench: Bench) -> dict[str, list[tuple[int, bool]]]:
    """Per work_us: each stored run's (repetition, noisy), in the order they ran."""
    found: dict[str, list[tuple[int, bool]]] = {}
    rows = bench.rows("SELECT options->>'work_us', repetition, noisy FROM results ORDER BY started_at")
    for work, repetition, noisy in rows:
        found.setdefault(work, []).append((repetition, bool(noisy)))
    return found


def test_noisy_runs_are_made_again_within_the_cells_allowance(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One cell's first run is noisy, every run of the other is (a host that stays busy). The
    first is measured again once; the second gets its policy.noisy_reruns (2) more runs, then its
    noisy runs count and the sweep ends. A run made again keeps the repetition it measures, and
    a second sweep finds both cells done."""
    starve(monkeypatch, {0.0: 1, 100.0: 99})
    path = write_plan(tmp_path, NULL_ONE_BATCH, repetitions=2)
    first = cli("sweep", path, "--launcher", "local")
    assert first.exit_code == 0, first.output
    assert runs_by_work(bench) == {
        "0.0": [(1, True), (1, False), (2, False)],
        "100.0": [(1, True), (1, True), (1, True), (2, True)],
    }
    assert first.stderr.count("measuring it again (1 of at most 2 more)") == 2, first.stderr
    assert first.stderr.count("measuring it again (2 of at most 2 more)") == 1
    assert first.stderr.count("still noisy after 2 more runs") == 2
    assert "cell 2 " in first.stderr and "noisy (batch 1: " in first.stderr
    again = cli("sweep", path, "--launcher", "local")
    assert again.exit_code == 0 and "2 of 2 already done" in again.output
    assert bench.count("runs") == 7


def test_the_allowance_for_noise_lasts_across_sweeps(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs for noise are a cell's over its life in the store: after a sweep spent them, the
    listing says how many runs were noisy and a sweep with more repetitions makes only the
    difference, noisy or not; a cell that has some left still measures a noisy run again."""
    starve(monkeypatch, {0.0: 1, 100.0: 99})
    once = cli("sweep", write_plan(tmp_path, NULL_ONE_BATCH, repetitions=1), "--launcher", "local")
    assert once.exit_code == 0, once.output
    assert {w: len(r) for w, r in runs_by_work(bench).items()} == {"0.0": 2, "100.0": 3}
    more = write_plan(tmp_path, NULL_ONE_BATCH, repetitions=3)
    dry = json.loads(cli("sweep", more, "--dry-run", "--json").stdout)
    states = {c["options"]: (c["state"], c["runs_due"], c["done_ok"], c["noisy_ok"]) for c in dry["cells"]}
    assert states == {
        "work_us=0": ("due (1 of 3 done, 1 noisy)", 2, 1, 1),
        "work_us=100": ("due (1 of 3 done, 3 noisy: no runs for noise left)", 2, 1, 3),
    }, states
    listing = cli("sweep", more, "--dry-run", env={"COLUMNS": "250"})
    assert "due (1 of 3 done, 1 noisy)" in listing.output, listing.output
    second = cli("sweep", more, "--launcher", "local")
    assert second.exit_code == 0, second.output
    assert "measuring it again" not in second.stderr and second.stderr.count("still noisy") == 2
    assert {w: len(r) for w, r in runs_by_work(bench).items()} == {"0.0": 4, "100.0": 5}
    # A cell with runs for noise left (one of two spent) measures a noisy run again.
    starve(monkeypatch, {0.0: 1})
    fourth = cli("sweep", write_plan(tmp_path, NULL_ONE_BATCH, repetitions=4), "--launcher", "local")
    assert fourth.exit_code == 0, fourth.output
    assert fourth.stderr.count("measuring it again (2 of at most 2 more)") == 1, fourth.stderr
    assert [n for _, n in runs_by_work(bench)["0.0"]] == [True, False, False, False, True, False]


def test_unsupported_cell_is_recorded_once(cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path) -> None:
    path = write_plan(
        tmp_path,
        NULL_PAIR + '\n[[runs]]\nimages = ["trt10"]\nmodels = ["fake"]\nbatch_sizes = [1]\n',
        repetitions=1,
    )
    if Path("/dev/nvidia0").exists():
        pytest.skip("this host has a GPU: the trt10 cell is not unsupported here")
    first = cli("sweep", path, "--launcher", "local")
    assert first.exit_code == 0, first.output  # unsupported is an answer, not a failure
    rows = bench.rows("SELECT status, message FROM runs WHERE image = 'trt10'")
    assert len(rows) == 1 and rows[0][0] == "unsupported" and "NVIDIA GPU" in rows[0][1]
    again = cli("sweep", path, "--launcher", "local")
    assert again.exit_code == 0 and "3 of 3 already done" in again.output
    assert len(bench.rows("SELECT 1 FROM runs WHERE image = 'trt10'")) == 1


def test_failed_cells_rerun_only_with_retry_failed(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    body = '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\nset = { fault = "raise" }\n'
    path = write_plan(tmp_path, body, repetitions=2)
    first = cli("sweep", path, "--launcher", "local")
    assert first.exit_code == 1  # a failure gets no second repetition in the same sweep
    assert [s for (s,) in bench.rows("SELECT status FROM runs")] == ["error"]
    skipped = cli("sweep", path, "--launcher", "local")
    assert skipped.exit_code == 0 and "failed (--retry-failed)" not in skipped.output
    assert "skipped (--retry-failed)" in skipped.output or "1 of 1 already done" in skipped.output
    assert bench.count("runs") == 1
    retried = cli("sweep", path, "--launcher", "local", "--retry-failed")
    assert retried.exit_code == 1 and bench.count("runs") == 2


def test_sigkill_half_way_then_resume_runs_exactly_the_missing(
    bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    """bench-ctl killed with SIGKILL between runs: the rerun makes exactly the runs that are missing,
    and the store holds each cell's repetitions once."""
    body = """
[[runs]]
images = ["null"]
models = ["fake"]
batch_sizes = [1]
sweep = { work_us = [0, 10, 20, 30] }
"""
    path = write_plan(tmp_path, body, repetitions=1)
    cmd = [sys.executable, "-m", "controller.cli", "sweep", str(path), "--launcher", "local"]
    env = {**os.environ, "BENCH_HOME": str(bench.home), "BENCH_DB": str(bench.db)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if bench.db.exists() and _stored_runs(bench) >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    before = _stored_runs(bench)
    assert 2 <= before < 4, f"expected to kill the sweep half-way, {before} runs were stored"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "another sweep" not in result.stderr  # the killed sweep's claims died with it
    # Killed between a run's result and its storing: that result is stored now, not measured again.
    recovered = 1 if "stored 1 result(s) of this plan" in result.stderr else 0
    assert f"{before + recovered} of 4 already done" in result.stderr
    stored = cells_in_store(bench)
    assert len(stored) == 4 and all(s == ["ok"] for s in stored.values())


def test_two_sweeps_of_one_plan_measure_each_cell_once(
    bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    """The same plan swept twice, 0.5 s apart, on one host: each cell is claimed by one sweep, the
    other skips it and says so, and the store holds each cell's repetitions once (the probe had
    12 runs for 6 cells)."""
    body = """
[[runs]]
images = ["null"]
models = ["fake"]
batch_sizes = [1]
sweep = { work_us = [0, 10, 20] }
"""
    path = write_plan(tmp_path, body, repetitions=2)
    cmd = [sys.executable, "-m", "controller.cli", "sweep", str(path), "--launcher", "local"]
    env = {**os.environ, "BENCH_HOME": str(bench.home), "BENCH_DB": str(bench.db)}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = [p.communicate(timeout=300)[1] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], said
    stored = cells_in_store(bench)
    assert len(stored) == 3 and all(s == ["ok", "ok"] for s in stored.values()), stored
    assert any("being measured by another sweep (sweep pid" in s for s in said), said
    # Both ended: nothing is claimed any more, and a third sweep finds everything done.
    assert not list((bench.home / "claims").glob("*.lock"))
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "3 of 3 already done" in third.stderr, third.stderr


def test_claims_that_cannot_be_written_are_one_line(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    (bench.home / "claims").write_text("")  # in the way of the claims folder, as a full disk would be
    result = cli("sweep", write_plan(tmp_path, NULL_PAIR, repetitions=1), "--launcher", "local")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("plan ")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert f"cannot write {bench.home / 'claims'}" in lines[0] and "hint:" in lines[0]
    assert bench.count("runs") == 0


def test_results_measured_but_not_stored_count_as_done(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    """A result in its run folder that never reached the store (bench-ctl killed between the two,
    or the store refused it then) is stored by the next sweep instead of measured again; run
    folders of other work are left alone."""
    import duckdb

    path = write_plan(tmp_path, NULL_PAIR, repetitions=1)
    assert cli("sweep", path, "--launcher", "local").exit_code == 0
    other = cli("run", "--image", "null", "--model", "fake", "-b", "1", "--launcher", "local")
    assert other.exit_code == 0, other.output
    (lost, cell), (foreign,) = (
        bench.rows("SELECT run_id, cell FROM runs WHERE cell IS NOT NULL ORDER BY run_id LIMIT 1")[0],
        bench.rows("SELECT run_id FROM runs WHERE cell IS NULL")[0],
    )
    with duckdb.connect(str(bench.db)) as con:
        for run_id in (lost, foreign):
            con.execute("DELETE FROM measurements WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    again = cli("sweep", path, "--launcher", "local")
    assert again.exit_code == 0, again.output
    assert "stored 1 result(s) of this plan that were measured but not stored" in again.output
    assert "2 of 2 already done" in again.output
    assert bench.rows("SELECT cell FROM runs WHERE run_id = ?", [lost]) == [(cell,)]
    assert not bench.rows("SELECT 1 FROM runs WHERE run_id = ?", [foreign])
    assert bench.count("runs") == 2


def _stored_runs(bench: Bench) -> int:
    try:
        return len(bench.rows("SELECT 1 FROM runs"))
    except Exception:  # the sweep holds the write lock for a moment
        return 0


def test_dry_run_lists_cells_and_runs_nothing(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    path = write_plan(tmp_path, NULL_PAIR)
    result = cli("sweep", path, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["runs_due"] == 4 and len(doc["cells"]) == 2 and doc["estimate_s"] > 0
    assert not bench.db.exists() and not bench.run_dirs()


def test_paper_plan_dry_run_marks_gpu_cells(cli: Cli, bench: Bench) -> None:
    """The study's plan expands on any host, models exported or not; GPU cells say why not here."""
    result = cli("sweep", "plans/paper.toml", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    images = {c["image"] for c in doc["cells"]}
    assert {"trt10", "ort-gpu", "torch", "ort", "openvino", "tf"} <= images
    models = {c["model"] for c in doc["cells"]}
    assert {"vgg19", "resnet50", "densenet201", "efficientnetb0", "vgg19,resnet50,densenet201"} <= models
    assert {c["options"] for c in doc["cells"] if c["image"] == "tf"} >= {"xla=false", "xla=true"}
    gpu = [c for c in doc["cells"] if c["image"] in ("trt10", "ort-gpu")]
    if not Path("/dev/nvidia0").exists():
        assert gpu and all(c["state"].startswith("unsupported") and "NVIDIA GPU" in c["reason"] for c in gpu)
    assert set(doc["missing_models"]) <= {"vgg19", "resnet50", "densenet201", "efficientnetb0"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'name = "x"\n[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\nimagez = 1\n',
            "unknown key runs.0.imagez",
        ),
        (
            'name = "x"\n[[runs]]\nimages = ["nul"]\nmodels = ["fake"]\nbatch_sizes = [1]\n',
            "unknown image 'nul'",
        ),
        (
            'name = "x"\n[[runs]]\nimages = ["null"]\nmodels = ["mine"]\nbatch_sizes = [1]\n',
            "names model 'mine', which is not in the store",
        ),
        ('name = "x"\nruns = []\n', "runs"),
        (
            'name = "x"\n[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [0]\n',
            "batch sizes go from 1 to 65536, not 0",
        ),
        (
            'name = "x"\n[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'
            "set = { nope = 1 }\n",
            "unknown option 'nope'",
        ),
        ("this is [not toml", "is not TOML"),
        ('name = "x"\n[[runs]]\nimages = ["null"]\nbatch_sizes = [1]\n', "give models or ensembles"),
    ],
)
def test_bad_plans_are_one_line_and_exit_2(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = cli("sweep", path)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "hint:" in lines[0], result.output
    assert not bench.db.exists() and not bench.run_dirs()


def test_missing_plan_file(cli: Cli, bench: Bench) -> None:
    result = cli("sweep", "plans/nope.toml")
    assert result.exit_code == 2 and "no plan file" in result.output


# --------------------------------------------------------------------------- rerun


def test_rerun_repeats_the_same_spec(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    first = cli(
        "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1,4",
        *short_policy, "--set", "work_us=300", "--set", "tag=x", "--json",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    old = json.loads(first.stdout)
    again = cli("rerun", old["run_id"], "--launcher", "local", "--json")
    assert again.exit_code == 0, again.output
    new = json.loads(again.stdout)[0]
    assert new["run_id"] != old["run_id"]
    same = ("image", "model", "batch_sizes", "device", "options", "scenario")
    assert {k: new["spec"][k] for k in same} == {k: old["spec"][k] for k in same}
    policy = {k: v for k, v in old["spec"]["policy"].items() if k not in plans.RUN_COUNT_KEYS}
    assert {k: v for k, v in new["spec"]["policy"].items() if k in policy} == policy
    assert bench.count("runs") == 2


def test_rerun_group_keeps_each_configurations_count(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    made = cli(
        "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1",
        *short_policy, "--sweep", "work_us=0,50", "--repeat", "2", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    group = json.loads(made.stdout)[0]["spec"]["group"]
    again = cli("rerun", "--group", group, "--launcher", "local", "--json")
    assert again.exit_code == 0, again.output
    runs = json.loads(again.stdout)
    assert sorted(r["spec"]["options"]["work_us"] for r in runs) == [0, 0, 50, 50]
    assert [r["spec"]["options"]["work_us"] for r in runs][:2] in ([0, 50], [50, 0])  # interleaved


def test_rerun_bad_input(cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path) -> None:
    from controller.store import db as store

    store.ensure_store(bench.db)
    for args, message in [
        ((), "give one of RUN_ID"),
        (("nope",), "no run 'nope'"),
        (("--group", "g"), "no group 'g'"),
        (("x", "--plan", "plans/smoke.toml"), "--plan excludes"),
    ]:
        result = cli("rerun", *args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
