"""TensorRT runner parts that run without a GPU: the engine cache key, the profile, refusals."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from runners.frameworks.trt import engine_cache_key, input_profiles, profile_shapes
from schemas import ModelManifest, RunResult, RunSpec, TensorRTOptions
from schemas.devices import nvidia_gpu_present
from tests.conftest import Bench, Cli, write_seq_model

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


def test_int8_without_calibration_data_is_refused_at_planning(
    cli: Cli, bench: Bench, fake_model: Path
) -> None:
    """int8 calibrates on the `calibration` file, else the model's own data (models add --data):
    a model with neither is one line with a hint, before anything runs."""
    r = cli("run", "-i", "trt10", "-m", "fake", "--gpu", "0", "--set", "precision=int8")
    assert r.exit_code == 2 and "int8 needs calibration data" in r.stderr and "--data" in r.stderr
    assert bench.run_dirs() == []
    assert TensorRTOptions(precision="int8").calibration is None  # the model's data, when it has some


def test_int8_calibrates_on_the_models_data(tmp_path: Path) -> None:
    """Without a calibration file the runner reads the model's data.npz, every input by name, in
    the input's dtype; the labels are no input."""
    from runners.frameworks.trt import TensorRTRunner

    folder = write_seq_model(tmp_path / "m")
    ids = np.arange(24, dtype=np.int32).reshape(3, 8)
    np.savez(folder / "data.npz", input_ids=ids, attention_mask=np.ones_like(ids), labels=np.zeros(3))
    doc = json.loads((folder / "manifest.json").read_text())
    doc["files"]["data"] = {"path": "data.npz", "sha256": "0" * 64, "bytes": 1}
    manifest = ModelManifest.model_validate(doc)
    spec = RunSpec.model_validate(
        {
            "run_id": "r", "image": "trt10", "model": "seqfake", "model_dir": str(folder),
            "cache_dir": str(tmp_path), "device": "cuda:0",
            "options": {"framework": "tensorrt", "precision": "int8"},
        }
    )  # fmt: skip
    samples = TensorRTRunner(spec, manifest, folder, tmp_path).calibration_inputs()
    assert sorted(samples) == ["attention_mask", "input_ids"]
    assert samples["input_ids"].dtype == np.int64 and samples["input_ids"].shape == (3, 8)


def test_input_profiles_cover_every_planned_shape_of_every_input() -> None:
    """min: the smallest of each axis over the planned shapes, max: the largest, opt as given."""
    planned = [
        {"input_ids": [8, 8], "mask": [8, 8]},  # the reference batch at the manifest's seq
        {"input_ids": [1, 64], "mask": [1, 64]},
        {"input_ids": [4, 64], "mask": [4, 64]},
    ]
    p = input_profiles(planned, {"input_ids": [4, 64], "mask": [4, 64]})
    assert p["input_ids"] == p["mask"] == {"min": [1, 8], "opt": [4, 64], "max": [8, 64]}


# --------------------------------------------------------------------------- buffers, no GPU
#
# The runner's buffers, shapes and dtypes through a stand-in for TensorRT and the CUDA runtime:
# device memory is host memory, copies are memmove, and the "engine" computes its outputs with
# NumPy. The engine narrowed input_ids to int32 (as TensorRT 8.6 does with int64) and lists its
# inputs and outputs in another order than the manifest.

ENGINE_TENSORS = [
    ("attention_mask", "INPUT", "INT64"),
    ("input_ids", "INPUT", "INT32"),
    ("pooled", "OUTPUT", "HALF"),
    ("hidden", "OUTPUT", "FLOAT"),
]
NP = {"INT64": np.int64, "INT32": np.int32, "HALF": np.float16, "FLOAT": np.float32}
HIDDEN = 4


