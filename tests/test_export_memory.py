"""The exporter's memory: recorded in the manifest, and named when the kernel kills the exporter.

The real VGG19 export (the case that was killed at 24 GB) is too slow for the suite; its numbers
are in docs/decisions.md. Here: mobilenetv2's manifest (exported once per session), and the
messages of a failed export through a launcher that only pretends to run the exporter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.catalog import models as model_store
from controller.catalog.images import ImageInfo
from controller.errors import BenchError
from controller.launch.base import Launcher, LineSink, ProcessOutcome
from controller.paths import Paths
from schemas import ModelManifest, RunSpec
from schemas.manifest import EXPORT_PROGRESS_FILE
from tests.conftest import REPO_BENCH, Bench, Cli, write_fake_model

CONVERTING = "converting to ONNX (tf2onnx, opset 17)"


def test_manifest_records_export_peak_memory(session_mobilenetv2: Path) -> None:
    m = ModelManifest.model_validate_json((session_mobilenetv2 / "manifest.json").read_text())
    from_repo = session_mobilenetv2.resolve() == (REPO_BENCH / "models" / "mobilenetv2").resolve()
    if m.export_peak_mem_mb is None and from_repo and os.environ.get("BENCH_TEST_EXPORT") != "1":
        pytest.skip("the repository's mobilenetv2 predates export_peak_mem_mb: re-export it (--force)")
    assert m.export_peak_mem_mb is not None
    # TensorFlow alone takes a few hundred MiB; mobilenetv2 exported in about 1.7 GiB here.
    assert 200 < m.export_peak_mem_mb < 8 * 1024, m.export_peak_mem_mb
    assert "onnx_conversion" in m.tools and "protobuf" in m.tools


def test_every_file_of_an_exported_model_is_in_its_manifest(session_mobilenetv2: Path) -> None:
    folder = session_mobilenetv2.resolve()
    m = ModelManifest.model_validate_json((folder / "manifest.json").read_text())
    assert not (folder / EXPORT_PROGRESS_FILE).exists()
    covered = set()
    for art in m.files.values():
        path = folder / art.path
        covered |= {p for p in path.rglob("*") if p.is_file()} if path.is_dir() else {path}
    files = {p for p in folder.rglob("*") if p.is_file()} - {folder / "manifest.json"}
    assert files == covered, sorted(str(p.relative_to(folder)) for p in files ^ covered)


# --------------------------------------------------------------------------- a pretend exporter


class PretendExporter(Launcher):
    """Runs nothing: leaves what an exporter would have left in its folder, and ends as told."""

    def __init__(
        self,
        paths: Paths,
        exit_code: int | None,
        oom_killed: bool = False,
        name: str = "local",
        progress: dict[str, Any] | None = None,
        last_line: str = f"[export] {CONVERTING}",
        manifest: ModelManifest | None = None,
    ) -> None:
        super().__init__(paths)
        self.name = name
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.progress = progress
        self.last_line = last_line
        self.manifest = manifest

    def model_dir(self, model: str) -> str:
        return str(self.paths.models / model)

    def cache_dir(self, image: ImageInfo) -> str:
        return str(self.paths.cache / image.name)

    def prepare(self, image: ImageInfo, log: LineSink) -> None:
        pass

    def start_runner(
        self,
        image: ImageInfo,
        spec: RunSpec,
        run_dir: Path,
        timeout_s: float,
        on_line: LineSink,
        shared: Sequence[Path] = (),
    ) -> ProcessOutcome:
        raise AssertionError("exports run tools, not runners")

    def run_tool(
        self,
        image: ImageInfo,
        module: str,
        args: list[str],
        writable: Path,
        timeout_s: float,
        on_line: LineSink,
        readable: list[Path] | None = None,
    ) -> ProcessOutcome:
        assert module == "runners.exporter"
        lines = ["[export] saving SavedModel", self.last_line]
        (writable / "tool.log").write_text("".join(f"{ln}\n" for ln in lines))
        if self.progress is not None:
            (writable / EXPORT_PROGRESS_FILE).write_text(json.dumps(self.progress))
        if self.manifest is not None:
            write_fake_model(writable, name=self.manifest.name)
            (writable / "manifest.json").write_text(self.manifest.model_dump_json())
        return ProcessOutcome(
            exit_code=self.exit_code,
            timed_out=False,
            wall_s=1.0,
            stderr_tail="\n".join(lines),
            image_ref=f"{self.name}:tf",
            oom_killed=self.oom_killed,
        )


def _export_error(launcher: Launcher, paths: Paths) -> BenchError:
    with pytest.raises(BenchError) as e:
        model_store.export(paths, "vgg19", launcher, lambda line: None)
    return e.value


@pytest.mark.parametrize(
    ("exit_code", "oom_killed", "launcher", "expected"),
    [
        (-9, True, "local", "killed by SIGKILL (exit -9): out of memory (the kernel's OOM killer"),
        (
            -9,
            False,
            "local",
            "killed by SIGKILL (exit -9): most likely out of memory (the kernel's OOM killer)",
        ),
        (137, True, "docker", "killed by SIGKILL (exit 137): out of memory"),
        (137, False, "docker", "killed by SIGKILL (exit 137): most likely out of memory"),
    ],
)
def test_killed_exporter_is_named_with_its_step_and_peak_memory(
    bench: Bench, exit_code: int, oom_killed: bool, launcher: str, expected: str
) -> None:
    paths = Paths.from_env()
    progress = {"step": CONVERTING, "peak_mem_mb": 23_960.0}
    err = _export_error(PretendExporter(paths, exit_code, oom_killed, launcher, progress), paths)
    assert err.message.startswith("exporting vgg19 failed: ")
    detail = err.message.removeprefix("exporting vgg19 failed: ")
    assert detail.startswith(expected), detail
    assert detail.endswith(f", while {CONVERTING}; peak memory 23.4 GB"), detail
    assert err.exit_code == 1
    # The log is kept, with how the exporter ended at its end; nothing else is left in the store.
    assert err.hint is not None and err.hint.startswith("full log: ")
    kept = Path(err.hint.removeprefix("full log: "))
    assert kept.read_text().splitlines()[-1] == f"bench-ctl: the exporter failed: {detail}"
    assert sorted(p.name for p in paths.models.iterdir()) == [".failed-exports"]


def test_other_signals_are_not_called_out_of_memory(bench: Bench) -> None:
    paths = Paths.from_env()
    err = _export_error(PretendExporter(paths, -15, progress={"step": "saving SavedModel"}), paths)
    assert err.message == "exporting vgg19 failed: killed by SIGTERM (exit -15), while saving SavedModel"


def test_killed_exporter_without_progress_file(bench: Bench) -> None:
    """An exporter killed before it wrote its progress file (or an older one): the signal alone."""
    paths = Paths.from_env()
    err = _export_error(PretendExporter(paths, -9), paths)
    assert err.message == (
        "exporting vgg19 failed: killed by SIGKILL (exit -9): most likely out of memory "
        "(the kernel's OOM killer)"
    )


def test_exporter_error_keeps_its_own_message(bench: Bench) -> None:
    paths = Paths.from_env()
    launcher = PretendExporter(paths, 3, last_line="error: vgg19: reference outputs stay flat")
    err = _export_error(launcher, paths)
    assert err.message == "exporting vgg19 failed: vgg19: reference outputs stay flat"


def test_export_success_line_shows_peak_memory(
    cli: Cli, bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.launch.select

    paths = Paths.from_env()
    staged = write_fake_model(bench.home / "staged", name="vgg19")
    manifest = ModelManifest.model_validate_json((staged / "manifest.json").read_text())
    manifest = manifest.model_copy(
        update={"parameters": 143_667_240, "flops_per_sample": 39_263_129_600, "export_peak_mem_mb": 4660.0}
    )
    launcher = PretendExporter(paths, 0, progress={"step": "checking"}, manifest=manifest)
    monkeypatch.setattr(controller.launch.select, "select_launcher", lambda *a, **k: launcher)
    result = cli("models", "export", "vgg19", "--launcher", "local")
    assert result.exit_code == 0, result.output
    assert "peak memory 4.6 GB" in result.output
    stored = bench.models / "vgg19"
    assert not (stored / EXPORT_PROGRESS_FILE).exists() and not (stored / "tool.log").exists()


def test_progress_file_tracks_step_and_peak(tmp_path: Path) -> None:
    from runners.exporter import Progress, peak_rss_mb

    path = tmp_path / EXPORT_PROGRESS_FILE
    with Progress(path, interval_s=0.01, min_growth_mb=0.0) as progress:
        progress.enter(CONVERTING)
        seen = json.loads(path.read_text())
    assert seen["step"] == CONVERTING
    assert 0 < seen["peak_mem_mb"] <= peak_rss_mb() + 0.1
    progress.remove()
    assert not path.exists()
