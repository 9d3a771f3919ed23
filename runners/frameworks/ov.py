"""OpenVINO Runtime on the CPU."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from runners.base import Runner, Unsupported
from runners.core import cores
from runners.core.common import Inputs
from runners.core.shapes import ShapeKey, batch_shapes, shape_key, shapes_note
from schemas import OpenVinoOptions

PRECISION_NAMES = {
    "f32": "fp32",
    "bf16": "bf16",
    "f16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "float16": "fp16",
}


class OpenVinoRunner(Runner[OpenVinoOptions]):
    def import_framework(self) -> None:
        import openvino

        self.ov = openvino
        self.core = openvino.Core()

    def version(self) -> str:
        return str(self.ov.get_version()).split("-")[0]

    def read_model(self) -> None:
        self.model = self.core.read_model(str(self.model_path("onnx")))

    def _config(self) -> dict[str, Any]:
        o = self.options
        config: dict[str, Any] = {"PERFORMANCE_HINT": o.hint.upper()}
        if o.streams is not None:
            config["NUM_STREAMS"] = str(o.streams)
        config["INFERENCE_NUM_THREADS"] = o.threads or cores.given()
        if o.precision is not None:
            config["INFERENCE_PRECISION_HINT"] = o.precision
        return config

    def compile(self) -> tuple[bool | None, str | None]:
        ov, o = self.ov, self.options
        self._inputs = [t.name for t in self.manifest.inputs]
        self._perm = self._layout()
        hit: bool | None = None
        cache = self.cache_dir / "openvino"
        if o.cache:
            cache.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(cache)})
            before = {p.name for p in cache.iterdir()}
        # With dynamic shapes the CPU plugin redoes shape work on every call; a compiled model per
        # set of input shapes (all compiled here, inside the compile phase) is what serving code
        # would do.
        self.requests: dict[ShapeKey | None, Any] = {}
        # Throughput hint: a queue keeping the optimal number of requests busy, as a server would.
        self.queues: dict[ShapeKey | None, Any] = {}
        self._latencies: list[int] = []
        self._active: Any = None
        keys: list[ShapeKey | None] = (
            [*sorted(shape_key(s, self._inputs) for s in self.compile_shapes())]
            if o.static_shapes
            else [None]
        )
        for key in keys:
            model = self.model
            if key is not None:
                model = self.model.clone()
                model.reshape({n: self._fed(list(s)) for n, s in zip(self._inputs, key, strict=True)})
            self.compiled = self.core.compile_model(model, "CPU", self._config())
            self.requests[key] = self.compiled.create_infer_request()
            if self._n_requests() > 1:
                queue = ov.AsyncInferQueue(self.compiled, self._n_requests())
                queue.set_callback(self._done)
                self.queues[key] = queue
        self._outputs = self._output_order(self.compiled)
        if o.cache:
            # A miss writes a new blob; a hit only reads one.
            hit = not ({p.name for p in cache.iterdir()} - before) and bool(before)
        streams = self.compiled.get_property("NUM_STREAMS")
        threads = self.compiled.get_property("INFERENCE_NUM_THREADS")
        shapes = "static " + shapes_note([k for k in keys if k is not None]) if o.static_shapes else "dynamic"
        note = (
            f"hint={o.hint}, streams={streams}, threads={threads}, requests in flight={self._n_requests()}, "
            f"layout={o.layout or self.manifest.input_layout}, "
            f"shapes={shapes}"
        )
        return hit, note

    def _layout(self) -> tuple[int, ...] | None:
        """The axes permutation from the model's layout to the one fed (`layout`), set up as
        OpenVINO preprocessing; None when the model is fed as it is. Only for a model with one
        4-D image input: others have no layout to change."""
        ov, o = self.ov, self.options
        model_layout = self.manifest.input_layout
        if o.layout is None or model_layout is None or o.layout == model_layout:
            return None
        if len(self.manifest.inputs) != 1 or len(self.manifest.inputs[0].shape) != 4:
            raise Unsupported(f"layout={o.layout} applies to a model with one 4-D image input")
        ppp = ov.preprocess.PrePostProcessor(self.model)
        ppp.input().tensor().set_layout(ov.Layout(o.layout))
        ppp.input().model().set_layout(ov.Layout(model_layout))
        self.model = ppp.build()
        return (0, 3, 1, 2) if o.layout == "NCHW" else (0, 2, 3, 1)

    def _fed(self, shape: list[int]) -> list[int]:
        """An input's shape as fed to OpenVINO (the host's, in the fed layout)."""
        return shape if self._perm is None else [shape[i] for i in self._perm]

    def _output_order(self, compiled: Any) -> list[int]:
        """The index of each of the manifest's outputs among the compiled model's, by tensor name
        (OpenVINO's ONNX frontend keeps the graph's names)."""
        ports = [set(p.get_names()) for p in compiled.outputs]
        if len(ports) == 1 and len(self.manifest.outputs) == 1:
            return [0]
        order = []
        for t in self.manifest.outputs:
            found = [i for i, names in enumerate(ports) if t.name in names]
            if not found:
                known = ", ".join(sorted(n for names in ports for n in names))
                raise RuntimeError(f"the compiled model has no output {t.name!r} (it has {known})")
            order.append(found[0])
        return order

    def _done(self, request: Any, submitted_ns: int) -> None:
        self._latencies.append(time.perf_counter_ns() - submitted_ns)

    def _n_requests(self) -> int:
        """The throughput hint keeps the device's optimal number of requests in flight; the latency
        hint (and an ensemble member, which shares the device) runs one synchronous request."""
        if self.options.hint != "throughput" or self.spec.members:
            return 1
        return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def in_flight(self) -> int:
        return self._n_requests()

    def prepare(self, inputs: Inputs) -> Any:
        key = shape_key(batch_shapes(inputs), self._inputs) if self.options.static_shapes else None
        request = self.requests.get(key)
        if request is None:
            raise RuntimeError(f"no compiled model for input shapes {batch_shapes(inputs)}")
        fed = {
            n: np.ascontiguousarray(a if self._perm is None else a.transpose(self._perm))
            for n, a in inputs.items()
        }
        return request, self.queues.get(key), fed

    def run(self, prepared: Any) -> Any:
        # The inputs are handed over on every call (zero-copy), as an application would.
        request, _, fed = prepared
        return request.infer(fed, share_inputs=True, share_outputs=True)

    def start(self, prepared: Any) -> Any:
        _, queue, fed = prepared
        if queue is None:
            return self.run(prepared)
        self._active = queue
        # Waits for an idle request (at once while one is free, else until one completes: the
        # loop's pace is the completion rate); each request's latency, from submission to its
        # callback, excludes that wait.
        queue.get_idle_request_id()
        queue.start_async(fed, userdata=time.perf_counter_ns(), share_inputs=True)
        return None

    def finish(self) -> list[int] | None:
        if self._active is None:
            return None
        self._active.wait_all()
        latencies, self._latencies = self._latencies, []
        return latencies

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        # Shared outputs are the request's own buffers, which the next inference overwrites.
        return [np.array(outputs[i], copy=True) for i in self._outputs]

    def threads_used(self) -> int | None:
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def effective_precision(self) -> str:
        value = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        key = value.split("'")[1] if "'" in value else value
        return PRECISION_NAMES.get(key.lower(), key.lower())

    def close(self) -> None:
        for queue in getattr(self, "queues", {}).values():
            queue.wait_all()
        self.queues = {}
        self.requests = {}
        self.compiled = None
