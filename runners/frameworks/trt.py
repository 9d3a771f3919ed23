"""TensorRT (8.6 and 10.x): an engine built from the ONNX artifact, run on one CUDA stream.

Done the way TensorRT's documentation recommends, and unlike the reference study: one execution
context reused for every batch size (an optimization profile covers them all), pinned host
buffers with asynchronous copies on one stream, FP16 enabled by default, optional CUDA graphs,
and the serialized engine cached under a key of everything that makes an engine valid.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from probes import gpu
from runners.base import Runner, Unsupported
from runners.core.common import Inputs
from schemas import TensorRTOptions
from schemas.atomic import write_atomic
from schemas.devices import nvidia_gpu_present


def engine_cache_key(
    onnx_sha256: str,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    options: dict[str, Any],
    profile: dict[str, list[int]],
) -> str:
    """Digest of everything an engine depends on; any change means a new engine."""
    material = {
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
        "options": {k: options[k] for k in sorted(options) if k not in ("cache", "cuda_graph")},
        "profile": profile,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def profile_shapes(
    sample_shape: list[int], batch_sizes: list[int], reference_batch: int, opt_batch: int | None
) -> dict[str, list[int]]:
    """One optimization profile covering the spec's batch sizes and the reference batch."""
    sizes = sorted({*batch_sizes, reference_batch})
    opt = opt_batch or max(batch_sizes)
    return {"min": [sizes[0], *sample_shape], "opt": [opt, *sample_shape], "max": [sizes[-1], *sample_shape]}


