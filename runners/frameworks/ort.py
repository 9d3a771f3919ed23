"""ONNX Runtime on the CPU execution provider."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

from runners.base import Runner
from schemas import OnnxRuntimeOptions

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    options: OnnxRuntimeOptions

    def import_framework(self) -> None:
        import onnxruntime

        self.ort = onnxruntime
        self.ort.set_default_logger_severity(3)

    def version(self) -> str:
        return str(self.ort.__version__)

    def read_model(self) -> None:
        self._onnx = self.model_path("onnx").read_bytes()

    def _cache_path(self) -> Path:
        """Optimized models are hardware- and version-specific: key on all of it."""
        o = self.options
        key = "|".join([
            self.manifest.files["onnx"].sha256, self.version(), o.graph_optimization,
            platform.machine(), platform.processor(), _cpu_model(),
        ])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / "onnxruntime" / f"{self.manifest.name}-{digest}.onnx"

    def compile(self) -> tuple[bool | None, str | None]:
        ort, o = self.ort, self.options
        so = ort.SessionOptions()
        so.intra_op_num_threads = o.intra_op_threads
        so.inter_op_num_threads = o.inter_op_threads
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if o.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[o.graph_optimization])
        hit: bool | None = None
        source: Any = self._onnx
        save_to: Path | None = None
        if o.cache and o.graph_optimization != "disable":
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
        self.session = ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])
        if save_to is not None:
            os.replace(so.optimized_model_filepath, save_to)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        del self._onnx
        note = f"level={o.graph_optimization}, providers={self.session.get_providers()}"
        return hit, note

    def run(self, prepared: Any) -> Any:
        return self.session.run([self._output], {self._input: prepared})[0]

    def effective_precision(self) -> str:
        return "fp32"

    def close(self) -> None:
        self.session = None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""