def engine_outputs(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    hidden = (ids * mask)[..., None] * np.arange(1, HIDDEN + 1, dtype=np.float32)
    return {"hidden": hidden.astype(np.float32), "pooled": hidden.sum(axis=1).astype(np.float16)}


class FakeRuntimeApi:
    """cudart calls as cuda-python returns them: (error, value...)."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.held: dict[int, Any] = {}

    def _alloc(self, n: int) -> tuple[int, int]:
        buf = (ctypes.c_uint8 * n)()
        self.held[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, ptr: int) -> tuple[int]:
        self.held.pop(ptr)
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return (0,)


def _view(ptr: int, dtype: Any, shape: list[int]) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * n).from_address(ptr), dtype=dtype).reshape(shape)


class FakeContext:
    def __init__(self) -> None:
        self.shapes: dict[str, list[int]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: list[int]) -> bool:
        self.shapes[name] = list(shape)
        return True

    def get_tensor_shape(self, name: str) -> list[int]:
        b, s = self.shapes["input_ids"]
        return [b, s, HIDDEN] if name == "hidden" else [b, HIDDEN]

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        ids = _view(self.addresses["input_ids"], np.int32, self.shapes["input_ids"])
        mask = _view(self.addresses["attention_mask"], np.int64, self.shapes["attention_mask"])
        for name, out in engine_outputs(ids, mask).items():
            ctypes.memmove(self.addresses[name], out.ctypes.data, out.nbytes)
        return True


class FakeEngine:
    num_io_tensors = len(ENGINE_TENSORS)

    def get_tensor_name(self, i: int) -> str:
        return ENGINE_TENSORS[i][0]

    def get_tensor_mode(self, name: str) -> str:
        return next(mode for n, mode, _ in ENGINE_TENSORS if n == name)

    def get_tensor_dtype(self, name: str) -> str:
        return next(dtype for n, _, dtype in ENGINE_TENSORS if n == name)

    def create_execution_context(self) -> FakeContext:
        return FakeContext()


FAKE_TRT = SimpleNamespace(
    __version__="10.16.1.11",
    TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
    nptype=lambda dtype: NP[dtype],
    Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: FakeEngine()),
)


def test_every_input_and_output_has_its_buffers_in_the_engines_dtypes(tmp_path: Path) -> None:
    from runners.frameworks.trt import TensorRTRunner, _Cuda
    from schemas import ModelManifest, RunSpec
    from schemas.manifest import TensorInfo
    from tests.conftest import write_seq_model

    folder = write_seq_model(tmp_path / "seqfake", hidden=HIDDEN)
    manifest = ModelManifest.model_validate_json((folder / "manifest.json").read_text())
    manifest = manifest.model_copy(
        update={"outputs": [*manifest.outputs, TensorInfo(name="pooled", shape=[None, HIDDEN])]}
    )
    assert [t.name for t in manifest.outputs] == ["hidden", "pooled"]
    spec = RunSpec(
        run_id="trt-fake",
        image="trt10",
        model="seqfake",
        model_dir=str(folder),
        cache_dir=str(tmp_path / "cache"),
        device="cuda:0",
        batch_sizes=[1, 2],
        dims={"seq": 16},
        options={"framework": "tensorrt"},
    )
    built: list[dict[str, dict[str, list[int]]]] = []

    def compiled() -> TensorRTRunner:
        runner = TensorRTRunner(spec, manifest, folder, tmp_path / "cache")
        cuda = _Cuda.__new__(_Cuda)
        cuda.rt = FakeRuntimeApi()
        runner.trt, runner.cuda, runner.logger = FAKE_TRT, cuda, None
        runner._gpu = lambda: ("Fake GPU", "9.0")  # type: ignore[method-assign]
        runner._build = lambda profile: built.append(profile) or b"engine"  # type: ignore[method-assign,func-returns-value]
        runner.read_model()
        _, note = runner.compile()
        assert note is not None and "key=" in note
        return runner

    runner = compiled()
    # One profile from the planned shapes: the reference batch (8 at seq 8) and 1, 2 at seq 16.
    assert built == [
        {n: {"min": [1, 8], "opt": [2, 16], "max": [8, 16]} for n in ("input_ids", "attention_mask")}
    ]
    rng = np.random.default_rng(0)

    def batch(n: int, seq: int) -> dict[str, np.ndarray]:
        return {"input_ids": rng.integers(0, 100, (n, seq)), "attention_mask": rng.integers(0, 2, (n, seq))}

    a, b, ref = batch(2, 16), batch(1, 16), batch(8, 8)
    prepared = {"a": runner.prepare(a), "b": runner.prepare(b), "ref": runner.prepare(ref)}
    for name in ("a", "ref", "b", "a"):  # another batch's shapes set since its prepare
        x = {"a": a, "b": b, "ref": ref}[name]
        got = runner.to_numpy(runner.run(prepared[name]))
        want = engine_outputs(x["input_ids"].astype(np.int32), x["attention_mask"])
        assert [g.dtype for g in got] == [np.float32, np.float16]  # the engine's, manifest order
        np.testing.assert_array_equal(got[0], want["hidden"])
        np.testing.assert_array_equal(got[1], want["pooled"])
    runner.close()
    assert runner.cuda.rt.held == {}, "every buffer is freed"
    # The same planned shapes: the cached engine, not a second build.
    again = compiled()
    assert len(built) == 1
    again.close()
