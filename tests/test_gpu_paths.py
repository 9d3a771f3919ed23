"""Every GPU path of the fleet, run for real on an NVIDIA GPU (`make gpu-check` runs these).

Each test is marked `gpu` with the path it verifies; `gpucheck/check.py` lists the paths and
says why one cannot run here (the test is then skipped with that reason). Frameworks run through
the real entrypoint, `python -m runners --spec SPEC --out RESULT`, in the interpreter that has
them (this one, or the image's local environment), on mobilenetv2 from the model store or from the
wheelhouse (`make gpu-wheels` ships it), else on a small ONNX network made here, whose reference
outputs are ONNX Runtime's on the CPU in fp32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from controller.paths import REPO_ROOT
from gpucheck import check as selftest

if TYPE_CHECKING:
    from schemas import Phase, RunResult

# fp32 on recent GPUs: cuDNN, cuBLAS and ONNX Runtime may compute fp32 convolutions in TF32, so the
# limit is looser than on a CPU (1e-3); the figures are in each verdict's detail.
FP32_REL_ERR = 1e-2
FP16_REL_ERR = 5e-2
FP16_TOP1 = 0.875  # one sample of the reference batch (8) may flip
SHORT = {
    "warmup_iterations": 2,
    "warmup_min_s": 0.2,
    "min_iterations": 5,
    "min_time_s": 0.5,
    "max_time_s": 3.0,
    "window_s": 0.1,
}
# Long enough for NVML's power average (about a second) and energy counter to settle.
ENERGY = {
    "warmup_iterations": 3,
    "warmup_min_s": 1.0,
    "min_iterations": 20,
    "min_time_s": 3.0,
    "max_time_s": 6.0,
    "window_s": 0.25,
}
_runs = itertools.count(1)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class GpuModel:
    folder: Path
    name: str
    batch: int  # the reference batch's size: the runs measure it, so each compiles one shape
    source: str


def _found(folder: Path, roles: tuple[str, ...], source: str) -> GpuModel | None:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    doc = json.loads(manifest.read_text())
    files = doc["files"]
    if not all(role in files and (folder / files[role]["path"]).exists() for role in roles):
        return None
    ref = np.load(folder / files["reference_input"]["path"], mmap_mode="r")
    return GpuModel(folder, doc["name"], len(ref), f"{doc['name']} ({source})")


def _shipped_models() -> list[tuple[Path, str]]:
    wheelhouse = Path(os.environ.get(selftest.WHEELHOUSE_ENV) or selftest.DEFAULT_WHEELHOUSE)
    return [
        (selftest.HOME / "models" / selftest.SHIPPED_MODEL, "model store"),
        (wheelhouse / "models" / selftest.SHIPPED_MODEL, "wheelhouse"),
    ]


def make_small_onnx_model(folder: Path, classes: int = 10, batch: int = 8) -> GpuModel:
    """A small CNN (convolutions, pooling, a classifier) with seeded weights, and its reference:
    ONNX Runtime's fp32 outputs on the CPU. The classifier is centred and scaled on the reference
    batch so that its outputs are peaked (mean top-1 probability 0.6): top-1 agreement means something."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from schemas import ModelManifest

    rng = np.random.default_rng(0)

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    weights = {
        "w1": he((16, 3, 3, 3), 27),
        "b1": np.zeros(16, np.float32),
        "w2": he((32, 16, 3, 3), 144),
        "b2": np.zeros(32, np.float32),
        "w3": he((32, classes), 32),
        "b3": np.zeros(classes, np.float32),
    }

    def build(w: dict[str, np.ndarray], softmax: bool) -> bytes:
        nodes = [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "w3", "b3"], ["logits" if softmax else "y"]),
        ]
        if softmax:
            nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=-1))
        graph = helper.make_graph(
            nodes,
            "gpucheck",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", classes])],
            [numpy_helper.from_array(v, k) for k, v in w.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        return bytes(model.SerializeToString())

    def outputs(model: bytes, x: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return np.asarray(session.run(["y"], {"x": x})[0])

    x = rng.random((batch, 3, 32, 32), dtype=np.float32)
    logits = outputs(build(weights, softmax=False), x)
    weights["b3"] = weights["b3"] - logits.mean(axis=0).astype(np.float32)
    centred = logits - logits.mean(axis=0)

    def peak(scale: float) -> float:
        z = centred * scale
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return float((e / e.sum(axis=1, keepdims=True)).max(axis=1).mean())

    lo, hi = 1e-3, 1e4
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if peak(mid) < 0.6 else (lo, mid)
    weights["w3"] = weights["w3"] * np.float32(hi)
    weights["b3"] = weights["b3"] * np.float32(hi)
    model = build(weights, softmax=True)
    reference = outputs(model, x)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model)
    np.save(folder / "reference_input.npy", x)
    np.save(folder / "reference_output.npy", reference)

    def artifact(rel: str) -> dict[str, str | int]:
        data = (folder / rel).read_bytes()
        return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    manifest = ModelManifest.model_validate(
        {
            "name": "gpucheck-cnn",
            "source": "onnx",
            "created_at": datetime.now(UTC),
            "input_name": "x",
            "input_shape": [None, 3, 32, 32],
            "input_layout": "NCHW",
            "output_name": "y",
            "output_shape": [None, classes],
            "onnx_opset": 17,
            "seed": 0,
            "reference": "onnxruntime-fp32",
            "reference_peak_mean": float(reference.max(axis=1).mean()),
            "files": {
                "onnx": artifact("model.onnx"),
                "reference_input": artifact("reference_input.npy"),
                "reference_output": artifact("reference_output.npy"),
            },
            "tools": {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "made_by": __name__},
        }
    )
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
    return GpuModel(folder, manifest.name, batch, "a small CNN made here (reference: ONNX Runtime fp32)")


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> GpuModel:
    """mobilenetv2 from the model store or the wheelhouse, else a small CNN made here."""
    for folder, source in _shipped_models():
        found = _found(folder, ("onnx", "reference_input", "reference_output"), source)
        if found is not None:
            return found
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        pytest.skip(
            "no model to run: no mobilenetv2 in the model store or the wheelhouse (make gpu-wheels), "
            "and onnx and onnxruntime are not both installed to make one"
        )
    return make_small_onnx_model(tmp_path_factory.mktemp("model") / "gpucheck-cnn")


@pytest.fixture(scope="session")
def savedmodel_model() -> GpuModel:
    """A model with its SavedModel (TensorFlow reads that, not the ONNX file): the model store's."""
    folder, source = _shipped_models()[0]
    found = _found(folder, ("savedmodel", "reference_input", "reference_output"), source)
    if found is None:
        pytest.skip(
            f"no mobilenetv2 with its SavedModel in {folder.parent}: bench-ctl models export mobilenetv2"
        )
    return found


# --------------------------------------------------------------------------- runs


def run_runner(
    key: str,
    image: str,
    model: GpuModel,
    options: dict[str, Any],
    work: Path,
    *,
    policy: dict[str, Any] | None = None,
    cache: Path | None = None,
    timeout_s: float = 240,
) -> RunResult:
    """One run through the real entrypoint on cuda:0, in the interpreter that has the path's needs."""
    from schemas import RunResult, RunSpec

    interp = selftest.interpreter_for(key)
    if interp is None:
        pytest.skip(selftest.skip_reason(key) or f"no interpreter has what path {key} needs")
    work.mkdir(parents=True, exist_ok=True)
    spec = RunSpec.model_validate(
        {
            "run_id": f"gpucheck-{key}-{os.getpid()}-{next(_runs)}",
            "image": image,
            "model": model.name,
            "model_dir": str(model.folder),
            "cache_dir": str(cache or work / "cache"),
            "device": "cuda:0",
            "batch_sizes": [model.batch],
            "policy": policy or SHORT,
            "options": options,
        }
    )
    spec_path, out, log = work / "spec.json", work / "result.json", work / "runner.log"
    spec_path.write_text(spec.model_dump_json(indent=1))
    cmd = [interp.executable, "-m", "runners", "--spec", str(spec_path), "--out", str(out)]
    code = run_logged(cmd, interp.env(), log, timeout_s)
    if code != 0 or not out.exists():
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        pytest.fail(
            f"runner ({interp.label}) exited with {code}: {tail[0] if tail else 'no output'} (log: {log})"
        )
    return RunResult.model_validate_json(out.read_text())


def run_logged(cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> int:
    """Run `cmd` in its own process group with its output in `log`; the whole group dies on timeout."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pytest.fail(f"{' '.join(cmd[1:4])} did not finish within {timeout_s:.0f} s (log: {log})")


def require_ok(result: RunResult) -> None:
    if result.status != "ok":
        pytest.fail(f"run {result.status}: {result.message}")


def phase(result: RunResult, name: str) -> Phase:
    return next(p for p in result.phases if p.name == name)


def agreement(result: RunResult, rel_err: float = FP32_REL_ERR, top1: float = 1.0) -> str:
    """Check the outputs on the reference batch against the reference; the figures as text."""
    require_ok(result)
    acc = result.accuracy
    assert acc is not None, "the run recorded no accuracy check"
    text = (
        f"rel_err {acc.rel_err:.1e}, top-1 {acc.top1_agreement:.0%}, top-5 {acc.top5_agreement:.0%} "
        f"vs {acc.reference}"
    )
    assert acc.rel_err <= rel_err and (acc.top1_agreement or 0) >= top1, (
        f"outputs disagree with the reference: {text} (limits: rel_err {rel_err:g}, top-1 {top1:.0%})"
    )
    return text


def speed(result: RunResult, model: GpuModel) -> str:
    m = result.measurements[0]
    return f"{model.source} b{m.batch_size}: {m.throughput_sps:.0f} samples/s"


# --------------------------------------------------------------------------- PyTorch


@pytest.fixture(scope="module")
def eager_run(onnx_model: GpuModel, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One eager run, long enough for its energy figures: the eager and energy paths both read it."""
    key = "energy" if selftest.interpreter_for("energy") is not None else "torch-eager"
    options = {"framework": "torch", "mode": "eager"}
    return run_runner(key, "torch", onnx_model, options, tmp_path_factory.mktemp("eager"), policy=ENERGY)


@pytest.mark.gpu("torch-eager")
def test_torch_eager_on_cuda(
    eager_run: RunResult, onnx_model: GpuModel, record_property: Callable[[str, object], None]
) -> None:
    text = agreement(eager_run)
    note = phase(eager_run, "compile").note or ""
    assert "mode=eager" in note and "device=cuda:0" in note, note
    assert eager_run.precision == "fp32"
    record_property("detail", f"{speed(eager_run, onnx_model)}, {text}")


@pytest.mark.gpu("torch-compile")
def test_torch_compile_on_cuda(
    onnx_model: GpuModel, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    options = {"framework": "torch", "mode": "compile"}
    result = run_runner("torch-compile", "torch", onnx_model, options, tmp_path, timeout_s=360)
    text = agreement(result)
    compiled = phase(result, "compile")
    assert "mode=compile" in (compiled.note or "") and "device=cuda:0" in (compiled.note or ""), compiled.note
    record_property("detail", f"{speed(result, onnx_model)}, compile phase {compiled.seconds:.0f} s, {text}")


@pytest.mark.gpu("torch-cudagraphs")
def test_torch_cuda_graphs_on_cuda(
    onnx_model: GpuModel, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    options = {"framework": "torch", "mode": "cudagraphs"}
    result = run_runner("torch-cudagraphs", "torch", onnx_model, options, tmp_path)
    text = agreement(result)
    note = phase(result, "compile").note or ""
    assert "mode=cudagraphs" in note and "device=cuda:0" in note, note
    record_property("detail", f"{speed(result, onnx_model)}, {text}")


# --------------------------------------------------------------------------- NVML and energy


@pytest.mark.gpu("nvml")
def test_nvml_tracker_on_a_real_gpu(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    from schemas import GpuTelemetry

    interp = selftest.interpreter_for("nvml")
    assert interp is not None
    out = tmp_path / "nvml.json"
    # By file, not `-m tests....`: a `tests` package installed in site-packages would shadow ours.
    cmd = [interp.executable, str(Path(__file__).with_name("gpu_nvml_probe.py")), "--out", str(out)]
    code = run_logged(cmd, interp.env(), tmp_path / "probe.log", timeout_s=120)
    assert code == 0 and out.exists(), (tmp_path / "probe.log").read_text()[-2000:]
    doc = json.loads(out.read_text())
    assert "error" not in doc, doc.get("error")
    t = GpuTelemetry.model_validate(doc["telemetry"])
    integrated = doc["integrated_j"]
    assert t.samples >= 50 and t.duration_s >= 5, f"{t.samples} samples over {t.duration_s:.1f} s"
    assert t.energy_source == "counter" and t.energy_j, (
        "no energy counter: nvmlDeviceGetTotalEnergyConsumption is not supported here"
    )
    assert integrated, "no power readings to integrate"
    gap = (t.energy_j - integrated) / t.energy_j
    assert abs(gap) <= 0.05, (
        f"energy counter {t.energy_j:.1f} J vs integrated power {integrated:.1f} J over the same "
        f"{t.duration_s:.1f} s: {gap:+.1%}"
    )
    assert t.idle_power_w and t.avg_power_w and t.avg_power_w > t.idle_power_w, (
        f"loaded {t.avg_power_w} W is not above idle {t.idle_power_w} W"
    )
    assert t.peak_process_mem_mb and t.peak_process_mem_mb >= 0.9 * doc["allocated_mb"], (
        f"process memory {t.peak_process_mem_mb} MB < the {doc['allocated_mb']:.0f} MB allocated"
    )
    assert t.peak_mem_used_mb and t.baseline_mem_used_mb is not None
    assert t.peak_mem_used_mb > t.baseline_mem_used_mb
    assert float(doc["device"].get("memory_total_mb", 0)) >= t.peak_mem_used_mb
    assert t.sm_clock_mhz_mean and t.sm_clock_mhz_min and t.sm_clock_mhz_min > 0
    assert t.temperature_c_max and t.temperature_c_max > 0
    assert doc["reasons_error"] is None, f"throttle reasons cannot be read: {doc['reasons_error']}"
    record_property(
        "detail",
        f"{doc['device'].get('name')}: {t.avg_power_w:.0f} W (idle {t.idle_power_w:.0f} W) over "
        f"{t.duration_s:.1f} s, counter {t.energy_j:.0f} J vs integrated {integrated:.0f} J ({gap:+.1%}), "
        f"process {t.peak_process_mem_mb:.0f} MB of {t.peak_mem_used_mb:.0f} MB used, "
        f"SM {t.sm_clock_mhz_mean:.0f} MHz, {t.temperature_c_max:.0f} C, "
        f"reasons 0x{doc['reasons_mask']:x} {t.throttle_reasons or '[]'}, {doc['tflops']:.0f} TFLOP/s fp16",
    )


@pytest.mark.gpu("energy")
def test_energy_per_4096_predictions_of_a_real_run(
    eager_run: RunResult, record_property: Callable[[str, object], None]
) -> None:
    require_ok(eager_run)
    m = eager_run.measurements[0]
    t = m.gpu
    assert t is not None, "the run recorded no NVML telemetry (nvidia-ml-py where the runner ran?)"
    assert t.energy_j and t.energy_j > 0 and m.energy_j_per_4096 and m.energy_j_per_4096 > 0, (
        f"no energy: {t.energy_j} J, {m.energy_j_per_4096} J per 4096"
    )
    assert m.energy_j_per_4096 == pytest.approx(t.energy_j / (m.batch_size * m.iterations) * 4096)
    assert t.avg_power_w and 5 < t.avg_power_w < 2000, f"implausible power {t.avg_power_w} W"
    assert eager_run.fingerprint is not None and eager_run.fingerprint.gpus, "the fingerprint names no GPU"
    net = f", net {m.energy_j_per_4096_net:.2f} J" if m.energy_j_per_4096_net is not None else ""
    record_property(
        "detail",
        f"{m.energy_j_per_4096:.2f} J per 4096 predictions{net} ({t.energy_source}, "
        f"{t.avg_power_w:.0f} W over {t.duration_s:.1f} s, idle {t.idle_power_w or 0:.0f} W, "
        f"{m.iterations} batches of {m.batch_size})",
    )


# --------------------------------------------------------------------------- TensorRT


@pytest.mark.gpu("tensorrt")
def test_tensorrt_engine_build_then_cache_hit_in_fp16(
    onnx_model: GpuModel, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    cache = tmp_path / "cache"
    options = {"framework": "tensorrt", "precision": "fp16"}
    first = run_runner("tensorrt", "trt10", onnx_model, options, tmp_path / "1", cache=cache, timeout_s=420)
    require_ok(first)
    built = phase(first, "compile")
    assert built.cache_hit is False, built.note
    assert list((cache / "tensorrt").glob("*.engine")), "no engine was written to the cache"
    second = run_runner("tensorrt", "trt10", onnx_model, options, tmp_path / "2", cache=cache)
    text = agreement(second, FP16_REL_ERR, FP16_TOP1)
    loaded = phase(second, "compile")
    assert loaded.cache_hit is True, loaded.note
    assert first.precision == second.precision == "fp16 (mixed)"
    record_property(
        "detail",
        f"engine built in {built.seconds:.0f} s, loaded from the cache in {loaded.seconds:.1f} s, "
        f"{speed(second, onnx_model)}, precision {second.precision}, {text}",
    )


# --------------------------------------------------------------------------- ONNX Runtime


@pytest.mark.gpu("ort-cuda")
def test_onnxruntime_cuda_provider_with_io_binding(
    onnx_model: GpuModel, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    options = {"framework": "onnxruntime", "provider": "cuda", "io_binding": True}
    result = run_runner("ort-cuda", "ort-gpu", onnx_model, options, tmp_path)
    text = agreement(result)
    note = phase(result, "compile").note or ""
    assert "providers=['CUDAExecutionProvider'" in note and "io_binding=True" in note, note
    record_property("detail", f"{speed(result, onnx_model)}, {text}")


@pytest.mark.gpu("ort-tensorrt")
def test_onnxruntime_tensorrt_provider_with_io_binding(
    onnx_model: GpuModel, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    options = {"framework": "onnxruntime", "provider": "tensorrt", "io_binding": True}
    result = run_runner("ort-tensorrt", "ort-gpu", onnx_model, options, tmp_path, timeout_s=420)
    text = agreement(result, FP16_REL_ERR, FP16_TOP1)
    note = phase(result, "compile").note or ""
    assert "providers=['TensorrtExecutionProvider'" in note and "io_binding=True" in note, note
    assert result.precision == "fp16 (mixed)"
    assert list((tmp_path / "cache" / "onnxruntime-trt").glob("*.engine")), (
        "no engine in the provider's cache"
    )
    record_property("detail", f"{speed(result, onnx_model)}, {text}")


# --------------------------------------------------------------------------- TensorFlow


@pytest.mark.gpu("tf-xla")
def test_tensorflow_on_gpu_with_xla(
    savedmodel_model: GpuModel, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    options = {"framework": "tensorflow", "xla": True}
    result = run_runner("tf-xla", "tf", savedmodel_model, options, tmp_path, timeout_s=360)
    text = agreement(result)
    note = phase(result, "compile").note or ""
    assert "xla=on" in note and "device=/GPU:0" in note, note
    record_property("detail", f"{speed(result, savedmodel_model)}, {text}")


# --------------------------------------------------------------------------- Docker


def _host_uuid() -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


@pytest.mark.gpu("docker-gpu")
def test_docker_gpu_device_request_passes_that_gpu_only(
    record_property: Callable[[str, object], None],
) -> None:
    """The launcher's own container settings for `--gpu 0`, run with `nvidia-smi -L` as the command:
    exactly one GPU inside, the host's GPU 0."""
    import docker

    from controller.launch.docker import DockerLauncher
    from controller.launch.identity import IMAGE_PREFIX
    from controller.paths import Paths

    client = docker.from_env(timeout=120)
    tags = sorted(
        tag
        for image in client.images.list()
        for tag in image.tags
        if tag.startswith(f"{IMAGE_PREFIX}/") and not tag.endswith(":stage-install")
    )
    preferred = [t for name in ("torch", "ort-gpu") for t in tags if t.startswith(f"{IMAGE_PREFIX}/{name}:")]
    if not tags:
        pytest.skip("no inference-bench image is built here (make base-image, or make images)")
    tag = (preferred or tags)[0]
    launcher = DockerLauncher(Paths.from_env(), client)
    kwargs = launcher._container_kwargs([], {}, "cuda:0", ["nvidia-smi", "-L"])
    (request,) = kwargs["device_requests"]
    assert request.device_ids == ["0"] and kwargs["environment"]["BENCH_CUDA_INDEX"] == "0"
    container = launcher._start(client.images.get(tag), kwargs)
    try:
        status = container.wait(timeout=120)
        said = container.logs().decode(errors="replace")
    finally:
        launcher._remove(container)
    gpus = [ln for ln in said.splitlines() if ln.startswith("GPU ")]
    assert status.get("StatusCode") == 0 and len(gpus) == 1, said
    uuid = _host_uuid()
    if uuid is not None:
        assert uuid in gpus[0], f"the container sees {gpus[0]}, not the host's GPU 0 ({uuid})"
    record_property("detail", f"{tag}: {gpus[0]}")
