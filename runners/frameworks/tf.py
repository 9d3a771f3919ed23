"""TensorFlow: the SavedModel served through a `tf.function`, optionally compiled by XLA.

XLA compiles one program per input shape, so the compile phase traces and compiles the function
for the reference batch and for every batch size of the spec: the warm-up then measures warm
code, and the compile phase holds all of XLA's cost (it has no persistent cache to consult).
"""

from __future__ import annotations

import os
from typing import Any

from probes import gpu
from runners.base import Runner, Unsupported
from runners.core import cores
from runners.core.common import Inputs
from schemas import ModelManifest, TensorflowOptions


def check_savedmodel(framework: str, manifest: ModelManifest) -> None:
    """Refuse, as unsupported, a model this runner cannot feed: it runs the SavedModel of a Keras
    export, with one float32 input. (Planning already refuses a model without a SavedModel
    before any process starts; this holds for a spec written by hand.)"""
    if "savedmodel" not in manifest.files:
        raise Unsupported(
            f"{framework} runs a TensorFlow SavedModel; model {manifest.name} has none "
            f"(it came from {manifest.source}): use an ONNX image (ort, openvino, iree, torch)"
        )
    if len(manifest.inputs) != 1 or manifest.inputs[0].dtype != "float32":
        inputs = ", ".join(f"{t.name} ({t.dtype})" for t in manifest.inputs)
        raise Unsupported(f"{framework} runs models of one float32 input; {manifest.name} has {inputs}")


class TensorflowRunner(Runner[TensorflowOptions]):
    devices = ("cpu", "cuda")

    def import_framework(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        # Before anything runs: TensorFlow fixes its thread pools when it first computes.
        tf.config.threading.set_intra_op_parallelism_threads(self.options.threads or cores.given())
        gpus = tf.config.list_physical_devices("GPU")
        if self.spec.device.startswith("cuda"):
            index = gpu.physical_index(self.spec.device)
            if index >= len(gpus):
                raise Unsupported(f"TensorFlow sees {len(gpus)} GPU(s); asked for {self.spec.device}")
            if self.options.memory_growth:
                for device in gpus:
                    tf.config.experimental.set_memory_growth(device, True)
            self._device = f"/GPU:{index}"
        else:
            self._device = "/CPU:0"

    def version(self) -> str:
        return str(self.tf.__version__)

    @property
    def xla(self) -> bool:
        if self.options.xla is None:
            return self.spec.device.startswith("cuda")
        return self.options.xla

    def read_model(self) -> None:
        check_savedmodel(self.name, self.manifest)
        with self.tf.device(self._device):
            self.loaded = self.tf.saved_model.load(str(self.model_path("savedmodel")))

    def compile(self) -> tuple[bool | None, str | None]:
        tf = self.tf
        endpoint = getattr(self.loaded, "serve", None) or self.loaded.signatures["serving_default"]

        def forward(x: Any) -> Any:
            out = endpoint(x)
            return next(iter(out.values())) if isinstance(out, dict) else out

        self.fn = tf.function(forward, jit_compile=self.xla, reduce_retracing=False)
        shapes = self.compile_batch_sizes()
        sample = [d for d in self.manifest.input_shape[1:]]
        with tf.device(self._device):
            for n in shapes:
                self.fn(tf.zeros([n, *sample], dtype=tf.float32))
        note = f"xla={'on' if self.xla else 'off'}, device={self._device}, traced+compiled for batch {shapes}"
        return None, note

    def prepare(self, inputs: Inputs) -> Any:
        return self.single(inputs)

    def run(self, prepared: Any) -> Any:
        with self.tf.device(self._device):
            return self.fn(prepared).numpy()

    def threads_used(self) -> int | None:
        return int(self.tf.config.threading.get_intra_op_parallelism_threads())

    def effective_precision(self) -> str:
        return "fp32"
