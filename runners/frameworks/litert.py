"""LiteRT (TensorFlow Lite's runtime) on the CPU with XNNPACK.

The model is converted from the SavedModel by TensorFlow's converter (in the litert image, which
pins it beside the runtime), in the compile phase, and cached: keyed by the SavedModel's digest,
TensorFlow's version and the precision option. One interpreter per batch size, each allocated in
the compile phase.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from typing import Any

import numpy as np

from runners.base import Runner
from runners.core import cores
from runners.core.common import Inputs
from runners.frameworks.tf import check_savedmodel
from schemas.atomic import write_atomic
from schemas.frameworks.litert import LiteRTOptions


class ConversionError(RuntimeError):
    """TensorFlow's converter refused the model; the message is the converter's reason."""


class LiteRTRunner(Runner[LiteRTOptions]):
    def import_framework(self) -> None:
        from ai_edge_litert import interpreter

        self.lite = interpreter

    def version(self) -> str:
        return metadata.version("ai-edge-litert")

    def read_model(self) -> None:
        check_savedmodel(self.name, self.manifest)
        self.saved_model = self.model_path("savedmodel")

    def _cache_key(self) -> str:
        payload = {
            "savedmodel": self.manifest.files["savedmodel"].sha256,
            "tensorflow": metadata.version("tensorflow-cpu"),
            "precision": self.options.precision,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]

    def _convert(self) -> bytes:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model))
        if self.options.precision != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.options.precision == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            flatbuffer: bytes = converter.convert()
        except Exception as e:  # the converter raises ConverterError and others, with its reason
            lines = [ln.strip() for ln in str(e).splitlines() if "error" in ln.lower()] or [str(e)]
            raise ConversionError(f"TensorFlow's converter failed: {' / '.join(lines[:3])}") from None
        return flatbuffer

    def compile(self) -> tuple[bool | None, str | None]:
        o = self.options
        path = self.cache_dir / "litert" / f"{self._cache_key()}.tflite"
        hit: bool | None = None
        if o.cache and path.exists():
            hit = True
        else:
            flatbuffer = self._convert()
            if o.cache:
                hit = False
                path.parent.mkdir(parents=True, exist_ok=True)
            else:
                path = self.cache_dir / "litert" / f".uncached-{os.getpid()}.tflite"
                path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, flatbuffer)
        self.threads = o.threads or cores.given()
        resolver = (
            self.lite.OpResolverType.AUTO
            if o.xnnpack
            else self.lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.interpreters: dict[int, Any] = {}
        for n in self.compile_batch_sizes():
            it = self.lite.Interpreter(
                model_path=str(path), num_threads=self.threads, experimental_op_resolver_type=resolver
            )
            inp = it.get_input_details()[0]
            it.resize_tensor_input(inp["index"], [n, *inp["shape"][1:]])
            it.allocate_tensors()
            self.interpreters[n] = it
        if not o.cache:
            path.unlink(missing_ok=True)  # the interpreters hold the model in memory
        first = self.interpreters[min(self.interpreters)]
        self._input = first.get_input_details()[0]["index"]
        self._output = first.get_output_details()[0]["index"]
        ops = [op["op_name"] for op in first._get_ops_details()]
        self.delegated = ops.count("DELEGATE")
        self.weight_types = {str(np.dtype(t["dtype"])) for t in first.get_tensor_details()}
        note = (
            f"precision={o.precision}, xnnpack={'on' if o.xnnpack else 'off'} "
            f"({self.delegated} delegated partition(s), {len(ops) - self.delegated} ops left), "
            f"threads={self.threads}, one interpreter per batch size {sorted(self.interpreters)}"
        )
        return hit, note

    def prepare(self, inputs: Inputs) -> Any:
        batch = self.single(inputs)
        it = self.interpreters.get(len(batch))
        if it is None:
            raise RuntimeError(f"no interpreter for batch {len(batch)}")
        return it, np.ascontiguousarray(batch, dtype=np.float32)

    def run(self, prepared: Any) -> Any:
        # Input copied in and output copied out on every call, as an application would.
        it, array = prepared
        it.set_tensor(self._input, array)
        it.invoke()
        return it.get_tensor(self._output)

    def threads_used(self) -> int | None:
        return self.threads

    def effective_precision(self) -> str:
        """What the kernels compute in: fp16 weights are dequantized to fp32 when the model is
        prepared (XNNPACK on x86 computes fp32); dynamic-range int8 runs int8 kernels on
        activations quantized at run time."""
        if "int8" in self.weight_types:
            return "int8-dynamic"
        if "float16" in self.weight_types:
            return "fp32 (fp16 weights)"
        return "fp32"

    def close(self) -> None:
        self.interpreters = {}
