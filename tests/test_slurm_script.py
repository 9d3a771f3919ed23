"""`--launcher slurm` without a cluster: the batch script, Slurm's states, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import BenchError
from controller.launch.slurm import JobState, batch_script, parse_sacct, parse_squeue
from schemas import MeasurementPolicy, RunSpec
from schemas.plan import SlurmOptions
from tests.conftest import Bench, Cli, MakeResult


def test_sbatch_absent_is_one_line(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    result = cli(
        "run", "-i", "null", "-m", "fake", "--launcher", "slurm", *short_policy, env={"PATH": "/nonexistent"}
    )
    assert result.exit_code == 2, result.output
    assert "`sbatch` is not on PATH" in result.stderr and "hint:" in result.stderr
    assert bench.run_dirs() == []


def test_slurm_options_need_the_slurm_launcher(cli: Cli, fake_model: Path) -> None:
    result = cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "--partition", "gpu")
    assert result.exit_code == 2 and "--partition needs --launcher slurm" in result.stderr


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
    options = SlurmOptions(partition="gpu", account="proj1", constraint="h100", cpus_per_task=8)
    gpu = batch_script(_spec("cuda:0", memory_limit_mb=32000), tmp_path / "run", tmp_path, options, 1200)
    lines = gpu.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines
    assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH --mem=32000M" in lines
    assert "#SBATCH --time=25" in lines  # (1200 s + 300 s margin) / 60
    assert {"#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --constraint=h100"} <= set(lines)
    assert (
        lines[-1].startswith("exec ")
        and "controller.launch.node" in lines[-1]
        and "--timeout 1200" in lines[-1]
    )
    assert "--launcher auto" in lines[-1]  # the node picks Docker where it has the image
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


def test_node_maps_the_allocated_gpu_for_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Slurm gives a job GPU 3 as CUDA_VISIBLE_DEVICES=3: Docker must be asked for GPU 3, while a
    local runner keeps cuda:0 (CUDA numbers the visible GPUs from 0)."""
    from controller.catalog.images import get_image
    from controller.launch.local import LocalLauncher
    from controller.launch.node import allocated_gpu, for_launcher
    from controller.paths import Paths

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert allocated_gpu("cuda:0") == "cuda:3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert allocated_gpu("cuda:0") == "cuda:0"
    paths = Paths(home=tmp_path, db=tmp_path / "r.duckdb")
    local = for_launcher(_spec("cuda:0"), LocalLauncher(paths), get_image("torch"))
    assert local.device == "cuda:0" and local.model_dir == str(tmp_path / "models" / "fake")


def test_rerun_of_stored_runs_refuses_slurm(cli: Cli) -> None:
    result = cli("rerun", "20260101T000000Z-null-fake-abcdef", "--launcher", "slurm")
    assert result.exit_code == 2 and "measures on this host" in result.stderr and "hint:" in result.stderr


def test_sweep_slurm_flags_need_the_slurm_launcher(cli: Cli) -> None:
    result = cli("sweep", "plans/smoke.toml", "--cpus-per-task", "2")
    assert result.exit_code == 2 and "--cpus-per-task needs --launcher slurm" in result.stderr


def test_a_commands_summary_compares_the_hosts_its_runs_landed_on(
    bench: Bench, make_result: MakeResult
) -> None:
    """Runs made on Slurm nodes are not this host's: the summary after `run` shows their hosts,
    side by side when they landed on several."""
    from controller.run import rounds
    from controller.store import db as store

    one = [make_result(host="node-a", repetition=i) for i in (1, 2)]
    two = [*one, make_result(host="node-b", repetition=3)]
    with store.connect(bench.db) as con:
        for r in two:
            store.ingest(con, r)
    [single] = rounds.group_summary(bench.db, one)
    assert single.hosts == ["node-a"]
    [both] = rounds.group_summary(bench.db, two)
    assert both.hosts == ["node-a", "node-b"] and all("node-" in label for label in both.labels)


def test_runners_compile_into_a_shared_cache_one_at_a_time(tmp_path: Path) -> None:
    """Jobs packed on a node share the image's cache: a runner holds it while compiling, and
    another waits (and says so) instead of reading a half-written blob."""
    import threading
    import time

    from runners.core.cachelock import cache_lock

    said: list[str] = []
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait(5)
        with cache_lock(tmp_path / "cache", said.append):
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    with cache_lock(tmp_path / "cache"):
        entered.set()
        time.sleep(0.3)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]
    assert said and "waiting for another runner" in said[0]


def test_a_percent_in_the_state_folder_reaches_sbatch_as_a_percent(tmp_path: Path) -> None:
    """sbatch reads `%` in --output as a symbol (`%j` the job id, `%u` the user, `%100` a width):
    a state folder named `100%` must be written `100%%`, or no job's output lands in its run folder."""
    home = tmp_path / "bench-100%u"
    script = batch_script(_spec("cpu"), home / "runs" / "r1", home, SlurmOptions(), 60)
    [output] = [ln for ln in script.splitlines() if ln.startswith("#SBATCH --output=")]
    assert output == f"#SBATCH --output={tmp_path}/bench-100%%u/runs/r1/slurm-%j.out"
    # The command line is bash's, not sbatch's: the path stays as it is there.
    assert f"--home {home} " in script.splitlines()[-1]


@pytest.mark.parametrize("odd", [" ", "\\", "'", '"'])
def test_a_state_folder_sbatch_cannot_carry_is_refused(tmp_path: Path, odd: str) -> None:
    home = tmp_path / f"a{odd}b"
    with pytest.raises(BenchError, match="which #SBATCH lines cannot carry") as e:
        batch_script(_spec("cpu"), home / "runs" / "r1", home, SlurmOptions(), 60)
    assert e.value.hint and "BENCH_HOME" in e.value.hint


def test_a_state_folder_sbatch_cannot_carry_is_refused_before_anything_is_written(
    cli: Cli, bench: Bench, tmp_path: Path, short_policy: list[str]
) -> None:
    from tests.conftest import write_fake_model

    home = tmp_path / "my bench"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(bench.home / "envs", target_is_directory=True)
    write_fake_model(home / "models" / "fake")
    result = cli(
        "run", "-i", "null", "-m", "fake", "--launcher", "slurm", *short_policy, env={"BENCH_HOME": str(home)}
    )
    assert result.exit_code == 2, result.output
    assert "holds a space, which #SBATCH lines cannot carry" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / "runs").exists() and not bench.db.exists()
