"""Faults around Docker runs, for real: out of memory, bench-ctl interrupted or killed mid-run,
and builds that must leave no untagged images (skipped when no Docker engine answers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from controller.catalog.images import ImageInfo, get_image
from controller.launch.docker import DockerLauncher
from controller.launch.identity import client, find_image, stale_reason
from controller.paths import REPO_ROOT, Paths
from tests.conftest import SHORT_POLICY, Bench, Cli, write_fake_model

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.images import Image

pytestmark = pytest.mark.docker

RUNNER_LABEL = "bench.role=runner"
T = TypeVar("T")
# A hanging `bench-ctl run` and its running container.
HangingRun = tuple["subprocess.Popen[str]", "Container"]


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 0.2) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[DockerClient]:
    c = client(timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def null_image(docker_client: DockerClient) -> Image:
    """The null image, current with the code (built here if missing or stale, as CI builds it first)."""
    from controller.launch.build import build

    info = get_image("null")
    found = find_image(docker_client, info)
    if found is None or stale_reason(found, info) is not None:
        home = (REPO_ROOT / ".bench").resolve()
        failures = build(Paths(home=home, db=home / "unused.duckdb"), ["null"], None, False, print, print)
        assert not failures, "could not build the null image"
        found = find_image(docker_client, info)
    assert found is not None
    return found


def owned_by(docker_client: DockerClient, pid: int) -> list[Container]:
    return list(docker_client.containers.list(all=True, filters={"label": f"bench.owner-pid={pid}"}))


def remove_all(containers: list[Container]) -> None:
    for c in containers:
        try:
            c.remove(force=True)
        except Exception:
            pass


def bench_ctl() -> list[str]:
    script = Path(sys.executable).with_name("bench-ctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]


@pytest.fixture
def hanging_run(
    bench: Bench, fake_model: Path, docker_client: DockerClient, null_image: Image
) -> Iterator[HangingRun]:
    """Start `bench-ctl run --launcher docker --set fault=hang` as a process; yields (process,
    its running container). Whatever the test does, the process and its containers are gone after."""
    cmd = [*bench_ctl(), "run", "-i", "null", "-m", "fake", "-b", "1", "--launcher", "docker"]
    cmd += [*SHORT_POLICY, "--set", "fault=hang"]
    # Ctrl-C must reach it even where this test runs with SIGINT ignored (a background job).
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:

        def running() -> Container | None:
            if proc.poll() is not None:
                raise AssertionError(f"bench-ctl ended early ({proc.returncode}): {proc.communicate()}")
            return next((c for c in owned_by(docker_client, proc.pid) if c.status == "running"), None)

        container = wait_for("the runner container", running, timeout_s=120)
        # The runner reached its hanging iteration (past import and first inference).
        wait_for("the runner's log", lambda: b"[runner]" in container.logs(), timeout_s=60)
        yield proc, container
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
        remove_all(owned_by(docker_client, proc.pid))


# --------------------------------------------------------------------------- interrupted, killed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_docker_run_stops_its_container(
    hanging_run: HangingRun, docker_client: DockerClient, bench: Bench, signum: int
) -> None:
    proc, container = hanging_run
    proc.send_signal(signum)
    start = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bench-ctl still runs 30 s after {signal.Signals(signum).name}") from None
    assert proc.returncode != 0, err
    # Nothing of this run is left, running or stopped, within a few seconds of the signal.
    wait_for("the container's removal", lambda: not owned_by(docker_client, proc.pid), timeout_s=5)
    assert time.monotonic() - start < 15
    running = docker_client.containers.list(filters={"label": RUNNER_LABEL})
    assert container.id not in {c.id for c in running}
    (run_dir,) = bench.run_dirs()
    assert "bench-ctl stopped and removed this container" in (run_dir / "runner.log").read_text()
    assert bench.count() == 0, "an interrupted run is not stored"


def test_container_orphaned_by_sigkill_is_reaped_by_the_next_run(
    hanging_run: HangingRun, docker_client: DockerClient, cli: Cli, bench: Bench
) -> None:
    proc, container = hanging_run
    proc.kill()  # SIGKILL: nothing in bench-ctl runs, its container is left behind
    proc.communicate(timeout=30)
    time.sleep(1)
    container.reload()
    assert container.status == "running", "the orphan should still run until someone reaps it"

    result = cli("run", "-i", "null", "-m", "fake", "-b", "1", "--launcher", "docker", *SHORT_POLICY)
    assert result.exit_code == 0, result.output
    line = f"removed orphaned runner container {container.short_id} (its bench-ctl, pid {proc.pid}, is gone)"
    assert line in result.stderr, result.stderr
    assert owned_by(docker_client, proc.pid) == []


def test_reaper_leaves_live_owners_and_other_hosts_alone(
    bench: Bench, docker_client: DockerClient, null_image: Image
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    me = str(os.getpid())
    host = os.uname().nodename
    labels = {
        "dead": {"bench.role": "runner", "bench.owner-pid": str(dead_pid), "bench.owner-host": host},
        "alive": {"bench.role": "runner", "bench.owner-pid": me, "bench.owner-host": host},
        "elsewhere": {
            "bench.role": "runner",
            "bench.owner-pid": str(dead_pid),
            "bench.owner-host": "x-other",
        },
        "unlabelled": {"bench.role": "runner"},
    }
    made = {}
    try:
        for name, lab in labels.items():
            made[name] = docker_client.containers.create(
                null_image.id, entrypoint=["python"], command=["-c", "pass"], labels=lab, network_mode="none"
            )
        lines: list[str] = []
        launcher = DockerLauncher(Paths.from_env(), docker_client)
        removed = launcher.reap_orphans(lines.append)
        assert made["dead"].id in removed
        short = made["dead"].short_id
        expected = f"removed orphaned runner container {short} (its bench-ctl, pid {dead_pid}, is gone)"
        assert lines == [expected], lines
        left = {c.id for c in docker_client.containers.list(all=True, filters={"label": RUNNER_LABEL})}
        assert made["dead"].id not in left
        assert {made[n].id for n in ("alive", "elsewhere", "unlabelled")} <= left
    finally:
        remove_all(list(made.values()))


# --------------------------------------------------------------------------- out of memory


@pytest.mark.parametrize(
    ("model", "batch", "sets"),
    [("wide", 512, []), ("fake", 1, ["fault=oom"])],
    ids=["outputs-of-a-big-batch", "fault-oom"],
)
def test_oom_in_a_container_is_stored_as_an_error_naming_it(
    bench: Bench, docker_client: DockerClient, null_image: Image, model: str, batch: int, sets: list[str]
) -> None:
    """Under a 128 MiB limit the runner allocates its outputs (512 samples x 1 MiB each), or
    allocates until stopped (fault=oom): the kernel kills it, and the stored result says so."""
    from controller.run import pipeline, planning

    write_fake_model(bench.models / model, name=model, classes=262144 if model == "wide" else 10)
    image = get_image("null")
    paths = Paths.from_env()
    launcher = DockerLauncher(paths, docker_client, memory_limit_mb=128)
    launcher.prepare(image, print)
    req = planning.RunRequest(
        image="null", model=model, batch_sizes=[batch], sets=[*SHORT_POLICY[1::2], *sets]
    )
    spec = planning.plan(req, paths, image)
    result = pipeline.launch_and_keep(image, spec, launcher, paths, 120, lambda _line: None)

    assert result.status == "error"
    assert result.message is not None and "out of memory" in result.message.lower(), result.message
    assert result.launch is not None and result.launch.exit_code == 137
    rows = bench.rows("SELECT status, message FROM results")
    assert len(rows) == 1 and rows[0][0] == "error" and "out of memory" in rows[0][1].lower()
    run_dir = paths.runs / spec.run_id
    assert "out of memory (OOMKilled)" in (run_dir / "runner.log").read_text()
    assert not owned_by(docker_client, os.getpid())


def test_oom_outcome_is_flagged(
    bench: Bench, fake_model: Path, docker_client: DockerClient, null_image: Image
) -> None:
    """6 MiB: not even the interpreter starts. The outcome says OOM; a plain failure does not."""
    from controller.run import planning

    image = get_image("null")
    paths = Paths.from_env()
    outcomes = {}
    for limit in (6, None):
        launcher = DockerLauncher(paths, docker_client, memory_limit_mb=limit)
        launcher.prepare(image, print)
        req = planning.RunRequest(image="null", model="fake", batch_sizes=[1], sets=["fault=exit"])
        spec = launcher.runner_view(planning.plan(req, paths, image), image)
        run_dir = paths.runs / spec.run_id
        run_dir.mkdir(parents=True)
        (run_dir / "spec.json").write_text(spec.model_dump_json())
        outcomes[limit] = launcher.start_runner(image, spec, run_dir, 120, lambda _line: None)
    assert outcomes[6].exit_code == 137 and outcomes[6].oom_killed
    assert outcomes[6].stderr_tail.splitlines()[-1] == "container was killed: out of memory (OOMKilled)"
    assert outcomes[None].exit_code == 137 and not outcomes[None].oom_killed  # fault=exit: os._exit(137)
    assert "OOMKilled" not in outcomes[None].stderr_tail


# --------------------------------------------------------------------------- builds


class ScratchImage(ImageInfo):
    """A catalog entry whose folder is a test's own (a tiny two-stage Dockerfile, no wheels)."""

    @property
    def dir(self) -> Path:
        return Path(os.environ["BENCH_HOME"]).parent / "image"


