"""Shared fixtures: isolated state folders, a fake model, prebuilt environments, the CLI runner.

Every test runs with its own BENCH_HOME (a folder under tmp_path) and BENCH_DB. Heavy things are
shared: `envs` of every home is a symlink to the repository's `.bench/envs` (built once, on first
use), and `mobilenetv2` is exported once per session (or reused from the repository's store).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pytest

from controller.paths import REPO_ROOT, Paths
from gpucheck import check as selftest

if TYPE_CHECKING:
    from typer.testing import Result

    from schemas import RunResult, Status

# The controller's CLI (and with it scipy and duckdb) is imported by the fixtures that use it, not
# here: the GPU check runs the `gpu` tests on machines that have neither.

REPO_BENCH = REPO_ROOT / ".bench"
# A short measurement policy: every run of the suite uses it.
SHORT_POLICY = [
    "--set",
    "policy.min_time_s=0.2",
    "--set",
    "policy.max_time_s=1",
    "--set",
    "policy.window_s=0.05",
    "--set",
    "policy.warmup_min_s=0.1",
    # A busy test host neither delays, multiplies nor refuses these runs: waiting for quiet and
    # judging starved windows and runs are tested on their own (tests/test_noise.py).
    "--set",
    "policy.quiet_wait_s=0",
    "--set",
    "policy.starved_share=1",
]
# `bench-ctl tune` of the null image here with one candidate: both knobs fixed (at the optimum).
TUNE_ONE_NULL = [
    "tune",
    "-m",
    "fake",
    "-i",
    "null",
    "--launcher",
    "local",
    "--set",
    "knob_a=5",
    "--set",
    "knob_b=1",
]


# --------------------------------------------------------------------------- markers


def _docker_answers() -> bool:
    try:
        import docker

        c = docker.from_env(timeout=3)
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:
        return False


def chromium() -> str | None:
    """Debian's `chromium` (or another name of the same browser) on PATH, else None."""
    import shutil

    return next(
        (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `docker` tests when no daemon answers, `browser` tests where Chromium is not installed,
    and each `gpu` test when its GPU path cannot run here, with the reason (no NVIDIA GPU, package
    X not installed, no NVIDIA container runtime).

    `frameworks` tests are never skipped: they must run in CI.
    """
    browser_items = [i for i in items if i.get_closest_marker("browser")]
    if browser_items and chromium() is None:
        skip = pytest.mark.skip(reason="chromium is not installed: apt-get install chromium (see .ci/run)")
        for item in browser_items:
            item.add_marker(skip)
    docker_items = [i for i in items if i.get_closest_marker("docker")]
    if docker_items and not _docker_answers():
        skip = pytest.mark.skip(reason="no Docker engine running: start dockerd, see .ci/run")
        for item in docker_items:
            item.add_marker(skip)
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        try:
            key = selftest.marker_key(marker.args)
        except ValueError as e:
            raise pytest.UsageError(f"{item.nodeid}: {e}") from None
        reason = selftest.skip_reason(key)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


# --------------------------------------------------------------------------- environments


def _real_paths() -> Paths:
    """The repository's state folder, by its real path.

    Environments are built through this, never through a test home: the `.pth` file of an
    environment records the path it was built under, and a test home is deleted later.
    """
    home = REPO_BENCH.resolve()
    return Paths(home=home, db=home / "unused.duckdb")


@pytest.fixture(scope="session")
def ensure_env() -> Callable[[str], Path]:
    """Build (once, if missing or stale) the local environment of an image; returns its python."""
    from controller.catalog.images import get_image
    from controller.launch.envs import LocalEnv

    done: dict[str, Path] = {}

    def ensure(name: str) -> Path:
        if name not in done:
            done[name] = LocalEnv(get_image(name), _real_paths()).ensure()
        return done[name]

    return ensure


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder shared by the session: `envs` links to the repository's environments."""
    (REPO_BENCH / "envs").mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("session") / "home"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to((REPO_BENCH / "envs").resolve(), target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def null_env(ensure_env: Callable[[str], Path]) -> Path:
    return ensure_env("null")


@pytest.fixture(scope="session")
def session_mobilenetv2(session_home: Path, ensure_env: Callable[[str], Path]) -> Path:
    """mobilenetv2 in the session's model store: the repository's copy, or exported once (~40 s).

    BENCH_TEST_EXPORT=1 forces the export even when the repository's store has the model (the
    path a fresh machine takes).
    """
    target = session_home / "models" / "mobilenetv2"
    repo_copy = REPO_BENCH / "models" / "mobilenetv2"
    if (repo_copy / "manifest.json").exists() and os.environ.get("BENCH_TEST_EXPORT") != "1":
        target.symlink_to(repo_copy.resolve(), target_is_directory=True)
    else:
        from typer.testing import CliRunner

        from controller.cli.app import app

        ensure_env("tf")
        env = {"BENCH_HOME": str(session_home), "BENCH_DB": str(session_home.parent / "export.duckdb")}
        result = CliRunner().invoke(app, ["models", "export", "mobilenetv2", "--launcher", "local"], env=env)
        assert result.exit_code == 0, f"export failed:\n{result.output}"
    from schemas import ModelManifest

    ModelManifest.model_validate_json((target / "manifest.json").read_text())
    return target


# --------------------------------------------------------------------------- per-test state


@dataclass
class Bench:
    home: Path
    db: Path

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def models(self) -> Path:
        return self.home / "models"

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.runs.iterdir() if p.is_dir()) if self.runs.exists() else []

    def rows(
        self, sql: str = "SELECT count(*) FROM results", params: list[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Query the test's database read-only ([] when it does not exist yet)."""
        if not self.db.exists():
            return []
        import duckdb

        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def count(self, table: str = "results") -> int:
        if not self.db.exists():
            return 0
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture(autouse=True)
def bench(tmp_path: Path, session_home: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    """This test's own BENCH_HOME and BENCH_DB; `envs` links to the shared environments."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("BENCH_HOME", str(home))
    monkeypatch.setenv("BENCH_DB", str(db))
    return Bench(home=home.resolve(), db=db)


@pytest.fixture
def mobilenetv2(bench: Bench, session_mobilenetv2: Path) -> Path:
    """mobilenetv2 in this test's model store (a link to the session's copy)."""
    link = bench.models / "mobilenetv2"
    link.symlink_to(session_mobilenetv2, target_is_directory=True)
    return link


# --------------------------------------------------------------------------- fake model


def _artifact(folder: Path, rel: str) -> dict[str, str | int]:
    data = (folder / rel).read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def write_fake_model(folder: Path, name: str = "fake", classes: int = 10) -> Path:
    """A model folder the null runner accepts; no TensorFlow, no real ONNX file."""
    from schemas import ModelManifest

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / "reference_input.npy", rng.random((8, 4), dtype=np.float32))
    out = np.full((8, classes), 0.02, dtype=np.float32)
    out[np.arange(8), np.arange(8) % classes] = 0.82  # peaked: top-1 well defined
    np.save(folder / "reference_output.npy", out)
    (folder / "model.onnx").write_bytes(b"placeholder: the null runner never reads this file\n")
    manifest = ModelManifest.model_validate(
        {
            "name": name,
            "source": "onnx",
            "created_at": datetime.now(UTC),
            "input_name": "x",
            "input_shape": [None, 4],
            "input_layout": None,
            "output_name": "y",
            "output_shape": [None, classes],
            "reference": "test-fp32",
            "reference_peak_mean": 0.82,
            "files": {
                role: _artifact(folder, rel)
                for role, rel in [
                    ("onnx", "model.onnx"),
                    ("reference_input", "reference_input.npy"),
                    ("reference_output", "reference_output.npy"),
                ]
            },
        }
    )
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
    return folder


@pytest.fixture
def fake_model(bench: Bench) -> Path:
    return write_fake_model(bench.models / "fake")


# --------------------------------------------------------------------------- CLI


class Cli(Protocol):
    """The `cli` fixture: bench-ctl called in-process with these arguments (each passed as `str`)."""

    def __call__(self, *args: str | Path | int, env: dict[str, str] | None = None) -> Result: ...


@pytest.fixture
def cli() -> Cli:
    """Invoke bench-ctl in-process; an uncaught exception (a traceback for a user) fails the test."""
    from typer.testing import CliRunner

    from controller.cli.app import app

    runner = CliRunner()

    def invoke(*args: str | Path | int, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(app, [str(a) for a in args], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            tb = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
            pytest.fail(
                f"bench-ctl {' '.join(map(str, args))} raised {result.exception!r}\n{tb}\n{result.output}"
            )
        return result

    return invoke


@pytest.fixture
def short_policy() -> list[str]:
    return list(SHORT_POLICY)


# --------------------------------------------------------------------------- synthetic results


class MakeResult(Protocol):
    """The `make_result` fixture: a valid synthetic RunResult, `ok` unless told otherwise."""

    def __call__(
        self,
        status: Status = "ok",
        batch_sizes: tuple[int, ...] = (1, 2),
        run_id: str | None = None,
        image: str = "null",
        model: str = "fake",
        message: str | None = None,
        started_at: datetime | None = None,
        scale: float = 1.0,
        host: str = "testhost",
        repetition: int | None = None,
        within_rel: float | None = None,
        lock_hash: str | None = None,
        framework_version: str = "python-3.11",
    ) -> RunResult: ...


@pytest.fixture
def make_result() -> MakeResult:
    """Build a valid RunResult without running anything (for store and schema tests)."""
    return result_factory()


def result_factory() -> MakeResult:
    """A function that builds valid synthetic RunResults, each with a fresh run_id."""
    from runners.core.measure import SteadyState, summarize
    from schemas import Accuracy, Fingerprint, LaunchInfo, MeasurementPolicy, Phase, RunResult, RunSpec

    counter = iter(range(1, 1_000_000))

    def make(
        status: Status = "ok",
        batch_sizes: tuple[int, ...] = (1, 2),
        run_id: str | None = None,
        image: str = "null",
        model: str = "fake",
        message: str | None = None,
        started_at: datetime | None = None,
        scale: float = 1.0,
        host: str = "testhost",
        repetition: int | None = None,
        within_rel: float | None = None,
        lock_hash: str | None = None,
        framework_version: str = "python-3.11",
    ) -> RunResult:
        run_id = run_id or f"20250101T000000Z-{image}-{model}-{next(counter):06x}"
        policy = MeasurementPolicy()
        spec = RunSpec(
            run_id=run_id,
            image=image,
            model=model,
            model_dir=f"/models/{model}",
            cache_dir=f"/cache/{image}",
            batch_sizes=list(batch_sizes),
            policy=policy,
            options={"framework": "null"},
            repetition=repetition,
        )
        started = started_at or datetime(2025, 1, 1, tzinfo=UTC)
        measurements = []
        if status == "ok":
            for bs in batch_sizes:
                lat = [int(scale * (1_000_000 * bs + 1000 * i)) for i in range(20)]
                state = SteadyState(
                    latencies_ns=lat, elapsed_ns=sum(lat), windows=[1.0, 1.0, 1.0], stable=True
                )
                m = summarize(bs, state, policy, peak_host_mem_mb=50.0)
                measurements.append(m.model_copy(update={"within_run_ci_rel": within_rel}))
        return RunResult(
            run_id=run_id,
            spec=spec,
            status=status,
            message=message if message is not None else (None if status == "ok" else f"synthetic {status}"),
            started_at=started,
            finished_at=started + timedelta(seconds=3),
            framework="null",
            framework_version=framework_version,
            precision="none",
            phases=[
                Phase(name="import", seconds=0.1),
                Phase(name="model_read", seconds=0.2),
                Phase(name="compile", seconds=0.3, cache_hit=False),
                Phase(name="first_inference", seconds=0.4),
            ],
            accuracy=Accuracy(
                reference="test-fp32",
                samples=8,
                max_abs_err=0.0,
                rel_err=0.0,
                top1_agreement=1.0,
                top5_agreement=1.0,
            )
            if status == "ok"
            else None,
            measurements=measurements,
            peak_host_mem_mb=60.0,
            fingerprint=Fingerprint(
                host=host,
                python=sys.version.split()[0],
                os="Linux",
                cpu_model="cpu",
                cpu_flags=[],
                cpu_count=2,
                memory_total_mb=1024.0,
                framework="null",
                framework_version=framework_version,
                packages={},
            ),
            launch=LaunchInfo(launcher="local", image_ref=f"local:{image}", exit_code=0, lock_hash=lock_hash),
        )

    return make


def write_seq_model(folder: Path, name: str = "seqfake", seq: int = 8, hidden: int = 4) -> Path:
    """A model folder with two int64 inputs [batch, seq] and a hidden-state output
    [batch, seq, hidden], for the null runner: no real ONNX file."""
    from schemas import ModelManifest

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (8, seq))
    np.savez(folder / "reference_input.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    np.savez(folder / "reference_output.npz", hidden=np.zeros((8, seq, hidden), dtype=np.float32))
    (folder / "model.onnx").write_bytes(b"placeholder: the null runner never reads this file\n")
    manifest = ModelManifest.model_validate(
        {
            "name": name,
            "source": "onnx",
            "created_at": datetime.now(UTC),
            "inputs": [
                {"name": "input_ids", "dtype": "int64", "shape": [None, "seq"]},
                {"name": "attention_mask", "dtype": "int64", "shape": [None, "seq"]},
            ],
            "outputs": [{"name": "hidden", "shape": [None, "seq", hidden]}],
            "dims": {"seq": seq},
            "sequence_dim": "seq",
            "reference": "test-fp32",
            "files": {
                role: _artifact(folder, rel)
                for role, rel in [
                    ("onnx", "model.onnx"),
                    ("reference_input", "reference_input.npz"),
                    ("reference_output", "reference_output.npz"),
                ]
            },
        }
    )
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
    return folder
