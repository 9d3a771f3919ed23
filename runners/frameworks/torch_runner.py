"""PyTorch: the ONNX artifact converted to a `torch.nn.Module` by onnx2torch.

Modes: eager; `torch.compile` (compiled for each batch size during the compile phase, static
shapes, so the steady state runs compiled code); CUDA graphs (GPU only: one graph captured per
batch size, replayed with static input and output buffers). Inputs start on the host and
outputs end there, so host-device copies are inside the timed call, as an application sees it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probes import gpu
from runners.base import Runner, Unsupported
from runners.core import cores
from runners.core.common import Inputs
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

    def compile(self) -> tuple[bool | None, str | None]:
        torch, o = self.torch, self.options
        module = self.onnx2torch.convert(self._onnx).eval()
        del self._onnx
        module = module.to(self.device, dtype=self.dtype)
        if o.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.forward = module
        self.graphs: dict[int, tuple[Any, Any, Any]] = {}
        sample = [int(d) for d in self.manifest.input_shape[1:] if d is not None]
        shapes = self.compile_batch_sizes()
        if o.mode == "compile":
            self.forward = torch.compile(module, mode=o.compile_mode, dynamic=False)
        if o.mode in ("compile", "cudagraphs"):
            # Compile (or capture) for every shape now, so the compile phase holds that cost.
            for n in shapes:
                x = torch.zeros([n, *sample], device=self.device, dtype=self.dtype)
                if o.mode == "compile":
                    with torch.inference_mode():
                        self.forward(x)
                else:
                    self._capture(x)
            self._sync()
        note = (
            f"mode={o.mode}"
            + (f" ({o.compile_mode})" if o.mode == "compile" else "")
            + f", device={self.device}, dtype={o.precision}, shapes={shapes}"
        )
        return None, note

    def _capture(self, x: Any) -> None:
        torch = self.torch
        static_in = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm the allocator and cuDNN's choices outside the capture
                self.module(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self.module(static_in)
        self.graphs[len(x)] = (graph, static_in, static_out)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def prepare(self, inputs: Inputs) -> Any:
        batch = self.single(inputs)
        x = self.torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x

    def run(self, prepared: Any) -> Any:
        torch = self.torch
        with torch.inference_mode():
            x = prepared.to(self.device, dtype=self.dtype, non_blocking=True)
            if self.options.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            entry = self.graphs.get(len(x))
            if entry is not None:
                graph, static_in, static_out = entry
                static_in.copy_(x)
                graph.replay()
                y = static_out
            else:
                y = self.forward(x)
            return y.float().cpu()  # .cpu() waits for the device: the call ends when outputs are on the host

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        return [np.asarray(outputs.numpy())]

    def threads_used(self) -> int | None:
        return int(self.torch.get_num_threads())

    def effective_precision(self) -> str:
        return self.options.precision

    def close(self) -> None:
        self.graphs = {}
        self.module = self.forward = None