def dangling_ids(docker_client: DockerClient) -> set[str]:
    return {img.id for img in docker_client.images.list(filters={"dangling": True})}


def test_builds_leave_no_untagged_images(
    bench: Bench, docker_client: DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.launch import build as builder

    base = builder.LOCAL_BASE
    if find_image_ref(docker_client, base) is None:
        pytest.skip(f"no local base image {base} (make base-image)")
    name = f"faulttest-{os.getpid()}"
    info = ScratchImage(
        name=name, framework="null", package="numpy", devices=["cpu"], description="test", base=base
    )
    info.dir.mkdir()
    (info.dir / "requirements.lock").write_text("")
    monkeypatch.setattr(builder, "download_wheels", lambda info, paths, log: bench.home / "no-wheels")
    # Fixed labels: the repository may change while the test runs (a rebuild must hit the cache).
    monkeypatch.setattr(builder, "git_commit", lambda: "test")
    monkeypatch.setattr(builder, "code_hash", lambda: "test")
    (bench.home / "no-wheels").mkdir()
    repo = f"inference-bench/{name}"
    seen: set[str] = set()
    log: list[str] = []

    def build(install: str, final: str) -> str:
        (info.dir / "Dockerfile").write_text(
            "ARG BASE_IMAGE\n"
            f"FROM ${{BASE_IMAGE}} AS install\nRUN echo {install} > /installed\n"
            f"FROM ${{BASE_IMAGE}}\nCOPY --from=install /installed /installed\nRUN {final}\n"
        )
        lines: list[str] = []
        try:
            return builder.build_image(info, Paths.from_env(), base, log.append, lines.append)
        finally:
            seen.update(ln.split()[-1] for ln in lines if ln.startswith(" ---> ") and len(ln.split()) == 2)

    def tags() -> dict[str, str]:
        return {t: img.id for img in docker_client.images.list(name=repo) for t in img.tags}

    before = dangling_ids(docker_client)
    try:
        first = build("one", "echo a > /final")
        first_stage = tags()[f"{repo}:stage-install"]
        assert tags() == {f"{repo}:latest": first, f"{repo}:stage-install": first_stage}
        assert build("one", "echo a > /final") == first, "a cached rebuild is the same image"
        second = build("two", "echo b > /final")  # both stages change: both old images are replaced
        assert second != first and tags()[f"{repo}:stage-install"] != first_stage
        for gone in (first, first_stage):
            with pytest.raises(Exception, match="No such image"):
                docker_client.images.get(gone)
        kept = tags()
        with pytest.raises(Exception, match="build failed"):
            build("three", "exit 3")  # the install stage succeeds, the final stage fails
        assert tags() == kept, "a failed build tags nothing"
        ours = {i for i in dangling_ids(docker_client) - before if i.removeprefix("sha256:")[:12] in seen}
        assert not ours, f"untagged images left by the builds: {ours}"
        assert not [ln for ln in log if "kept untagged" in ln], log
        assert not docker_client.containers.list(all=True, filters={"ancestor": kept[f"{repo}:latest"]})
    finally:
        for img in docker_client.images.list(name=repo):
            for t in img.tags:
                docker_client.images.remove(t)
        for i in dangling_ids(docker_client) - before:
            if i.removeprefix("sha256:")[:12] in seen:
                docker_client.images.remove(i)


def find_image_ref(docker_client: DockerClient, ref: str) -> Image | None:
    try:
        return docker_client.images.get(ref)
    except Exception:
        return None
