"""The Docker launcher (skipped when no Docker engine answers; CI starts one, see .ci/run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from controller.catalog.images import get_image
from tests.conftest import Bench, Cli

if TYPE_CHECKING:
    from docker.models.images import Image

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("null_env")]


def built_image(name: str) -> Image | None:
    from controller.launch.identity import client, find_image, stale_reason

    info = get_image(name)
    found = find_image(client(timeout=10), info)
    if found is None or stale_reason(found, info) is not None:
        return None
    return found


def test_images_list_reports_docker_state(cli: Cli, bench: Bench) -> None:
    rows = {r["name"]: r for r in json.loads(cli("images", "list", "--json").stdout)}
    img = built_image("null")
    if img is None:
        assert rows["null"]["image_id"] is None or rows["null"]["image_stale"] is True
    else:
        assert rows["null"]["image_id"] == img.id and rows["null"]["image_stale"] is False
        assert rows["null"]["size_mb"] and rows["null"]["size_mb"] > 0


def test_null_run_in_docker(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    img = built_image("null")
    result = cli(
        "run",
        "-i",
        "null",
        "-m",
        "fake",
        "-b",
        "1",
        "--launcher",
        "docker",
        *short_policy,
        "--set",
        "work_us=50",
        "--json",
    )
    if img is None:
        # Not built (or built from an older lock): refused up front with the command that builds it.
        assert result.exit_code == 2, result.output
        assert "hint:" in result.stderr and "images build null" in result.stderr
        assert bench.run_dirs() == []
        return
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert doc["status"] == "ok"
    assert doc["launch"]["launcher"] == "docker"
    assert doc["launch"]["image_digest"] == img.id
    assert doc["spec"]["model_dir"].startswith("/bench/")
    assert bench.rows("SELECT launcher, image_digest, status FROM results") == [("docker", img.id, "ok")]


def test_fault_exit_in_docker(cli: Cli, bench: Bench, fake_model: Path, short_policy: list[str]) -> None:
    img = built_image("null")
    args = ["-b", "1", "--launcher", "docker", *short_policy, "--set", "fault=exit", "--json"]
    result = cli("run", "-i", "null", "-m", "fake", *args)
    if img is None:
        assert result.exit_code == 2 and "images build null" in result.stderr
        return
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["status"] == "error" and "137" in doc["message"]
    assert doc["launch"]["exit_code"] == 137 and doc["launch"]["stderr_tail"]
    assert bench.rows("SELECT status, batch_size FROM results") == [("error", None)]


@pytest.fixture(scope="module")
def cpu_images() -> dict[str, Image]:
    """The CPU images, built here if missing or stale (a cache hit in CI, which builds them first)."""
    from controller.launch.build import build
    from controller.paths import Paths

    names = ["tf", "ort", "openvino"]
    missing = [n for n in names if built_image(n) is None]
    if missing:
        failures = build(Paths.from_env(), missing, None, False, print, lambda _line: None)
        assert not failures, f"could not build {failures}"
    images = {n: built_image(n) for n in names}
    assert all(images.values())
    return cast("dict[str, Image]", images)


@pytest.mark.frameworks
def test_export_measure_ingest_query_through_docker(
    cli: Cli, bench: Bench, cpu_images: dict[str, Image], tmp_path: Path
) -> None:
    """The whole fleet path in containers: export in tf, measure in ort and openvino, re-ingest, query."""
    exported = cli("models", "export", "mobilenetv2", "--launcher", "docker")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((bench.models / "mobilenetv2" / "manifest.json").read_text())
    assert manifest["reference"] == "tensorflow-fp32" and manifest["reference_peak_mean"] > 0.2
    for image in ("ort", "openvino"):
        result = cli(
            "run",
            "-i",
            image,
            "-m",
            "mobilenetv2",
            "-b",
            "1",
            "--launcher",
            "docker",
            "--set",
            "policy.min_time_s=0.3",
            "--set",
            "policy.max_time_s=2",
            "--json",
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["launch"]["launcher"] == "docker"
        assert doc["launch"]["image_digest"] == cpu_images[image].id
        assert doc["fingerprint"]["image_digest"] == cpu_images[image].id
        assert doc["fingerprint"]["lock_hash"] == get_image(image).lock_hash
        acc = doc["accuracy"]
        # fp32 is faithful; a bf16 default (OpenVINO on CPUs with bf16) is recorded as measured.
        assert acc["top1_agreement"] == 1.0 if doc["precision"] == "fp32" else 0 <= acc["top1_agreement"] <= 1
        run_dir = bench.runs / doc["run_id"]
        inspect = json.loads((run_dir / "container.json").read_text())
        assert inspect["HostConfig"]["NetworkMode"] == "none"
        assert inspect["Config"]["User"] not in ("", "0", "root") and not inspect["Config"][
            "User"
        ].startswith("0:")
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        assert "no-new-privileges" in inspect["HostConfig"]["SecurityOpt"]
    other_db = tmp_path / "other.duckdb"
    ingested = cli("ingest", str(bench.runs), "--db", str(other_db))
    assert ingested.exit_code == 0 and "ingested 2" in ingested.stdout
    rows = cli(
        "query",
        "SELECT image, launcher, status FROM results ORDER BY image",
        "--db",
        str(other_db),
        "--format",
        "json",
    )
    assert json.loads(rows.stdout) == [
        {"image": "openvino", "launcher": "docker", "status": "ok"},
        {"image": "ort", "launcher": "docker", "status": "ok"},
    ]
