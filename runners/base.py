"""The small class every framework implements. The harness (runners/harness.py) drives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

import numpy as np

from runners.core.common import Inputs
from schemas import FrameworkOptions, ModelManifest, RunSpec

OptionsT = TypeVar("OptionsT", bound=FrameworkOptions)


class Unsupported(Exception):
    """The runner cannot do what the spec asks on this machine (device, precision, operator)."""


class Runner(Generic[OptionsT]):
    """One framework, configured by its options model `OptionsT` (which names this class).
    Phases are called in order: import_framework, read_model, compile, then
    prepare/run pairs (first inference, reference batch, warm-up, steady state), then close."""

    options_model: ClassVar[type[FrameworkOptions]]
    name: ClassVar[str]  # the framework's name, from its options model
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Runner:
                (model,) = get_args(base)
                if isinstance(model, type) and issubclass(model, FrameworkOptions):
                    cls.options_model = model
                    cls.name = model.framework_name()

    def __init__(self, spec: RunSpec, manifest: ModelManifest, model_dir: Path, cache_dir: Path) -> None:
        self.spec = spec
        if not isinstance(spec.options, self.options_model):
            raise TypeError(
                f"{type(self).__name__} takes {self.options_model.__name__}, not {spec.options!r}"
            )
        self.options = cast(OptionsT, spec.options)
        self.manifest = manifest
        self.model_dir = model_dir
        self.cache_dir = cache_dir

    def check_device(self) -> None:
        """Raise `Unsupported` when the spec's device is not one this runner can use."""
        kind = self.spec.device.split(":")[0]
        if kind not in self.devices:
            raise Unsupported(
                f"{self.name} runs on {', '.join(self.devices)} only; asked for {self.spec.device}"
            )

    def import_framework(self) -> None:
        """Import the framework's modules (timed as the import phase)."""

    def version(self) -> str:
        raise NotImplementedError

    def read_model(self) -> None:
        """Read the model artifact from the store."""
        raise NotImplementedError

    def compile(self) -> tuple[bool | None, str | None]:
        """Optimize/compile for the device. Returns (cache hit or None if no cache, note)."""
        raise NotImplementedError

    def prepare(self, batch: Inputs) -> Any:
        """Turn a host batch (input name -> array, in the model's layout and dtypes) into what
        `run` takes; not timed."""
        return batch

    def run(self, prepared: Any) -> Any:
        """One inference, end to end as an application sees it. Timed."""
        raise NotImplementedError

    def single(self, batch: Inputs) -> np.ndarray:
        """The array of a one-input model's batch; `Unsupported` for a model with several."""
        if len(batch) != 1:
            raise Unsupported(
                f"{self.name} runs models with one input; {self.manifest.name} has {len(batch)}"
            )
        (array,) = batch.values()
        return array

    def to_numpy(self, outputs: Any) -> list[np.ndarray]:
        """Outputs of `run` as host arrays, in the manifest's output order (for the accuracy
        checks only)."""
        if isinstance(outputs, list | tuple):
            return [np.asarray(o) for o in outputs]
        return [np.asarray(outputs)]

    def start(self, prepared: Any) -> Any:
        """One call of the warm-up and steady-state loops. Synchronous runners run the inference;
        asynchronous ones submit it and return once a request slot is free."""
        return self.run(prepared)

    def finish(self) -> list[int] | None:
        """Wait for the requests in flight; their latencies (ns) since the last finish, or None."""
        return None

    def in_flight(self) -> int:
        """Requests kept in flight by `start` (1: synchronous)."""
        return 1

    def threads_used(self) -> int | None:
        """Threads the framework computes with, as it reports them after compiling (None: it
        does not say)."""
        return None

    def effective_precision(self) -> str:
        """The precision the framework really computes in (fp32, bf16, fp16, ...)."""
        return "fp32"

    def close(self) -> None:
        """Release framework resources."""

    def compile_batch_sizes(self) -> list[int]:
        """Every batch size the run feeds: the reference batch and the spec's."""
        return sorted({self.reference_samples(), *self.spec.batch_sizes})

    def compile_shapes(self) -> list[dict[str, list[int]]]:
        """Every set of input shapes the run feeds (input name -> shape): the reference batch at
        the manifest's dimensions (and the user's data, when the model has some), and each batch
        size at the spec's. Runners that compile per shape compile all of them in the compile
        phase."""
        ref = self.reference_samples()
        wanted = [(ref, self.manifest.dims)] + [(b, self.run_dims) for b in self.spec.batch_sizes]
        shapes: list[dict[str, list[int]]] = []
        for bs, dims in wanted:
            one = {t.name: t.concrete(bs, dims) for t in self.manifest.inputs}
            if one not in shapes:
                shapes.append(one)
        return shapes

    def onnx_io(self, graph: Any) -> tuple[list[str], list[int]]:
        """An ONNX graph's inputs (its weights left out) in the graph's order, which a compiled
        function takes them in, and for each manifest output its index among the graph's."""
        weights = {i.name for i in graph.initializer}
        order = [i.name for i in graph.input if i.name not in weights]
        if sorted(order) != sorted(t.name for t in self.manifest.inputs):
            raise RuntimeError(f"the ONNX graph's inputs {order} are not the manifest's")
        outputs = [o.name for o in graph.output]
        if len(outputs) == 1 and len(self.manifest.outputs) == 1:
            return order, [0]
        absent = [t.name for t in self.manifest.outputs if t.name not in outputs]
        if absent:
            raise RuntimeError(f"the ONNX graph has no output {absent[0]!r} (it has {outputs})")
        return order, [outputs.index(t.name) for t in self.manifest.outputs]

    def dims_of(self, batch: Inputs) -> dict[str, int]:
        """The value of each named dimension in this batch (the reference batch has the
        manifest's, a steady-state batch the spec's)."""
        found = dict(self.run_dims)
        for t in self.manifest.inputs:
            array = batch.get(t.name)
            if array is not None:
                found.update(
                    {d: int(n) for d, n in zip(t.shape, array.shape, strict=False) if isinstance(d, str)}
                )
        return found

    @property
    def run_dims(self) -> dict[str, int]:
        """The value of every named dimension in this run: the spec's, else the manifest's."""
        return {**self.manifest.dims, **self.spec.dims}

    def reference_samples(self) -> int:
        """Samples in the reference batch."""
        path = self.model_path("reference_input")
        if path.suffix == ".npz":
            with np.load(path) as z:
                return len(z[z.files[0]])
        return len(np.load(path, mmap_mode="r"))

    def model_path(self, role: str) -> Path:
        return self.model_dir / self.manifest.files[role].path
