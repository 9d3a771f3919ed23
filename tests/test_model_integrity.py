"""The model store is checked before a run: tampered or truncated files, odd names, removal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import Result

from controller.catalog import models as model_store
from controller.errors import BenchError
from controller.paths import Paths
from tests.conftest import Bench, Cli


def _run(cli: Cli) -> Result:
    return cli("run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1")


def test_intact_model_verifies_and_is_cached(bench: Bench, fake_model: Path) -> None:
    paths = Paths.from_env()
    manifest = model_store.read_manifest(paths, "fake")
    model_store.verify(paths, manifest)
    cache = paths.cache / "model-digests.json"
    assert cache.exists()
    before = cache.stat().st_mtime_ns
    model_store.verify(paths, manifest)  # unchanged files: nothing rehashed, nothing rewritten
    assert cache.stat().st_mtime_ns == before


def test_digest_cache_forgets_files_that_are_gone(bench: Bench, fake_model: Path, tmp_path: Path) -> None:
    import json

    paths = Paths.from_env()
    cache_file = paths.cache / "model-digests.json"
    gone = tmp_path / "gone.bin"
    gone.write_bytes(b"x")
    cache = model_store.DigestCache(cache_file)
    cache.digest(gone)
    cache.save()
    assert str(gone.resolve()) in json.loads(cache_file.read_text())
    gone.unlink()
    model_store.verify(paths, model_store.read_manifest(paths, "fake"))  # learns the model's files
    kept = json.loads(cache_file.read_text())
    assert str(gone.resolve()) not in kept and kept


def test_tampered_model_is_refused_before_running(cli: Cli, bench: Bench, fake_model: Path) -> None:
    onnx = fake_model / "model.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes(data[:-2] + b"X\n")  # same size, other content
    stat = onnx.stat()
    os.utime(onnx, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    result = _run(cli)
    assert result.exit_code == 2
    assert "does not match the sha256" in result.stderr and "--force" in result.stderr
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_tamper_after_a_cached_check_is_still_found(bench: Bench, fake_model: Path) -> None:
    paths = Paths.from_env()
    manifest = model_store.read_manifest(paths, "fake")
    model_store.verify(paths, manifest)
    time.sleep(0.01)
    ref = fake_model / "reference_output.npy"
    data = bytearray(ref.read_bytes())
    data[-1] ^= 0xFF
    ref.write_bytes(bytes(data))
    with pytest.raises(BenchError, match="sha256"):
        model_store.verify(paths, manifest)


def test_truncated_model_is_refused(cli: Cli, bench: Bench, fake_model: Path) -> None:
    onnx = fake_model / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:5])
    result = _run(cli)
    assert result.exit_code == 2 and "truncated" in result.stderr
    (fake_model / "model.onnx").unlink()
    result = _run(cli)
    assert result.exit_code == 2 and "missing" in result.stderr


@pytest.mark.parametrize("name", ["fake\n", "a/b", "../x", "UPPER", "x" * 65, "", "ｆａｋｅ"])
def test_names_must_match_whole(cli: Cli, bench: Bench, name: str) -> None:
    result = cli("models", "remove", name)
    assert result.exit_code == 2 and "invalid model name" in result.stderr
    with pytest.raises(BenchError):
        model_store.check_name(name)


def test_remove(cli: Cli, bench: Bench, fake_model: Path) -> None:
    result = cli("models", "remove", "fake")
    assert result.exit_code == 0, result.stderr
    assert not fake_model.exists()
    result = cli("models", "remove", "fake")
    assert result.exit_code == 2 and "not in the store" in result.stderr


def test_a_near_miss_of_a_study_model_suggests_exporting_it(cli: Cli, bench: Bench) -> None:
    result = cli("run", "--image", "null", "--model", "resnet5", "--launcher", "local")
    assert result.exit_code == 2
    assert "did you mean 'resnet50'? export it: bench-ctl models export resnet50" in result.stderr
