"""Keys of input shapes, for runners that compile one module per set of input shapes (OpenVINO,
IREE and PyTorch with static shapes): the shapes of every input, in the model's input order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runners.core.common import Inputs

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
