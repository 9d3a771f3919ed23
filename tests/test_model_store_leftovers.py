"""The model store after a killed `models add` or `models export`, and files that are no model.

An export works in a hidden folder `.NAME.XXXXXXXX` of the store, claimed by its process (an
flock the kernel drops when the process dies); a SIGKILL leaves the folder behind. It is never a
model in listings or hints, and the next write removes it unless its writer still lives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controller.catalog import models as model_store
from controller.paths import REPO_ROOT, Paths
from tests.conftest import Bench, Cli

LEFTOVER = ".goodnet.k3x9q0ab"


def _leftover(bench: Bench) -> Path:
    """What a `models add goodnet` killed after its exporter wrote the manifest leaves."""
    from tests.conftest import write_fake_model

    return write_fake_model(bench.models / LEFTOVER, name="goodnet")


def test_models_list_and_hints_ignore_a_killed_writes_folder(
    cli: Cli, bench: Bench, fake_model: Path
) -> None:
    _leftover(bench)
    listed = cli("models", "list", "--json")
    assert listed.exit_code == 0, listed.output  # was: "invalid model name '.goodnet.k3x9q0ab'"
    assert [m["name"] for m in json.loads(listed.stdout)] == ["fake"]
    table = cli("models", "list")
    assert table.exit_code == 0 and "goodnet" not in table.output
    missing = cli("run", "--image", "null", "--model", "goodnet", "--launcher", "local")
    assert missing.exit_code == 2 and "not in the store" in missing.stderr
    assert ".goodnet" not in missing.stderr, missing.stderr


def _live_writer(bench: Bench) -> tuple[subprocess.Popen[str], Path]:
    """Another process in the middle of writing model `busy`: its work folder, claimed."""
    code = (
        "import sys, time\n"
        "from controller.catalog import models\n"
        "from controller.paths import Paths\n"
        "with models.writing(Paths.from_env(), 'busy') as work:\n"
        "    work.folder.mkdir()\n"
        "    print(work.folder, flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = {**os.environ, "BENCH_HOME": str(bench.home), "BENCH_DB": str(bench.db)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir(), "the writer did not start"
    return proc, folder


def test_the_next_write_removes_leftovers_but_not_a_live_writers_folder(bench: Bench) -> None:
    paths = Paths.from_env()
    stale = _leftover(bench)
    proc, busy = _live_writer(bench)
    try:
        with model_store.writing(paths, "other") as work:
            assert not stale.exists(), "a killed write's folder outlived the next write"
            assert busy.is_dir(), "a live writer's folder was removed"
            assert work.folder.parent == paths.models and work.folder.name.startswith(".other.")
        proc.send_signal(signal.SIGKILL)  # the writer dies as the probe's `models add` did
        proc.wait(10)
        assert busy.is_dir()
        assert model_store.clean_stale_work(paths) == [busy.name]
        assert not busy.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Nothing of either write is left: no folder, claim or staged file.
    assert sorted(p.name for p in paths.models.iterdir()) == []
    assert not list((paths.home / "staging").glob("*"))


def test_cleaning_leaves_everything_else_alone(bench: Bench, fake_model: Path) -> None:
    """Only names a write gives its work folders are removed: a user's hidden folder, the logs of
    failed exports and the models stay."""
    paths = Paths.from_env()
    kept = [bench.models / ".git", bench.models / ".failed-exports", bench.models / ".goodnet"]
    for k in kept:
        k.mkdir()
    assert model_store.clean_stale_work(paths) == []
    assert all(k.is_dir() for k in kept) and fake_model.is_dir()


def test_models_add_of_a_folder_or_fifo_says_what_it_is(cli: Cli, bench: Bench, tmp_path: Path) -> None:
    folder = tmp_path / "mymodel"
    folder.mkdir()
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    for given, said in [
        (folder, f"{folder} is a folder, not an ONNX file"),
        (fifo, f"{fifo} is a FIFO, not a regular file"),
        (tmp_path / "missing.onnx", "no such file"),
    ]:
        r = cli("models", "add", "mine", str(given))  # --launcher auto: refused before Docker is asked
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and said in lines[0] and "hint:" in lines[0], r.output
    assert list(bench.models.iterdir()) == [] and not (bench.home / "staging").exists()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_add_refuses_non_files_without_a_cli(bench: Bench, tmp_path: Path, kind: str) -> None:
    from controller.errors import BenchError
    from controller.launch.local import LocalLauncher

    path = tmp_path / "x"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    paths = Paths.from_env()
    with pytest.raises(BenchError, match=r"not a regular file|is a folder") as e:
        model_store.add(paths, "mine", path, LocalLauncher(paths), lambda _: None)
    assert e.value.exit_code == 2
