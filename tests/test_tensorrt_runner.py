"""TensorRT runner parts that run without a GPU: the engine cache key, the profile, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runners.frameworks.trt import engine_cache_key, profile_shapes
from schemas import RunResult, TensorRTOptions
from schemas.devices import nvidia_gpu_present

REPO = Path(__file__).resolve().parents[1]

# Inputs as a real run records them: the ONNX digest from a manifest, TensorRT's version string,
# cudaGetDeviceProperties' name and compute capability, the options as the spec dumps them.
RECORDED = {
    "onnx_sha256": "6bbf97d7da0c252b4c949c3f911477901a15745be0c73e796c6f9877195f9a7b",
    "trt_version": "10.16.1.11",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "options": TensorRTOptions().model_dump(),
    "profile": {"min": [1, 224, 224, 3], "opt": [32, 224, 224, 3], "max": [32, 224, 224, 3]},
}


def key(**changes: object) -> str:
    args = {**RECORDED, **changes}
    return engine_cache_key(**args)  # type: ignore[arg-type]


def test_key_is_stable_and_pinned() -> None:
    assert key() == key()
    # Pinned: an accidental change of the key's material would orphan every cached engine.
    assert key() == "cfe76d563c4031e00c834fa7762d5977393a54aaacae19cc62cad31a4da762f8"


@pytest.mark.parametrize(
    "field,value",
    [
        ("onnx_sha256", "0" * 64),
        ("trt_version", "8.6.1"),
        ("gpu_name", "NVIDIA A100-SXM4-80GB"),
        ("compute_capability", "8.0"),
        ("options", TensorRTOptions(precision="fp32").model_dump()),
        ("options", TensorRTOptions(workspace_mb=1024).model_dump()),
        ("profile", {"min": [1, 224, 224, 3], "opt": [8, 224, 224, 3], "max": [64, 224, 224, 3]}),
    ],
)
def test_key_changes_with_what_the_engine_depends_on(field: str, value: object) -> None:
    assert key(**{field: value}) != key()


def test_key_ignores_options_that_do_not_change_the_engine() -> None:
    assert key(options=TensorRTOptions(cache=False, cuda_graph=True).model_dump()) == key()


def test_profile_covers_batch_sizes_and_reference_batch() -> None:
    p = profile_shapes([224, 224, 3], [1, 8, 32], reference_batch=8, opt_batch=None)
    assert p == {"min": [1, 224, 224, 3], "opt": [32, 224, 224, 3], "max": [32, 224, 224, 3]}
    p = profile_shapes([224, 224, 3], [64], reference_batch=8, opt_batch=16)
    assert p["min"][0] == 8 and p["opt"][0] == 16 and p["max"][0] == 64


@pytest.mark.skipif(nvidia_gpu_present(), reason="checks the refusal on a machine without a GPU")
def test_runner_reports_unsupported_without_gpu(fake_model: Path, tmp_path: Path) -> None:
    spec = {
        "run_id": "trt-nogpu",
        "image": "trt10",
        "model": fake_model.name,
        "model_dir": str(fake_model),
        "cache_dir": str(tmp_path / "cache"),
        "device": "cuda:0",
        "batch_sizes": [1],
        "options": {"framework": "tensorrt"},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "runners", "--spec", str(tmp_path / "spec.json"), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    result = RunResult.model_validate_json(out.read_text())
    assert result.status == "unsupported"
    assert "NVIDIA GPU" in (result.message or "")
    assert "Traceback" not in proc.stderr


def test_int8_without_calibration_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="int8 needs calibration"):
        TensorRTOptions(precision="int8")
    assert TensorRTOptions(precision="int8", calibration="/data/calib.npy").calibration
