"""ONNX Runtime: CPU, CUDA and TensorRT execution providers.

CPU: the optimized model is cached (keyed by model, version, level and CPU). TensorRT provider:
its engine cache. CUDA provider: optional I/O binding keeps inputs and outputs on the device.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

from probes import gpu
from probes.fingerprint import cpu_model
from runners.base import Runner, Unsupported
from runners.core import cores
from runners.core.common import Inputs
from schemas import OnnxRuntimeOptions
from schemas.atomic import publish_atomic

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeRunner(Runner[OnnxRuntimeOptions]):
    devices = ("cpu", "cuda")

    @property
    def provider(self) -> str:
        if self.options.provider is not None:
            return self.options.provider
        return "cuda" if self.spec.device.startswith("cuda") else "cpu"

    def check_device(self) -> None:
        super().check_device()
        on_gpu = self.spec.device.startswith("cuda")
        if on_gpu != (self.provider != "cpu"):
            raise Unsupported(f"provider {self.provider} does not run on {self.spec.device}")

    def import_framework(self) -> None:
        import onnxruntime

        self.ort = onnxruntime
        self.ort.set_default_logger_severity(3)
        available = onnxruntime.get_available_providers()
        if PROVIDERS[self.provider] not in available:
            raise Unsupported(
                f"this onnxruntime build has no {PROVIDERS[self.provider]} "
                f"(available: {', '.join(available)}); use the ort-gpu image"
            )
        self.device_id = gpu.physical_index(self.spec.device) if self.spec.device != "cpu" else 0

    def version(self) -> str:
        return str(self.ort.__version__)

    def read_model(self) -> None:
        self._onnx = self.model_path("onnx").read_bytes()

    def _cache_path(self) -> Path:
        """Optimized models are hardware- and version-specific: key on all of it."""
        o = self.options
        key = "|".join(
            [
                self.manifest.files["onnx"].sha256,
                self.version(),
                o.graph_optimization,
                platform.machine(),
                platform.processor(),
                cpu_model(),
            ]
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / "onnxruntime" / f"{self.manifest.name}-{digest}.onnx"

    def compile(self) -> tuple[bool | None, str | None]:
        ort, o = self.ort, self.options
        so = ort.SessionOptions()
        self._threads = o.intra_op_threads or cores.given()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = o.inter_op_threads
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if o.execution_mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[o.graph_optimization])
        hit: bool | None = None
        source: Any = self._onnx
        save_to: Path | None = None
        providers, hit_gpu = self._providers()
        if self.provider != "cpu":
            hit = hit_gpu
        elif o.cache and o.graph_optimization != "disable":
            path = self._cache_path()
            if path.exists():
                hit, source = True, str(path)
                # Already optimized at the requested level; do not pay for it again.
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                hit, save_to = False, path
                path.parent.mkdir(parents=True, exist_ok=True)
                # Written under a temporary name, then renamed: a concurrent run never reads half a file.
                so.optimized_model_filepath = f"{path}.{os.getpid()}.tmp"
        self.session = ort.InferenceSession(source, sess_options=so, providers=providers)
        used = self.session.get_providers()[0]
        if used != PROVIDERS[self.provider]:
            raise Unsupported(f"onnxruntime fell back to {used} instead of {PROVIDERS[self.provider]}")
        if save_to is not None:
            publish_atomic(so.optimized_model_filepath, save_to)
        self._outputs = [o.name for o in self.session.get_outputs()]
        del self._onnx
        note = (
            f"level={o.graph_optimization}, providers={self.session.get_providers()}, "
            f"io_binding={o.io_binding and self.provider != 'cpu'}"
        )
        return hit, note

    def threads_used(self) -> int | None:
        return self._threads

    def _providers(self) -> tuple[list[Any], bool | None]:
        """Provider list with options, and whether the TensorRT engine cache already had engines."""
        o = self.options
        if self.provider == "cpu":
            return ["CPUExecutionProvider"], None
        cuda = (
            "CUDAExecutionProvider",
            {"device_id": self.device_id, "cudnn_conv_algo_search": o.cudnn_conv_algo_search.upper()},
        )
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"], None
        cache = self.cache_dir / "onnxruntime-trt"
        hit = None
        trt_opts: dict[str, Any] = {"device_id": self.device_id, "trt_fp16_enable": o.trt_fp16}
        if o.cache:
            cache.mkdir(parents=True, exist_ok=True)
            hit = any(cache.glob("*.engine"))
            trt_opts.update(
                {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(cache),
                }
            )
        return [("TensorrtExecutionProvider", trt_opts), cuda, "CPUExecutionProvider"], hit

    def prepare(self, batch: Inputs) -> Any:
        if not (self.options.io_binding and self.provider != "cpu"):
            return batch
        ort = self.ort
        binding = self.session.io_binding()
        values = []
        for name, array in batch.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)
            binding.bind_ortvalue_input(name, value)
            values.append(value)  # kept alive as long as the binding is used
        for name in self._outputs:
            binding.bind_output(name, "cuda", self.device_id)
        return (binding, values)

    def run(self, prepared: Any) -> Any:
        if isinstance(prepared, tuple):
            binding = prepared[0]
            self.session.run_with_iobinding(binding)
            return binding
        return self.session.run(self._outputs, prepared)

    def to_numpy(self, outputs: Any) -> list[Any]:
        if hasattr(outputs, "copy_outputs_to_cpu"):
            return list(outputs.copy_outputs_to_cpu())
        return list(outputs)

    def effective_precision(self) -> str:
        if self.provider == "tensorrt" and self.options.trt_fp16:
            return "fp16 (mixed)"
        return "fp32"

    def close(self) -> None:
        self.session = None
