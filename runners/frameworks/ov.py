"""OpenVINO Runtime on the CPU."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from runners.base import Runner
from runners.core import cores
from runners.core.common import Inputs
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
        model_layout = self.manifest.input_layout
        self._transpose = False
        if o.layout is not None and model_layout is not None and o.layout != model_layout:
            ppp = ov.preprocess.PrePostProcessor(self.model)
            ppp.input().tensor().set_layout(ov.Layout(o.layout))
            ppp.input().model().set_layout(ov.Layout(model_layout))
            self.model = ppp.build()
            self._transpose = True
        hit: bool | None = None
        cache = self.cache_dir / "openvino"
        if o.cache:
            cache.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(cache)})
            before = {p.name for p in cache.iterdir()}
        # With a dynamic batch the CPU plugin redoes shape work on every call; a compiled model per
        # batch size (all compiled here, inside the compile phase) is what serving code would do.
        self.requests: dict[int | None, Any] = {}
        # Throughput hint: a queue keeping the optimal number of requests busy, as a server would.
        self.queues: dict[int | None, Any] = {}
        self._latencies: list[int] = []
        self._active: Any = None
        sizes: list[int | None] = [*self.compile_batch_sizes()] if o.static_shapes else [None]
        for n in sizes:
            model = self.model
            if n is not None:
                model = self.model.clone()
                shape = model.input().get_partial_shape()
                shape[0] = n
                model.reshape({model.input().get_any_name(): shape})
            self.compiled = self.core.compile_model(model, "CPU", self._config())
            self.requests[n] = self.compiled.create_infer_request()
            if self._n_requests() > 1:
                queue = ov.AsyncInferQueue(self.compiled, self._n_requests())
                queue.set_callback(self._done)
                self.queues[n] = queue
        if o.cache:
            # A miss writes a new blob; a hit only reads one.
            hit = not ({p.name for p in cache.iterdir()} - before) and bool(before)
        streams = self.compiled.get_property("NUM_STREAMS")
        threads = self.compiled.get_property("INFERENCE_NUM_THREADS")
        note = (
            f"hint={o.hint}, streams={streams}, threads={threads}, requests in flight={self._n_requests()}, "
            f"layout={o.layout or model_layout}, "
            f"shapes={'static ' + str(sizes) if o.static_shapes else 'dynamic batch'}"
        )
        return hit, note

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
        batch = self.single(inputs)
        array = np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if self._transpose else batch)
        key = len(array) if self.options.static_shapes else None
        request = self.requests.get(key)
        if request is None:
            raise RuntimeError(f"no compiled model for batch {len(array)}")
        return request, self.queues.get(key), array

    def run(self, prepared: Any) -> Any:
        # The input is handed over on every call (zero-copy), as an application would.
        request, _, array = prepared
        return request.infer(array, share_inputs=True, share_outputs=True)[0]

    def start(self, prepared: Any) -> Any:
        _, queue, array = prepared
        if queue is None:
            return self.run(prepared)
        self._active = queue
        # Waits for an idle request (at once while one is free, else until one completes: the
        # loop's pace is the completion rate); each request's latency, from submission to its
        # callback, excludes that wait.
        queue.get_idle_request_id()
        queue.start_async(array, userdata=time.perf_counter_ns(), share_inputs=True)
        return None

    def finish(self) -> list[int] | None:
        if self._active is None:
            return None
        self._active.wait_all()
        latencies, self._latencies = self._latencies, []
        return latencies

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.array(outputs, copy=True)]

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