class _Cuda:
    """The few CUDA runtime calls needed, through cuda-python (cuda.bindings or the older cuda)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found]
        self.rt = cudart

    def check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.rt.cudaGetErrorName(err)
            raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else rest


class TensorRTRunner(Runner[TensorRTOptions]):
    devices = ("cuda",)

    def check_device(self) -> None:
        if not self.spec.device.startswith("cuda"):
            raise Unsupported("TensorRT needs an NVIDIA GPU: run with --gpu N")
        if not nvidia_gpu_present():
            raise Unsupported("TensorRT needs an NVIDIA GPU; this machine has none (no /dev/nvidia* devices)")
        if self.options.precision == "int8" and not self.options.calibration:
            raise Unsupported(
                "int8 needs calibration data: --set calibration=FILE.npy "
                "(representative inputs in the model's input shape)"
            )

    def import_framework(self) -> None:
        import tensorrt

        self.trt = tensorrt
        self.cuda = _Cuda()
        count = self.cuda.rt.cudaGetDeviceCount()
        if int(count[0]) != 0 or count[1] == 0:
            raise Unsupported("no CUDA device is usable here (cudaGetDeviceCount failed or found none)")
        self.index = gpu.physical_index(self.spec.device)
        self.cuda.check(self.cuda.rt.cudaSetDevice(self.index))
        self.logger = tensorrt.Logger(tensorrt.Logger.WARNING)

    def version(self) -> str:
        return str(self.trt.__version__)

    def read_model(self) -> None:
        self._onnx = self.model_path("onnx").read_bytes()

    def _gpu(self) -> tuple[str, str]:
        props = self.cuda.check(self.cuda.rt.cudaGetDeviceProperties(self.index))
        name = (
            props.name.decode(errors="replace").rstrip("\0")
            if isinstance(props.name, bytes)
            else str(props.name)
        )
        return name, f"{props.major}.{props.minor}"

    def compile(self) -> tuple[bool | None, str | None]:
        trt, o = self.trt, self.options
        sample = [int(d) for d in self.manifest.input_shape[1:] if d is not None]
        ref_n = len(np.load(self.model_path("reference_input"), mmap_mode="r"))
        profile = profile_shapes(sample, list(self.spec.batch_sizes), ref_n, o.opt_batch)
        gpu_name, cc = self._gpu()
        key = engine_cache_key(
            self.manifest.files["onnx"].sha256, self.version(), gpu_name, cc, o.model_dump(), profile
        )
        path = self.cache_dir / "tensorrt" / f"{self.manifest.name}-{key[:24]}.engine"
        runtime = trt.Runtime(self.logger)
        hit: bool | None = None
        t0 = time.perf_counter()
        if o.cache and path.exists():
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            hit = engine is not None
        else:
            engine = None
        if engine is None:
            serialized = self._build(profile)
            if o.cache:
                hit = False
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, bytes(serialized))
            engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine")
        self.engine = engine
        self.context = engine.create_execution_context()
        self._allocate(profile)
        how = "deserialized cached engine" if hit else "built engine"
        note = (
            f"{how} in {time.perf_counter() - t0:.2f}s; precision={o.precision}, profile={profile}, "
            f"gpu={gpu_name} (sm {cc}), key={key[:12]}, cuda_graph={o.cuda_graph}"
        )
        del self._onnx
        return hit, note

    def _build(self, profile: dict[str, list[int]]) -> bytes:
        trt, o = self.trt, self.options
        builder = trt.Builder(self.logger)
        explicit = 0
        if (
            hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
            and int(self.version().split(".")[0]) < 10
        ):
            explicit = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(explicit)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self._onnx):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT's ONNX parser failed: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, o.workspace_mb << 20)
        if o.builder_optimization_level is not None:
            config.builder_optimization_level = o.builder_optimization_level
        if o.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if o.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _calibrator(trt, self.cuda, Path(o.calibration or ""), self.cache_dir)
        opt_profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        opt_profile.set_shape(name, profile["min"], profile["opt"], profile["max"])
        config.add_optimization_profile(opt_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT engine build failed (see the runner log)")
        return bytes(serialized)

    def _allocate(self, profile: dict[str, list[int]]) -> None:
        """Device and pinned host buffers sized for the largest batch; one stream."""
        trt, cuda = self.trt, self.cuda
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        max_n = profile["max"][0]
        self.sample_in = int(np.prod(profile["max"][1:]))
        out_shape = [int(d) for d in self.manifest.output_shape[1:] if isinstance(d, int)]
        self.sample_out = int(np.prod(out_shape))
        self.out_shape = out_shape
        self.stream = cuda.check(cuda.rt.cudaStreamCreate())
        nbytes_in, nbytes_out = max_n * self.sample_in * 4, max_n * self.sample_out * 4
        self.d_in = cuda.check(cuda.rt.cudaMalloc(nbytes_in))
        self.d_out = cuda.check(cuda.rt.cudaMalloc(nbytes_out))
        self.h_in_ptr = cuda.check(cuda.rt.cudaMallocHost(nbytes_in))
        self.h_out_ptr = cuda.check(cuda.rt.cudaMallocHost(nbytes_out))
        self.h_in = np.ctypeslib.as_array((ctypes.c_float * (nbytes_in // 4)).from_address(self.h_in_ptr))
        self.h_out = np.ctypeslib.as_array((ctypes.c_float * (nbytes_out // 4)).from_address(self.h_out_ptr))
        self.context.set_tensor_address(self.input_name, self.d_in)
        self.context.set_tensor_address(self.output_name, self.d_out)
        self.graphs: dict[int, Any] = {}

    def prepare(self, inputs: Inputs) -> Any:
        """Copy into pinned memory and set the shape (not timed); capture a CUDA graph if asked."""
        batch = self.single(inputs)
        n = len(batch)
        self.h_in[: n * self.sample_in] = batch.reshape(-1)
        self.context.set_input_shape(self.input_name, list(batch.shape))
        if self.options.cuda_graph and n not in self.graphs:
            self._enqueue(n)  # an uncaptured run first lets TensorRT finish its lazy allocations
            self.cuda.check(self.cuda.rt.cudaStreamSynchronize(self.stream))
            rt = self.cuda.rt
            self.cuda.check(
                rt.cudaStreamBeginCapture(
                    self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
                )
            )
            self._enqueue(n)
            graph = self.cuda.check(rt.cudaStreamEndCapture(self.stream))
            self.graphs[n] = self.cuda.check(rt.cudaGraphInstantiate(graph, 0))
        return n

    def _enqueue(self, n: int) -> None:
        rt = self.cuda.rt
        rt.cudaMemcpyAsync(
            self.d_in,
            self.h_in_ptr,
            n * self.sample_in * 4,
            rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            self.stream,
        )
        self.context.execute_async_v3(int(self.stream))
        rt.cudaMemcpyAsync(
            self.h_out_ptr,
            self.d_out,
            n * self.sample_out * 4,
            rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            self.stream,
        )

    def run(self, prepared: Any) -> Any:
        n = prepared
        graph = self.graphs.get(n)
        if graph is not None:
            self.cuda.rt.cudaGraphLaunch(graph, self.stream)
        else:
            self._enqueue(n)
        self.cuda.check(self.cuda.rt.cudaStreamSynchronize(self.stream))
        return n

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        n = outputs
        return [np.array(self.h_out[: n * self.sample_out]).reshape(n, *self.out_shape)]

    def effective_precision(self) -> str:
        return {"fp32": "fp32", "fp16": "fp16 (mixed)", "int8": "int8 (mixed)"}[self.options.precision]

    def close(self) -> None:
        cuda = getattr(self, "cuda", None)
        if cuda is None or not hasattr(self, "stream"):
            return
        rt = cuda.rt
        for ptr in (self.d_in, self.d_out):
            rt.cudaFree(ptr)
        for ptr in (self.h_in_ptr, self.h_out_ptr):
            rt.cudaFreeHost(ptr)
        rt.cudaStreamDestroy(self.stream)


def _calibrator(trt: Any, cuda: _Cuda, data: Path, cache_dir: Path) -> Any:
    """Entropy calibrator over a .npy file of representative inputs (N, *input shape)."""
    if not data.is_file():
        raise Unsupported(f"calibration data {data} not found (it must be visible to the runner)")
    batches = np.load(data).astype(np.float32)

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.i, self.n = 0, min(8, len(batches))
            self.dev = cuda.check(cuda.rt.cudaMalloc(self.n * batches[0].size * 4))
            self.cache = (
                cache_dir / "tensorrt" / f"calib-{hashlib.sha256(batches.tobytes()).hexdigest()[:16]}"
            )

        def get_batch_size(self) -> int:
            return self.n

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i + self.n > len(batches):
                return None
            chunk = np.ascontiguousarray(batches[self.i : self.i + self.n])
            cuda.check(
                cuda.rt.cudaMemcpy(
                    self.dev, chunk.ctypes.data, chunk.nbytes, cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
                )
            )
            self.i += self.n
            return [int(self.dev)]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache.read_bytes() if self.cache.exists() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.cache, bytes(cache))

    return Calibrator()
