"""PyTorch: the ONNX artifact converted to a `torch.nn.Module` by onnx2torch.

The module takes the graph's inputs in the graph's order and returns its outputs in the graph's
order. Modes: eager; `torch.compile` (compiled for each set of input shapes during the compile
phase, static shapes, so the steady state runs compiled code); CUDA graphs (GPU only: one graph
captured per set of input shapes, replayed with static input and output buffers). Inputs start
on the host and outputs end there, so host-device copies are inside the timed call, as an
application sees it. The precision (fp32, fp16, bf16) applies to float weights, inputs and
outputs; integer inputs (token ids, masks) stay integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probes import gpu
from runners.base import Runner, Unsupported
from runners.core import cores
from runners.core.common import Inputs, input_batch
from runners.core.shapes import ShapeKey, shape_dims, shape_key, shapes_note
from schemas import TorchOptions

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchRunner(Runner[TorchOptions]):
    devices = ("cpu", "cuda")

    def check_device(self) -> None:
        super().check_device()
        if self.options.mode == "cudagraphs" and not self.spec.device.startswith("cuda"):
            raise Unsupported("CUDA graphs need a GPU: run with --gpu N, or --set mode=eager|compile")

    def import_framework(self) -> None:
        import onnx
        import onnx2torch
        import torch

        self.torch, self.onnx, self.onnx2torch = torch, onnx, onnx2torch
        torch.set_num_threads(self.options.threads or cores.given())
        if self.spec.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise Unsupported("PyTorch sees no CUDA device here")
            index = gpu.physical_index(self.spec.device)
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.dtype = getattr(torch, DTYPES[self.options.precision])

    def version(self) -> str:
        return str(self.torch.__version__)

    def read_model(self) -> None:
        self._onnx = self.onnx.load(str(self.model_path("onnx")))
        self._order, self._outputs = self.onnx_io(self._onnx.graph)

    def compile(self) -> tuple[bool | None, str | None]:
        torch, o = self.torch, self.options
        module = self.onnx2torch.convert(self._onnx).eval()
        del self._onnx
        module = module.to(self.device, dtype=self.dtype)  # float weights only: integer ones stay
        if o.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.forward = module
        self.graphs: dict[ShapeKey, tuple[Any, list[Any], Any]] = {}
        shapes = sorted(shape_key(one, self._order) for one in self.compile_shapes())
        if o.mode == "compile":
            self.forward = torch.compile(module, mode=o.compile_mode, dynamic=False)
        if o.mode in ("compile", "cudagraphs"):
            # Compile (or capture) for every set of shapes now, so the compile phase holds that
            # cost; on samples made by the model's input rules (valid token ids, masks of ones).
            for one in self.compile_shapes():
                batch, dims = shape_dims(self.manifest, one)
                xs = self._on_device(self.prepare(input_batch(self.manifest, batch, dims)))
                if o.mode == "compile":
                    with torch.inference_mode():
                        self.forward(*xs)
                else:
                    self._capture(xs)
            self._sync()
        note = (
            f"mode={o.mode}"
            + (f" ({o.compile_mode})" if o.mode == "compile" else "")
            + f", device={self.device}, dtype={o.precision}, shapes={shapes_note(shapes)}"
        )
        return None, note

    def _capture(self, xs: list[Any]) -> None:
        torch = self.torch
        static_in = [x.clone() for x in xs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm the allocator and cuDNN's choices outside the capture
                self.module(*static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self.module(*static_in)
        self.graphs[_key(static_in)] = (graph, static_in, static_out)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def prepare(self, inputs: Inputs) -> Any:
        xs = [self.torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self._order]
        if self.device.type == "cuda":
            xs = [x.pin_memory() for x in xs]
        return xs

    def _on_device(self, xs: list[Any]) -> list[Any]:
        """Host tensors on the device: float ones in the run's dtype (and channels-last when
        asked, for image batches), integer ones as they are."""
        torch = self.torch
        moved = []
        for x in xs:
            if x.is_floating_point():
                x = x.to(self.device, dtype=self.dtype, non_blocking=True)
                if self.options.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = x.to(self.device, non_blocking=True)
            moved.append(x)
        return moved

    def run(self, prepared: Any) -> Any:
        with self.torch.inference_mode():
            xs = self._on_device(prepared)
            entry = self.graphs.get(_key(xs))
            if entry is not None:
                graph, static_in, static_out = entry
                for buffer, x in zip(static_in, xs, strict=True):
                    buffer.copy_(x)
                graph.replay()
                y = static_out
            else:
                y = self.forward(*xs)
            ys = y if isinstance(y, list | tuple) else [y]
            # .cpu() waits for the device: the call ends when the outputs are on the host. Float
            # outputs come back as float32 (NumPy has no bfloat16).
            return [ys[i].float().cpu() if ys[i].is_floating_point() else ys[i].cpu() for i in self._outputs]

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.asarray(o.numpy()) for o in outputs]

    def threads_used(self) -> int | None:
        return int(self.torch.get_num_threads())

    def effective_precision(self) -> str:
        return self.options.precision

    def close(self) -> None:
        self.graphs = {}
        self.module = self.forward = None


def _key(xs: list[Any]) -> ShapeKey:
    """The shapes of the module's inputs, as `shape_key` orders them (the graph's order)."""
    return tuple(tuple(int(d) for d in x.shape) for x in xs)
