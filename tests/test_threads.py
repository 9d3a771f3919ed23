"""Threads that fit: every runner computes on the cores it was given, every framework's thread
count defaults to them, the result records both, and a run asked for more threads than its
cores (or than other load left free) says so in one line naming the option to set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runners.core import cores
from schemas import FRAMEWORK_OPTION_MODELS, RunResult
from tests.conftest import Bench, Cli


def test_the_warning_names_the_option_and_the_cores() -> None:
    over = cores.fit_warning("onnxruntime", 4, "intra_op_threads", 2, 0.0)
    assert (
        over is not None
        and "4 threads on the 2 core(s)" in over
        and over.endswith("--set intra_op_threads=2")
    )
    crowded = cores.fit_warning("torch", 2, "threads", 2, 1.1)
    assert crowded is not None and "kept 1.1 of the 2 core(s)" in crowded and "--set threads=1" in crowded
    assert cores.fit_warning("torch", 2, "threads", 2, 0.3) is None  # a third of a core: still fits
    assert cores.fit_warning("torch", 1, "threads", 2, 1.8) is None  # one thread always has a core
    assert cores.fit_warning("tensorrt", None, None, 2, 0.0) is None
    assert cores.given() == len(os.sched_getaffinity(0)) or cores.given() >= 1


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_OPTION_MODELS))
def test_every_thread_option_defaults_to_the_cores_given(framework: str) -> None:
    """A framework with a thread option declares it, and its default means "the cores the runner
    was given" (0 or None, resolved by the runner), never the framework's own guess."""
    model = FRAMEWORK_OPTION_MODELS[framework]
    option = model.threads_option
    if framework in ("tensorrt",):
        assert option is None  # computes on the GPU
        return
    assert option is not None and option in model.model_fields, framework
    field = model.model_fields[option]
    if framework == "null":
        assert field.default == 1  # the harness itself: one thread unless asked
    else:
        assert field.default in (0, None) and "cores the runner was given" in (field.description or "")


def test_docker_gives_every_run_the_controllers_cores() -> None:
    from controller.launch.docker import DockerLauncher
    from controller.paths import Paths

    launcher = DockerLauncher(Paths.from_env(), docker_client=None)
    mine = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    for device in ("cpu", "cuda:0"):
        kwargs = launcher._container_kwargs(["python"], {}, device, None)
        assert kwargs["cpuset_cpus"] == mine, device


@pytest.mark.usefixtures("null_env")
def test_more_threads_than_cores_is_flagged(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    """Truth: the runner is given one core (it inherits this process's affinity) and asked for
    two threads of work: the result records both, and warns once, naming the option."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mine)})
    try:
        over = cli(
            "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1",
            *short_policy, "--set", "work_us=200", "--set", "threads=2", "--json",
        )  # fmt: skip
        fits = cli(
            "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1",
            *short_policy, "--set", "work_us=200", "--json",
        )  # fmt: skip
        shown = cli(
            "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1",
            *short_policy, "--set", "work_us=200", "--set", "threads=2", env={"COLUMNS": "250"},
        )  # fmt: skip
    finally:
        os.sched_setaffinity(0, mine)
    assert over.exit_code == 0 and fits.exit_code == 0, over.output + fits.output
    r = RunResult.model_validate_json(over.stdout)
    assert r.threads == 2 and r.fingerprint is not None and r.fingerprint.cpu_limit == 1.0
    assert len(r.warnings) == 1 and r.warnings[0].endswith("set --set threads=1"), r.warnings
    assert "warning: null computes with 2 threads on the 1 core(s)" in over.stderr
    ok = RunResult.model_validate_json(fits.stdout)
    assert ok.threads == 1 and ok.warnings == []
    rows = bench.rows("SELECT threads, cpu_limit, warnings FROM results ORDER BY started_at")
    assert rows[0][:2] == (2, 1.0) and rows[0][2] == r.warnings and rows[1] == (1, 1.0, None)
    assert shown.exit_code == 0 and "warning: null computes with 2 threads" in shown.stdout
    assert "set --set threads=1" in shown.stdout


@pytest.mark.usefixtures("null_env")
def test_threads_beyond_the_free_cores_are_flagged(
    cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]
) -> None:
    """Truth: two cores given, one of them kept busy by another process: two threads of work do
    not fit what is free, and the warning says how many would."""
    mine = os.sched_getaffinity(0)
    if len(mine) < 2:
        pytest.skip("needs two cores")  # the other case is the test above
    two = set(sorted(mine)[:2])
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(burner.pid, {min(two)})
    os.sched_setaffinity(0, two)
    try:
        result = cli(
            "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1",
            *short_policy, "--set", "work_us=200", "--set", "threads=2", "--json",
        )  # fmt: skip
    finally:
        os.sched_setaffinity(0, mine)
        burner.kill()
        burner.wait()
    assert result.exit_code == 0, result.output
    r = RunResult.model_validate_json(result.stdout)
    assert r.threads == 2 and len(r.warnings) == 1, r.warnings
    assert "busy when the run started: set --set threads=1" in r.warnings[0]
