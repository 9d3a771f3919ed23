"""Image catalog and model store listings (no framework runs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from controller.catalog.images import get_image, images
from controller.errors import BenchError
from tests.conftest import Bench, Cli


def by_name(stdout: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(stdout)}


def test_catalog_images() -> None:
    catalog = images()
    assert {"null", "ort", "openvino", "tf"} <= set(catalog)
    for name in ("null", "ort", "openvino", "tf"):
        assert catalog[name].lock_file.exists(), name
    for info in catalog.values():
        if info.lock_file.exists():
            assert info.lock_hash == hashlib.sha256(info.lock_file.read_bytes()).hexdigest()
        else:
            assert info.lock_hash is None
    assert catalog["ort"].framework == "onnxruntime" and catalog["ort"].framework_version
    assert catalog["openvino"].framework == "openvino"
    with pytest.raises(BenchError, match="unknown image") as refused:
        get_image("nope")
    assert "ort" in (refused.value.hint or "")


def test_images_list_json_local_env_states(cli: Cli, bench: Bench, null_env: Path) -> None:
    result = cli("images", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = by_name(result.stdout)
    assert {"null", "ort", "openvino", "tf"} <= set(rows)
    assert rows["null"]["local_env"] == "current"
    for row in rows.values():
        assert row["local_env"] in ("current", "stale", "no")
        assert row["framework"]
        assert set(row) >= {
            "name",
            "framework",
            "framework_version",
            "devices",
            "buildable",
            "image_id",
            "image_stale",
            "local_env",
        }
    assert all(rows[n]["lock_hash"] for n in ("null", "ort", "openvino", "tf"))


def test_images_list_without_envs(cli: Cli, bench: Bench) -> None:
    (bench.home / "envs").unlink()  # a fresh machine: nothing built
    stale = bench.home / "envs" / "ort"
    (stale / "bin").mkdir(parents=True)
    (stale / "bin" / "python").write_text("")
    (stale / "bench-lock-hash").write_text("0" * 64 + "\n")  # built from another lock file
    rows = by_name(cli("images", "list", "--json").stdout)
    assert rows["ort"]["local_env"] == "stale"
    assert rows["null"]["local_env"] == "no"
    assert rows["openvino"]["local_env"] == "no"


def test_images_list_table(cli: Cli, bench: Bench) -> None:
    result = cli("images", "list", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("null", "ort", "openvino", "tf"):
        assert name in result.stdout


def test_models_list_json(cli: Cli, bench: Bench, fake_model: Path) -> None:
    empty = json.loads(cli("models", "list", "--json").stdout)
    assert [m["name"] for m in empty] == ["fake"]
    entry = empty[0]
    assert entry["source"] == "onnx"
    assert entry["input_shape"] == [None, 4]
    assert entry["reference"] == "test-fp32"
    assert entry["onnx_sha256"] == hashlib.sha256((fake_model / "model.onnx").read_bytes()).hexdigest()
    assert Path(entry["path"]) == bench.models / "fake"
    assert entry["size_mb"] > 0


def test_models_list_ignores_unfinished_folders(cli: Cli, bench: Bench, fake_model: Path) -> None:
    (bench.models / ".mine.tmp123").mkdir()
    (bench.models / "half").mkdir()  # no manifest: not a model
    assert [m["name"] for m in json.loads(cli("models", "list", "--json").stdout)] == ["fake"]


def test_models_list_empty_store(cli: Cli, bench: Bench) -> None:
    assert json.loads(cli("models", "list", "--json").stdout) == []
    assert cli("models", "list").exit_code == 0


def test_invalid_manifest_is_reported(cli: Cli, bench: Bench, fake_model: Path) -> None:
    doc = json.loads((fake_model / "manifest.json").read_text())
    doc["source"] = "caffe"
    (fake_model / "manifest.json").write_text(json.dumps(doc))
    r = cli("run", "-i", "null", "-m", "fake", "--launcher", "local")
    assert r.exit_code == 2
    assert "invalid manifest" in r.stderr and "hint" in r.stderr
    assert bench.run_dirs() == []


class FakeImage:
    def __init__(self, labels: dict[str, str]) -> None:
        self.id = "sha256:" + "ab" * 32
        self.labels = labels
        self.attrs = {"Size": 123_000_000}


def old_code_image(name: str) -> FakeImage:
    """An image built from the current lock file but from older schemas/runners code."""
    info = get_image(name)
    return FakeImage(
        {"bench.image": name, "bench.lock-hash": info.lock_hash or "", "bench.git-commit": "0" * 40}
    )


def test_image_from_current_lock_is_not_stale(monkeypatch: pytest.MonkeyPatch, bench: Bench) -> None:
    from controller.catalog.images import code_hash
    from controller.launch import build as images_mod
    from controller.paths import Paths

    info = get_image("null")
    fresh = FakeImage({"bench.lock-hash": info.lock_hash or "", "bench.code-hash": code_hash()})
    monkeypatch.setattr(images_mod, "client", lambda timeout=5: object())
    monkeypatch.setattr(images_mod, "find_image", lambda c, i: fresh if i.name == "null" else None)
    row = next(r for r in images_mod.status(Paths.from_env()) if r.name == "null")
    assert row.image_id == fresh.id and row.image_stale is False and row.size_mb == 123.0
    other = FakeImage({"bench.lock-hash": "0" * 64})
    monkeypatch.setattr(images_mod, "find_image", lambda c, i: other if i.name == "null" else None)
    row = next(r for r in images_mod.status(Paths.from_env()) if r.name == "null")
    assert row.image_stale is True


def test_image_built_from_older_code_is_stale(monkeypatch: pytest.MonkeyPatch, bench: Bench) -> None:
    from controller.launch import build as images_mod
    from controller.launch import docker as docker_mod
    from controller.paths import Paths

    img = old_code_image("null")
    monkeypatch.setattr(docker_mod, "client", lambda timeout=5: object())
    monkeypatch.setattr(docker_mod, "find_image", lambda c, i: img)
    monkeypatch.setattr(images_mod, "client", lambda timeout=5: object())
    monkeypatch.setattr(images_mod, "find_image", lambda c, i: img if i.name == "null" else None)
    row = next(r for r in images_mod.status(Paths.from_env()) if r.name == "null")
    reason = docker_mod.unavailable_reason(get_image("null"), Paths.from_env())
    assert row.image_stale is True
    assert reason is not None, "auto would launch an image whose runner code is out of date"


@pytest.mark.gpu("preflight")
def test_gpu_host_is_detected_and_cuda_images_pass_preflight() -> None:
    from controller.run import planning
    from schemas.devices import nvidia_gpu_present

    assert nvidia_gpu_present(), "nvidia-smi exists but no /dev/nvidia* device"
    for info in images().values():
        if "cuda" in info.devices:
            req = planning.RunRequest(image=info.name, model="x", batch_sizes=[1], device="cuda:0")
            assert planning.preflight(info, req) is None, info.name


def test_an_image_build_context_carries_every_runtime_package(tmp_path: Path) -> None:
    """What a runner imports in its image (schemas, probes, runners) is what the build copies; a
    package missing there fails only inside a container, after a build."""
    import shutil

    from controller.catalog.images import RUNTIME_PACKAGES, get_image
    from controller.launch import build

    house = tmp_path / "wheels"
    house.mkdir()
    ctx = build._context(get_image("null"), house)
    try:
        assert sorted(p.name for p in (ctx / "app").iterdir()) == sorted(RUNTIME_PACKAGES)
        assert (ctx / "app" / "probes" / "fingerprint.py").is_file()
    finally:
        shutil.rmtree(ctx)
