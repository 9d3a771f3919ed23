"""Keys of input shapes, for runners that compile one module per set of input shapes (OpenVINO,
IREE and PyTorch with static shapes): the shapes of every input, in the model's input order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runners.core.common import Inputs
from schemas import ModelManifest
from schemas.manifest import TensorInfo

ShapeKey = tuple[tuple[int, ...], ...]


def shape_key(shapes: Mapping[str, Sequence[int]], names: Sequence[str]) -> ShapeKey:
    """The key of a set of input shapes (input name -> shape), in the order of `names`."""
    return tuple(tuple(int(d) for d in shapes[n]) for n in names)


def batch_shapes(inputs: Inputs) -> dict[str, list[int]]:
    """Input name -> shape of a batch, as `Runner.compile_shapes` lists them."""
    return {n: [int(d) for d in a.shape] for n, a in inputs.items()}


def shapes_note(keys: Sequence[ShapeKey]) -> str:
    """The compiled shapes, short: the batch sizes of a one-input model whose shapes differ only
    by the batch, else each set of input shapes (`8x16 8x16; 1x64 1x64`)."""
    if not keys:
        return "[]"
    if all(len(k) == 1 and k[0][1:] == keys[0][0][1:] for k in keys):
        return str([k[0][0] for k in keys])
    return "; ".join(" ".join("x".join(map(str, s)) for s in k) for k in keys)


def shape_dims(manifest: ModelManifest, shapes: Mapping[str, Sequence[int]]) -> tuple[int, dict[str, int]]:
    """The batch size and the value of every named dimension of a set of input shapes, read back
    from where the manifest's inputs hold them."""
    batch, dims = 0, {}
    for t in manifest.inputs:
        for d, n in zip(t.shape, shapes[t.name], strict=True):
            if d is None:
                batch = int(n)
            elif isinstance(d, str):
                dims[d] = int(n)
    return batch, dims


def output_shape(info: TensorInfo, batch: int, dims: Mapping[str, int]) -> list[int | None]:
    """An output's shape at this batch and these dimensions; None for a dimension the inputs do
    not set (a name of the output's own)."""
    return [batch if d is None else dims.get(d) if isinstance(d, str) else d for d in info.shape]
